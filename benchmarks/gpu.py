"""The GPU table: torch eager and compiled, ONNX Runtime (CUDA, TensorRT providers), TensorRT engines, in one command.

    python -m benchmarks.gpu [--archs default,cifar10-32,ddpm-256,sd15] [--dtypes float32,float16]
                             [--backends torch,torch-compile,ort-cuda,ort-trt,tensorrt] [--time-limit SECONDS]
                             [--install] [--runs N] [--out DIR] [--name gpu] [--dry-run]

Writes ``<out>/<name>.md`` and ``<out>/<name>.json`` (default ``benchmarks/results/gpu.md``; ``--dry-run`` defaults to
``gpu_dryrun``). Both are rewritten after every backend group, so a run killed from outside leaves what it measured.

What it does, in order:

1. **Probe** the machine (in a subprocess, so that packages installed next are seen): torch and its CUDA build,
   ``torch.cuda`` availability, GPU name and memory, driver and CUDA versions (``nvidia-smi``), ``tensorrt``,
   ``onnxruntime`` and its providers, ``polygraphy``, ``triton``, a C++ compiler. Written at the top of the report.
2. With ``--install`` and a CUDA device: pip-install what the GPU rows need and is missing (``onnxruntime-gpu`` when
   onnxruntime lacks the CUDA provider: downloaded first, then the CPU wheel is uninstalled and the GPU wheel
   installed, as requirements-gpu.txt asks; ``tensorrt``; ``polygraphy``), each attempt bounded by the time left,
   recorded with its command, outcome and seconds (none is attempted when pip's index host does not answer a TCP
   connection within 5 s: the device machines may have no network); then probe again.
3. Per architecture (``default``: the embedded model; ``cifar10-32``, ``ddpm-256``, ``sd15``: built with seeded random
   weights by :mod:`benchmarks.reference`, on the machine, at full size, or the small variants with ``--dry-run``)
   and dtype: float64 PyTorch references of h, eps, h_jvp, eps_jvp at batch 1 and 8 (x, v standard normal, t = 500),
   then per backend: set-up time (export, engine build, compile), engine/graph build seconds and sizes (from the
   artifact directory's manifest), and per call and batch the first-call time, the median of ``--runs`` timed calls
   after warm-up (``torch.cuda.synchronize()`` around every GPU call), the relative error
   ``||out - ref64|| / ||ref64||`` (for JVPs: of the tangent output; the primal's is in the JSON) and the GPU memory
   peak (``torch.cuda.max_memory_allocated`` since the row started). JVP/forward ratios per backend and batch.
4. Per architecture, the library tasks at small step counts (settings printed in the report) on ``--task-backends``:
   ``rates.rate_map`` at t = 500, ``rates.generation_curves`` (10 timesteps), ``edit.remove_object`` (scene 0 of
   :func:`pipeline.scenes.make_scene` at the architecture's image size, its first object's mask) and
   ``interpolate.interpolate_images`` (a geodesic between scenes 0 and 1), with time, GPU memory peak and, for the
   rate map, the relative error against the torch float32 map.
5. The goals of the issue, each met, not met, or "not measured".

Backends (``--backends``): ``torch`` (eager ``torch.func.jvp``), ``torch-compile`` (inductor; ``--dry-run`` uses the
``aot_eager`` compiler to exercise the code path in seconds), ``ort-cpu`` (ONNX Runtime CPU provider; the dry run's
graph backend), ``ort-cuda`` (ONNX Runtime, CUDA provider only), ``ort-trt`` (ONNX Runtime, TensorRT provider first,
CUDA after), ``tensorrt`` (polygraphy-built engines, :mod:`accel.trt_backend`). float16 means a float16 PyTorch model
for torch / torch-compile, and fp16 engines for ``tensorrt`` and ``ort-trt`` (their ONNX graphs and inputs stay
float32, :mod:`export.specs`); ``ort-cuda`` and ``ort-cpu`` have no float16 mode (reported as such). Every row that
cannot run is kept with its reason (the exception's type and message, or what is missing); rows not started because
``--time-limit`` passed read "not run: time limit". The time limit is checked before each row starts: a row (an engine
build, a compile) that starts in time is not interrupted, so give the outer timeout a margin.

Prepared device command (a GPU machine with the repository; nothing else needs carrying: the reference models are
built on the device, the default model is in ``weights/``, the artifact cache is made there):

    python -m benchmarks.gpu --archs default,cifar10-32 --time-limit 420 --install      # first run (timeout ~540 s)
    python -m benchmarks.gpu --archs ddpm-256,sd15 --time-limit 420 --install --name gpu_large   # if time is left

CPU dry run (committed as ``benchmarks/results/gpu_dryrun.md``; ``tests/test_gpu_bench.py`` runs a smaller one):

    python -m benchmarks.gpu --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

log = logging.getLogger("bench.gpu")

ARCHS = ("default", "cifar10-32", "ddpm-256", "sd15")
DTYPES = ("float32", "float16", "bfloat16")
BACKENDS = ("torch", "torch-compile", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt")
GPU_BACKENDS = ("torch", "torch-compile", "ort-cuda", "ort-trt", "tensorrt")
DRY_BACKENDS = ("torch", "torch-compile", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt")
CUDA_ONLY = frozenset({"ort-cuda", "ort-trt", "tensorrt"})
GRAPH_BACKENDS = frozenset({"ort-cpu", "ort-cuda", "ort-trt", "tensorrt"})
CALLS = ("h", "eps", "h_jvp", "eps_jvp")
BATCHES = (1, 8)
TASKS = ("rate_map", "generation_curves", "remove_object", "interpolate_images")
T = 500  # the timestep of every call

#: The issue's goals (reported against, never faked).
GOALS = {
    "trt_jvp_forwards": 2.5,  # TensorRT h_jvp / h and eps_jvp / eps of the same engine precision and batch: <= 2.5
    "trt_speedup_ddpm256_eps_jvp_b8_fp16": 1.5,  # TensorRT vs torch eager, eps_jvp batch 8 float16, ddpm-256: >= 1.5x
}

#: Task settings (small step counts: a GPU budget of minutes). Printed in the report.
TASK_SETTINGS = {
    "rate_map": {"t": 500, "patches_per_side": 8, "batch_size": 8},
    "generation_curves": {"num_timesteps": 10, "patches_per_side": 4, "batch_size": 8},
    "remove_object": {"scene_seed": 0, "num_steps": 4, "iterations": 1, "t_edit": 200, "measure_curves": False},
    "interpolate_images": {"scene_seeds": (0, 1), "n_points": 5, "num_steps": 4, "t_star": 400, "max_iter": 3},
}


# --------------------------------------------------------------------------------------------------------------------
# Rows and the time limit
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table: a call of a backend (``kind="call"``), a backend's set-up (``"setup"``) or a library
    task (``"task"``). ``status`` is ``"ok"`` or ``"not run"``, with ``reason`` saying why for the latter."""

    arch: str
    dtype: str
    backend: str
    kind: str  # "call" | "setup" | "task"
    name: str  # call "eps_jvp_b8", "setup", or a task name
    status: str = "pending"
    reason: str = ""
    figures: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``arch/dtype/backend/name``: unique within a run."""
        return f"{self.arch}/{self.dtype}/{self.backend}/{self.name}"

    def ok(self, **figures) -> Row:
        """Mark measured, with ``figures``."""
        self.status, self.reason = "ok", ""
        self.figures.update(figures)
        return self

    def skip(self, reason: str) -> Row:
        """Mark not run, with ``reason``."""
        self.status, self.reason = "not run", reason
        return self


class Deadline:
    """The ``--time-limit`` clock: :meth:`expired` is asked before each row starts (``limit=None``: no limit)."""

    def __init__(self, limit: float | None, clock=time.monotonic):
        self.limit, self.clock, self.start = limit, clock, clock()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left (infinite without a limit; never negative)."""
        return math.inf if self.limit is None else max(0.0, self.limit - self.elapsed())

    def expired(self) -> bool:
        """Whether no new row may start."""
        return self.left() <= 0


TIME_LIMIT_REASON = "not run: time limit"


def error_reason(err: BaseException, limit: int = 400) -> str:
    """``Type: message`` of an exception, on one line, at most ``limit`` characters."""
    msg = " ".join(str(err).split())
    text = f"{type(err).__name__}: {msg}" if msg else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plan_rows(archs, dtypes, backends, task_backends, calls=CALLS) -> list[Row]:
    """Every row the run means to fill, in run order: per arch, per dtype, per backend its setup then each call at
    each batch; then per arch the tasks on each task backend (in the first dtype)."""
    rows = []
    for arch in archs:
        for dt in dtypes:
            for b in backends:
                rows.append(Row(arch, dt, b, "setup", "setup"))
                rows += [Row(arch, dt, b, "call", f"{c}_b{B}") for B in BATCHES for c in calls]
        for b in task_backends:
            rows += [Row(arch, dtypes[0], b, "task", t) for t in TASKS]
    return rows


def skip_pending(rows, reason: str, **match) -> int:
    """Mark every still-pending row whose attributes equal ``match`` as not run with ``reason``; returns how many."""
    n = 0
    for r in rows:
        if r.status == "pending" and all(getattr(r, k) == v for k, v in match.items()):
            r.skip(reason)
            n += 1
    return n


def jvp_ratios(rows) -> dict:
    """``{arch/dtype/backend: {"h_b1": h_jvp/h, "eps_b8": eps_jvp/eps, ...}}`` from measured call rows' medians."""
    med = {(r.arch, r.dtype, r.backend, r.name): r.figures["median_ms"] for r in rows
           if r.kind == "call" and r.status == "ok" and "median_ms" in r.figures}
    out: dict = {}
    for (arch, dt, b, name), ms in med.items():
        call, batch = name.rsplit("_", 1)
        if call in ("h", "eps") and (arch, dt, b, f"{call}_jvp_{batch}") in med:
            out.setdefault(f"{arch}/{dt}/{b}", {})[f"{call}_{batch}"] = med[(arch, dt, b, f"{call}_jvp_{batch}")] / ms
    return out


def check_goals(rows) -> list[dict]:
    """The issue's goals against the measured rows: ``[{"goal", "value", "met": True | False | None}]`` (None: not
    measured, with what was missing in ``value``)."""
    out = []
    ratios = {k: v for k, v in jvp_ratios(rows).items() if k.endswith("/tensorrt")}
    target = GOALS["trt_jvp_forwards"]
    goal = (f"TensorRT JVP at most {target:g} forwards of the same engine (h_jvp/h, eps_jvp/eps, every arch, dtype, "
            "batch)")
    vals = {f"{k.rsplit('/', 1)[0]} {c}": r for k, d in ratios.items() for c, r in d.items()}
    if vals:
        worst = max(vals, key=vals.get)
        out.append({"goal": goal, "value": f"worst {vals[worst]:.2f} ({worst}); "
                    + ", ".join(f"{k} {v:.2f}" for k, v in vals.items()), "met": vals[worst] <= target})
    else:
        out.append({"goal": goal, "value": "not measured (no TensorRT row ran)", "met": None})
    target = GOALS["trt_speedup_ddpm256_eps_jvp_b8_fp16"]
    goal = f"TensorRT at least {target:g}x faster than torch eager for eps_jvp at batch 8 in float16 on ddpm-256"
    med = {r.backend: r.figures.get("median_ms") for r in rows if r.status == "ok" and r.arch == "ddpm-256"
           and r.dtype == "float16" and r.name == "eps_jvp_b8"}
    if med.get("tensorrt") and med.get("torch"):
        sp = med["torch"] / med["tensorrt"]
        out.append({"goal": goal, "value": f"{sp:.2f}x ({med['torch']:.2f} ms / {med['tensorrt']:.2f} ms)",
                    "met": sp >= target})
    else:
        missing = [b for b in ("torch", "tensorrt") if not med.get(b)]
        out.append({"goal": goal, "value": f"not measured (no ddpm-256 float16 eps_jvp_b8 row for {missing})",
                    "met": None})
    return out


# --------------------------------------------------------------------------------------------------------------------
# Machine probe and installs
# --------------------------------------------------------------------------------------------------------------------
_PROBE = r"""
import json, importlib, shutil
out = {}
def mod(name, attr="__version__"):
    try:
        m = importlib.import_module(name)
        return {"ok": True, "version": str(getattr(m, attr, "?"))}
    except Exception as err:
        return {"ok": False, "error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}
import torch
out["torch"] = torch.__version__
out["torch_cuda_build"] = torch.version.cuda
out["cuda_available"] = torch.cuda.is_available()
if out["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    out["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
                  "capability": f"{p.major}.{p.minor}"}
    out["cudnn"] = torch.backends.cudnn.version()
for name in ("tensorrt", "polygraphy", "triton", "onnx", "onnxscript"):
    out[name] = mod(name)
out["onnxruntime"] = mod("onnxruntime")
if out["onnxruntime"]["ok"]:
    import onnxruntime
    out["onnxruntime"]["providers"] = onnxruntime.get_available_providers()
    out["onnxruntime"]["device"] = onnxruntime.get_device()
out["cxx"] = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
print("PROBE-JSON " + json.dumps(out))
"""


def probe(timeout: float = 120.0) -> dict:
    """The machine: python, platform, CPU, torch/CUDA, GPU, driver (nvidia-smi), tensorrt, onnxruntime (+providers),
    polygraphy, triton, onnx, a C++ compiler. Packages are imported in a fresh subprocess (so that an install made by
    this run is seen); a failed import is recorded with its error."""
    from benchmarks.common import cpu_model

    info: dict = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_model(),
                  "logical_cpus": os.cpu_count()}
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE-JSON ")), None)
        if line is None:
            info["probe_error"] = f"probe exited {proc.returncode}: {proc.stderr.strip()[-400:]}"
        else:
            info.update(json.loads(line[len("PROBE-JSON "):]))
    except subprocess.TimeoutExpired:
        info["probe_error"] = f"probe timed out after {timeout:.0f} s"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
            head = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
            cuda = [ln for ln in head.splitlines() if "CUDA Version" in ln]
            if cuda:
                info["driver_cuda"] = cuda[0].split("CUDA Version:")[1].strip(" |")
        except (OSError, subprocess.TimeoutExpired) as err:
            info["nvidia_smi"] = error_reason(err)
    else:
        info["nvidia_smi"] = "nvidia-smi not found"
    return info


def needed_installs(info: dict, backends) -> list[str]:
    """The pip packages the GPU backends asked for need and the probe did not find (none without CUDA)."""
    if not info.get("cuda_available"):
        return []
    need = []
    ort = info.get("onnxruntime", {})
    if {"ort-cuda", "ort-trt"} & set(backends) and "CUDAExecutionProvider" not in ort.get("providers", []):
        need.append("onnxruntime-gpu")
    if {"tensorrt", "ort-trt"} & set(backends) and not info.get("tensorrt", {}).get("ok"):
        need.append("tensorrt")
    if "tensorrt" in backends and not info.get("polygraphy", {}).get("ok"):
        need.append("polygraphy")
    return need


def _pip(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pip", *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout))
        ok, tail = proc.returncode == 0, (proc.stdout + proc.stderr).strip()[-500:]
    except subprocess.TimeoutExpired:
        ok, tail = False, f"timed out after {timeout:.0f} s"
    return {"command": " ".join(shlex.quote(c) for c in cmd[2:]), "ok": ok,
            "seconds": round(time.perf_counter() - start, 1), "output_tail": " ".join(tail.split())}


def index_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    """(reachable, what was tried): a TCP connection to pip's index host (``$PIP_INDEX_URL`` or pypi.org), so that a
    machine without network does not spend its time limit on pip's retries."""
    import socket
    from urllib.parse import urlparse

    url = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    u = urlparse(url)
    host, port = u.hostname or "pypi.org", u.port or (80 if u.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port}"
    except OSError as err:
        return False, f"{host}:{port} unreachable ({error_reason(err, 200)})"


def install(packages, deadline: Deadline, per_attempt: float = 240.0) -> list[dict]:
    """pip-install ``packages``, each attempt bounded by ``per_attempt`` and the time left; returns the attempts.

    ``onnxruntime-gpu`` replaces the CPU wheel: it is downloaded first, and only when that works is ``onnxruntime``
    uninstalled and the downloaded wheel installed (so a machine without the index keeps its CPU onnxruntime)."""
    attempts: list[dict] = []
    if packages and not deadline.expired():
        ok, where = index_reachable()
        if not ok:
            return [{"package": pkg, "command": "-", "ok": False, "seconds": 0,
                     "output_tail": f"not attempted: the package index {where}"} for pkg in packages]
    pip_opts = ["--disable-pip-version-check", "--timeout", "20", "--retries", "1"]
    for pkg in packages:
        if deadline.expired():
            attempts.append({"package": pkg, "command": "-", "ok": False, "seconds": 0,
                             "output_tail": TIME_LIMIT_REASON})
            continue
        budget = min(per_attempt, deadline.left())
        if pkg == "onnxruntime-gpu":
            wheels = tempfile.mkdtemp(prefix="ortgpu_")
            a = _pip(["download", *pip_opts, "--no-deps", "-d", wheels, "onnxruntime-gpu"], budget)
            attempts.append({"package": pkg, **a})
            if not a["ok"]:
                continue
            attempts.append({"package": "onnxruntime (CPU wheel)", **_pip(["uninstall", "-y", "onnxruntime"], 120)})
            files = [str(p) for p in Path(wheels).glob("*.whl")]
            a = _pip(["install", *pip_opts, *files], min(per_attempt, max(60.0, deadline.left())))
        else:
            a = _pip(["install", *pip_opts, pkg], budget)
        attempts.append({"package": pkg, **a})
    return attempts


# --------------------------------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------------------------------
def model_folder(arch: str, work: Path, small: bool) -> tuple[str, dict]:
    """(load_model source, description) of ``arch``: ``default`` is the embedded model; the reference architectures
    are built into ``work`` with seeded random weights (small variants when ``small``)."""
    if arch == "default":
        return "default", {"source": "embedded default model (weights/)"}
    from benchmarks.reference import SMALL_DIVISOR, build_reference, small_sample_size

    folder = work / f"{arch}{'-small' if small else ''}"
    if folder.exists():
        shutil.rmtree(folder)
    info = build_reference(arch, folder, divisor=SMALL_DIVISOR if small else 1,
                           sample_size=small_sample_size(arch) if small else None)
    info["source"] = f"benchmarks.reference {arch}{' --small' if small else ''} (random weights, seed 0)"
    return str(folder), info


def make_inputs(model, batch: int, seed: int = 0):
    """x, v standard normal (batch, C, S, S) in float64 on the CPU (cast per backend), t = :data:`T`."""
    g = torch.Generator().manual_seed(seed + batch)
    s = model.sample_size
    x = torch.randn(batch, model.channels, s, s, generator=g, dtype=torch.float64)
    v = torch.randn(batch, model.channels, s, s, generator=g, dtype=torch.float64)
    return x, v


def call(backend, name: str, x, v):
    """``backend.<name>(x, T[, v])`` under no_grad; returns a tuple of outputs."""
    with torch.no_grad():
        out = getattr(backend, name)(x, T, v) if name.endswith("_jvp") else getattr(backend, name)(x, T)
    return out if isinstance(out, tuple) else (out,)


def rel_error(out, ref) -> float:
    """``||out - ref|| / ||ref||`` in float64 on the CPU."""
    a, b = out.detach().double().cpu(), ref.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def sync(device) -> None:
    """``torch.cuda.synchronize`` on CUDA devices (a no-op otherwise)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def gpu_peak(device, out: dict):
    """Record ``torch.cuda.max_memory_allocated`` (MiB) over the block into ``out["gpu_peak_mib"]`` (None on CPU)."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None


def time_call(fn, device, runs: int, warmup: int = 2) -> dict:
    """First-call ms, then ``warmup`` untimed calls, then ``runs`` timed calls (synchronised on CUDA): median,
    quartiles and min in ms."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
    return {"first_ms": round(first, 3), "median_ms": statistics.median(ts), "p25_ms": q[0], "p75_ms": q[2],
            "min_ms": min(ts), "runs": runs}


def references(source: str, device, batches=BATCHES, calls=CALLS) -> dict:
    """float64 PyTorch outputs ``{(call, batch): outputs}`` on the benchmark inputs (the model is freed after)."""
    from pipeline import load_model

    m = load_model(source, device=device, dtype="float64")
    out = {}
    for B in batches:
        x, v = make_inputs(m, B)
        for c in calls:
            out[(c, B)] = tuple(o.cpu() for o in call(m, c, x.to(device), v.to(device)))
    del m
    free(device)
    return out


def free(device) -> None:
    """Collect garbage and empty the CUDA cache."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------------------------
def backend_unavailable(name: str, dtype: str, info: dict, device) -> str | None:
    """Why ``name`` cannot run in ``dtype`` on this machine, from the probe (None: try it)."""
    cuda = bool(info.get("cuda_available")) and torch.device(device).type == "cuda"
    providers = info.get("onnxruntime", {}).get("providers", [])
    if name in CUDA_ONLY and not cuda:
        return "not run: no CUDA device (torch.cuda.is_available() is False)"
    if dtype == "float16" and name in ("torch", "torch-compile") and not cuda:
        return "not run: float16 needs a CUDA device (load_model refuses float16 on the CPU)"
    if dtype != "float32" and name in ("ort-cpu", "ort-cuda"):
        return (f"not run: the exported ONNX graphs are float32 (export/specs.py) and {name} has no {dtype} "
                "precision option (fp16 exists only for TensorRT engines: tensorrt, ort-trt)")
    if dtype == "bfloat16" and name in ("ort-trt", "tensorrt"):
        return "not run: engines are built in fp32 or fp16 only (export.specs.PRECISIONS)"
    if name.startswith("ort-") and not info.get("onnxruntime", {}).get("ok"):
        return f"not run: onnxruntime does not import ({info.get('onnxruntime', {}).get('error')})"
    if name == "ort-cuda" and "CUDAExecutionProvider" not in providers:
        return f"not run: this onnxruntime build lacks CUDAExecutionProvider (providers {providers})"
    if name == "ort-trt" and "TensorrtExecutionProvider" not in providers:
        return f"not run: this onnxruntime build lacks TensorrtExecutionProvider (providers {providers})"
    if name in ("ort-trt", "tensorrt") and not info.get("tensorrt", {}).get("ok"):
        return f"not run: tensorrt does not import ({info.get('tensorrt', {}).get('error')})"
    if name == "tensorrt" and not info.get("polygraphy", {}).get("ok"):
        return f"not run: polygraphy does not import ({info.get('polygraphy', {}).get('error')})"
    if name == "torch-compile" and cuda and not info.get("triton", {}).get("ok"):
        return f"not run: inductor on CUDA needs triton ({info.get('triton', {}).get('error')})"
    return None


def make_backend(name: str, model, dtype: str, *, artifacts, dry_run: bool, calls=CALLS):
    """The accel backend for ``name`` (``model`` is float32 for the graph backends, ``dtype`` otherwise) and its
    set-up figures; graph backends export/build their h, eps, h_jvp, eps_jvp artifacts now."""
    from accel import get_backend

    precision = "fp16" if dtype == "float16" else "fp32"
    t0 = time.perf_counter()
    figures: dict = {}
    if name == "torch":
        b = get_backend(model, "torch")
    elif name == "torch-compile":
        compiler = "aot_eager" if dry_run else "inductor"
        b = get_backend(model, "torch-compile", batch_sizes=BATCHES, compiler=compiler)
        figures["compiler"] = compiler
    else:
        opts = {"ort-cpu": {"providers": ["cpu"]}, "ort-cuda": {"providers": ["cuda"]},
                "ort-trt": {"providers": ["tensorrt", "cuda"]}}.get(name, {})
        kind = "tensorrt" if name == "tensorrt" else "onnxruntime"
        b = get_backend(model, kind, artifacts=artifacts, batch_sizes=BATCHES, precision=precision, **opts)
        b.prepare(tuple(calls))
        figures.update(artifact_figures(b, precision))
        if kind == "onnxruntime":
            running = b.running_on
            figures["running_on"] = running
            want = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                    "ort-trt": "TensorrtExecutionProvider"}[name]
            wrong = {k: v for k, v in running.items() if v != want}
            if wrong:
                raise RuntimeError(f"{name}: sessions fell back from {want}: {wrong}")
    figures["setup_s"] = round(time.perf_counter() - t0, 2)
    return b, figures


def artifact_figures(backend, precision: str) -> dict:
    """ONNX export and engine build seconds and sizes of ``backend``'s artifacts, from the directory's manifest."""
    from export.cache import model_cache_dir
    from export.errors import ManifestError
    from export.manifest import Manifest

    folder = Path(backend.artifacts or model_cache_dir(backend.weights))
    try:
        man = Manifest.load(folder)
    except ManifestError as err:
        return {"artifacts_error": error_reason(err)}
    out: dict = {"artifacts_dir": str(folder), "onnx": {}, "engines": {}}
    for name, art in sorted(man.artifacts.items()):
        size = sum((folder / f).stat().st_size for f in art.files if (folder / f).is_file())
        entry = {"seconds": art.seconds, "mib": round(size / 2**20, 2)}
        if art.kind == "onnx":
            out["onnx"][name] = entry
        elif art.precision == precision:
            out["engines"][name] = entry
    return out


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------
def run_calls(rows, backend, arch, dtype, bname, refs, model, device, runs, deadline, save) -> None:
    """Time and check each call row of (arch, dtype, backend)."""
    cast = torch.float32 if bname in GRAPH_BACKENDS else getattr(torch, dtype)
    for r in [r for r in rows if (r.arch, r.dtype, r.backend, r.kind) == (arch, dtype, bname, "call")]:
        if r.status != "pending":
            continue
        if deadline.expired():
            r.skip(TIME_LIMIT_REASON)
            continue
        c, B = r.name.rsplit("_b", 1)
        B = int(B)
        x, v = make_inputs(model, B)
        x, v = x.to(device, cast), v.to(device, cast)
        try:
            figs: dict = {}
            with gpu_peak(device, figs):
                out = call(backend, c, x, v)
                figs.update(time_call(lambda c=c, x=x, v=v: call(backend, c, x, v), device, runs))
            ref = refs[(c, B)]
            errs = [rel_error(o, rf) for o, rf in zip(out, ref, strict=True)]
            finite = all(bool(torch.isfinite(o).all()) for o in out)
            figs.update(rel_error=errs[-1], rel_errors=errs, finite=finite)
            r.ok(**figs)
        except Exception as err:  # every failure becomes the row's reason
            log.warning("%s failed: %s", r.key, error_reason(err))
            r.skip(f"failed: {error_reason(err)}")
        free(device)
    save()


def run_tasks(rows, arch, model_src, dtype, device, backends_by_name, deadline, save) -> None:
    """The library tasks of ``arch`` on each task backend (see :data:`TASK_SETTINGS`)."""
    from pipeline import edit, interpolate, rates
    from pipeline.scenes import make_scene

    torch_map = None
    for r in [r for r in rows if r.arch == arch and r.kind == "task"]:
        if r.status != "pending":
            continue
        if deadline.expired():
            r.skip(TIME_LIMIT_REASON)
            continue
        b = backends_by_name.get(r.backend)
        if b is None:
            r.skip(f"not run: the {r.backend} backend did not set up in {dtype} (see its setup row)")
            continue
        if isinstance(b, str):
            r.skip(b)
            continue
        s = b.sample_size
        try:
            figs: dict = {}
            t0 = time.perf_counter()
            with gpu_peak(device, figs):
                if r.name == "rate_map":
                    st = TASK_SETTINGS["rate_map"]
                    g = torch.Generator().manual_seed(7)
                    x = torch.randn(1, b.channels, s, s, generator=g).to(device, b.dtype)
                    m = rates.rate_map(b, x, st["t"], patch_size=s // st["patches_per_side"],
                                       batch_size=st["batch_size"])
                    sync(device)
                    figs.update(directions=m.numel(), finite=bool(torch.isfinite(m).all()))
                    if r.backend == "torch":
                        torch_map = m.double().cpu()
                    elif torch_map is not None:
                        figs["rel_error_vs_torch"] = rel_error(m, torch_map)
                elif r.name == "generation_curves":
                    st = TASK_SETTINGS["generation_curves"]
                    img = make_scene(0, size=b.image_size).image
                    res = rates.generation_curves(b, img, num_timesteps=st["num_timesteps"],
                                                  patch_size=s // st["patches_per_side"], batch_size=st["batch_size"])
                    figs.update(finite=bool(torch.isfinite(res.curves).all()), jvps=res.jvp_evaluations)
                elif r.name == "remove_object":
                    st = TASK_SETTINGS["remove_object"]
                    scene = make_scene(st["scene_seed"], size=b.image_size)
                    res = edit.remove_object(b, scene.image, scene.masks[0], num_steps=st["num_steps"],
                                             iterations=st["iterations"], t_edit=st["t_edit"],
                                             measure_curves=st["measure_curves"], patch_size=max(1, s // 8))
                    figs.update(changed_pixels=int(res.changed.sum()))
                else:
                    st = TASK_SETTINGS["interpolate_images"]
                    a, c = (make_scene(k, size=b.image_size).image for k in st["scene_seeds"])
                    res = interpolate.interpolate_images(b, a, c, n_points=st["n_points"], num_steps=st["num_steps"],
                                                         t_star=st["t_star"], max_iter=st["max_iter"])
                    figs.update(images=len(res.images), energy=float(res.energy[-1]))
                sync(device)
            r.ok(seconds=round(time.perf_counter() - t0, 3), **figs)
        except Exception as err:
            log.warning("%s failed: %s", r.key, error_reason(err))
            r.skip(f"failed: {error_reason(err)}")
        free(device)
        save()


def run_bench(args, rows, results, deadline, save) -> None:
    """Fill ``rows``: per architecture build/load the model, float64 references, each backend's calls, the tasks."""
    from pipeline import load_model

    device = "cuda" if results["probe"].get("cuda_available") else "cpu"
    results["device"] = device
    work = Path(tempfile.mkdtemp(prefix="gpu_bench_models_"))
    try:
        for arch in args.archs:
            if deadline.expired():
                skip_pending(rows, TIME_LIMIT_REASON, arch=arch)
                save()
                continue
            try:
                src, minfo = model_folder(arch, work, small=args.dry_run)
                results["models"][arch] = minfo
                t0 = time.perf_counter()
                refs = references(src, device, calls=args.calls)
                results["models"][arch]["float64_reference_s"] = round(time.perf_counter() - t0, 2)
            except Exception as err:
                skip_pending(rows, f"failed: model {arch}: {error_reason(err)}", arch=arch)
                save()
                continue
            task_backends: dict = {}
            for dt in args.dtypes:
                model = None
                model32 = None
                for bname in args.backends:
                    setup = next(r for r in rows if r.key == f"{arch}/{dt}/{bname}/setup")
                    if deadline.expired():
                        skip_pending(rows, TIME_LIMIT_REASON, arch=arch, dtype=dt, backend=bname)
                        continue
                    why = backend_unavailable(bname, dt, results["probe"], device)
                    if why:
                        skip_pending(rows, why, arch=arch, dtype=dt, backend=bname)
                        if dt == args.dtypes[0]:
                            task_backends[bname] = why
                        continue
                    try:
                        if bname in GRAPH_BACKENDS:
                            if model32 is None:
                                model32 = load_model(src, device=device, dtype="float32")
                            m = model32
                        else:
                            if model is None:
                                model = load_model(src, device=device, dtype=dt)
                            m = model
                        figs: dict = {}
                        with gpu_peak(device, figs):
                            backend, sfigs = make_backend(bname, m, dt, artifacts=artifacts_dir(args.artifacts, arch),
                                                          dry_run=args.dry_run, calls=args.calls)
                        setup.ok(**sfigs, **figs)
                    except Exception as err:
                        reason = f"failed: {error_reason(err)}"
                        log.warning("%s: %s", setup.key, reason)
                        skip_pending(rows, reason, arch=arch, dtype=dt, backend=bname, kind="setup")
                        skip_pending(rows, f"not run: set-up failed ({reason})", arch=arch, dtype=dt, backend=bname,
                                     kind="call")
                        if dt == args.dtypes[0]:
                            task_backends[bname] = f"not run: set-up failed ({reason})"
                        save()
                        continue
                    if "parameters" not in results["models"][arch]:
                        results["models"][arch].update(
                            parameters=sum(p.numel() for p in m.unet.parameters()), sample_size=m.sample_size,
                            image_size=m.image_size, kind=m.kind)
                    run_calls(rows, backend, arch, dt, bname, refs, m, device, args.runs, deadline, save)
                    if dt == args.dtypes[0] and bname in args.task_backends:
                        task_backends[bname] = backend
                    else:
                        close(backend)
                if dt != args.dtypes[0]:
                    del model, model32
                    free(device)
            run_tasks(rows, arch, src, args.dtypes[0], device, task_backends, deadline, save)
            for b in task_backends.values():
                if not isinstance(b, str):
                    close(b)
            task_backends.clear()
            free(device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    skip_pending(rows, "not run: no step of the run reached it")


def artifacts_dir(root: str | None, arch: str) -> Path | None:
    """The artifact directory of ``arch``: ``<root>/<arch>`` (one manifest per model: models sharing a directory
    would overwrite each other's graphs), or None for the cache (which is per model already)."""
    return None if root is None else Path(root) / arch


def close(backend) -> None:
    """Release a backend's engines/sessions where it can."""
    with contextlib.suppress(Exception):
        if hasattr(backend, "close"):
            backend.close()


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------
def _fmt(v, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool) and spec == ",":
        return format(v, ",")
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return format(v, ".1e") if spec == "e" else format(v, spec)
    return str(v)


def format_probe(info: dict) -> list[str]:
    """Markdown lines describing the machine probe."""
    def pkg(name):
        p = info.get(name) or {}
        return f"{p.get('version')}" if p.get("ok") else f"missing ({p.get('error', 'not probed')})"

    gpu = info.get("gpu")
    gpu_text = f"{gpu['name']}, {gpu['memory_gib']} GiB, capability {gpu['capability']}" if gpu else "none"
    ort = info.get("onnxruntime") or {}
    lines = [
        "## Machine",
        "",
        f"- CPU: {info.get('cpu')}, {info.get('logical_cpus')} logical CPUs; Python {info.get('python')}; "
        f"{info.get('platform')}",
        f"- torch {info.get('torch')} (CUDA build {info.get('torch_cuda_build')}); torch.cuda.is_available(): "
        f"{info.get('cuda_available')}",
        f"- GPU: {gpu_text}"
        f"; nvidia-smi: {info.get('nvidia_smi')}; driver CUDA: {info.get('driver_cuda', '-')}; cuDNN "
        f"{info.get('cudnn', '-')}",
        f"- tensorrt: {pkg('tensorrt')}",
        f"- onnxruntime: {pkg('onnxruntime')}; providers {ort.get('providers', '-')}",
        f"- polygraphy: {pkg('polygraphy')}; triton: {pkg('triton')}; onnx: {pkg('onnx')}; "
        f"C++ compiler: {info.get('cxx')}",
    ]
    if info.get("probe_error"):
        lines.append(f"- probe error: {info['probe_error']}")
    return lines


def format_report(r: dict, rows) -> str:
    """The markdown report of results ``r`` and ``rows``."""
    lines = ["# GPU table (benchmarks/gpu.py)" + (" -- CPU dry run" if r.get("dry_run") else ""), "",
             f"Reproduce: `{r['command']}`", "",
             f"Started {r.get('started')}; {r.get('elapsed_s', 0):.0f} s of a time limit of "
             f"{r.get('time_limit') or 'none'} s; device: {r.get('device', '-')}.", ""]
    lines += format_probe(r.get("probe", {}))
    if r.get("install_initial_probe_changed") is not None:
        lines.append(f"- probe before installs differed: {r['install_initial_probe_changed']}")
    lines.append("")
    att = r.get("installs")
    lines += ["## Installs", ""]
    if att is None:
        lines.append("No install asked (`--install` not given)." if not r.get("install_needed")
                     else f"Missing and not installed (`--install` not given): {r['install_needed']}.")
    elif not att:
        lines.append("Nothing needed installing.")
    else:
        lines += ["| package | command | ok | s | output (tail) |", "|---|---|---|---|---|"]
        for a in att:
            lines.append(f"| {a['package']} | `{a['command']}` | {a['ok']} | {a['seconds']} | "
                         f"{a['output_tail'][-200:].replace('|', '/')} |")
    lines.append("")
    if r.get("models"):
        lines += ["## Models", "", "| arch | source | U-Net parameters | sample size | image size | kind | "
                  "float64 refs s |", "|---|---|---|---|---|---|---|"]
        for a, m in r["models"].items():
            lines.append(f"| {a} | {m.get('source')} | {_fmt(m.get('parameters'), ',')} | {m.get('sample_size', '-')} "
                         f"| {m.get('image_size', '-')} | {m.get('kind', '-')} | {m.get('float64_reference_s', '-')} |")
        lines.append("")
    lines += [f"## Calls (t = {T}; x, v standard normal; median of {r.get('runs')} runs after warm-up, ms; "
              "error = ||out - float64|| / ||float64||, of the tangent for JVPs; GPU peak = "
              "torch.cuda.max_memory_allocated in the row, MiB)", "",
              "| arch | dtype | backend | call | median ms | p25-p75 | first ms | rel. error | GPU peak MiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.kind != "call" or row.status != "ok":
            continue
        f = row.figures
        lines.append(f"| {row.arch} | {row.dtype} | {row.backend} | {row.name} | {_fmt(f['median_ms'])} | "
                     f"{_fmt(f['p25_ms'])}-{_fmt(f['p75_ms'])} | {_fmt(f['first_ms'], '.1f')} | "
                     f"{_fmt(f['rel_error'], 'e')} | {_fmt(f.get('gpu_peak_mib'), '.1f')} |")
    lines += ["", "## JVP / forward (same backend, dtype and batch)", "", "| arch/dtype/backend | ratios |",
              "|---|---|"]
    for k, d in jvp_ratios(rows).items():
        lines.append(f"| {k} | " + ", ".join(f"{c.replace('_b', ' b')}: {v:.2f}" for c, v in d.items()) + " |")
    lines += ["", "## Set-up (export, engine build, compile)", "",
              "| arch | dtype | backend | set-up s | ONNX graphs (s, MiB) | engines (s, MiB) | GPU peak MiB |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.kind != "setup" or row.status != "ok":
            continue
        f = row.figures
        onnx = "; ".join(f"{k} {v['seconds']:.1f} s {v['mib']:.1f}" for k, v in f.get("onnx", {}).items()) or "-"
        eng = "; ".join(f"{k} {v['seconds']:.1f} s {v['mib']:.1f}" for k, v in f.get("engines", {}).items()) or "-"
        extra = f" ({f['compiler']})" if f.get("compiler") else ""
        lines.append(f"| {row.arch} | {row.dtype} | {row.backend}{extra} | {f['setup_s']} | {onnx} | {eng} | "
                     f"{_fmt(f.get('gpu_peak_mib'), '.1f')} |")
    lines += ["", "## Tasks (settings: " + "; ".join(f"{k} {v}" for k, v in TASK_SETTINGS.items()) + ")", "",
              "| arch | dtype | backend | task | s | GPU peak MiB | notes |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.kind != "task" or row.status != "ok":
            continue
        f = dict(row.figures)
        s, peak = f.pop("seconds"), f.pop("gpu_peak_mib", None)
        notes = ", ".join(f"{k} {_fmt(v, 'e') if isinstance(v, float) else v}" for k, v in f.items())
        lines.append(f"| {row.arch} | {row.dtype} | {row.backend} | {row.name} | {s:.2f} | {_fmt(peak, '.1f')} | "
                     f"{notes} |")
    lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    for g in check_goals(rows):
        lines.append(f"| {g['goal']} | {g['value']} | "
                     f"{'not measured' if g['met'] is None else ('yes' if g['met'] else 'NO')} |")
    not_run = [row for row in rows if row.status != "ok"]
    lines += ["", f"## Rows not run ({len(not_run)} of {len(rows)}), with the reason", ""]
    groups: dict = {}
    for row in not_run:
        groups.setdefault((row.arch, row.dtype, row.backend, row.kind, row.reason), []).append(row.name)
    if groups:
        lines += ["| arch | dtype | backend | rows | reason |", "|---|---|---|---|---|"]
        for (a, dt, b, _k, reason), names in groups.items():
            lines.append(f"| {a} | {dt} | {b} | {', '.join(names)} | {reason.replace('|', '/')} |")
    for n in r.get("notes", []):
        lines += ["", f"Note: {n}"]
    return "\n".join(lines) + "\n"


def write(r: dict, rows, out: Path, name: str) -> None:
    """Write ``<out>/<name>.json`` (results and every row) and ``<out>/<name>.md``."""
    out.mkdir(parents=True, exist_ok=True)
    r = {**r, "rows": [vars(x) for x in rows], "jvp_ratios": jvp_ratios(rows), "goals": check_goals(rows)}
    (out / f"{name}.json").write_text(json.dumps(r, indent=1, default=str))
    (out / f"{name}.md").write_text(format_report(r, rows))


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------
def _list(choices):
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{bad or text!r}: choose from {', '.join(choices)}")
        return items
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring); ``--dry-run`` changes the defaults of the other flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", type=_list(ARCHS), default=None,
                   help=f"architectures, comma-separated, from {', '.join(ARCHS)} (default: all)")
    p.add_argument("--dtypes", type=_list(DTYPES), default=None,
                   help="dtypes, comma-separated (default float32,float16); the first is also the tasks' dtype")
    p.add_argument("--backends", type=_list(BACKENDS), default=None,
                   help=f"backends, comma-separated, from {', '.join(BACKENDS)} (default: {','.join(GPU_BACKENDS)}; "
                        f"--dry-run: {','.join(DRY_BACKENDS)})")
    p.add_argument("--task-backends", type=_list(BACKENDS), default=None,
                   help="backends that run the library tasks (default torch,tensorrt; --dry-run: torch,ort-cpu)")
    p.add_argument("--calls", type=_list(CALLS), default=None,
                   help="calls to time, from h,eps,h_jvp,eps_jvp (default: all; fewer graphs to export)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds: no new row (or install) starts after this; the rest read 'not run: time limit'")
    p.add_argument("--install", action="store_true",
                   help="pip-install onnxruntime-gpu / tensorrt / polygraphy where a CUDA device needs them and "
                        "they are missing (each attempt and its outcome recorded)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per call after warm-up (default 20; dry run 5)")
    p.add_argument("--artifacts", default=None,
                   help="artifact root of the graph backends, one subfolder per arch (default: the cache)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    p.add_argument("--name", default=None, help="results file stem (default gpu; --dry-run: gpu_dryrun)")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU: the small reference variants, torch / torch-compile (aot_eager) / ONNX Runtime CPU, "
                        "every CUDA-only row reported with its reason")
    a = p.parse_args(argv)
    a.archs = a.archs or list(ARCHS)
    a.dtypes = a.dtypes or ["float32", "float16"]
    a.calls = a.calls or list(CALLS)
    a.backends = a.backends or list(DRY_BACKENDS if a.dry_run else GPU_BACKENDS)
    a.task_backends = a.task_backends or (["torch", "ort-cpu"] if a.dry_run else ["torch", "tensorrt"])
    a.task_backends = [b for b in a.task_backends if b in a.backends]
    a.runs = a.runs or (5 if a.dry_run else 20)
    a.name = a.name or ("gpu_dryrun" if a.dry_run else "gpu")
    return a


def main(argv=None) -> int:
    """Run the benchmark (see the module docstring); returns 0 when the report was written."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    command = "python -m benchmarks.gpu " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    deadline = Deadline(args.time_limit)
    results: dict = {"command": command, "dry_run": args.dry_run, "time_limit": args.time_limit, "runs": args.runs,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "goals_targets": GOALS,
                     "task_settings": TASK_SETTINGS, "models": {}, "notes": []}
    results["probe"] = probe()
    need = needed_installs(results["probe"], args.backends)
    results["install_needed"] = need
    if args.install:
        results["installs"] = install(need, deadline) if need else []
        if need:
            before = results["probe"]
            results["probe"] = probe()
            results["install_initial_probe_changed"] = before != results["probe"]
    if args.dry_run and results["probe"].get("cuda_available"):
        results["notes"].append("dry run on a machine with CUDA: run on the CPU anyway")
        results["probe"]["cuda_available"] = False
    results["notes"].append("Backends are timed one after another (not round-robin as in benchmarks/accel.py): a GPU "
                            "is not shared with other jobs as the CPU machines are.")
    if args.dry_run:
        results["notes"].append("Dry run: small reference variants (benchmarks/reference.py --small), CPU only, "
                                "torch-compile with the aot_eager compiler (exercises the code path, not inductor's "
                                "speed). Figures are CPU figures and say nothing of a GPU.")
    rows = plan_rows(args.archs, args.dtypes, args.backends, args.task_backends, args.calls)
    out = Path(args.out)

    def save():
        results["elapsed_s"] = round(deadline.elapsed(), 1)
        write(results, rows, out, args.name)

    save()
    run_bench(args, rows, results, deadline, save)
    save()
    print(f"\nreproduce: {command}")
    print((out / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
