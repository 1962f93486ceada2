"""How many samples one model call may hold: batches of the maps are split to fit a memory budget.

A rate map asks for many JVP directions at once, a geodesic for all its path points, DDIM for every image of a
strip. On the embedded 32x32 model any of those batches fits; on Stable Diffusion 1.5 one JVP sample holds its
64x64 self-attention maps twice (primal and tangent, 8 heads x 4096^2 floats each, about 0.5 GB), so 16 directions in
one call would need about 17 GB. :meth:`pipeline.protocols.ModelMaps` therefore splits any batch larger than
:func:`max_batch` into parts and concatenates the results (every map is per-sample, so the result is the same).

How the limit is found (docs/maths.md does not enter: this is engineering):

1. ``DIFFGEO_MAX_BATCH`` set: that number (``0``: no limit).
2. Models whose size, parameters x model-space pixels, is under :data:`PROBE_MIN_WORK`: no limit. The 35.7M-parameter
   CIFAR-10 DDPM (3.7e10) measured 0.06 GiB a sample, 125 samples in 8 GiB: its probe (about 10 s of JVPs on a
   CPU) would buy nothing. The 256x256 DDPMs (7.4e12) and Stable Diffusion 1.5 (3.5e12) are probed.
3. Otherwise the costliest map, ``eps_jvp``, is run once at batch 2 and once at batch 1 and the peak memory of each
   is measured (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set, ``VmHWM``, reset
   through ``/proc/self/clear_refs``). ``peak(n) = a + b n`` gives the per-sample cost ``b``; the limit is
   ``(budget - a) / b``, at least 1. The budget is :func:`memory_budget`.

The probe runs once per model, at the first call that asks for more than one sample outside a ``torch.func``
transform, and its figures are kept in ``model.info["memory"]``; ``python -m benchmarks.scale`` reports them at full
size.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import InputError

log = logging.getLogger(__name__)

#: Models with fewer parameters x model-space pixels are never probed nor split (see the module's text).
PROBE_MIN_WORK = 1e11
#: Default share of the memory that is free when the probe runs, and the cap on the CPU budget.
BUDGET_FRACTION = 0.5
CPU_BUDGET_CAP = 8 * 2**30
#: Largest limit reported (a bigger batch than this is never asked for in practice).
MAX_LIMIT = 4096
#: Smallest per-sample cost assumed: the resident set cannot see allocations served from memory the process already
#: holds, so a small model can measure ~0; large activations (over glibc's 32 MB mmap threshold) are always seen.
MIN_SAMPLE_BYTES = 2**20

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _mem_available() -> int | None:
    try:
        m = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        return None
    return 1024 * int(m.group(1)) if m else None


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?i?b?)?\s*", text.lower())
    if not m:
        raise InputError(f"DIFFGEO_MEMORY_BUDGET must be a size such as 8GB or 512MB, got {text!r}")
    unit = (m.group(2) or "b").rstrip("b").rstrip("i")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(unit or " "))


def memory_budget(device: torch.device | str) -> int:
    """Bytes the activations of one call may take: ``DIFFGEO_MEMORY_BUDGET`` (e.g. ``8GB``) if set; on CUDA
    :data:`BUDGET_FRACTION` of the free device memory; on the CPU that share of the available RAM, at most
    :data:`CPU_BUDGET_CAP` (8 GiB: with Stable Diffusion 1.5's 4 GB of float32 weights a call then peaks near 13 GB)."""
    env = os.environ.get("DIFFGEO_MEMORY_BUDGET")
    if env:
        return _parse_bytes(env)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(BUDGET_FRACTION * free)
    avail = _mem_available()
    return CPU_BUDGET_CAP if avail is None else int(min(BUDGET_FRACTION * avail, CPU_BUDGET_CAP))


def measure_peak(fn: Callable[[], object], device: torch.device | str) -> int | None:
    """Peak memory ``fn()`` adds above what was in use when it started, in bytes; None where it cannot be measured
    (a CPU without ``/proc``)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    rss = _status_kib("VmRSS")
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set
    except OSError:
        return None
    if rss is None:
        return None
    fn()
    hwm = _status_kib("VmHWM")
    return None if hwm is None else max(0, 1024 * (hwm - rss))


def model_work(model) -> float:
    """Parameters of the U-Net x model-space pixels: the size measure that decides whether to probe."""
    net = getattr(getattr(model, "torch_model", model), "unet", None)
    if net is None:
        return 0.0
    return float(sum(p.numel() for p in net.parameters())) * model.sample_size ** 2


def in_transform() -> bool:
    """Whether a ``torch.func`` transform (jvp, vmap, grad) is active: no probing from inside one."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def probe(model) -> dict:
    """Measure ``eps_jvp`` at batch 2, then 1, on ``model`` (a DiffusionOps); -> the figures and the limit. Batch 2
    goes first: one-time costs of a first call (kernel set-up, caches) then inflate the larger batch, which errs on
    the safe side."""
    budget = memory_budget(model.device)
    # Weights loaded from safetensors are memory-mapped and become resident on first use: touch them first, or the
    # first measured call counts them as activations (Stable Diffusion 1.5: 3.4 GB, a limit of 1 instead of 4).
    net = getattr(model, "unet", None)
    if net is not None:
        with torch.no_grad():
            for prm in net.parameters():
                prm.sum()
    shape = (model.channels, model.sample_size, model.sample_size)
    gen = torch.Generator().manual_seed(0)
    t = model.num_train_timesteps // 2
    peaks, seconds = [0, 0], []
    for n in (2, 1):
        x = torch.randn(n, *shape, generator=gen).to(model.device, model.dtype)
        v = torch.randn(n, *shape, generator=gen).to(model.device, model.dtype)
        tt = model.timesteps(t, n)
        t0 = time.perf_counter()
        with torch.no_grad():
            peaks[n - 1] = measure_peak(lambda x=x, v=v, tt=tt: model._eps_jvp(x, tt, v), model.device)
        seconds.append(time.perf_counter() - t0)
    out = {"budget_bytes": budget, "peak_bytes": peaks, "probe_seconds": sum(seconds)}
    if None in peaks:
        out.update(limit=None, reason="peak memory cannot be measured on this platform")
        return out
    out.update(_fit_limit(peaks, budget))
    return out


def _fit_limit(peaks: list[int], budget: int) -> dict:
    """The per-sample and fixed costs of ``peaks`` = [peak at 1, peak at 2] and the limit they give in ``budget``."""
    # peak(1) and peak(2) are noisy (other threads, reused memory): the larger of the difference and half of peak(2)
    per_sample = max(peaks[1] - peaks[0], peaks[1] / 2, MIN_SAMPLE_BYTES)
    fixed = max(peaks[0] - per_sample, 0)
    return dict(per_sample_bytes=int(per_sample), fixed_bytes=int(fixed),
                limit=int(max(1, min(MAX_LIMIT, (budget - fixed) // per_sample))))


def max_batch(model) -> int | None:
    """Largest batch one call of ``model``'s maps runs at once; None for no limit (see the module's text)."""
    env = _env_limit()
    if env is not False:
        return env
    owner = getattr(model, "torch_model", model)  # a backend shares its model's figures
    info = getattr(owner, "info", None)
    if isinstance(info, dict) and "memory" in info:
        return info["memory"]["limit"]
    if model_work(model) < PROBE_MIN_WORK:  # decided once: the maps ask on every call
        if isinstance(info, dict):
            info["memory"] = {"limit": None, "reason": "under the probe threshold"}
        return None
    if in_transform():
        return None  # not measured from inside a transform; the next plain call does it
    figures = probe(owner)
    if isinstance(info, dict):
        info["memory"] = figures
    log.info("batch limit %s for %s (eps_jvp peak %s bytes at batch 1 and 2, budget %d bytes, probe %.1f s)",
             figures["limit"], getattr(owner, "source", "model"), figures["peak_bytes"], figures["budget_bytes"],
             figures["probe_seconds"])
    return figures["limit"]


def _env_limit() -> int | None | bool:
    """``DIFFGEO_MAX_BATCH`` as a limit (None: no limit), or False when it is not set."""
    env = os.environ.get("DIFFGEO_MAX_BATCH")
    if not env:
        return False
    try:
        n = int(env)
    except ValueError:
        raise InputError(f"DIFFGEO_MAX_BATCH must be a whole number (0: no limit), got {env!r}") from None
    return n if n > 0 else None


def grad_batch(model, run: Callable[[int], object]) -> int | None:
    """Directions whose rate gradients one backward pass may hold: the edits' gradient steps differentiate the JVPs
    of K patch directions, and autograd keeps every activation of the primal and the tangents of all K until the
    backward pass (several times what :func:`max_batch` measures for a call without gradients, which frees them as
    it goes). The loop therefore sums the gradients of parts of at most this many directions (the loss is a sum over
    directions: the same gradient). None: no limit.

    Found like :func:`max_batch`: ``DIFFGEO_MAX_BATCH`` when set; no limit under :data:`PROBE_MIN_WORK`; otherwise
    ``run(2)`` and ``run(1)`` (one rate-and-gradient evaluation of that many directions) measured once per model and
    kept in ``model.info["grad_memory"]``."""
    env = _env_limit()
    if env is not False:
        return env
    owner = getattr(model, "torch_model", model)
    info = getattr(owner, "info", None)
    if isinstance(info, dict) and "grad_memory" in info:
        return info["grad_memory"]["limit"]
    if model_work(owner) < PROBE_MIN_WORK or in_transform():
        if isinstance(info, dict) and not in_transform():
            info["grad_memory"] = {"limit": None, "reason": "under the probe threshold"}
        return None
    budget = memory_budget(owner.device)
    t0 = time.perf_counter()
    peaks = [0, 0]
    for n in (2, 1):  # the larger first, as in probe()
        peaks[n - 1] = measure_peak(lambda n=n: run(n), owner.device)
    out = {"budget_bytes": budget, "peak_bytes": peaks, "probe_seconds": time.perf_counter() - t0}
    out.update({"limit": None, "reason": "peak memory cannot be measured on this platform"} if None in peaks
               else _fit_limit(peaks, budget))
    if isinstance(info, dict):
        info["grad_memory"] = out
    log.info("gradient batch limit %s for %s (rate gradient peak %s bytes at 1 and 2 directions, budget %d bytes)",
             out["limit"], getattr(owner, "source", "model"), peaks, budget)
    return out["limit"]


def split_calls(fn: Callable, limit: int | None, *batched: torch.Tensor):
    """``fn(*batched)`` with the batch (dim 0 of every argument) split into parts of at most ``limit``, results
    concatenated along dim 0 (a tuple result is concatenated per element)."""
    n = batched[0].shape[0]
    if limit is None or n <= limit:
        return fn(*batched)
    parts = [fn(*(a[i:i + limit] for a in batched)) for i in range(0, n, limit)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))
    return torch.cat(parts)
