"""``python -m export --model SRC --out DIR [...]``: export graphs, check them against PyTorch, write a manifest."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .specs import DEFAULT_GRAPHS, GRAPHS, PRECISIONS

log = logging.getLogger("export")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Export h, h_jvp, eps and eps_jvp of a diffusion model to ONNX (JVP graphs: one file per batch "
        "size; h and eps: dynamic batch), check each against PyTorch, optionally build TensorRT engines, and record "
        "everything in DIR/manifest.json. Up-to-date artifacts are reused.",
    )
    p.add_argument("--model", default="default", help="'default', a local diffusers folder, or a hub id")
    p.add_argument("--out", required=True, help="output directory (created; an existing manifest is updated)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], metavar="B",
                   help="batch sizes of the static JVP graphs (and K of h_jvp_point); default: 1 8")
    p.add_argument("--graphs", nargs="+", default=list(DEFAULT_GRAPHS), choices=GRAPHS, metavar="G",
                   help=f"graphs to export, from {', '.join(GRAPHS)}; default: {' '.join(DEFAULT_GRAPHS)}")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="TensorRT engine precision")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs tensorrt and a GPU)")
    p.add_argument("--skip-check", action="store_true", help="skip the parity checks against PyTorch")
    p.add_argument("--force", action="store_true", help="re-export even up-to-date artifacts")
    p.add_argument("--jobs", type=int, default=1, help="export ONNX graphs in this many processes (default 1)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="model-space size (default: the model's)")
    p.add_argument("--device", default=None, help="torch device for tracing (default: cuda if available, else cpu)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline import load_model
    from pipeline.errors import InputError, ModelLoadError

    from .build import export_graphs
    from .errors import ExportError

    try:
        model = load_model(args.model, device=args.device)
        log.info("model %s: %s, %d channels, %dx%d", args.model, model.info.get("unet_class"), model.channels,
                 model.sample_size, model.sample_size)
        manifest = export_graphs(model, args.out, batch_sizes=args.batch_sizes, graphs=args.graphs,
                                 precision=args.precision, tensorrt=args.tensorrt, check=not args.skip_check,
                                 force=args.force, jobs=args.jobs, size=tuple(args.size) if args.size else None)
    except (InputError, ModelLoadError, ExportError) as err:
        log.error("%s: %s", type(err).__name__, err)
        return 1
    print(f"{'artifact':<28} {'kind':<7} {'seconds':>8}  parity (max rel error per output)")
    for name, art in sorted(manifest.artifacts.items()):
        if art.weights_hash != manifest.weights_hash:
            continue  # another model's artifact in a shared directory
        checks = "; ".join(
            f"{c.runner}: " + ", ".join(f"{k} {v:.1e}" for k, v in c.max_rel.items()) + (" ok" if c.passed else " FAIL")
            for c in art.checks) or "not checked"
        print(f"{name:<28} {art.kind:<7} {art.seconds:>8.1f}  {checks}")
    print(f"manifest: {args.out}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
