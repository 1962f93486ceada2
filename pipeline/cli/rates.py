"""``python -m pipeline rates``: generation curves and rate-fluctuation saliency of one image.

Writes to ``--out``:

- ``saliency.png``: the saliency heat map (matplotlib colormap) over the input image, at the input's size, with the
  chosen points marked;
- ``curves.npz``: ``timesteps`` (T,), ``curves`` and ``accumulated`` (T, H/p, W/p), ``saliency`` (H, W),
  ``patch_saliency`` (H/p, W/p) and the settings;
- ``curves.csv``: one row per patch: grid position, its pixel box in the input image, saliency, c_p(t) per timestep;
- ``curves.png``: c_p(t) and the accumulated C_p(t) at the chosen points.

Pictures are drawn by :mod:`pipeline.viz` (matplotlib ``Figure``, no pyplot).
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Colormap of the saliency heat map.
CMAP = "inferno"


def add_parser(sub) -> None:
    from ..ddim import INVERT_METHODS
    from ..rates import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_NORMALIZE,
        DEFAULT_STATISTIC,
        ESTIMATORS,
        NORMALIZATIONS,
        STATISTICS,
    )

    p = sub.add_parser(
        "rates",
        help="generation curves and saliency of an image",
        description="Generation curves c_p(t) of every patch of an image along its DDIM trajectory, and the saliency "
        "map they give (docs/maths.md section 3).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--image", required=True, help="input image file (PNG, JPEG, ...); any size, resized to the model")
    p.add_argument("--model", default="default",
                   help="'default' (the embedded model in weights/), a local diffusers folder, or a hub id owner/name")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--timesteps", type=int, default=20, help="number T of grid timesteps t_1..t_T of the curves")
    p.add_argument("--t-max", type=int, default=None,
                   help="largest timestep t_T of the grid (default: the last training timestep)")
    p.add_argument("--patch-size", type=int, default=2,
                   help="patch side in model-space pixels (latent pixels for latent models); must divide the "
                   "model size")
    p.add_argument("--points", default=None,
                   help='input-image pixels whose curves to plot, "x,y;x,y" (default: the most and the least '
                   'salient patch)')
    p.add_argument("--estimator", choices=ESTIMATORS, default="direct",
                   help="direct: one JVP per patch; projected: top-k tangent basis by power iteration per timestep")
    p.add_argument("--statistic", choices=STATISTICS, default=DEFAULT_STATISTIC,
                   help="saliency statistic of each curve (tv = total variation, the paper's rate fluctuation)")
    p.add_argument("--t-min", type=int, default=None, help="use only timesteps t > T_MIN for the saliency")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default=DEFAULT_NORMALIZE,
                   help="curve normalisation before the statistic: per timestep (time) or per curve (curve)")
    p.add_argument("--smooth", type=float, default=0.0,
                   help="Gaussian std of the patch directions in model-space pixels (0: hard patches)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="directions per JVP batch")
    p.add_argument("--k", type=int, default=16, help="projected estimator: number of singular vectors")
    p.add_argument("--iters", type=int, default=10, help="projected estimator: power iterations")
    p.add_argument("--seed", type=int, default=0, help="projected estimator: seed of the starting basis")
    p.add_argument("--inversion", choices=INVERT_METHODS, default="corrected",
                   help="DDIM inversion: corrected (predict-evaluate-correct, default) or explicit (plain DDIM)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", choices=("float32", "float64", "bfloat16", "float16"), default="float32",
                   help="model precision (bfloat16: half precision on the CPU; float16 needs a CUDA device)")
    p.set_defaults(run=run)


def parse_points(text: str | None) -> list[tuple[float, float]]:
    """``"x,y;x,y"`` -> [(x, y), ...] (pixels of the input image)."""
    from ..errors import InputError

    if text is None or not text.strip():
        return []
    points = []
    for item in text.split(";"):
        parts = item.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            points.append((float(parts[0]), float(parts[1])))
        except ValueError:
            msg = f'--points must look like "x,y;x,y" (pixel coordinates); could not read {item!r}'
            raise InputError(msg) from None
    return points


def _default_points(res) -> list[tuple[float, float]]:
    """Centres (input pixels) of the most and the least salient patch."""
    h, w = res.saliency.shape
    nh, nw = res.patch_saliency.shape
    out = []
    for idx in (int(res.patch_saliency.argmax()), int(res.patch_saliency.argmin())):
        r, c = divmod(idx, nw)
        out.append(((c + 0.5) * w / nw, (r + 0.5) * h / nh))
    return out


def _write_csv(path: Path, res) -> None:
    h, w = res.saliency.shape
    nh, nw = res.patch_saliency.shape
    ts = res.timesteps.tolist()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "col", "x0", "y0", "x1", "y1", "saliency"] + [f"t={t}" for t in ts])
        for r in range(nh):
            for c in range(nw):
                box = [round(c * w / nw, 2), round(r * h / nh, 2), round((c + 1) * w / nw, 2),
                       round((r + 1) * h / nh, 2)]
                curve = [f"{float(v):.6g}" for v in res.curves[:, r, c]]
                writer.writerow([r, c, *box, f"{float(res.patch_saliency[r, c]):.6g}", *curve])


def _curves_png(path: Path, res, points: list[tuple[float, float]]) -> None:
    from .. import viz

    cells = [res.patch_index(x, y) for x, y in points]
    labels = [f"({x:g}, {y:g}) patch [{r}, {c}]" for (x, y), (r, c) in zip(points, cells, strict=True)]
    curves = {lab: res.curves[:, r, c].numpy() for lab, (r, c) in zip(labels, cells, strict=True)}
    accumulated = {lab: res.accumulated[:, r, c].numpy() for lab, (r, c) in zip(labels, cells, strict=True)}
    size = f"{res.patch_size} model-space px" + (
        f" = {res.pixels_per_patch} image px" if res.pixels_per_patch != res.patch_size else "")
    title = f"Generation curves ({res.estimator} estimator, patch {size})"
    viz.figure_to_png(viz.curves_figure(res.timesteps.numpy(), curves, accumulated=accumulated, title=title), path)


def run(args: argparse.Namespace) -> int:
    from .. import viz
    from ..errors import InputError
    from ..images import load_image
    from ..model import load_model
    from ..rates import generation_curves

    points = parse_points(args.points)
    image = load_image(args.image)
    height, width = image.shape[:2]
    outside = [(x, y) for x, y in points if not (0 <= x < width and 0 <= y < height)]
    if outside:
        raise InputError(f"--points {outside} lie outside the {width}x{height} image "
                         f"(0 <= x < {width}, 0 <= y < {height})")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    log.info("model %s (%s, %dx%d model space) on %s", args.model, model.kind, model.sample_size, model.sample_size,
             model.device)
    last = {"desc": None}

    def progress(done: int, total: int, desc: str) -> None:
        if desc != last["desc"]:
            log.info("[%d/%d] %s", done, total, desc)
            last["desc"] = desc

    res = generation_curves(
        model, image, num_timesteps=args.timesteps, t_max=args.t_max, patch_size=args.patch_size,
        estimator=args.estimator, statistic=args.statistic, t_min=args.t_min, normalize=args.normalize,
        smooth=args.smooth, batch_size=args.batch_size, k=args.k, iters=args.iters, seed=args.seed,
        inversion=args.inversion, progress=progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    points = points or _default_points(res)
    viz.save_png(viz.mark_points(viz.overlay(image, res.saliency.numpy(), cmap=CMAP), points), out / "saliency.png")
    np.savez(
        out / "curves.npz", timesteps=res.timesteps.numpy(), curves=res.curves.numpy(),
        accumulated=res.accumulated.numpy(), saliency=res.saliency.numpy(), patch_saliency=res.patch_saliency.numpy(),
        estimator=res.estimator, patch_size=res.patch_size, pixels_per_patch=res.pixels_per_patch,
        statistic=res.statistic, normalize=res.normalize, t_min=-1 if res.t_min is None else res.t_min,
        model=str(args.model), seconds=res.seconds,
    )
    _write_csv(out / "curves.csv", res)
    _curves_png(out / "curves.png", res, points)
    print(f"{res.curves.shape[0]} timesteps x {res.curves.shape[1]}x{res.curves.shape[2]} patches "
          f"({res.jvp_evaluations} JVPs, {res.batching}) in {res.seconds:.1f} s; wrote saliency.png, curves.npz, "
          f"curves.csv, curves.png to {out}")
    return 0
