"""Choosing a backend: :func:`get_backend` and :func:`available_backends`.

``auto`` picks, in this order, the first that applies (and logs which and why):

1. ``tensorrt`` when tensorrt imports and the model is on a CUDA device;
2. ``onnxruntime`` when the model is on a CUDA device and onnxruntime has the CUDA or TensorRT provider;
3. ``onnxruntime`` (CPU provider) when the model is on the CPU and the graphs can be had (onnxruntime imports, and
   either ``artifacts=`` is given or onnx + onnxscript import to export them, for U-Nets of at most 1 GiB of weights:
   :data:`AUTO_EXPORT_MAX_BYTES`). Measured on the 2-core CPU
   (``benchmarks/results/accel.md``): faster than eager PyTorch for h, eps and both JVPs at batch 1 and 8;
4. ``torch`` otherwise (eager; also the only backend that returns gradients).

``torch-compile`` is never picked automatically: compiling takes minutes on CPU on first use. The first use of an
exported-graph backend exports the graphs it needs (tens of seconds each on CPU), then caches them.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pipeline.errors import InputError

from .base import Backend, BackendUnavailable

log = logging.getLogger(__name__)

#: Backend names accepted by :func:`get_backend` (besides ``"auto"``).
BACKENDS: tuple[str, ...] = ("torch", "torch-compile", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here, and why (not)."""

    name: str
    available: bool
    reason: str


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _status(name: str, device: torch.device | None = None) -> BackendStatus:
    if name == "torch":
        return BackendStatus(name, True, f"torch {torch.__version__} (eager)")
    if name == "torch-compile":
        if device is not None and device.type == "cuda":
            ok = _has("triton")
            return BackendStatus(name, ok, "inductor with triton" if ok else "inductor on CUDA needs triton")
        cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++") or shutil.which("cl")
        return BackendStatus(name, cxx is not None,
                             f"inductor (C++ compiler {cxx})" if cxx else "inductor on CPU needs a C++ compiler")
    if name == "onnxruntime":
        try:
            import onnxruntime as ort
        except Exception as err:
            return BackendStatus(name, False, f"`import onnxruntime` failed ({type(err).__name__}: {err})")
        exporter = _has("onnx") and _has("onnxscript")
        reason = f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}"
        if not exporter:
            reason += "; onnx/onnxscript missing: needs artifacts= from an export elsewhere"
        return BackendStatus(name, True, reason)
    if name == "tensorrt":
        from .trt_backend import tensorrt_status

        ok, reason = tensorrt_status()
        return BackendStatus(name, ok, reason)
    raise InputError(f"unknown backend {name!r}; accepted: 'auto', {', '.join(repr(b) for b in BACKENDS)}")


def available_backends(device: str | torch.device | None = None) -> list[BackendStatus]:
    """Every backend with its availability and the reason (versions, providers, or what is missing)."""
    dev = torch.device(device) if device is not None else None
    return [_status(n, dev) for n in BACKENDS]


#: ``auto`` on a CPU exports graphs on first use only for models whose U-Net weights are at most this (ddpm-256's
#: 455 MB: its four graphs export in under 10 minutes here; SD 1.5's 3.4 GB: about 20 minutes, and its sessions hold
#: an estimated 10 GiB beside the model (1.7 GiB measured for h_jvp, 3.3 for eps once made;
#: ``benchmarks/results/scale.md``).
AUTO_EXPORT_MAX_BYTES = 1 << 30


def _auto(model, artifacts) -> tuple[str, str]:
    dev = model.device
    if dev.type == "cuda":
        trt = _status("tensorrt", dev)
        if trt.available:
            return "tensorrt", trt.reason
        ort_status = _status("onnxruntime", dev)
        if ort_status.available:
            import onnxruntime as ort

            gpu = {"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(ort.get_available_providers())
            if gpu:
                return "onnxruntime", f"onnxruntime with {sorted(gpu)} (tensorrt: {trt.reason})"
        return "torch", f"model on {dev}, no GPU graph runtime (tensorrt: {trt.reason})"
    ort_status = _status("onnxruntime", dev)
    from export.onnx_export import param_bytes

    weights = param_bytes(model) if ort_status.available and artifacts is None and hasattr(model, "unet") else 0
    if weights > AUTO_EXPORT_MAX_BYTES:
        return "torch", (f"CPU model with {weights / 2**30:.1f} GiB of U-Net weights: exporting its graphs takes tens "
                         "of minutes on a CPU and each ONNX Runtime session holds the weights again beside the model "
                         "(SD 1.5: an estimated 10 GiB for the four sessions beside its 4.3); ask for "
                         "backend='onnxruntime' (or pass exported artifacts) to use them")
    if ort_status.available and (artifacts is not None or (_has("onnx") and _has("onnxscript"))):
        return "onnxruntime", f"CPU model; {ort_status.reason}"
    return "torch", f"CPU model; onnxruntime unusable ({ort_status.reason})"


def get_backend(model, name: str = "auto", *, artifacts=None, batch_sizes: Sequence[int] = (1, 8),
                **options) -> Backend:
    """A backend for ``model`` by name: ``auto`` (see the module docstring), ``torch``, ``torch-compile``,
    ``onnxruntime`` or ``tensorrt``.

    Args:
        artifacts: export directory for the exported-graph backends (default: the artifact cache).
        batch_sizes: batch sizes of the fixed-batch JVP graphs (exported-graph and torch-compile backends).
        options: backend-specific keywords (e.g. ``providers``, ``threads`` for onnxruntime; ``precision`` for
            tensorrt; ``compiler`` for torch-compile).

    Raises :class:`BackendUnavailable` when the named backend cannot run here (the message says why).
    """
    if not isinstance(name, str) or (name != "auto" and name not in BACKENDS):
        raise InputError(f"unknown backend {name!r}; accepted: 'auto', {', '.join(repr(b) for b in BACKENDS)}")
    if name == "auto":
        name, why = _auto(model, artifacts)
        log.info("accel: auto picked the %s backend (%s)", name, why)
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model, **options)
    if name == "torch-compile":
        status = _status(name, model.device)
        if not status.available:
            raise BackendUnavailable(f"the torch-compile backend is unavailable: {status.reason}")
        from .torch_backend import CompiledTorchBackend

        return CompiledTorchBackend(model, batch_sizes=batch_sizes, **options)
    if name == "onnxruntime":
        from .ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, artifacts=artifacts, batch_sizes=batch_sizes, **options)
    from .trt_backend import TensorRTBackend

    return TensorRTBackend(model, artifacts=artifacts, batch_sizes=batch_sizes, **options)
