"""``python -m pipeline remove | transfer | saliency | blend``: editing by curve matching; see :mod:`pipeline.edit`.

Flags left unset keep the task's config default (``RemoveConfig``, ``TransferConfig``, ``SaliencyConfig``,
``BlendConfig``). Each command writes the edited image to ``--out`` and, with ``--report``, a JSON file with the
curves, the loss history, timing and diagnostics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Loop flags shared by the four commands: (flag, config field, type, help).
_COMMON = (
    ("--t-edit", "t_edit", int, "timestep (of 1000) the image is inverted to; larger = freer, less faithful edits"),
    ("--num-steps", "num_steps", int, "DDIM steps between 0 and t_edit"),
    ("--iterations", "iterations", int, "gradient steps on x_t at each active step"),
    ("--lr", "lr", float, "length of a normalised gradient step (x_t has per-element scale ~1)"),
    ("--curve-weight", "curve_weight", float, "weight of the curve-matching loss (0: the loop without it)"),
    ("--preserve-weight", "preserve_weight", float, "weight of the preservation loss mean_mask (x - anchor)^2"),
    ("--patch-size", "patch_size", int, "patch side in model-space cells (must divide the model's size)"),
    ("--max-patches", "max_patches", int, "target patches per gradient step (random subset beyond)"),
    ("--max-reference-patches", "max_reference_patches", int, "patches building a mean reference curve"),
    ("--feather", "feather", float, "feathering radius (model cells) of the blend with the original trajectory"),
    ("--grad-mode", "grad_mode", str, "gradient of rates: forward (reverse-over-forward), double, fd"),
    ("--inversion", "inversion", str, "DDIM inversion: corrected (predict-evaluate-correct, default) or explicit"),
    ("--tolerance", "tolerance", float, "dead zone of the curve loss (log units): smaller mismatches count as matched"),
    ("--seed", "seed", int, "random seed (patch subsets, fresh noise)"),
)

#: Task-specific config flags.
_TASK = {
    "remove": (
        ("--ring-width", "ring_width", int, "width (model cells) of the background ring giving the reference"),
        ("--grow", "grow", int, "dilate the edit region by this many model cells"),
        ("--init", "init", str, "start content of the mask: invert, harmonic, mean, shift (exemplar copy)"),
        ("--reference", "reference", str, "reference curve: shape, level (the ring's) or harmonic (neighbours')"),
        ("--init-noise", "init_noise", float, "0: keep the inverted noise in the mask; 1: fresh noise"),
        ("--samples", "samples", int, "fills from fresh noise (--init-noise > 0) whose mean is returned"),
    ),
    "transfer": (
        ("--init", "init", str, "start content of the target: invert or paste (source warped onto the target)"),
        ("--init-noise", "init_noise", float, "0: keep the inverted noise in the target; 1: fresh noise"),
        ("--grow", "grow", int, "dilate the edit region by this many model cells"),
    ),
    "saliency": (
        ("--t-b", "t_b", int, "the fluctuation is scaled for t > t_b"),
        ("--fluctuation", "fluctuation", str, "baseline of the fluctuation: context, contrast or own"),
        ("--grow", "grow", int, "dilate the edit region by this many model cells"),
    ),
    "blend": (
        ("--t-switch", "t_switch", int, "object follows the foreground above this t, the seam the background below"),
        ("--seam-width", "seam_width", int, "half-width (model cells) of the seam band"),
        ("--alpha-blur", "alpha_blur", float, "Gaussian std (pixels) of the paste's alpha; 0: a hard paste"),
    ),
}

_HELP = {
    "remove": "remove the object under a mask (its curves follow the background ring's)",
    "transfer": "give a target region the content of a source region (curve matching)",
    "saliency": "make a region more (--factor > 1) or less (< 1) salient",
    "blend": "paste the object of a foreground image into a background and harmonise the seam",
}


def _add_common(p: argparse.ArgumentParser, task: str) -> None:
    image_help = "background image file" if task == "blend" else "input image file"
    mask_help = {"blend": "mask file of the object in the foreground (white = object)",
                 "transfer": "mask file of the target region (white = inside)"}.get(task, "mask file (white = inside)")
    p.add_argument("--image", required=True, help=image_help)
    p.add_argument("--mask", required=True, help=mask_help)
    p.add_argument("--out", required=True, help="output image file (PNG recommended)")
    p.add_argument("--model", default="default",
                   help="model: 'default', 'textured' (knows textures too), a diffusers folder, or a hub id")
    p.add_argument("--device", default=None, help="torch device (default: CUDA when available, else CPU)")
    p.add_argument("--report", default=None, help="also write a JSON report (curves, loss, timing) to this file")
    p.add_argument("--window", type=int, nargs=2, metavar=("T_MIN", "T_MAX"), default=None,
                   help="timesteps where the loss is active (default: the task's)")
    p.add_argument("--no-measure", dest="measure_curves", action="store_false", default=None,
                   help="skip measuring the curves before and after (faster)")
    p.add_argument("--absolute", dest="relative", action="store_false", default=None,
                   help="match the reference itself along the regenerated path, not the change it asks for")
    p.add_argument("--keep-mean", dest="keep_mean", action="store_true", default=None,
                   help="remove the region's mean from each update: the curves steer structure, the colour stays")
    for flag, dest, typ, text in _COMMON + _TASK[task]:
        p.add_argument(flag, dest=dest, type=typ, default=None, help=text)


def add_parser(sub) -> None:
    """Register the four editing commands."""
    for task in ("remove", "transfer", "saliency", "blend"):
        description = _HELP[task].capitalize() + ". " + __doc__.split("\n\n")[1]
        p = sub.add_parser(task, help=_HELP[task], description=description)
        _add_common(p, task)
        if task == "transfer":
            p.add_argument("--source-mask", required=True, help="mask file of the source region")
            p.add_argument("--reference", default=None,
                           help="image file holding the source region (default: the input image itself)")
        elif task == "saliency":
            p.add_argument("--factor", type=float, required=True, help="fluctuation scale: > 1 more salient, < 1 less")
        elif task == "blend":
            p.add_argument("--foreground", required=True, help="image file holding the object")
        else:
            p.add_argument("--generative", action="store_true",
                           help="start from pipeline.edit.GENERATIVE_REMOVAL (the mean of 8 fills from fresh noise at "
                                "t=300: for textured backgrounds, with --model textured); other flags override it")
            p.add_argument("--guide", default=None,
                           help="image file (the input's size) whose own curves the hole follows instead of the "
                                "ring's: a rough picture of the wanted background")
        p.set_defaults(run=run, task=task)


def _overrides(args: argparse.Namespace) -> dict:
    names = [dest for _, dest, _, _ in _COMMON + _TASK[args.task]] + ["measure_curves", "relative", "keep_mean"]
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.window is not None:
        out["window"] = tuple(args.window)
    return out


def _report(result, path: str) -> None:
    def arr(a):
        return None if a is None else a.tolist()

    data = {
        "task": result.task, "seconds": result.seconds, "timing": result.timing, "config": result.config,
        "diagnostics": result.diagnostics, "timesteps": arr(result.timesteps), "patches": arr(result.patches),
        "curves_before": arr(result.curves_before), "curves_after": arr(result.curves_after),
        "reference": arr(result.reference), "weights": arr(result.weights),
        "loss_history": arr(result.loss_history), "loss_steps": arr(result.loss_steps),
    }
    Path(path).write_text(json.dumps(data, indent=1, default=str))


def _load_mask(path: str, name: str):
    """A mask file as an array (any image mode: :func:`pipeline.images.mask_array`); a missing or unreadable file
    raises InputError."""
    from ..images import mask_array

    return mask_array(path, name=name)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from .. import edit
    from ..images import load_image
    from ..model import load_model

    image = load_image(args.image, name="--image")
    mask = _load_mask(args.mask, "--mask")
    kw = {**(edit.GENERATIVE_REMOVAL if getattr(args, "generative", False) else {}), **_overrides(args)}
    model = load_model(args.model, device=args.device)
    if args.task == "remove":
        guide = None if args.guide is None else load_image(args.guide, name="--guide")
        result = edit.remove_object(model, image, mask, guide=guide, **kw)
    elif args.task == "transfer":
        ref = None if args.reference is None else load_image(args.reference, name="--reference")
        result = edit.transfer(model, image, mask, _load_mask(args.source_mask, "--source-mask"), reference=ref, **kw)
    elif args.task == "saliency":
        result = edit.adjust_saliency(model, image, mask, args.factor, **kw)
    else:
        result = edit.blend(model, image, load_image(args.foreground, name="--foreground"), mask, **kw)
    Image.fromarray(result.image).save(args.out)
    if args.report:
        _report(result, args.report)
    d = result.diagnostics
    err = ""
    if d.get("curve_error_before") is not None:
        err = f", curve error {d['curve_error_before']:.3f} -> {d['curve_error_after']:.3f}"
    print(f"{args.task}: wrote {args.out} ({result.seconds:.1f} s, {d['num_target_patches']} target patches{err})")
    return 0
