"""Benchmark: the public checkpoints' architectures at full size on this machine: load, the batch limit, and the
cost and peak memory of the model calls the tasks are made of.

    python -m benchmarks.scale --folders DIR [--archs cifar10-32,ddpm-256,sd15] [--dtype float32] [--threads 2]
    python -m benchmarks.scale --folders DIR --render     # rewrite scale.md from scale.json

``DIR`` holds one full-size reference folder per architecture (``DIR/<arch>``, built by ``python -m
benchmarks.reference --arch <arch> --out DIR/<arch>`` when missing: random weights, the public configs). Each
architecture runs in a process of its own, so that its peak resident memory is its own; per call the process's peak
resident set (``VmHWM``, reset before the call) is reported, the weights included. Rows:

- ``load``: ``load_model(folder)``: seconds and resident memory after;
- ``batch limit``: the memory probe of :mod:`pipeline.memory` (``eps_jvp`` at batch 2 and 1): per-sample cost,
  the budget and the largest batch one call runs;
- ``eps``, ``eps_jvp``, ``h_jvp`` at batch 1 (one DDIM step, one geodesic point, one rate direction);
- ``h_jvp_point x16``: the 16 directions of one rate-map batch (``pipeline.rates.DEFAULT_BATCH_SIZE``) at one
  point, run in parts of at most the batch limit.

Where a call would push the run past ``--time-limit``, it is not run and the row says so. Results: ``--out``
(default ``benchmarks/results/scale.md`` and ``.json``). Random weights: the figures are costs, not image quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ARCH_ORDER = ("cifar10-32", "ddpm-256", "sd15")


def _kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _gib(kib: int) -> float:
    return kib / 2**20


def worker(arch: str, folder: str, dtype: str, time_limit: float) -> dict:
    """Measure one architecture in this process; -> its report."""
    import torch

    sys.path.insert(0, str(ROOT))
    from pipeline import load_model
    from pipeline.rates import DEFAULT_BATCH_SIZE

    t_start = time.perf_counter()
    report: dict = {"arch": arch, "dtype": dtype, "rows": []}

    def row(name: str, fn, *, est_s: float | None = None) -> float | None:
        left = time_limit - (time.perf_counter() - t_start)
        if est_s is not None and est_s > left:
            report["rows"].append({"call": name, "skipped": f"estimated {est_s:.0f} s, {left:.0f} s left"})
            return None
        Path("/proc/self/clear_refs").write_text("5")
        t0 = time.perf_counter()
        with torch.no_grad():
            extra = fn() or {}
        sec = time.perf_counter() - t0
        report["rows"].append({"call": name, "seconds": sec, "peak_rss_gib": _gib(_kib("VmHWM")),
                               "rss_after_gib": _gib(_kib("VmRSS")), **extra})
        print(f"{arch:>10} {name:>18}: {sec:8.1f} s, peak {_gib(_kib('VmHWM')):.2f} GiB", flush=True)
        return sec

    box = {}

    def load():
        box["m"] = load_model(folder, device="cpu", dtype=dtype)
        n = sum(p.numel() for p in box["m"].unet.parameters())
        return {"unet_params": n, "sample_size": box["m"].sample_size, "image_size": box["m"].image_size}

    row("load", load)
    m = box["m"]
    shape = (m.channels, m.sample_size, m.sample_size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *shape, generator=g).to(m.dtype)
    v = torch.randn(DEFAULT_BATCH_SIZE, *shape, generator=g).to(m.dtype)
    t = m.num_train_timesteps // 2

    def limit():
        lim = m.max_batch()
        fig = dict(m.info.get("memory") or {})
        return {"limit": lim, **{k: fig[k] for k in ("per_sample_bytes", "fixed_bytes", "budget_bytes",
                                                      "peak_bytes", "probe_seconds") if k in fig}}

    row("batch limit", limit)
    def call(fn, *a):
        def run():
            fn(*a)
        return run

    def point():
        m.h_jvp_point(x, t, v)
        return {"parts": -(-n // (m.max_batch() or n))}

    n = DEFAULT_BATCH_SIZE
    # each estimate from the last measured call (a JVP costs about 3 forwards; h_jvp at most an eps_jvp)
    eps_s = row("eps", call(m.eps, x, t))
    jvp_est = 3 * eps_s
    jvp_s = row("eps_jvp", call(m.eps_jvp, x, t, v[:1]), est_s=jvp_est)
    h_est = jvp_s if jvp_s is not None else jvp_est
    h_s = row("h_jvp", call(m.h_jvp, x, t, v[:1]), est_s=h_est)
    row(f"h_jvp_point x{n}", point, est_s=n * (h_s if h_s is not None else h_est))
    report["total_s"] = time.perf_counter() - t_start
    return report


def _public_command(info: dict) -> str:
    """The reproducing command with this machine's reference folder written as ``DIR``."""
    args = shlex.split(info["command"])
    if "--folders" in args:
        args[args.index("--folders") + 1] = "DIR"
    return shlex.join(args)


def _markdown(info: dict, reports: list[dict]) -> str:
    lines = ["# Scale benchmark: the public architectures at full size (CPU, random weights)", "",
             f"Command: `{_public_command(info)}` (`DIR`: the folder of the full-size reference models)", "",
             f"Machine: {info['machine']}; load average (1 min) {info['load'][0]:.1f} at start, "
             f"{info['load_end'][0]:.1f} at end (the cores are shared: seconds are noisy, memory is not). Peak "
             "memory is the process's peak resident set during the call, the weights included.", "",
             "| arch | dtype | call | seconds | peak RSS (GiB) | notes |", "|---|---|---|---|---|---|"]
    for rep in reports:
        if "error" in rep:
            lines.append(f"| {rep['arch']} | {rep.get('dtype', '')} | (not run) | | | {rep['error']} |")
            continue
        for r in rep["rows"]:
            if "skipped" in r:
                lines.append(f"| {rep['arch']} | {rep['dtype']} | {r['call']} | not run | | {r['skipped']} |")
                continue
            notes = []
            if r["call"] == "load":
                notes.append(f"UNet {r['unet_params'] / 1e6:.1f}M params, model space {r['sample_size']}px, "
                             f"images {r['image_size']}px")
            if r["call"] == "batch limit":
                if r.get("limit") is None:
                    notes.append("no limit (model under the probe threshold)")
                elif "per_sample_bytes" not in r:
                    notes.append(f"limit {r['limit']} samples per call, set by DIFFGEO_MAX_BATCH")
                else:
                    notes.append(f"limit {r['limit']} samples per call: {r['per_sample_bytes'] / 2**30:.2f} GiB a "
                                 f"sample + {r['fixed_bytes'] / 2**30:.2f} GiB, budget "
                                 f"{r['budget_bytes'] / 2**30:.1f} GiB")
            if "parts" in r:
                notes.append(f"{r['parts']} part(s)")
            lines.append(f"| {rep['arch']} | {rep['dtype']} | {r['call']} | {r['seconds']:.1f} | "
                         f"{r['peak_rss_gib']:.2f} | {'; '.join(notes)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    p.add_argument("--folders", required=True, help="folder of the full-size reference models, one per arch "
                   "(DIR/<arch>; missing ones are built)")
    p.add_argument("--archs", default=",".join(ARCH_ORDER), help="comma-separated architectures (default: all)")
    p.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each measuring process")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds per architecture; calls that would "
                   "pass it are reported as not run")
    p.add_argument("--out", default=str(RESULTS / "scale"), help="report path without suffix (.md and .json)")
    p.add_argument("--render", action="store_true", help="only rewrite the .md from the .json at --out")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.render:
        data = json.loads(Path(args.out).with_suffix(".json").read_text())
        data["command"] = _public_command(data)
        Path(args.out).with_suffix(".json").write_text(json.dumps(data, indent=1))
        Path(args.out).with_suffix(".md").write_text(_markdown(data, data.pop("reports")))
        return 0
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print("REPORT " + json.dumps(worker(args.worker, args.folders, args.dtype, args.time_limit)), flush=True)
        return 0
    import torch

    info = {"command": "python -m benchmarks.scale " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()} ({os.cpu_count()} CPUs), torch {torch.__version__}, "
                       f"{args.threads} thread(s)", "load": os.getloadavg()}
    reports = []
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        folder = Path(args.folders) / arch
        if not folder.exists():
            subprocess.run([sys.executable, "-m", "benchmarks.reference", "--arch", arch, "--out", str(folder)],
                           cwd=ROOT, check=True)
        proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--worker", arch, "--folders", str(folder),
                               "--dtype", args.dtype, "--threads", str(args.threads), "--time-limit",
                               str(args.time_limit)], cwd=ROOT, capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
        if proc.returncode or not found:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            reports.append({"arch": arch, "dtype": args.dtype,
                            "error": f"exit {proc.returncode}: {tail[0][:200]}"})
        else:
            reports.append(json.loads(found[-1][len("REPORT "):]))
    info["load_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info["command"] = _public_command(info)
    out.with_suffix(".json").write_text(json.dumps({**info, "reports": reports}, indent=1))
    out.with_suffix(".md").write_text(_markdown(info, reports))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
