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

Where a call would push the run past ``--time-limit``, it is not run and the row says so.

``--parts`` picks what runs (default ``calls,export,ort``); a subset replaces only its own rows in an existing
``scale.json``, the others are kept:

- ``calls``: the rows above;
- ``export``: ``python -m export --model DIR/<arch> --out EXPORT/<arch> --batch-sizes 1`` (``h``, ``h_jvp``, ``eps``,
  ``eps_jvp``), each graph in a child process under the memory and time watchdog of :mod:`export.watch`
  (``--max-rss-gib``, ``--graph-timeout``), the whole export under ``--export-limit`` seconds: per graph its export
  + parity-check time, file sizes, peak resident memory and the parity result; a graph stopped or failed is reported
  with its measured peak and time;
- ``compile``: ``eps``, ``eps_jvp``, ``h`` and ``h_jvp`` at batch 1 with torch.compile (inductor; the JVPs from the
  make_fx-traced graph) and in eager PyTorch, alternating, in one watched process per architecture: each graph's
  first call (its compile, with an empty inductor cache of its own: what a fresh machine pays) and the JVP/forward
  ratios; a graph whose compile would start past ``--time-limit`` is reported as not compiled;
- ``batch``: ``h``, ``eps``, ``h_jvp`` and ``eps_jvp`` in eager PyTorch at batch 1 and 8 (``--dtype``), in a
  watched process per architecture: seconds, seconds per sample, peak memory; a batch over the model's batch limit
  in parts of the limit;
- ``jvp``: the relative error of h and of the JVP ``D h_t(x)[v]`` in float32 and bfloat16 against float64
  (``benchmarks.reference.jvp_relative_errors``: one point, t = 500, batch 1), with each dtype's JVP time, in a
  watched child per architecture; SD 1.5 at a 32x32 latent (``--jvp-sizes``; the float64 copy of its U-Net alone is
  6.9 GB);
- ``ort``: for each exported architecture, ``eps``, ``eps_jvp``, ``h`` and ``h_jvp`` at batch 1 on ONNX Runtime (the
  exported files, through :class:`accel.ort_backend.OnnxRuntimeBackend`; a graph that did not export runs in PyTorch
  and says so) and in eager PyTorch, alternating, in one process: the JVP/forward ratios of each.

Results: ``--out`` (default ``benchmarks/results/scale.md`` and ``.json``). Random weights: the figures are costs,
not image quality.
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
import tempfile
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
    import numpy as np

    from pipeline import load_model
    from pipeline.rates import DEFAULT_BATCH_SIZE, generation_curves, patch_size_for_grid, rate_map
    from ui.config import DEFAULT_PATCH_GRID

    t_start = time.perf_counter()
    report: dict = {"arch": arch, "dtype": dtype, "rows": []}

    def row(name: str, fn, *, est_s: float | None = None) -> float | None:
        left = time_limit - (time.perf_counter() - t_start)
        if est_s is not None and est_s > left:
            report["rows"].append({"call": name, "skipped": f"estimated {est_s:.0f} s ({est_s / 3600:.1f} h; from the "
                                   f"rows above), {left:.0f} s left of --time-limit", "estimate_s": est_s})
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
    point_s = row(f"h_jvp_point x{n}", point, est_s=n * (h_s if h_s is not None else h_est))
    # the curves tab's maps at its default grid (8 x 8 patches of model space on any model)
    grid = DEFAULT_PATCH_GRID
    patch = patch_size_for_grid(m.sample_size, grid)
    point_est = point_s if point_s is not None else n * (h_s if h_s is not None else h_est)
    map_est = grid**2 / n * point_est

    def one_map():
        rate_map(m, x, t, patch_size=patch)
        return {"grid": grid, "patch_size": patch, "directions": grid**2}

    map_s = row(f"rate map {grid}x{grid}", one_map, est_s=map_est)
    steps = 10
    image = np.random.default_rng(0).integers(0, 256, (m.image_size, m.image_size, 3), dtype=np.uint8)

    def curve_map():
        generation_curves(m, image, num_timesteps=steps, patch_size=patch)
        return {"grid": grid, "patch_size": patch, "directions": steps * grid**2, "timesteps": steps}

    # the curves: a rate map per timestep, plus the DDIM inversion to reach each (one eps per step)
    row(f"curve map {steps} timesteps {grid}x{grid}", curve_map,
        est_s=steps * ((map_s if map_s is not None else map_est) + (eps_s or 0.0)))
    report["total_s"] = time.perf_counter() - t_start
    return report


#: Batch sizes of the ``batch`` part.
BATCH_SIZES = (1, 8)


def batch_worker(arch: str, folder: str, dtype: str, time_limit: float) -> dict:
    """``h``, ``eps``, ``h_jvp`` and ``eps_jvp`` in eager PyTorch at each of :data:`BATCH_SIZES`, in this process,
    after one untimed batch-1 call of each (the first call's one-off costs): seconds, seconds per sample and the
    call's peak resident set. A batch over the model's batch limit (:func:`pipeline.memory.max_batch`) runs in parts
    of the limit, one after the other, as the tasks run it. A call whose estimate (the batch-1 time times the batch)
    would pass ``time_limit`` is reported as not run."""
    import torch

    sys.path.insert(0, str(ROOT))
    from pipeline import load_model

    t_start = time.perf_counter()
    m = load_model(folder, device="cpu", dtype=dtype)
    limit = m.max_batch()
    shape = (m.channels, m.sample_size, m.sample_size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(max(BATCH_SIZES), *shape, generator=gen).to(m.dtype)
    v = torch.randn(max(BATCH_SIZES), *shape, generator=gen).to(m.dtype)
    t = m.num_train_timesteps // 2
    fns = {"h": lambda b: m.h(x[:b], t), "eps": lambda b: m.eps(x[:b], t),
           "h_jvp": lambda b: m.h_jvp(x[:b], t, v[:b]), "eps_jvp": lambda b: m.eps_jvp(x[:b], t, v[:b])}
    rep: dict = {"arch": arch, "dtype": dtype, "limit": limit, "rows": [],
                 "setup_s": time.perf_counter() - t_start}
    one: dict = {}
    for g, fn in fns.items():
        with torch.no_grad():
            fn(1)  # untimed: the first call's one-off costs
        for b in BATCH_SIZES:
            left = time_limit - (time.perf_counter() - t_start)
            est = b * one.get(g, 0.0)
            if est > left:
                rep["rows"].append({"call": g, "batch": b, "skipped": f"estimated {est:.0f} s, {left:.0f} s left"})
                continue
            step = min(b, limit) if limit else b
            Path("/proc/self/clear_refs").write_text("5")
            t0 = time.perf_counter()
            with torch.no_grad():
                for i in range(0, b, step):
                    fn(min(step, b - i))
            sec = time.perf_counter() - t0
            one.setdefault(g, sec / b)
            rep["rows"].append({"call": g, "batch": b, "seconds": sec, "per_sample_s": sec / b,
                                "parts": -(-b // step), "peak_rss_gib": _gib(_kib("VmHWM"))})
            print(f"{arch:>10} batch {g} x{b}: {sec:.1f} s, peak {_gib(_kib('VmHWM')):.2f} GiB", flush=True)
    rep["total_s"] = time.perf_counter() - t_start
    return rep


EXPORT_GRAPHS = ("h", "h_jvp", "eps", "eps_jvp")
#: Export order: the largest graph first (whether it fits is the question), then the forwards the ratios need.
EXPORT_ORDER = ("eps_jvp", "eps", "h_jvp", "h")
GIB = 2**30


def _phases(record: dict) -> dict:
    """{phase: [seconds, peak GiB]} of the export and check children, from a manifest artifact's ``extra`` or a
    failure record ({} for a graph exported and checked in one child)."""
    return {ph: [float(record[f"{ph}_seconds"]), float(record[f"{ph}_peak_rss_gib"])]
            for ph in ("export", "check") if f"{ph}_seconds" in record}


def export_arch(arch: str, folder: Path, out: Path, *, max_rss_gib: float, graph_timeout: float,
                limit_s: float, graphs: tuple[str, ...] = EXPORT_ORDER, previous: dict | None = None) -> dict:
    """``python -m export`` of one architecture (each graph in a watched child); -> its report.

    All graphs: a fresh export folder. A subset (``--export-graphs``): the other graphs' artifacts and failures in
    the folder are kept and reported, and the totals add up both runs (``previous``: the earlier report)."""
    sys.path.insert(0, str(ROOT))
    import shutil

    from export.watch import describe, run_watched

    fresh = set(graphs) == set(EXPORT_ORDER)
    if fresh:
        shutil.rmtree(out, ignore_errors=True)  # every figure from this run: no artifact of an earlier one counts
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    rep: dict = {"arch": arch, "seconds": 0.0, "peak_rss_gib": 0.0, "graphs": [], "commands": []}
    for g in [g for g in EXPORT_ORDER if g in graphs]:  # one call per graph: the most telling graph first
        left = limit_s - rep["seconds"]
        if left < 30:
            rep["stopped"] = f"the architecture's export budget of {limit_s:.0f} s was spent"
            break
        cmd = [sys.executable, "-m", "export", "--model", str(folder), "--out", str(out), "--batch-sizes", "1",
               "--graphs", g, "--device", "cpu", "--force", "--max-rss-gib", str(max_rss_gib),
               "--graph-timeout", str(round(min(graph_timeout, left)))]
        print(f"{arch:>10} export: {shlex.join(cmd)}", flush=True)
        outer = 2 * round(min(graph_timeout, left)) + 120  # the export child, then the check child
        w = run_watched(cmd, max_rss_bytes=int((max_rss_gib + 1) * GIB), timeout_s=outer, cwd=ROOT, env=env)
        public = ["DIR/" + arch if c == str(folder) else "EXPORT/" + arch if c == str(out) else c for c in cmd[1:]]
        rep["commands"].append("python " + shlex.join(public))
        rep["seconds"] += w.seconds
        rep["peak_rss_gib"] = max(rep["peak_rss_gib"], w.peak_rss_bytes / GIB)
        if not w.ok and w.returncode != 2:
            rep.setdefault("errors", {})[g] = describe(w, max_rss_bytes=int((max_rss_gib + 1) * GIB),
                                                       timeout_s=outer)
        print(f"{arch:>10} export {g}: {w.seconds:.0f} s, peak {w.peak_rss_bytes / GIB:.2f} GiB, "
              f"rc {w.returncode}", flush=True)
    try:
        man = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        man = {"artifacts": {}, "failures": {}}
    for g in EXPORT_GRAPHS:
        name = f"{g}.onnx" if g in ("h", "eps") else f"{g}_b1.onnx"
        art, fail = man["artifacts"].get(name), man.get("failures", {}).get(name)
        if art is not None:
            sizes = {f: (out / f).stat().st_size for f in art["files"] if (out / f).is_file()}
            check = art["checks"][0] if art["checks"] else None
            rep["graphs"].append({
                "graph": name, "seconds": float(art["extra"].get("wall_seconds", art["seconds"])),
                "export_check_seconds": art["seconds"],
                "peak_rss_gib": float(art["extra"].get("peak_rss_gib", "nan")), "files": sizes,
                "parity": None if check is None else {"passed": check["passed"], "max_rel": check["max_rel"],
                                                      "batches": check["batches"], "seconds": check["seconds"]},
                "phases": _phases(art["extra"])})
        elif fail is not None:
            rep["graphs"].append({"graph": name, "failed": fail["reason"], "seconds": fail.get("seconds"),
                                  "peak_rss_gib": fail.get("peak_rss_bytes", 0) / GIB, "phases": _phases(fail)})
        else:
            why = rep.get("errors", {}).get(g) or rep.get("stopped") or "the export ended before it"
            rep["graphs"].append({"graph": name, "failed": "not reached: " + why})
    if not fresh and previous:
        first = (previous.get("command") or "").strip("`")  # the rendered command of a single run
        rep["runs"] = previous.get("runs", [{"command": first, "seconds": previous["seconds"]}])
        rep["seconds_this_run"] = rep["seconds"]
        rep["seconds"] += previous["seconds"]
        rep["peak_rss_gib"] = max(rep["peak_rss_gib"], previous["peak_rss_gib"])
        if previous.get("stopped") and not rep.get("stopped"):
            rep["stopped"] = "first run: " + previous["stopped"]
    return rep


#: The environment that gives a process's large allocations transparent huge pages: glibc's malloc then advises
#: the kernel to back its memory maps with 2 MiB pages (when the kernel's THP mode is ``always`` or ``madvise``), so
#: each new 512 MiB tensor of SD 1.5's attention costs 256 page faults instead of 131,072.
HUGEPAGES_ENV = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"


def _hugepages_env() -> dict[str, str]:
    name, value = HUGEPAGES_ENV.split("=", 1)
    old = os.environ.get(name)
    return {name: value if not old else f"{old}:{value}"}


def _thp_mode() -> str:
    """The kernel's transparent huge page mode (the bracketed word of its sysfs file), or "unknown"."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    found = re.search(r"\[(\w+)\]", text)
    return found.group(1) if found else "unknown"


def _ort_key(rep: dict) -> tuple[str, bool]:
    return rep["arch"], bool(rep.get("hugepages"))


def ort_worker(arch: str, folder: str, artifacts: str, reps: int, time_limit: float) -> dict:
    """ONNX Runtime beside eager PyTorch at batch 1, in this process: per graph the median seconds -> report.

    One session at a time: each graph's session is made, warmed up (with more than one round), timed against eager
    PyTorch in alternation, and freed before the next graph's, so the process holds the model and one session (SD 1.5's
    four sessions together with its model pass 16 GiB)."""
    import gc
    import statistics

    import torch

    sys.path.insert(0, str(ROOT))
    from accel.ort_backend import OnnxRuntimeBackend
    from export.manifest import Manifest
    from export.trace import graph_function
    from pipeline import load_model

    t_start = time.perf_counter()
    m = load_model(folder, device="cpu")
    size = (m.sample_size, m.sample_size)
    backend = OnnxRuntimeBackend(m, artifacts=artifacts, batch_sizes=(1,), check=False,
                                 threads=torch.get_num_threads())
    man = Manifest.load(artifacts)
    rep: dict = {"arch": arch, "threads": torch.get_num_threads(), "graphs": {}, "fallback": {},
                 "sessions": "one at a time"}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, m.channels, *size, generator=gen)
    v = torch.randn(1, m.channels, *size, generator=gen)
    tt = torch.full((1,), m.num_train_timesteps // 2, dtype=torch.long)
    warm = 1 if reps > 1 else 0  # a first round warms up (session arenas, first-call allocations), not counted
    rep["warmup_rounds"] = warm
    rounds = []
    for g in EXPORT_GRAPHS:
        batch = None if g in ("h", "eps") else 1
        spec = backend.spec(g, batch, size)
        name = spec.name + ".onnx"
        times: dict = {"ort": [], "eager": []}
        if name not in man.artifacts:
            rep["fallback"][g] = man.failures.get(name, {}).get("reason", "not exported")
            rep["graphs"][g] = {"ort": None, "eager": None}
            continue
        # the exported file as it is (its key is not re-derived: the code may have moved)
        backend._handles[(g, batch, size)] = (spec, backend._load(spec, Path(artifacts) / name))
        args = (x, tt) if g in ("h", "eps") else (x, tt, v)
        for r in range(reps + warm):
            for engine in ("ort", "eager"):
                t0 = time.perf_counter()
                with torch.no_grad():
                    if engine == "ort":
                        backend._run(g, batch, size, *args)
                    else:
                        graph_function(m, g)(*args)
                if r >= warm:
                    times[engine].append(time.perf_counter() - t0)
            if r >= warm and time.perf_counter() - t_start > time_limit:
                break
        backend._handles.pop((g, batch, size))
        gc.collect()  # the session goes before the next graph's
        rep["graphs"][g] = {e: statistics.median(t) if t else None for e, t in times.items()}
        rounds.append(len(times["ort"]))
        print(f"{arch:>10} ort {g}: {rep['graphs'][g]} ({time.perf_counter() - t_start:.0f} s)", flush=True)
    rep["rounds"] = min(rounds) if rounds else 0
    _ratios(rep, "ort")
    rep["total_s"] = time.perf_counter() - t_start
    return rep


def compile_worker(arch: str, folder: str, reps: int, time_limit: float) -> dict:
    """torch.compile (inductor; the JVPs from the make_fx-traced aten graph, :class:`accel.torch_backend.
    CompiledTorchBackend`) beside eager PyTorch at batch 1, in this process: each graph's first call (the compile)
    and the median of the timed rounds -> report. A graph whose compile would start past ``time_limit`` is not
    compiled and says so."""
    import statistics

    import torch

    sys.path.insert(0, str(ROOT))
    from accel.torch_backend import CompiledTorchBackend
    from export.trace import graph_function
    from pipeline import load_model

    t_start = time.perf_counter()
    m = load_model(folder, device="cpu")
    backend = CompiledTorchBackend(m, batch_sizes=(1,))
    size = (m.sample_size, m.sample_size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, m.channels, *size, generator=gen)
    v = torch.randn(1, m.channels, *size, generator=gen)
    tt = torch.full((1,), m.num_train_timesteps // 2, dtype=torch.long)
    calls = {"h": backend._h, "eps": backend._eps, "h_jvp": backend._h_jvp, "eps_jvp": backend._eps_jvp}
    rep: dict = {"arch": arch, "threads": torch.get_num_threads(), "graphs": {}, "fallback": {}, "first_call_s": {}}
    for g in ("h", "h_jvp", "eps", "eps_jvp"):  # first calls: the compiles, cheapest first
        if time.perf_counter() - t_start > time_limit:
            rep["fallback"][g] = f"not compiled: the time limit of {time_limit:.0f} s was spent on the others"
            continue
        t0 = time.perf_counter()
        calls[g](x, tt) if g in ("h", "eps") else calls[g](x, tt, v)
        rep["first_call_s"][g] = time.perf_counter() - t0
        print(f"{arch:>10} compile {g}: first call {rep['first_call_s'][g]:.0f} s", flush=True)
    times: dict = {(e, g): [] for e in ("compile", "eager") for g in EXPORT_GRAPHS}
    for r in range(reps):
        for g in EXPORT_GRAPHS:
            if g in rep["fallback"]:
                continue
            args = (x, tt) if g in ("h", "eps") else (x, tt, v)
            for engine, fn in (("compile", calls[g]), ("eager", graph_function(m, g))):
                t0 = time.perf_counter()
                with torch.no_grad():
                    fn(*args)
                times[(engine, g)].append(time.perf_counter() - t0)
        print(f"{arch:>10} compile round {r}: {time.perf_counter() - t_start:.0f} s", flush=True)
        if time.perf_counter() - t_start > time_limit:
            break
    for g in EXPORT_GRAPHS:
        rep["graphs"][g] = {e: statistics.median(times[(e, g)]) if times[(e, g)] else None
                            for e in ("compile", "eager")}
    rep["rounds"] = max(len(v) for v in times.values())
    rep["warmup_rounds"] = 1  # the first calls above
    _ratios(rep, "compile")
    rep["total_s"] = time.perf_counter() - t_start
    return rep


def _stopped_compile(output: str, why: str, command: str) -> str:
    """The error of a compile worker that did not finish: ``why`` (from :func:`export.watch.describe`), the first
    calls (compiles) it had printed before it stopped, and the command that reproduces it."""
    firsts = [ln.split(" compile ", 1)[1] for ln in output.splitlines() if " compile " in ln and ": first call " in ln]
    return "; ".join([why] + (["compiled before it stopped: " + ", ".join(firsts)] if firsts else [])
                     + [f"reproduce: `{command}`"])


def _ratios(rep: dict, engine: str) -> None:
    """``ratio_{eps,h}_{engine,eager}``: each JVP's median over its forward's (None where either is missing)."""
    for e in (engine, "eager"):
        for a in ("eps", "h"):
            num, den = rep["graphs"][f"{a}_jvp"][e], rep["graphs"][a][e]
            rep[f"ratio_{a}_{e}"] = num / den if num is not None and den is not None else None


def _run_worker(cmd: list[str], *, max_rss_gib: float, timeout_s: float, env: dict | None = None,
                echo: bool = True, require_ok: bool = True) -> tuple[dict | None, object, str]:
    """Run a ``--*-worker`` command under :func:`export.watch.run_watched` (killed past ``max_rss_gib`` resident or
    ``timeout_s``) -> (its last ``REPORT`` line as a dict, or None; the :class:`export.watch.Watched`; why it gave
    no report, from :func:`export.watch.describe`, or ""). ``echo`` writes the worker's output to stdout;
    ``require_ok=False`` takes a report from a worker that exited badly after printing it."""
    from export.watch import describe, run_watched

    w = run_watched(cmd, max_rss_bytes=int(max_rss_gib * GIB), timeout_s=timeout_s, cwd=ROOT, env=env)
    if echo:
        sys.stdout.write(w.output)
    found = [ln for ln in w.output.splitlines() if ln.startswith("REPORT ")]
    if found and (w.ok or not require_ok):
        return json.loads(found[-1][len("REPORT "):]), w, ""
    return None, w, describe(w, max_rss_bytes=int(max_rss_gib * GIB), timeout_s=timeout_s)


def _public_command(info: dict) -> str:
    """The reproducing command with this machine's reference folder written as ``DIR``."""
    args = shlex.split(info["command"])
    for flag, placeholder in (("--folders", "DIR"), ("--export-dir", "EXPORT")):
        if flag in args:
            args[args.index(flag) + 1] = placeholder
    return shlex.join(args)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < GIB else f"{n / GIB:.2f} GiB"


def _phase_note(phases: dict | None) -> str:
    return "; ".join(f"{ph} {sec:.0f} s, peak {peak:.2f} GiB" for ph, (sec, peak) in (phases or {}).items())


def _export_markdown(sec: dict) -> list[str]:
    lim = sec["limits"]
    lines = ["", "## Export (ONNX, batch-1 JVP graphs, each checked against PyTorch)", "",
             f"Last command: `{sec['command']}`; each architecture's (whole export) row says the command(s) "
             "that reproduce its rows (`DIR` as above; the exports go to `DIR/exports/<arch>` unless "
             "`--export-dir EXPORT` says otherwise).", "",
             f"Machine: {sec['machine']}; load average (1 min) {sec['load'][0]:.1f} at start, "
             f"{sec['load_end'][0]:.1f} at end. Each graph is exported by `python -m export --max-rss-gib "
             f"{lim['max_rss_gib']:g} --graph-timeout {lim['graph_timeout_s']:g}` in a child process of its own "
             f"(stopped past {lim['max_rss_gib']:g} GiB resident or {lim['graph_timeout_s']:g} s), the whole export "
             f"of an architecture within {lim['export_limit_s']:g} s" + lim.get("note", "")
             + ". Seconds: the children's wall time (load, trace, export, parity check); peak: the largest "
             "resident set (the weights included). Where the notes split the export and the check, they ran in two "
             "children (the export, then the check in a fresh process: `python -m export` since the check child "
             "was added); otherwise one child did both. The parity check "
             "runs each graph in ONNX Runtime and in eager PyTorch on two random inputs (dynamic graphs: batch 1 "
             "and 8); max rel = max|a - b| / max|b| per output, accepted up to 1e-4.", "",
             "| arch | graph | seconds | files | peak RSS (GiB) | parity | notes |", "|---|---|---|---|---|---|---|"]
    for rep in sec["reports"]:
        for g in rep["graphs"]:
            if "failed" in g:
                secs = f"{g['seconds']:.0f}" if g.get("seconds") is not None else ""
                peak = f"{g['peak_rss_gib']:.2f}" if g.get("peak_rss_gib") else ""
                note = "".join(f" {n.rstrip('.')}." for n in (g.get("note"), _phase_note(g.get("phases"))) if n)
                lines.append(f"| {rep['arch']} | {g['graph']} | {secs} | not kept | {peak} | | "
                             f"**not exported**: {g['failed']}.{note} The ONNX Runtime backend runs it in PyTorch |")
                continue
            files = ", ".join(f"{n} {_mib(b)}" for n, b in g["files"].items())
            par = g["parity"]
            parity = "not checked" if par is None else (
                ("passed" if par["passed"] else "FAILED") + " (max rel " +
                ", ".join(f"{k} {v:.1e}" for k, v in par["max_rel"].items()) + ")")
            notes = "; ".join(filter(None, ["external data (weights over 1 GiB)" if len(g["files"]) > 1 else "",
                                            _phase_note(g.get("phases"))]))
            lines.append(f"| {rep['arch']} | {g['graph']} | {g['seconds']:.0f} | {files} | {g['peak_rss_gib']:.2f} | "
                         f"{parity} | {notes} |")
        lines.append(f"| {rep['arch']} | (whole export) | {rep['seconds']:.0f} | | {rep['peak_rss_gib']:.2f} | | "
                     + "; ".join(filter(None, [rep.get("stopped"), rep.get("note"),
                                               "the largest process tree of the graph exports",
                                               "reproduce: " + rep.get("command", f"`{sec['command']}`")])) + " |")
    return lines


def _ort_markdown(sec: dict, engine: str = "ort") -> list[str]:
    if engine == "ort":
        title, label, how, missing = ("ONNX Runtime", "ONNX Runtime", "ONNX Runtime (the exported graphs above, CPU "
                                      "provider, the same threads)", "not exported: runs in PyTorch")
    else:
        title, label, how, missing = ("torch.compile", "torch.compile", "torch.compile (inductor, "
                                      "`accel.torch_backend.CompiledTorchBackend`: the JVPs compiled from the "
                                      "make_fx-traced aten graph; each graph's first call, the compile, is in the "
                                      "notes)", "not compiled")
    lines = ["", f"## JVP/forward ratio on {title} beside eager PyTorch (batch 1)", "",
             f"Last command: `{sec['command']}`; each row's notes say the command that reproduces it.", "",
             f"Machine: {sec['machine']}; load average (1 min) {sec['load'][0]:.1f} at start, "
             f"{sec['load_end'][0]:.1f} at end. One process per architecture runs each call on {how} and in eager "
             "PyTorch (`torch.func.jvp` for the JVPs), alternating; median seconds over the timed rounds. Target: "
             f"eps_jvp / eps and h_jvp / h at most 3 on {label}."
             + (f" Rows marked `{HUGEPAGES_ENV}` ran their worker with that environment (`--hugepages`): glibc "
                "backs its large allocations with transparent huge pages (the kernel's THP mode here: "
                f"{sec.get('thp', 'unknown')}), so a new tensor costs a page fault per 2 MiB instead of per 4 KiB; "
                "the Docker image sets it." if any(r.get("hugepages") for r in sec["reports"]) else ""), "",
             "| arch | engine | h | h_jvp | h_jvp / h | eps | eps_jvp | eps_jvp / eps | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rep in sec["reports"]:
        pages = f" ({HUGEPAGES_ENV})" if rep.get("hugepages") else ""
        if "error" in rep:
            lines.append(f"| {rep['arch']} | {pages} | | | | | | | not run: {rep['error']} |")
            continue
        gr = rep["graphs"]
        for e, row_label in ((engine, label + pages), ("eager", "torch eager" + pages)):
            notes = [f"{rep['rounds']} timed round(s)" + (", after a warm-up round" if rep.get("warmup_rounds")
                                                          else ", no warm-up (first calls)")]
            if e == engine:
                if rep.get("sessions"):
                    notes.append("one session at a time (each graph's timed against eager, then freed)")
                if rep.get("first_call_s"):
                    notes.append("first calls (compile" + (", empty inductor cache" if rep.get("cold_cache") else "")
                                 + ") " + ", ".join(f"{g} {s:.0f} s"
                                                                      for g, s in rep["first_call_s"].items()))
                notes += [f"{g}: {why}" for g, why in rep["fallback"].items() if engine == "compile"]
                notes.append(f"peak RSS {rep['peak_rss_gib']:.2f} GiB")
                notes.append(f"reproduce: `{rep.get('command', sec['command'])}`")
            fb = set(rep["fallback"])

            def cell(g, fb=fb, e=e, gr=gr):
                if gr[g][e] is None:
                    return missing if g in fb and e == engine else "not timed"
                return f"{gr[g][e]:.3f}"

            def ratio(a, b, e=e, rep=rep):
                r = rep[f"ratio_{a}_{e}"]
                return "n/a" if r is None else f"{r:.2f}"

            lines.append(f"| {rep['arch']} | {row_label} | {cell('h')} | {cell('h_jvp')} | {ratio('h', 'h_jvp')} | "
                         f"{cell('eps')} | {cell('eps_jvp')} | {ratio('eps', 'eps_jvp')} | {'; '.join(notes)} |")
    return lines


def _markdown(info: dict, reports: list[dict]) -> str:
    lines = ["# Scale benchmark: the public architectures at full size (CPU, random weights)", "",
             f"Command: `{_public_command(info)}` (`DIR`: the folder of the full-size reference models)"
             + "".join(f"; {r['arch']}'s rows: `{r['command']}`" for r in reports
                       if r.get("command") and r["command"] != _public_command(info)), "",
             f"Machine: {info['machine']}; load average (1 min) {info['load'][0]:.1f} at start, "
             f"{info['load_end'][0]:.1f} at end (the cores are shared: seconds are noisy, memory is not). Peak "
             "memory is the process's peak resident set during the call, the weights included. A row past "
             "`--time-limit` is not run; its estimate scales the rows above it (a rate map: 4 of the 16-direction "
             "point batches; a curve map: a rate map and a DDIM step per timestep).", "",
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
            if "directions" in r:
                notes.append(f"{r['directions']} JVP directions, patches of {r['patch_size']} model pixels")
            lines.append(f"| {rep['arch']} | {rep['dtype']} | {r['call']} | {r['seconds']:.1f} | "
                         f"{r['peak_rss_gib']:.2f} | {'; '.join(notes)} |")
    if info.get("export"):
        lines += _export_markdown(info["export"])
    if info.get("ort"):
        lines += _ort_markdown(info["ort"])
    if info.get("compile"):
        lines += _ort_markdown(info["compile"], engine="compile")
    if info.get("jvp"):
        lines += _jvp_markdown(info["jvp"])
    if info.get("batch"):
        lines += _batch_markdown(info["batch"])
    return "\n".join(lines) + "\n"


def _batch_markdown(sec: dict) -> list[str]:
    lines = ["", f"## Model calls at batch {' and '.join(map(str, BATCH_SIZES))} (eager PyTorch)", "",
             f"Last command: `{sec['command']}`; the first row of each architecture and dtype says the command "
             "that reproduces its rows.", "",
             f"Machine: {sec['machine']}; load average (1 min) {sec['load'][0]:.1f} at start, "
             f"{sec['load_end'][0]:.1f} at end. One process per architecture and dtype; each call once untimed at "
             "batch 1 first. A batch over the model's batch limit (the memory probe's) runs in parts of the limit, "
             "as the tasks run it. Peak: the process's resident set during the call, the weights included.", "",
             "| arch | dtype | call | batch | seconds | per sample | peak RSS (GiB) | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for rep in sec["reports"]:
        if "error" in rep:
            lines.append(f"| {rep['arch']} | {rep.get('dtype', '')} | (not run) | | | | | {rep['error']} |")
            continue
        for i, r in enumerate(rep["rows"]):
            if "skipped" in r:
                lines.append(f"| {rep['arch']} | {rep['dtype']} | {r['call']} | {r['batch']} | not run | | | "
                             f"{r['skipped']} |")
                continue
            notes = [f"{r['parts']} parts of {rep['limit']} (the batch limit)"] if r["parts"] > 1 else []
            notes += [f"reproduce: `{rep['command']}`"] if i == 0 else []
            lines.append(f"| {rep['arch']} | {rep['dtype']} | {r['call']} | {r['batch']} | {r['seconds']:.2f} | "
                         f"{r['per_sample_s']:.2f} | {r['peak_rss_gib']:.2f} | {'; '.join(notes)} |")
    return lines


def _jvp_markdown(sec: dict) -> list[str]:
    lines = ["", "## JVP error against float64, per dtype (batch 1, t = 500)", "",
             f"Command: `{sec['command']}`.", "",
             f"Machine: {sec['machine']}; load average (1 min) {sec['load'][0]:.1f} at start, "
             f"{sec['load_end'][0]:.1f} at end. Per architecture, in a child process of its own: "
             "`benchmarks.reference.jvp_relative_errors`, x and v standard normal in model space (seed 0), "
             "err = ||out - out_float64|| / ||out_float64|| for h_t(x) and D h_t(x)[v]; each dtype's model is loaded "
             "alone (`load_model(dtype=...)`); the JVP's seconds are its first call.", "",
             "| arch | point | dtype | h error | JVP error | JVP seconds | notes |", "|---|---|---|---|---|---|---|"]
    for rep in sec["reports"]:
        if "error" in rep:
            lines.append(f"| {rep['arch']} | | | | | | not measured: {rep['error']} |")
            continue
        point = f"{rep['size']}x{rep['size']}" + (" (reduced)" if rep["size"] != rep["sample_size"] else "")
        for dtype, e in rep["errors"].items():
            note = f"peak RSS {rep['peak_rss_gib']:.2f} GiB (the process)" if dtype == "float64" else ""
            if dtype == "float64" and rep["size"] != rep["sample_size"]:
                note += f"; model space {rep['sample_size']}x{rep['sample_size']}, measured at {rep['size']}"
            err = ("reference", "reference") if dtype == "float64" else (f"{e['h']:.1e}", f"{e['jvp']:.1e}")
            lines.append(f"| {rep['arch']} | {point} | {dtype} | {err[0]} | {err[1]} | {e['jvp_s']:.1f} | {note} |")
    return lines


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
    p.add_argument("--parts", default="calls,export,ort", help="comma-separated parts to measure: calls, export, "
                   "ort, compile, jvp, batch (default: calls,export,ort); the others' rows in an existing --out "
                   ".json are kept")
    p.add_argument("--export-dir", default=None, help="where the exports go (EXPORT/<arch>; default DIR/exports)")
    p.add_argument("--max-rss-gib", type=float, default=16.0, help="export: stop a graph's export when its "
                   "resident memory passes this (default 16)")
    p.add_argument("--graph-timeout", type=float, default=600.0, help="export: stop a graph's export after this "
                   "many seconds (default 600)")
    p.add_argument("--export-limit", type=float, default=900.0, help="export: seconds for one architecture's whole "
                   "export (default 900)")
    p.add_argument("--export-graphs", default=",".join(EXPORT_ORDER), help="export: the graphs to (re-)export "
                   "(default all: a fresh folder); a subset keeps the folder's other graphs and adds to the report")
    p.add_argument("--hugepages", action="store_true", help="ort: run the worker with glibc's transparent huge "
                   f"pages for its large allocations ({HUGEPAGES_ENV}; the kernel's THP mode must be always or "
                   "madvise), reported as rows of their own beside the default ones")
    p.add_argument("--ort-reps", type=int, default=None, help="ort: timed rounds per call (default 5 for "
                   "cifar10-32, 2 for ddpm-256, 1 for sd15; with more than one, an untimed warm-up round first)")
    p.add_argument("--jvp-sizes", default="sd15=32", help="jvp: model-space size of the point per architecture "
                   "(ARCH=SIZE,...; default sd15=32, the others at their sample size)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--jvp-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--compile-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ort-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch-worker", default=None, help=argparse.SUPPRESS)
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
    if args.batch_worker:
        import torch

        torch.set_num_threads(args.threads)
        rep = batch_worker(args.batch_worker, args.folders, args.dtype, args.time_limit)
        print("REPORT " + json.dumps(rep), flush=True)
        return 0
    if args.compile_worker:
        import torch

        torch.set_num_threads(args.threads)
        reps = args.ort_reps or {"cifar10-32": 5, "ddpm-256": 2}.get(args.compile_worker, 1)
        rep = compile_worker(args.compile_worker, args.folders, reps, args.time_limit)
        print("REPORT " + json.dumps(rep), flush=True)
        return 0
    if args.jvp_worker:
        import torch

        torch.set_num_threads(args.threads)
        sys.path.insert(0, str(ROOT))
        from benchmarks.reference import jvp_relative_errors
        from pipeline import load_model

        sizes = dict(kv.split("=") for kv in args.jvp_sizes.split(",") if kv)
        sample = load_model(args.folders, device="cpu").sample_size
        size = int(sizes.get(args.jvp_worker, sample))
        errors = jvp_relative_errors(args.folders, ("float32", "bfloat16"), size=size)
        print("REPORT " + json.dumps({"arch": args.jvp_worker, "size": size, "sample_size": sample,
                                      "errors": errors}), flush=True)
        return 0
    if args.ort_worker:
        import torch

        torch.set_num_threads(args.threads)
        reps = args.ort_reps or {"cifar10-32": 5, "ddpm-256": 2}.get(args.ort_worker, 1)
        rep = ort_worker(args.ort_worker, args.folders, args.export_dir, reps, args.time_limit)
        print("REPORT " + json.dumps(rep), flush=True)
        return 0
    import torch

    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(parts) - {"calls", "export", "ort", "jvp", "compile", "batch"})
    if unknown:
        p.error(f"unknown parts {unknown}; accepted: calls, export, ort, jvp, compile, batch")
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    out = Path(args.out)
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    command = "python -m benchmarks.scale " + shlex.join(argv if argv is not None else sys.argv[1:])
    machine = (f"{platform.machine()} ({os.cpu_count()} CPUs), torch {torch.__version__}, "
               f"{args.threads} thread(s)")
    for arch in archs:
        folder = Path(args.folders) / arch
        if not folder.exists():
            subprocess.run([sys.executable, "-m", "benchmarks.reference", "--arch", arch, "--out", str(folder)],
                           cwd=ROOT, check=True)
    data = dict(old)
    if "export" in parts or "ort" in parts:
        export_dir = Path(args.export_dir) if args.export_dir else Path(args.folders) / "exports"
        sec = {"command": _public_command({"command": command}), "machine": machine, "load": os.getloadavg(),
               "limits": {"max_rss_gib": args.max_rss_gib, "graph_timeout_s": args.graph_timeout,
                          "export_limit_s": args.export_limit}, "thp": _thp_mode()}
        if "export" in parts:
            reps = {r["arch"]: r for r in old.get("export", {}).get("reports", [])}
            for arch in archs:
                graphs = tuple(g.strip() for g in args.export_graphs.split(",") if g.strip())
                reps[arch] = export_arch(arch, Path(args.folders) / arch, export_dir / arch,
                                         max_rss_gib=args.max_rss_gib, graph_timeout=args.graph_timeout,
                                         limit_s=args.export_limit, graphs=graphs, previous=reps.get(arch))
                if "runs" in reps[arch]:
                    reps[arch]["runs"] = reps[arch]["runs"] + [{"command": sec["command"],
                                                                "seconds": reps[arch]["seconds_this_run"]}]
                    reps[arch]["command"] = " then ".join(f"`{r['command']}`" for r in reps[arch]["runs"])
                else:
                    reps[arch]["command"] = f"`{sec['command']}`"
            data["export"] = {**sec, "load_end": os.getloadavg(),
                              "reports": [reps[a] for a in ARCH_ORDER if a in reps]}
        if "ort" in parts:
            reps = {_ort_key(r): r for r in old.get("ort", {}).get("reports", [])}
            for arch in archs:
                key = (arch, args.hugepages)
                man_path = export_dir / arch / "manifest.json"
                done = json.loads(man_path.read_text())["artifacts"] if man_path.is_file() else {}
                if not done:
                    reps[key] = {"arch": arch, "hugepages": args.hugepages, "command": sec["command"],
                                 "error": "no graph of this architecture exported (see the export rows)"}
                    continue
                cmd = [sys.executable, "-m", "benchmarks.scale", "--ort-worker", arch, "--folders",
                       str(Path(args.folders) / arch), "--export-dir", str(export_dir / arch), "--threads",
                       str(args.threads), "--time-limit", str(args.time_limit)]
                if args.ort_reps:
                    cmd += ["--ort-reps", str(args.ort_reps)]
                env = {**os.environ, **_hugepages_env()} if args.hugepages else None
                rep, w, why = _run_worker(cmd, max_rss_gib=args.max_rss_gib, timeout_s=args.time_limit + 600,
                                          env=env, require_ok=False)
                reps[key] = ({**rep, "peak_rss_gib": w.peak_rss_bytes / GIB, "command": sec["command"],
                              "hugepages": args.hugepages} if rep else
                             {"arch": arch, "hugepages": args.hugepages, "error": why})
            data["ort"] = {**sec, "load_end": os.getloadavg(),
                           "reports": [reps[k] for k in sorted(reps, key=lambda k: (ARCH_ORDER.index(k[0]), k[1]))]}
    if "compile" in parts:
        sec = {"command": _public_command({"command": command}), "machine": machine, "load": os.getloadavg()}
        reps = {r["arch"]: r for r in old.get("compile", {}).get("reports", [])}
        for arch in archs:
            cmd = [sys.executable, "-m", "benchmarks.scale", "--compile-worker", arch, "--folders",
                   str(Path(args.folders) / arch), "--threads", str(args.threads), "--time-limit",
                   str(args.time_limit)] + (["--ort-reps", str(args.ort_reps)] if args.ort_reps else [])
            with tempfile.TemporaryDirectory(prefix="inductor-") as cache:  # cold compiles, as on a fresh machine
                rep, w, why = _run_worker(cmd, max_rss_gib=args.max_rss_gib, timeout_s=args.time_limit + 900,
                                          env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
            reps[arch] = ({**rep, "peak_rss_gib": w.peak_rss_bytes / GIB, "command": sec["command"],
                           "cold_cache": True} if rep else
                          {"arch": arch, "error": _stopped_compile(w.output, why, sec["command"])})
        data["compile"] = {**sec, "load_end": os.getloadavg(),
                           "reports": [reps[a] for a in ARCH_ORDER if a in reps]}
    if "jvp" in parts:
        sec = {"command": _public_command({"command": command}), "machine": machine, "load": os.getloadavg()}
        reps = {r["arch"]: r for r in old.get("jvp", {}).get("reports", [])}
        for arch in archs:
            cmd = [sys.executable, "-m", "benchmarks.scale", "--jvp-worker", arch, "--folders",
                   str(Path(args.folders) / arch), "--threads", str(args.threads), "--jvp-sizes", args.jvp_sizes]
            rep, w, why = _run_worker(cmd, max_rss_gib=args.max_rss_gib, timeout_s=args.time_limit, echo=False)
            reps[arch] = {**rep, "peak_rss_gib": w.peak_rss_bytes / GIB} if rep else {"arch": arch, "error": why}
            print(f"{arch:>10} jvp: {reps[arch]}", flush=True)
        data["jvp"] = {**sec, "load_end": os.getloadavg(), "reports": [reps[a] for a in ARCH_ORDER if a in reps]}
    if "batch" in parts:
        sec = {"command": _public_command({"command": command}), "machine": machine, "load": os.getloadavg()}
        reps = {(r["arch"], r.get("dtype")): r for r in old.get("batch", {}).get("reports", [])}
        for arch in archs:
            cmd = [sys.executable, "-m", "benchmarks.scale", "--batch-worker", arch, "--folders",
                   str(Path(args.folders) / arch), "--dtype", args.dtype, "--threads", str(args.threads),
                   "--time-limit", str(args.time_limit)]
            rep, _, why = _run_worker(cmd, max_rss_gib=args.max_rss_gib, timeout_s=args.time_limit + 900)
            reps[(arch, args.dtype)] = {**(rep or {"arch": arch, "dtype": args.dtype, "error": why}),
                                        "command": sec["command"]}
        data["batch"] = {**sec, "load_end": os.getloadavg(),
                         "reports": [reps[k] for k in sorted(reps, key=lambda k: (ARCH_ORDER.index(k[0]), k[1]))]}
    if "calls" not in parts:
        _write(out, data, [p for p in parts if p != "calls"])
        return 0
    info = {"command": command, "machine": machine, "load": os.getloadavg()}
    reports = []
    for arch in archs:
        folder = Path(args.folders) / arch
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
    out.parent.mkdir(parents=True, exist_ok=True)
    info["command"] = _public_command(info)
    for rep in reports:
        rep["command"] = info["command"]
    ran = {(r["arch"], r.get("dtype")) for r in reports}
    kept = [r for r in old.get("reports", []) if (r["arch"], r.get("dtype")) not in ran]  # other archs' rows
    reports = sorted(kept + reports, key=lambda r: (ARCH_ORDER.index(r["arch"]) if r["arch"] in ARCH_ORDER else 9,
                                                   r.get("dtype", "")))
    _write(out, {**data, **info, "reports": reports}, parts)
    return 0


#: The report's keys each part owns (``calls``: the top-level rows and their run's facts).
_PART_KEYS = {"calls": ("command", "machine", "load", "load_end", "reports")}


def _write(out: Path, data: dict, parts: list[str]) -> None:
    """Write this run's ``parts`` into ``out`` (.json and .md), keeping every other part as the file has it *now*: a
    run of other parts that ended meanwhile (e.g. ``jvp`` beside a long ``export``) is not overwritten."""
    path = out.with_suffix(".json")
    current = json.loads(path.read_text()) if path.is_file() else {}
    for part in parts:
        for key in _PART_KEYS.get(part, (part,)):
            if key in data:
                current[key] = data[key]
    if "reports" not in current:
        current.update(command="", machine="", load=[0, 0, 0], load_end=[0, 0, 0], reports=[])
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=1))
    out.with_suffix(".md").write_text(_markdown(current, current["reports"]))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    raise SystemExit(main())
