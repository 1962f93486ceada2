"""Backends behind one interface: batched ``h``, ``h_jvp``, ``eps``, ``eps_jvp`` (and ``score``, ``score_jvp``).

    from accel import get_backend, available_backends
    backend = get_backend(model, "auto")          # logs which backend it picked and why
    h, jh = backend.h_jvp(x, t, v)

Backends: ``torch`` (eager), ``torch-compile``, ``onnxruntime`` (TensorRT, CUDA or CPU provider), ``tensorrt``.
Exported-graph backends make their artifacts on first use and cache them by hash (:mod:`export.cache`).
``import accel`` stays light: onnxruntime, onnx, polygraphy and tensorrt are imported only by the backend that
needs them. Dependencies point one way: accel -> export -> pipeline (export is imported lazily, when a backend is
made).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Backend, BackendUnavailable, plan_chunks
    from .registry import BACKENDS, BackendStatus, available_backends, get_backend

# ``import accel`` imports nothing heavy (not even torch): names resolve on first access.
_LAZY = {"Backend": ".base", "BackendUnavailable": ".base", "plan_chunks": ".base", "BACKENDS": ".registry",
         "BackendStatus": ".registry", "available_backends": ".registry", "get_backend": ".registry"}

__all__ = ["BACKENDS", "Backend", "BackendStatus", "BackendUnavailable", "available_backends", "get_backend",
           "plan_chunks"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'accel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
