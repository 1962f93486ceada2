"""The ``onnxruntime`` backend: exported ONNX graphs in ONNX Runtime sessions.

Providers are tried in the order TensorRT, CUDA, CPU, keeping those ``onnxruntime.get_available_providers()``
lists; each session logs the provider that actually runs (``session.get_providers()[0]``) and warns when it is not the
first one asked for. On CUDA providers with the model on a CUDA device, inputs and outputs are bound in place with IO
binding (no host round trip). Session options (measured in ``benchmarks/accel.py``): full graph optimisation, memory
pattern on, ``threads`` intra-op threads (default: ``torch.get_num_threads()``). CPU memory: graphs up to 256 MiB
(:func:`export.check.cpu_arena_for`) get a session arena of their own; larger ones share one arena per process
(:func:`shared_cpu_arena`), grown by exactly what is asked for, with the memory pattern off. The session's own arena
grows in powers of two (SD 1.5's ``eps_jvp``: 21.7 GiB peak); without an arena every run asks the kernel for fresh
pages (13.5 s a run); the shared arena reuses its memory (9.5 s, 9.8 GiB peak, measured alone on 2 CPU threads) and,
shared, holds the largest session's peak rather than the sum of all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.validate import check_int

from .base import BackendUnavailable, Tensors
from .graph_backend import GraphBackend

log = logging.getLogger(__name__)

#: Provider preference, best first.
PREFERRED_PROVIDERS: tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})
#: Short names accepted for ``providers=``.
PROVIDER_ALIASES = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
                    "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
_NP = {"float32": np.float32, "int64": np.int64}
_TORCH = {"float32": torch.float32, "int64": torch.int64}


def import_onnxruntime():
    """``import onnxruntime``, or :class:`BackendUnavailable` saying why."""
    try:
        import onnxruntime
    except Exception as err:
        raise BackendUnavailable(f"the onnxruntime backend needs the onnxruntime package: import failed "
                                 f"({type(err).__name__}: {err}); pip install onnxruntime (or onnxruntime-gpu)"
                                 ) from err
    return onnxruntime


def resolve_providers(requested: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(providers to use, requested providers that this onnxruntime build lacks).

    ``requested`` (full names or the aliases ``tensorrt``, ``cuda``, ``cpu``) defaults to :data:`PREFERRED_PROVIDERS`.
    The CPU provider is always appended as the last fallback.
    """
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    wanted = list(PREFERRED_PROVIDERS if requested is None else requested)
    if isinstance(requested, str):
        wanted = [requested]
    names = [PROVIDER_ALIASES.get(str(p).lower(), p) for p in wanted]
    unknown = [p for p in names if not str(p).endswith("ExecutionProvider")]
    if unknown:
        raise InputError(f"unknown onnxruntime providers {unknown}; accepted: {sorted(PROVIDER_ALIASES)} or full "
                         f"names such as {list(PREFERRED_PROVIDERS)}")
    providers = [p for p in dict.fromkeys(names) if p in available]
    missing = [p for p in dict.fromkeys(names) if p not in available]
    if "CPUExecutionProvider" not in providers:
        providers.append("CPUExecutionProvider")
    return providers, missing


_SHARED_ARENA: list[bool] = []  # set once the process's shared CPU arena is registered


def shared_cpu_arena() -> bool:
    """Register the process's shared ONNX Runtime CPU arena (once; later calls return at once): sessions with
    ``session.use_env_allocators`` take their CPU memory from it. It grows by exactly what is asked for
    (``arena_extend_strategy`` 1, ``kSameAsRequested``) instead of in powers of two, and keeps its memory for the
    next run of any of those sessions. Returns False where this onnxruntime cannot register one (those sessions then
    use an arena of their own)."""
    if _SHARED_ARENA:
        return _SHARED_ARENA[0]
    ort = import_onnxruntime()
    try:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
        ok = True
    except Exception as err:  # noqa: BLE001 (an old build without env allocators, or one registered elsewhere)
        log.warning("onnxruntime: no shared CPU arena (%s: %s); large graphs get arenas of their own",
                    type(err).__name__, err)
        ok = False
    _SHARED_ARENA.append(ok)
    return ok


class OnnxRuntimeBackend(GraphBackend):
    """ONNX Runtime sessions over the exported graphs (see :mod:`accel.graph_backend` for batching and artifacts).

    Args:
        artifacts: an export directory (``python -m export --out DIR``) or None for the cache.
        batch_sizes: batch sizes of the fixed-batch JVP graphs.
        providers: onnxruntime providers in order of preference (default TensorRT, CUDA, CPU, filtered).
        threads: intra-op threads of the CPU provider (default ``torch.get_num_threads()``).
        optimization: graph optimisation level, one of ``disable``, ``basic``, ``extended``, ``all``.
        mem_pattern: ONNX Runtime's memory pattern optimisation.
        cpu_arena: ONNX Runtime's CPU memory arena: True (each session its own), False (none), ``"shared"`` (one
            for the process's large graphs, :func:`shared_cpu_arena`); None (default): by graph size, its own up to
            256 MiB of graph and weights (:func:`export.check.cpu_arena_for`), the shared one above.
        point_graph: use the ``h_jvp_point`` graph for many directions at one point.
    """

    name = "onnxruntime"

    def __init__(self, model, *, artifacts: str | os.PathLike | None = None, batch_sizes: Sequence[int] = (1, 8),
                 providers: Sequence[str] | None = None, threads: int | None = None, optimization: str = "all",
                 mem_pattern: bool = True, cpu_arena: bool | str | None = None, point_graph: bool = True,
                 check: bool = True, precision: str = "fp32"):
        ort = import_onnxruntime()
        if optimization not in OPTIMIZATION_LEVELS:
            raise InputError(f"optimization must be one of {OPTIMIZATION_LEVELS}, got {optimization!r}")
        if threads is not None:
            threads = check_int("threads (0: onnxruntime's default)", threads, 0)
        self.providers, missing = resolve_providers(providers)
        if missing and providers is not None:
            log.warning("onnxruntime: requested providers %s are not available in this build (available: %s); "
                        "falling back to %s", missing, ort.get_available_providers(), self.providers)
        gpu = self.providers[0] in GPU_PROVIDERS
        super().__init__(model, artifacts=artifacts, batch_sizes=batch_sizes, point_graph=point_graph, check=check,
                         overhead=4.0 if gpu else 0.5, precision=precision)
        self.threads = torch.get_num_threads() if threads is None else threads
        self.optimization = optimization
        self.mem_pattern = bool(mem_pattern)
        if cpu_arena not in (None, True, False, "shared"):
            raise InputError(f"cpu_arena must be None, True, False or 'shared', got {cpu_arena!r}")
        self.cpu_arena = cpu_arena
        self.info.update(requested_providers=list(providers) if providers is not None else None,
                         providers=self.providers, missing_providers=missing, threads=self.threads,
                         optimization=optimization, mem_pattern=self.mem_pattern,
                         cpu_arena=("auto (its own up to 256 MiB, shared above)" if cpu_arena is None
                                    else self.cpu_arena),
                         running_on={})

    # ---- sessions ----------------------------------------------------------------------------------------------
    def arena_for(self, path: str | os.PathLike | None = None) -> bool | str:
        """The CPU arena of the graph at ``path``: True (its own), False (none) or ``"shared"``."""
        from export.check import cpu_arena_for, graph_bytes

        if self.cpu_arena is not None:
            return self.cpu_arena
        return True if path is None or cpu_arena_for(graph_bytes(path)) else "shared"

    def session_options(self, path: str | os.PathLike | None = None):
        """The session options of the graph at ``path`` (its CPU arena: :meth:`arena_for`)."""
        ort = import_onnxruntime()
        so = ort.SessionOptions()
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.enable_mem_pattern = self.mem_pattern
        arena = self.arena_for(path)
        so.enable_cpu_mem_arena = bool(arena)
        if arena == "shared":
            shared_cpu_arena()
            so.add_session_config_entry("session.use_env_allocators", "1")
            so.enable_mem_pattern = False  # one block per run sized by the plan: more than the arena reuses
        so.log_severity_level = 3  # errors only
        return so

    def _provider_list(self, path: Path) -> list:
        out = []
        for p in self.providers:
            if p == "TensorrtExecutionProvider":  # ORT's own TensorRT engines, cached beside the ONNX files
                out.append((p, {"trt_engine_cache_enable": True, "trt_fp16_enable": self.precision == "fp16",
                                "trt_engine_cache_path": str(path.parent / "ort-trt-cache")}))
            elif p == "CUDAExecutionProvider" and self.model.device.type == "cuda":
                out.append((p, {"device_id": self.model.device.index or 0}))
            else:
                out.append(p)
        return out

    def _load(self, spec, path: Path):
        ort = import_onnxruntime()
        sess = ort.InferenceSession(str(path), self.session_options(path), providers=self._provider_list(path))
        running = sess.get_providers()
        self.info["running_on"][spec.name] = running[0]
        log.info("onnxruntime: %s runs on %s (session providers %s)", spec.name, running[0], running)
        if running[0] != self.providers[0]:
            log.warning("onnxruntime: %s asked for %s first but runs on %s", spec.name, self.providers[0], running[0])
        bind = running[0] in GPU_PROVIDERS and self.model.device.type == "cuda"
        return sess, bind

    @property
    def running_on(self) -> dict[str, str]:
        """``{graph file stem: provider that runs it}`` for the sessions made so far."""
        return dict(self.info["running_on"])

    def _execute(self, handle, spec, feeds: dict[str, torch.Tensor]) -> Tensors:
        sess, bind = handle
        batch = next(iter(feeds.values())).shape[0] if spec.batch is None else None
        if bind:
            return self._execute_bound(sess, spec, feeds, batch)
        arrays = {k: v.cpu().numpy() for k, v in feeds.items()}
        outs = sess.run(list(spec.output_names), arrays)
        return tuple(torch.from_numpy(o).to(self.model.device) for o in outs)

    def _execute_bound(self, sess, spec, feeds: dict[str, torch.Tensor], batch: int | None) -> Tensors:
        """IO binding: ONNX Runtime reads the inputs and writes the outputs in place on the GPU."""
        device = self.model.device
        io = sess.io_binding()
        for s in spec.inputs:
            t = feeds[s.name].to(device=device, dtype=_TORCH[s.dtype]).contiguous()
            feeds[s.name] = t  # keep alive until the run ends
            io.bind_input(s.name, "cuda", device.index or 0, _NP[s.dtype], tuple(t.shape), t.data_ptr())
        outs = []
        for s in spec.outputs:
            shape = s.concrete(batch) if batch is not None else s.concrete(spec.batch)
            o = torch.empty(shape, dtype=_TORCH[s.dtype], device=device)
            io.bind_output(s.name, "cuda", device.index or 0, _NP[s.dtype], shape, o.data_ptr())
            outs.append(o)
        torch.cuda.current_stream(device).synchronize()  # inputs written by torch's stream are ready
        sess.run_with_iobinding(io)
        return tuple(outs)
