"""``python -m pipeline batch rates|remove|saliency|geodesic``: one task over a folder, glob or manifest of images.

In-process (``--address none`` or ``--workers 0``) or on Ray (a local instance sized to the machine by default,
``--address auto`` or ``ray://host:port`` for a cluster). Writes ``OUT/items/<id>/`` (the task's PNG / NPZ outputs
and ``record.json``) and ``OUT/results.jsonl`` (one row per item: inputs, timing, figures, error). A rerun skips the
items already complete and verified. See :mod:`pipeline.batch`.
"""

from __future__ import annotations

import argparse
import json

#: Task flags: task -> (flag, option name, type, help). Unset flags keep the library call's default.
_TASK_FLAGS = {
    "rates": (
        ("--timesteps", "num_timesteps", int, "number T of grid timesteps of the curves"),
        ("--t-max", "t_max", int, "largest timestep of the grid (default: the last training timestep)"),
        ("--patch-size", "patch_size", int, "patch side in model-space pixels"),
        ("--batch-size", "batch_size", int, "directions per JVP batch"),
        ("--estimator", "estimator", str, "direct or projected"),
        ("--statistic", "statistic", str, "saliency statistic of each curve (e.g. tv)"),
        ("--inversion", "inversion", str, "DDIM inversion: corrected or explicit"),
    ),
    "remove": (
        ("--t-edit", "t_edit", int, "timestep the image is inverted to"),
        ("--num-steps", "num_steps", int, "DDIM steps between 0 and t_edit"),
        ("--iterations", "iterations", int, "gradient steps on x_t at each active step"),
        ("--seed", "seed", int, "random seed"),
    ),
    "saliency": (
        ("--factor", "factor", float, "fluctuation scale: > 1 more salient, < 1 less (or a manifest column)"),
        ("--t-edit", "t_edit", int, "timestep the image is inverted to"),
        ("--num-steps", "num_steps", int, "DDIM steps between 0 and t_edit"),
        ("--iterations", "iterations", int, "gradient steps on x_t at each active step"),
        ("--seed", "seed", int, "random seed"),
    ),
    "geodesic": (
        ("--n", "n_points", int, "path points including both ends"),
        ("--t-star", "t_star", int, "noise level of the path, in train timesteps"),
        ("--steps", "num_steps", int, "DDIM steps between 0 and t*"),
        ("--method", "method", str, "geodesic, lerp or slerp"),
        ("--max-iter", "max_iter", int, "geodesic solver iterations"),
    ),
}

_HELP = {
    "rates": "generation curves and saliency map of every image (curves.npz, saliency.png)",
    "remove": "remove the object under each item's mask (image.png); needs a manifest with a 'mask' column",
    "saliency": "make each item's masked region more or less salient (image.png); needs masks and a factor",
    "geodesic": "geodesic between each item's two images (path.npz, strip.png); needs an 'image_b' column",
}


def _option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` (VALUE read as JSON when it parses, else as text)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--option takes KEY=VALUE, got {text!r}")
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


def add_parser(sub) -> None:
    """Register ``batch`` and its four task subcommands."""
    p = sub.add_parser("batch", help="run a task over a folder, glob or manifest of images (in-process or on Ray)",
                       description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1])
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)
    for task, flags in _TASK_FLAGS.items():
        t = tasks.add_parser(task, help=_HELP[task], description=_HELP[task],
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        t.add_argument("--input", required=True,
                       help="a folder of images, a glob (quoted), or a .csv / .jsonl manifest (columns image, mask, "
                       "image_b, id; other columns are per-row options)")
        t.add_argument("--out", required=True, help="output folder: items/<id>/ and results.jsonl")
        t.add_argument("--model", default="default", help="'default', a local diffusers folder, or a hub id")
        t.add_argument("--device", default=None, help="torch device of each worker (default: cuda if available)")
        t.add_argument("--dtype", default=None, help="model precision: float32, float64, bfloat16, float16")
        t.add_argument("--backend", default=None,
                       help="accel backend (torch, onnxruntime, tensorrt, torch-compile, auto); its artifacts are "
                       "built once by the driver under OUT/artifacts and loaded by every worker")
        t.add_argument("--address", default="local",
                       help="'local' (start a local Ray sized to the machine), 'auto' (a running cluster), "
                       "'ray://host:port', or 'none' (in this process, no Ray)")
        t.add_argument("--workers", type=int, default=1, help="Ray workers (each loads the model once); 0 = in-process")
        t.add_argument("--threads", type=int, default=1, help="torch threads per worker (0: torch's default)")
        t.add_argument("--num-gpus-per-worker", type=float, default=0.0, help="GPUs reserved per Ray worker")
        t.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
        t.add_argument("--max-retries", type=int, default=3,
                       help="restarts of a dead worker and retries of the items it held")
        t.add_argument("--no-resume", dest="resume", action="store_false",
                       help="recompute every item (default: skip items complete and verified)")
        t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
        t.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                       help="any keyword of the library call (JSON value), repeatable, e.g. --option smooth=0.5")
        for flag, dest, typ, text in flags:
            t.add_argument(flag, dest=f"opt_{dest}", type=typ, default=None, metavar=dest.upper(), help=text)
        t.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the batch; exit status 0 when every item is ok (or skipped), 1 when some failed."""
    from ..batch import ModelSpec, run_batch

    options = dict(args.option)
    options.update({k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None})
    spec = ModelSpec(source=args.model, device=args.device, dtype=args.dtype, backend=args.backend)
    summary = run_batch(args.task, args.input, out=args.out, model=spec, options=options, workers=args.workers,
                        address=args.address, threads=args.threads, num_gpus_per_worker=args.num_gpus_per_worker,
                        num_cpus=args.num_cpus, max_retries=args.max_retries, resume=args.resume,
                        progress=args.progress)
    print(f"batch {args.task}: {summary.done} ok, {summary.failed} failed, {summary.skipped} skipped (complete "
          f"from an earlier run) of {summary.total} in {summary.seconds:.1f} s ({summary.mode}); "
          f"table {summary.table}")
    for row in summary.rows:
        if row["status"] == "failed":
            print(f"  failed {row['id']}: {row['error']}")
    return 1 if summary.failed else 0
