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
    p.add_argument("--check-only", action="store_true",
                   help="export nothing: run the parity check of the graphs already recorded in --out without one "
                   "(exported with --skip-check) and record it; a graph that fails it is removed and recorded as a "
                   "failure (with --force: re-check every recorded graph)")
    p.add_argument("--force", action="store_true", help="re-export even up-to-date artifacts")
    p.add_argument("--jobs", type=int, default=1, help="export ONNX graphs in this many processes (default 1)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="model-space size (default: the model's)")
    p.add_argument("--device", default=None, help="torch device for tracing (default: cuda if available, else cpu)")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first graph that fails (default: record "
                   "it in the manifest's failures, export the others, exit 2)")
    p.add_argument("--max-rss-gib", type=float, default=None, metavar="GIB",
                   help="export each graph in a child process and stop it when its resident memory passes GIB "
                   "(recorded as a failure with the measured peak); the parity check runs in a second child with the "
                   "same limits, after the exporter's memory is freed")
    p.add_argument("--graph-timeout", type=float, default=None, metavar="S",
                   help="export each graph in a child process and stop it after S seconds (recorded as a failure); "
                   "the parity check's child has S seconds of its own")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline import load_model
    from pipeline.errors import InputError, ModelLoadError

    from .build import check_recorded, export_graphs, model_specs
    from .errors import ExportError, ManifestError

    try:
        model = load_model(args.model, device=args.device)
        log.info("model %s: %s, %d channels, %dx%d", args.model, model.info.get("unet_class"), model.channels,
                 model.sample_size, model.sample_size)
        size = tuple(args.size) if args.size else None
        if args.check_only:
            if args.skip_check:
                raise InputError("--check-only and --skip-check contradict each other")
            import gc

            from .check import LazyModel
            from .fingerprint import weights_hash

            specs = model_specs(model, graphs=args.graphs, batch_sizes=args.batch_sizes, size=size)
            weights, steps, device = weights_hash(model), model.num_train_timesteps, model.device
            del model  # loaded again for PyTorch's turn of each check, after ONNX Runtime's session is freed
            gc.collect()
            lazy = LazyModel(lambda: load_model(args.model, device=device), steps)
            manifest = check_recorded(lazy, args.out, specs, force=args.force, weights=weights)
        elif args.max_rss_gib is not None or args.graph_timeout is not None:
            box = [model]
            del model  # _export_isolated frees it before the children load their own copies
            manifest = _export_isolated(box, args, size)
        else:
            manifest = export_graphs(model, args.out, batch_sizes=args.batch_sizes, graphs=args.graphs,
                                     precision=args.precision, tensorrt=args.tensorrt, check=not args.skip_check,
                                     force=args.force, jobs=args.jobs, size=size, keep_going=not args.fail_fast)
    except (InputError, ModelLoadError, ExportError, ManifestError) as err:
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
    from .specs import STATIC_GRAPHS

    asked = {(g if g not in STATIC_GRAPHS else f"{g}_b{b}") + ".onnx" for g in args.graphs for b in args.batch_sizes}
    failed = {k: v for k, v in manifest.failures.items() if k in asked}
    for name, rec in sorted(failed.items()):
        print(f"{name:<28} FAILED  {rec.get('seconds', 0):>8.1f}  {rec['reason']}")
    print(f"manifest: {args.out}/manifest.json")
    if failed:
        log.warning("%d graph(s) not exported (%s): the backends run them in PyTorch", len(failed),
                    ", ".join(sorted(failed)))
        return 2
    return 0


def _export_isolated(box: list, args, size):
    """Export each graph in a child ``python -m export --skip-check`` under :func:`export.watch.run_watched`, then
    check it in a second watched child (``--check-only``), so the check's ONNX Runtime session and eager JVP do not
    share a process with the exporter's state. A child stopped for memory or time (or dying) is recorded in the
    manifest's failures with its measured peak and the phase it was in (its files removed); each artifact's
    ``extra`` gets the wall seconds (both phases) and the peak resident memory (the larger), and each phase's own.
    With ``--skip-check``, or ``--tensorrt`` (engines are built and checked where the ONNX file was made), one child
    does everything."""
    import gc
    from dataclasses import replace
    from pathlib import Path

    from .build import model_specs, onnx_key, onnx_name
    from .errors import ManifestError
    from .fingerprint import code_version, weights_hash
    from .manifest import Manifest, directory_lock
    from .watch import describe, run_watched

    model = box.pop()
    specs = model_specs(model, graphs=args.graphs, batch_sizes=args.batch_sizes, size=size)
    weights, source = weights_hash(model), str(model.source)
    device = args.device or str(model.device)
    del model
    gc.collect()  # the children load their own copy
    max_rss = int(args.max_rss_gib * 2**30) if args.max_rss_gib is not None else None
    out = Path(args.out)
    two_phase = not args.skip_check and not args.tensorrt  # engines are built and checked in the export child
    for spec in specs:
        name = onnx_name(spec)
        cmd = [sys.executable, "-m", "export", "--model", args.model, "--out", str(out), "--graphs", spec.graph,
               "--batch-sizes", str(spec.batch or args.batch_sizes[0]), "--precision", args.precision,
               "--device", device, "--size", *(str(d) for d in spec.inputs[0].shape[-2:])]
        verbose = ["-v"] if args.verbose else []
        flags = (("--tensorrt", args.tensorrt), ("--skip-check", args.skip_check or two_phase), ("--force", args.force))
        export_cmd = cmd + [f for f, on in flags if on] + verbose
        log.info("exporting %s in a child process (limits: %s GiB, %s s) ...", name, args.max_rss_gib,
                 args.graph_timeout)
        phases = {"export": run_watched(export_cmd, max_rss_bytes=max_rss, timeout_s=args.graph_timeout)}
        if two_phase and phases["export"].ok:
            log.info("checking %s against PyTorch in a child process of its own ...", name)
            phases["check"] = run_watched(cmd + ["--check-only"] + verbose, max_rss_bytes=max_rss,
                                          timeout_s=args.graph_timeout)
        last_phase, w = list(phases.items())[-1]
        seconds = sum(p.seconds for p in phases.values())
        peak = max(p.peak_rss_bytes for p in phases.values())
        figures = {"seconds": round(seconds, 2), "peak_rss_bytes": peak, "stopped_in": last_phase}
        per_phase = {}
        for ph, p in phases.items():
            per_phase[f"{ph}_seconds"] = f"{p.seconds:.1f}"
            per_phase[f"{ph}_peak_rss_gib"] = f"{p.peak_rss_bytes / 2**30:.2f}"
        with directory_lock(out):
            try:
                manifest = Manifest.load(out)
            except ManifestError as err:  # nothing recorded yet (the first graph failed)
                log.debug("new manifest (%s)", err)
                manifest = Manifest(model_source=source, weights_hash=weights, code_version=code_version())
            art = manifest.artifacts.get(name)
            if not w.killed and art is not None and name not in manifest.failures and (art.checks or not two_phase):
                extra = {**art.extra, "wall_seconds": f"{seconds:.1f}", "peak_rss_gib": f"{peak / 2**30:.2f}",
                         **per_phase}
                manifest = manifest.with_artifact(replace(art, extra=extra))
                log.info("%s: %.1f s, peak resident memory %.2f GiB", name, seconds, peak / 2**30)
            else:
                rec = manifest.failures.get(name)
                if rec is not None and not w.killed:
                    reason = rec["reason"]
                elif last_phase == "check" and w.ok:  # the check child found no graph of this key to check
                    nothing = [ln for ln in w.output.splitlines() if "nothing to check" in ln]
                    reason = (f"parity check child exited after {w.seconds:.0f} s without checking it: "
                              + (nothing[-1].split("WARNING export: ")[-1] if nothing else "no record")
                              + " (a key that changed between the two children: were the sources or the weights "
                              "edited during the export?)")
                else:
                    reason = describe(w, max_rss_bytes=max_rss, timeout_s=args.graph_timeout)
                if last_phase == "check" and not reason.startswith("parity check"):
                    reason = "in its parity check (a child process of its own, after the export): " + reason
                written = [f for f in (out / name, out / (name + ".data")) if f.is_file()]
                if written and w.killed:  # stopped after writing (in its parity check): never use it unchecked
                    figures["written_bytes"] = sum(f.stat().st_size for f in written)
                    reason += f"; {figures['written_bytes'] / 2**30:.2f} GiB of ONNX files had been written (removed)"
                for f in written:
                    f.unlink()
                manifest = manifest.with_failure(name, reason, key=onnx_key(spec, weights), **figures, **per_phase)
                log.warning("%s not exported: %s", name, reason)
            manifest.save(out)
    return manifest


if __name__ == "__main__":
    sys.exit(main())
