"""Shared machinery of the exported-graph backends (ONNX Runtime, TensorRT).

- Artifacts are made on first use: each (graph, batch, model-space size) is looked up in the artifact directory
  (``artifacts=`` or the cache, :mod:`export.cache`) under its hash key and exported when missing, stale or corrupt.
  The weights hash is taken once, when the backend is created: a backend serves the weights it was created with.
- ``h`` and ``eps`` run their dynamic-batch graph (batches above the graph's maximum in slices).
- ``h_jvp`` and ``eps_jvp`` run the fixed-batch graphs: a batch of any size is split into chunks of the exported
  sizes, the last chunk padded (:func:`accel.base.plan_chunks`).
- ``h_jvp_point`` (many directions at one point, as rate maps ask) runs the ``h_jvp_point`` graphs when
  ``point_graph=True``: h(x) once, the tangents batched; otherwise x is repeated along the batch of ``h_jvp``.
- Outputs are plain tensors without autograd history; asking for gradients through them raises.
- A graph that cannot be exported (recorded in the manifest's ``failures``: exception, parity, memory or time limit)
  runs in eager PyTorch, with a logged warning that says why (:attr:`GraphBackend.fallbacks`); the others still run
  on their graphs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.errors import InputError

from .base import Backend, Tensors, _pad, plan_chunks, run_chunked

log = logging.getLogger(__name__)

#: The handle of a graph that could not be exported: it runs in eager PyTorch (:func:`export.trace.graph_function`).
_TORCH_FALLBACK = object()


class GraphBackend(Backend):
    """Base of the backends that run exported graphs; subclasses implement :meth:`_load` and :meth:`_execute`."""

    kind = "onnx"  # artifact kind: "onnx" | "engine"

    def __init__(self, model, *, artifacts: str | os.PathLike | None = None, batch_sizes: Sequence[int] = (1, 8),
                 point_graph: bool = True, check: bool = True, overhead: float = 0.5, precision: str = "fp32"):
        super().__init__(model)
        from export.build import check_exportable
        from export.fingerprint import weights_hash
        from export.specs import check_batch_sizes, check_precision

        check_exportable(model)
        self.batch_sizes = check_batch_sizes(batch_sizes)
        self.precision = check_precision(precision)
        self.artifacts = Path(artifacts) if artifacts is not None else None
        self.point_graph = bool(point_graph)
        self.check = bool(check)
        self.overhead = float(overhead)
        self.weights = weights_hash(model)
        self._specs: dict[tuple[int, int], dict[tuple[str, int | None], object]] = {}
        self._handles: dict[tuple, object] = {}
        self._lock = threading.RLock()
        from export.cache import model_cache_dir

        self.info.update(batch_sizes=self.batch_sizes, point_graph=self.point_graph, precision=self.precision,
                         artifacts=str(self.artifacts or model_cache_dir(self.weights)))

    # ---- artifacts ---------------------------------------------------------------------------------------------
    def spec(self, graph: str, batch: int | None, size: tuple[int, int]):
        """The :class:`~export.specs.GraphSpec` this backend uses for ``graph`` at ``batch`` (None: dynamic)."""
        if size not in self._specs:
            from export.build import model_specs
            from export.specs import GRAPHS

            specs = model_specs(self.model, graphs=GRAPHS, batch_sizes=self.batch_sizes, size=size)
            self._specs[size] = {(s.graph, s.batch): s for s in specs}
        return self._specs[size][(graph, batch)]

    def _handle(self, graph: str, batch: int | None, size: tuple[int, int]):
        key = (graph, batch, size)
        if key not in self._handles:
            with self._lock:  # UI threads may ask for the same graph at once: make it once
                if key not in self._handles:
                    from export.cache import ensure_artifact
                    from export.errors import GraphUnavailable

                    spec = self.spec(graph, batch, size)
                    try:
                        path, _ = ensure_artifact(self.model, spec, weights=self.weights, directory=self.artifacts,
                                                  kind=self.kind, precision=self.precision, check=self.check)
                        self._handles[key] = (spec, self._load(spec, path))
                    except GraphUnavailable as err:  # per-graph fallback: the others still run on the graphs
                        log.warning("%s: %s; running %s in PyTorch instead", self.name, err, spec.name)
                        self.info.setdefault("torch_fallback", {})[spec.name] = str(err)
                        self._handles[key] = (spec, _TORCH_FALLBACK)
        return self._handles[key]

    @property
    def fallbacks(self) -> dict[str, str]:
        """``{graph file stem: reason}`` of the graphs this backend runs in PyTorch because they did not export."""
        return dict(self.info.get("torch_fallback", {}))

    def prepare(self, graphs: Sequence[str] = ("h", "h_jvp", "eps", "eps_jvp"), size: tuple[int, int] | None = None,
                *, jobs: int = 1):
        """Make (or load) the artifacts of ``graphs`` at every batch size now rather than on first use, exporting
        missing ones in ``jobs`` processes. Returns ``self``."""
        from export.build import export_specs
        from export.cache import model_cache_dir

        size = size or (self.model.sample_size, self.model.sample_size)
        keys = [(g, b) for g in graphs for b in ((None,) if g in ("h", "eps") else self.batch_sizes)]
        specs = [self.spec(g, b, size) for g, b in keys]
        export_specs(self.model, self.artifacts or model_cache_dir(self.weights), specs, precision=self.precision,
                     tensorrt=self.kind == "engine", check=self.check, jobs=jobs, weights=self.weights,
                     keep_going=True)  # a graph that fails runs in PyTorch (see _handle)
        for g, b in keys:
            self._handle(g, b, size)
        return self

    # ---- subclass hooks -------------------------------------------------------------------------------------------
    def _load(self, spec, path: Path) -> object:
        raise NotImplementedError

    def _execute(self, handle: object, spec, feeds: dict[str, torch.Tensor]) -> Tensors:
        raise NotImplementedError

    # ---- running ------------------------------------------------------------------------------------------------
    def _run(self, graph: str, batch: int | None, size: tuple[int, int], *inputs: torch.Tensor) -> Tensors:
        spec, handle = self._handle(graph, batch, size)
        if handle is _TORCH_FALLBACK:
            from export.trace import graph_function

            with torch.no_grad():
                return tuple(graph_function(self.model, graph)(*(t.detach() for t in inputs)))
        feeds = {s.name: t.detach().contiguous() for s, t in zip(spec.inputs, inputs, strict=True)}
        return self._execute(handle, spec, feeds)

    @staticmethod
    def _no_grad_needed(*tensors: torch.Tensor) -> None:
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            raise InputError("exported-graph backends return no gradients; inputs require grad. Use the 'torch' "
                             "backend where a loss is differentiated, or call under torch.no_grad()")

    def _dynamic(self, graph: str, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        self._no_grad_needed(x)
        size = tuple(x.shape[2:])
        hi = self.spec(graph, None, size).batch_range[2]
        parts = [self._run(graph, None, size, x[i : i + hi], tt[i : i + hi])[0] for i in range(0, x.shape[0], hi)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _fixed(self, graph: str, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor) -> Tensors:
        self._no_grad_needed(x, v)
        size = tuple(x.shape[2:])
        return run_chunked(lambda b, c: self._run(graph, b, size, *c), (x, tt, v), self.batch_sizes, self.overhead)

    def _point_batchings(self) -> tuple[str, ...]:
        return ("graph", "repeat") if self.point_graph else ("repeat",)

    def _h_jvp_point(self, x1: torch.Tensor, t1: torch.Tensor, v: torch.Tensor, mode: str) -> Tensors:
        """h_jvp of many tangents ``v`` (n, C, H, W) at one point ``x1`` (1, C, H, W) with the h_jvp_point graphs."""
        if mode != "graph":
            return super()._h_jvp_point(x1, t1, v, mode)
        self._no_grad_needed(x1, v)
        size = tuple(x1.shape[2:])
        n, h, parts, start = v.shape[0], None, [], 0
        for b in plan_chunks(n, self.batch_sizes, self.overhead):
            stop = min(n, start + b)
            h1, jh = self._run("h_jvp_point", b, size, x1, t1, _pad(v[start:stop], b))  # (1, ...), (b, ...)
            h = h1 if h is None else h
            parts.append(jh[: stop - start])
            start = stop
        return h, torch.cat(parts) if len(parts) > 1 else parts[0]

    def _h(self, x, tt):
        return self._dynamic("h", x, tt)

    def _eps(self, x, tt):
        return self._dynamic("eps", x, tt)

    def _h_jvp(self, x, tt, v):
        return self._fixed("h_jvp", x, tt, v)

    def _eps_jvp(self, x, tt, v):
        return self._fixed("eps_jvp", x, tt, v)
