"""Speed of the backends: h, h_jvp, eps, eps_jvp at batch 1 and 8, and a full rate map at one t.

    python benchmarks/accel.py [--model SRC] [--runs 20] [--skip-compile] [--threads 2]

Writes ``benchmarks/results/accel.json`` and ``accel.md`` and prints the command that reproduces them and the machine.
Backends: torch eager (``torch.func.jvp``), torch-compile (inductor; forward compiled directly, JVPs compiled from the
make_fx-traced graph), onnxruntime CPU (graphs exported on first use, cached). Every figure is the median of
``--runs`` timed calls after warm-up, measured in this run, with the backends called round-robin (one call of each in
turn) so that they share the machine's load; ratios are to torch eager in the same run. Also measured:
ONNX Runtime session options (graph optimisation level, intra-op threads, memory pattern) on the JVP graphs.

Targets (CPU): ORT JVP >= 3x faster than eager func.jvp at batch 1 and >= 2x at batch 8; a JVP costing <= 3 forwards
of the same graph (ORT h_jvp vs ORT h at the same batch); a rate map with many directions at one point costing
<= 1.5 forwards per direction (map time / (directions x per-image time of the ORT h forward at batch 8)).

Model: ``load_model("default")``; if the embedded weights are absent, ``runs/default32/pipeline`` (a checkpoint of the
default model's training run); else a 32x32 UNet2DModel with random weights (weights/unet/config.json if present,
else a 1.1M-parameter 32x32 reference architecture). The output says which.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

log = logging.getLogger("bench.accel")

TARGETS = {
    "ort_jvp_speedup_b1": 3.0,  # ORT h_jvp / eps_jvp vs eager func.jvp, batch 1: >= 3x
    "ort_jvp_speedup_b8": 2.0,  # batch 8: >= 2x
    "jvp_forwards": 3.0,  # ORT JVP time / ORT forward time at the same batch: <= 3
    "ratemap_forwards_per_direction": 1.5,  # <= 1.5
}


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------
def load_bench_model(source: str | None):
    """(model, description of where it came from)."""
    from pipeline import load_model
    from pipeline.errors import ModelLoadError

    if source:
        return load_model(source, device="cpu"), f"{source} (--model)"
    try:
        return load_model("default", device="cpu"), "embedded default model (weights/)"
    except ModelLoadError as err:
        log.warning("default model unavailable (%s)", err)
    ckpt = ROOT / "runs" / "default32" / "pipeline"
    if (ckpt / "model_index.json").is_file():
        return load_model(ckpt, device="cpu"), "runs/default32/pipeline (checkpoint of the default model's training)"
    import tempfile

    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    cfg_path = ROOT / "weights" / "unet" / "config.json"
    torch.manual_seed(0)
    if cfg_path.is_file():
        unet, what = UNet2DModel.from_config(json.loads(cfg_path.read_text())), "weights/unet/config.json"
    else:
        unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                           layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
        what = "the notes' section-2 architecture"
    folder = Path(tempfile.mkdtemp(prefix="bench_model_"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(folder)
    return load_model(folder, device="cpu"), f"random-weight 32x32 UNet2DModel from {what}"


# --------------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------------
def timeit_interleaved(fns: dict, runs: int, warmup: int = 3) -> dict:
    """Time the zero-argument callables ``fns`` (name -> fn) round-robin: ``warmup`` untimed rounds, then ``runs``
    rounds of one call each, so that load changes on a shared machine hit every entry alike. Per name: median,
    quartiles and min of the wall time (ms), and the median process CPU time (all threads) per call: on a loaded
    machine the wall time includes waiting for a core, the CPU time does not."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict = {k: [] for k in fns}
    cpu: dict = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            start, cstart = time.perf_counter(), time.process_time()
            fn()
            wall[k].append((time.perf_counter() - start) * 1e3)
            cpu[k].append((time.process_time() - cstart) * 1e3)
    out = {}
    for k, ts in wall.items():
        q = statistics.quantiles(ts, n=4)
        out[k] = {"median_ms": statistics.median(ts), "p25_ms": q[0], "p75_ms": q[2], "min_ms": min(ts),
                  "runs": runs, "cpu_median_ms": statistics.median(cpu[k])}
    return out


def timeit(fn, *args, runs: int, warmup: int = 3, **kwargs) -> dict:
    """:func:`timeit_interleaved` of the one call ``fn(*args, **kwargs)``."""
    return timeit_interleaved({"fn": lambda: fn(*args, **kwargs)}, runs, warmup)["fn"]


def machine_info(threads: int) -> dict:
    from benchmarks.common import cpu_model

    cpu = cpu_model()
    import onnxruntime

    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "threads": threads}
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------------------------
def inputs(model, B: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = model.sample_size
    x = torch.randn(B, model.channels, s, s, generator=g)
    v = torch.randn(B, model.channels, s, s, generator=g)
    t = torch.full((B,), 500, dtype=torch.long)
    return x, t, v


def bench_calls(backends: dict, model, runs: int, batches=(1, 8)) -> dict:
    """{backend name: {call_bB: timing}} for h, eps, h_jvp, eps_jvp; each call is timed on all backends
    round-robin (:func:`timeit_interleaved`), so the ratios between backends share the same machine load."""
    out: dict = {name: {} for name in backends}
    for B in batches:
        x, t, v = inputs(model, B)
        for g, args in (("h", (x, t)), ("eps", (x, t)), ("h_jvp", (x, t, v)), ("eps_jvp", (x, t, v))):
            fns = {name: (lambda b=b, g=g, args=args: getattr(b, g)(*args)) for name, b in backends.items()}
            with torch.no_grad():
                timed = timeit_interleaved(fns, runs)
            for name in backends:
                out[name][f"{g}_b{B}"] = timed[name]
            log.info("%s_b%d: %s", g, B, {k: round(v["median_ms"], 2) for k, v in timed.items()})
    return out


def bench_ort_options(model, artifacts, runs: int) -> list[dict]:
    """ORT session options on the JVP graph: optimisation level, intra-op threads, memory pattern."""
    from accel import get_backend

    rows = []
    for opt, threads, mem in [("all", 2, True), ("all", 2, False), ("all", 1, True), ("extended", 2, True),
                              ("basic", 2, True), ("disable", 2, True)]:
        b = get_backend(model, "onnxruntime", artifacts=artifacts, batch_sizes=(1, 8), optimization=opt,
                        threads=threads, mem_pattern=mem)
        row = {"optimization": opt, "threads": threads, "mem_pattern": mem}
        for B in (1, 8):
            x, t, v = inputs(model, B)
            row[f"h_jvp_b{B}"] = timeit(b.h_jvp, x, t, v, runs=runs)["median_ms"]
        rows.append(row)
        log.info("ORT options %s", row)
    return rows


def ort_op_profile(path: Path, threads: int, batch: int = 8, runs: int = 10) -> dict:
    """ONNX Runtime's own profile of one graph: {"total_ms": kernel time per run, "ops": {op type: [ms per run,
    nodes]}} over ``runs`` runs with random inputs (dynamic batch dimensions set to ``batch``)."""
    import collections
    import tempfile

    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="ort_profile_")) / "profile")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in i.shape]
        feeds[i.name] = (np.full(shape, 500, np.int64) if "int" in i.type
                         else rng.standard_normal(shape).astype(np.float32))
    for _ in range(runs):
        sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    dur, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            dur[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    return {"total_ms": sum(dur.values()) / runs / 1e3, "runs": runs, "batch": batch,
            "ops": {k: [v / runs / 1e3, count[k] // runs] for k, v in dur.most_common()}}


def bench_rate_map(model, ort, runs: int, patch_size: int, t: int = 500) -> dict:
    """A full direct rate map at one t: K = (H / patch)^2 directions at one point."""
    from accel import get_backend
    from pipeline import rates

    x = inputs(model, 1, seed=1)[0]
    K = (model.sample_size // patch_size) ** 2
    out = {"directions": K, "patch_size": patch_size, "t": t}
    ort_repeat = get_backend(model, "onnxruntime", artifacts=ort.artifacts, batch_sizes=ort.batch_sizes,
                             point_graph=False, threads=ort.threads)
    n = max(5, runs // 4)  # the torch maps take seconds each
    rm = rates.rate_map
    with torch.no_grad():
        out["torch_vmap"] = timeit(rm, model, x, t, patch_size=patch_size, runs=n, warmup=1)
        out["torch_repeat"] = timeit(rm, model, x, t, patch_size=patch_size, batching="repeat", runs=n, warmup=1)
        out["ort_repeat_h_jvp"] = timeit(rm, ort_repeat, x, t, patch_size=patch_size, batch_size=8, runs=runs,
                                         warmup=2)
        out["ort_point_graph"] = timeit(rm, ort, x, t, patch_size=patch_size, batch_size=8, runs=runs, warmup=2)
        m1 = rates.rate_map(ort, x, t, patch_size=patch_size)
        m0 = rates.rate_map(model, x, t, patch_size=patch_size)
    out["max_rel_error_ort_vs_torch"] = float((m1 - m0).abs().max() / m0.abs().max())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model source (default: see the module docstring)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per figure (>= 20)")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    p.add_argument("--artifacts", default=None, help="artifact directory (default: the cache)")
    p.add_argument("--jobs", type=int, default=1, help="processes for exporting missing graphs (first run only)")
    p.add_argument("--skip-compile", action="store_true", help="skip torch-compile (minutes of compilation on CPU)")
    p.add_argument("--skip-options", action="store_true", help="skip the ORT session-option sweep")
    p.add_argument("--skip-profile", action="store_true", help="skip the ORT per-operator profile of eps/eps_jvp")
    p.add_argument("--patch-size", type=int, default=4, help="rate-map patch size (directions = (size/patch)^2)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    p.add_argument("--name", default="accel", help="results file stem: <out>/<name>.json and .md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = "python benchmarks/accel.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    torch.set_num_threads(args.threads)
    from accel import get_backend

    model, model_desc = load_bench_model(args.model)
    info = machine_info(args.threads)
    log.info("model: %s; machine: %s", model_desc, info)
    results: dict = {"command": command, "machine": info, "model": model_desc,
                     "parameters": sum(p.numel() for p in model.unet.parameters()), "runs": args.runs,
                     "targets": TARGETS, "backends": {}, "compile_seconds": {}, "notes": []}

    backends = {"torch": get_backend(model, "torch")}

    start = time.perf_counter()
    ort = get_backend(model, "onnxruntime", artifacts=args.artifacts, batch_sizes=(1, 8), threads=args.threads)
    ort.prepare(("h", "h_jvp", "eps", "eps_jvp", "h_jvp_point"), jobs=args.jobs)
    results["compile_seconds"]["onnxruntime (export or cache load)"] = round(time.perf_counter() - start, 1)
    backends["onnxruntime"] = ort
    results["ort_running_on"] = ort.running_on

    if not args.skip_compile:
        comp = get_backend(model, "torch-compile", batch_sizes=(1, 8))
        for B in (1, 8):  # first calls compile: time them separately
            x, t, v = inputs(model, B)
            for name, call in (("h", (x, t)), ("eps", (x, t)), ("h_jvp", (x, t, v)), ("eps_jvp", (x, t, v))):
                start = time.perf_counter()
                with torch.no_grad():
                    getattr(comp, name)(*call)
                results["compile_seconds"][f"torch-compile {name}_b{B}"] = round(time.perf_counter() - start, 1)
                log.info("torch-compile %s_b%d compiled in %.1f s", name, B, time.perf_counter() - start)
        backends["torch-compile"] = comp
        results["notes"].append(comp.info["jvp"])
    results["backends"] = bench_calls(backends, model, args.runs)

    if not args.skip_options:
        results["ort_options"] = bench_ort_options(model, ort.artifacts, args.runs)
    results["rate_map"] = bench_rate_map(model, ort, args.runs, args.patch_size)
    if not args.skip_profile:
        from export.cache import model_cache_dir

        folder = ort.artifacts or model_cache_dir(ort.weights)
        results["ort_profile"] = {f: ort_op_profile(folder / f, args.threads)
                                  for f in ("eps.onnx", "eps_jvp_b8.onnx")}
    results["summary"] = summarise(results)
    write(results, Path(args.out), args.name)
    print(f"\nreproduce: {command}\nmachine: {json.dumps(info)}\nmodel: {model_desc}")
    print((Path(args.out) / f"{args.name}.md").read_text())
    return 0


# --------------------------------------------------------------------------------------------------------------------
# Summary and report
# --------------------------------------------------------------------------------------------------------------------
def summarise(r: dict) -> dict:
    be = r["backends"]
    med = lambda b, k: be[b][k]["median_ms"]  # noqa: E731
    s: dict = {"ratios_to_torch_eager": {}}
    for b in be:
        s["ratios_to_torch_eager"][b] = {k: med("torch", k) / med(b, k) for k in be[b]}
    checks = []
    for B, target in ((1, TARGETS["ort_jvp_speedup_b1"]), (8, TARGETS["ort_jvp_speedup_b8"])):
        for g in ("h_jvp", "eps_jvp"):
            sp = med("torch", f"{g}_b{B}") / med("onnxruntime", f"{g}_b{B}")
            checks.append({"target": f"ORT {g} >= {target:g}x faster than eager func.jvp at batch {B}",
                           "value": f"{sp:.2f}x", "met": sp >= target})
    for b, label in (("onnxruntime", "ORT"), ("torch-compile", "torch-compile")):
        if b not in be:
            continue
        for B in (1, 8):
            for g, f in (("h_jvp", "h"), ("eps_jvp", "eps")):
                ratio = med(b, f"{g}_b{B}") / med(b, f"{f}_b{B}")
                checks.append({"target": f"{label} {g} <= {TARGETS['jvp_forwards']:g} forwards ({f}) at batch {B}",
                               "value": f"{ratio:.2f} forwards", "met": ratio <= TARGETS["jvp_forwards"]})
    rm = r["rate_map"]
    per_image_fwd = med("onnxruntime", "h_b8") / 8
    for key in ("ort_point_graph", "ort_repeat_h_jvp", "torch_vmap"):
        fwd = rm[key]["median_ms"] / rm["directions"] / per_image_fwd
        rm[f"{key}_forwards_per_direction"] = fwd
        rm[f"{key}_forwards_per_direction_vs_b1"] = rm[key]["median_ms"] / rm["directions"] / med("onnxruntime", "h_b1")
    v = rm["ort_point_graph_forwards_per_direction"]
    checks.append({"target": f"rate map ({rm['directions']} directions at one point) <= "
                             f"{TARGETS['ratemap_forwards_per_direction']:g} forwards per direction",
                   "value": f"{v:.2f} forwards/direction (ORT h_jvp_point; forward = ORT h at batch 8 per image)",
                   "met": v <= TARGETS["ratemap_forwards_per_direction"]})
    s["targets"] = checks
    return s


def write(r: dict, out: Path, name: str = "accel") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(r, indent=1, default=str))
    be, rm = r["backends"], r["rate_map"]
    keys = [f"{g}_b{B}" for B in (1, 8) for g in ("h", "h_jvp", "eps", "eps_jvp")]
    lines = [
        "# Backend speed (benchmarks/accel.py)",
        "",
        f"Reproduce: `{r['command']}`",
        "",
        f"Model: {r['model']} ({r['parameters']:,} parameters). Machine: {r['machine']['cpu']}, "
        f"{r['machine']['logical_cpus']} logical CPUs, {r['machine']['threads']} threads for torch and ONNX Runtime, "
        f"torch {r['machine']['torch']}, onnxruntime {r['machine']['onnxruntime']}. Load average at start: "
        f"{r['machine'].get('loadavg_at_start')}. Median of {r['runs']} runs after warm-up, backends "
        "called round-robin, ms (ratio to torch eager in this run in brackets; >1 is faster).",
        "",
        "| call | " + " | ".join(be) + " |",
        "|---|" + "---|" * len(be),
    ]
    for stat in ("median_ms", "cpu_median_ms"):
        if stat == "cpu_median_ms":
            lines += ["", "CPU time per call (process time, all threads; median), ms:", "",
                      "| call | " + " | ".join(be) + " |", "|---|" + "---|" * len(be)]
        for k in keys:
            cells = []
            for b in be:
                ms = be[b][k][stat]
                cells.append(f"{ms:.2f}" + ("" if b == "torch" else f" ({be['torch'][k][stat] / ms:.2f}x)"))
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "JVPs in torch eager are `torch.func.jvp`. First-call costs (export or compile), s: "
              + ", ".join(f"{k} {v}" for k, v in r["compile_seconds"].items()) + ".", ""]
    lines += [f"## Rate map: {rm['directions']} directions (patch {rm['patch_size']}) at one point, t={rm['t']}", "",
              "| method | ms per map | ms per direction | forwards per direction (ORT h b8 per image / b1) |",
              "|---|---|---|---|"]
    for key, label in (("torch_vmap", "torch eager, vmap over func.jvp tangents (rates default)"),
                       ("torch_repeat", "torch eager, x repeated (func.jvp)"),
                       ("ort_repeat_h_jvp", "ORT h_jvp, x repeated (batch 8)"),
                       ("ort_point_graph", "ORT h_jvp_point (one x, 8 tangents per call)")):
        ms = rm[key]["median_ms"]
        fpd = rm.get(f"{key}_forwards_per_direction")
        fpd1 = rm.get(f"{key}_forwards_per_direction_vs_b1")
        extra = "" if fpd is None else f"{fpd:.2f} / {fpd1:.2f}"
        lines.append(f"| {label} | {ms:.1f} | {ms / rm['directions']:.2f} | {extra} |")
    lines += ["", f"ORT vs torch rate map: max relative error {rm['max_rel_error_ort_vs_torch']:.1e}.", ""]
    if "ort_options" in r:
        lines += ["## ONNX Runtime session options (h_jvp, ms)", "",
                  "| optimisation | threads | memory pattern | h_jvp b1 | h_jvp b8 |", "|---|---|---|---|---|"]
        for row in r["ort_options"]:
            lines.append(f"| {row['optimization']} | {row['threads']} | {row['mem_pattern']} | "
                         f"{row['h_jvp_b1']:.2f} | {row['h_jvp_b8']:.2f} |")
        lines.append("")
    if r.get("ort_profile"):
        prof = r["ort_profile"]
        names = list(prof)
        ops = sorted({o for p in prof.values() for o in p["ops"]},
                     key=lambda o: -max(p["ops"].get(o, [0, 0])[0] for p in prof.values()))
        lines += [f"## Where ONNX Runtime spends the time (its profiler; ms per run, batch "
                  f"{prof[names[0]]['batch']}, nodes in brackets)", "",
                  "| operator | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines.append("| all kernels | " + " | ".join(f"{prof[n]['total_ms']:.1f}" for n in names) + " |")
        for o in ops[:12]:
            lines.append(f"| {o} | " + " | ".join(
                f"{prof[n]['ops'][o][0]:.1f} ({prof[n]['ops'][o][1]})" if o in prof[n]["ops"] else "-"
                for n in names) + " |")
        lines.append("")
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for c in r["summary"]["targets"]:
        lines.append(f"| {c['target']} | {c['value']} | {'yes' if c['met'] else 'NO'} |")
    for n in r.get("notes", []):
        lines += ["", f"Note: {n}"]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
