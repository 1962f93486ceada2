"""Benchmark: eager-PyTorch cost of h-space, its JVP, a rate map and a full curve map.

    python benchmarks/rates.py [--model default] [--runs 5] [--map-runs 3] [--curve-runs 1] [--threads 1]

Rows (median wall time of N runs after one warm-up run; N is given per row):

- ``h forward``: ``model.h(x, t)`` at batch B, no grad;
- ``h JVP``: ``model.h_jvp(x, t, v)`` (torch.func.jvp) at batch B;
- ``rate map``: ``rate_map`` of one image at one t, every patch, ``batch_size`` B, for each batching
  (``vmap``: primal once per batch; ``repeat``: x repeated along the batch);
- ``curve map``: ``generation_curves`` (DDIM inversion + a rate map at each of T timesteps), ``batch_size`` B
  (no warm-up run: the rate-map rows before it warm everything up).

The model is ``--model`` (default: the embedded model). If it cannot be loaded, a 32x32 UNet2DModel with random
weights is used (the architecture of ``weights/unet/config.json`` if present, else a 1.1M-parameter reference one);
random weights cost the same time as trained ones. Results go to ``benchmarks/results/rates.json`` and ``rates.md``,
rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.errors import ModelLoadError  # noqa: E402
from pipeline.model import DEFAULT_MODEL_DIR, DiffusionModel, load_model, make_jvp_safe  # noqa: E402
from pipeline.rates import generation_curves, rate_map  # noqa: E402

#: A reference architecture (1.1M parameters, attention at 16x16 and in the 8x8 mid block).
REFERENCE_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
)


#: Row kinds, in the order they run.
ROW_KINDS = ("h", "jvp", "map", "curve")
_KIND_OF_ROW = {"h forward": "h", "h JVP": "jvp", "rate map": "map", "curve map": "curve"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="model source for load_model (fallback: random 32x32 UNet)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per h and JVP row")
    p.add_argument("--map-runs", type=int, default=3, help="timed runs per rate-map row")
    p.add_argument("--curve-runs", type=int, default=1, help="timed runs per curve-map row (each takes minutes)")
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--t", type=int, default=500, help="timestep of the single-t rows")
    p.add_argument("--patch-size", type=int, default=2, help="patch side in model-space pixels")
    p.add_argument("--timesteps", type=int, default=20, help="grid timesteps T of the curve map")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the machine is shared)")
    p.add_argument("--rows", default=",".join(ROW_KINDS), help=f"row kinds to run, comma-separated, of {ROW_KINDS}")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of the other kinds from the existing rates.json (same model and settings)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    return p.parse_args(argv)


def get_model(source: str) -> tuple[DiffusionModel, str]:
    """The model to time, and a sentence saying what it is."""
    try:
        model = load_model(source, device="cpu")
        return model, f"{source!r} (loaded with load_model)"
    except ModelLoadError as err:
        reason = str(err)
    from diffusers import DDPMScheduler, UNet2DModel

    cfg_path = DEFAULT_MODEL_DIR / "unet" / "config.json"
    if cfg_path.is_file():
        cfg = {k: v for k, v in json.loads(cfg_path.read_text()).items() if not k.startswith("_")}
        arch = f"the architecture of {cfg_path.relative_to(ROOT)}"
    else:
        cfg, arch = dict(REFERENCE_UNET), "a 1.1M-parameter 32x32 reference architecture"
    torch.manual_seed(0)
    unet = UNet2DModel(**cfg).eval().requires_grad_(False)
    make_jvp_safe(unet)
    model = DiffusionModel(unet=unet, alphas_cumprod=DDPMScheduler().alphas_cumprod.to(torch.float64).clone(),
                           source="random")
    n = sum(p.numel() for p in unet.parameters())
    return model, f"random-weight UNet2DModel ({n:,} parameters) with {arch}; {source!r} not loadable ({reason})"


def timed(fn, runs: int, *, warmup: bool = True) -> dict:
    """Median / min / max wall seconds of ``runs`` calls (after one warm-up call if ``warmup``), and the median
    process CPU seconds (less sensitive than wall time to other jobs on a shared machine)."""
    if warmup:
        fn()
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"runs": runs, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "cpu_median_s": statistics.median(cpu)}


def bench_image(size: int) -> np.ndarray:
    """A smooth background with a disk and a bar (uint8 (size, size, 3))."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.6 - 0.3 * xx * yy], axis=2)
    img[(xx - 0.35) ** 2 + (yy - 0.4) ** 2 < 0.04] = [0.9, 0.2, 0.1]
    img[(np.abs(yy - 0.75) < 0.06) & (xx > 0.5)] = [0.1, 0.3, 0.9]
    return (img * 255).round().astype(np.uint8)


def machine_info(threads: int) -> dict:
    from benchmarks.common import cpu_model

    cpu = cpu_model()
    import diffusers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
            "torch_threads": threads, "cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg()}


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "rates.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# Rates benchmark (eager PyTorch, CPU)",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Model: {result['model']}. Model space {result['model_space']}, h-space {result['h_shape']}, "
        f"t = {result['t']}, patch size {result['patch_size']} ({result['patches']} patches), "
        f"curve map on {result['timesteps']} timesteps.",
        "",
        f"Machine: {m['cpu']} ({m['cpu_count']} CPUs), torch {m['torch']} with {m['torch_threads']} thread(s), "
        f"diffusers {m['diffusers']}, Python {m['python']}. Load average at start {m['loadavg_start']}"
        + (f", at end {m['loadavg_end']}" if "loadavg_end" in m else "")
        + " (the machine is shared: other jobs ran during the benchmark; min and max show the spread).",
        "",
        "| row | B | batching | N | wall median | wall min | wall max | CPU median | per direction, wall / CPU "
        "| load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        per = f"{r['per_direction_ms']:.1f} / {r['cpu_per_direction_ms']:.1f} ms" if "directions" in r else ""
        lines.append(f"| {r['row']} | {r['batch']} | {r.get('batching', '')} | {r['runs']} | "
                     f"{_fmt(r['median_s'])} | {_fmt(r['min_s'])} | {_fmt(r['max_s'])} "
                     f"| {_fmt(r['cpu_median_s'])} | "
                     f"{per} | {r.get('loadavg_1min', '')} |")
    lines += ["", "B is the batch of the call (h, JVP) or the directions per JVP batch (maps). Wall is wall-clock "
              "time; CPU is the process CPU time (all threads), a better estimate of the cost on a quiet machine "
              "while the machine is shared (load = 1-minute load average after the row, on 2 cores). "
              "\"per direction\" is median time / JVP directions (curve maps include the DDIM inversion).", ""]
    if "merged_from" in result:
        lines += [f"Rows of other kinds than this command's were kept from an earlier run: "
                  f"`{result['merged_from']['command']}` (load average at its start "
                  f"{result['merged_from']['machine']['loadavg_start']}).", ""]
    (out / "rates.md").write_text("\n".join(lines))


def _per_direction(row: dict, directions: int) -> dict:
    """Add wall and CPU milliseconds per JVP direction to a timing row."""
    return {**row, "directions": directions, "per_direction_ms": row["median_s"] * 1e3 / directions,
            "cpu_per_direction_ms": row["cpu_median_s"] * 1e3 / directions}


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    kinds = [k for k in args.rows.split(",") if k]
    if not set(kinds) <= set(ROW_KINDS):
        raise SystemExit(f"--rows must name kinds of {ROW_KINDS}, got {args.rows!r}")
    model, description = get_model(args.model)
    s, c = model.sample_size, model.channels
    out = Path(args.out)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        h_shape = tuple(model.h(torch.zeros(1, c, s, s), args.t).shape[1:])
    patches = (s // args.patch_size) ** 2
    command = "nice -n 10 " + shlex.join([".venv/bin/python", "benchmarks/rates.py", *(argv or sys.argv[1:])])
    result = {"command": command, "model": description, "model_space": [c, s, s], "h_shape": list(h_shape),
              "t": args.t, "patch_size": args.patch_size, "patches": patches, "timesteps": args.timesteps,
              "machine": machine_info(args.threads), "rows": []}
    print(f"command: {command}\nmodel: {description}\nmachine: {result['machine']}", flush=True)
    if args.merge and (out / "rates.json").is_file():
        old = json.loads((out / "rates.json").read_text())
        same = ("model", "model_space", "t", "patch_size", "timesteps")
        if any(old.get(k) != result[k] for k in same):
            raise SystemExit(f"--merge: {out / 'rates.json'} has different settings ({', '.join(same)})")
        result["rows"] = [r for r in old["rows"] if _KIND_OF_ROW[r["row"]] not in kinds]
        result["merged_from"] = {"command": old["command"], "machine": old["machine"]}

    def add(row: dict) -> None:
        row["loadavg_1min"] = round(os.getloadavg()[0], 2)
        result["rows"].append(row)
        result["rows"].sort(key=lambda r: ROW_KINDS.index(_KIND_OF_ROW[r["row"]]))
        print(f"{row['row']:>10} B={row['batch']:<3} {row.get('batching', ''):>8} N={row['runs']} "
              f"median {_fmt(row['median_s'])} (min {_fmt(row['min_s'])}, max {_fmt(row['max_s'])}; "
              f"CPU {_fmt(row['cpu_median_s'])})", flush=True)
        write(out, result)

    for b in batches:
        x = torch.randn(b, c, s, s, generator=g)
        v = torch.randn(b, c, s, s, generator=g)
        with torch.no_grad():
            if "h" in kinds:
                add({"row": "h forward", "batch": b, **timed(lambda x=x: model.h(x, args.t), args.runs)})
            if "jvp" in kinds:
                add(_per_direction({"row": "h JVP", "batch": b, "batching": "func.jvp",
                                    **timed(lambda x=x, v=v: model.h_jvp(x, args.t, v), args.runs)}, b))
    x1 = torch.randn(1, c, s, s, generator=g)
    for b in batches if "map" in kinds else []:
        for batching in ("vmap", "repeat"):
            row = timed(lambda b=b, batching=batching: rate_map(model, x1, args.t, patch_size=args.patch_size,
                                                                batch_size=b, batching=batching), args.map_runs)
            add(_per_direction({"row": "rate map", "batch": b, "batching": batching, **row}, patches))
    if "curve" in kinds:
        image = bench_image(model.image_size)
        for b in batches:
            info = {}

            def curve(b=b, info=info):
                res = generation_curves(model, image, num_timesteps=args.timesteps, patch_size=args.patch_size,
                                        batch_size=b)
                info.update(batching=res.batching, evaluations=res.jvp_evaluations)

            row = timed(curve, args.curve_runs, warmup=False)  # earlier rows warmed everything up
            add(_per_direction({"row": "curve map", "batch": b, "batching": info["batching"], **row},
                               info["evaluations"]))
    result["machine"]["loadavg_end"] = os.getloadavg()
    write(out, result)
    print(f"wrote {out / 'rates.json'} and {out / 'rates.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
