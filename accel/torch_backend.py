"""PyTorch backends: ``torch`` (eager, autograd-capable; delegates to the model) and ``torch-compile``.

``torch-compile`` (measured with torch 2.13 on CPU): ``torch.compile`` of ``h_raw``/``eps_raw`` works. Compiling a
function that calls ``torch.func.jvp`` fails inside dynamo (``InferenceMode::is_enabled() && self.is_inference()
INTERNAL ASSERT FAILED ... VariableMethodStubs.cpp:66`` while running group_norm on fake tensors, the same assert
that breaks symbolic make_fx). So the JVPs are compiled from the make_fx-traced aten graph (``export.trace``, the
same graph the ONNX export uses), one per batch size, and any batch is served by chunking. Compilation is slow on CPU
(inductor generates and builds C++): expect tens of seconds to minutes per graph on first use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from pipeline.errors import InputError

from .base import Backend, run_chunked

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """Eager PyTorch: the model's own maps (``torch.func.jvp`` for the JVPs, vmap for many directions at one point).
    Outputs keep autograd graphs when the inputs require grad, which the editing losses need."""

    name = "torch"

    @property
    def supports_autograd(self) -> bool:
        return True

    def _h(self, x, tt):
        return self.model._h(x, tt)

    def _eps(self, x, tt):
        return self.model._eps(x, tt)

    def _h_jvp(self, x, tt, v):
        return self.model._h_jvp(x, tt, v)

    def _eps_jvp(self, x, tt, v):
        return self.model._eps_jvp(x, tt, v)

    def point_batching(self, batching: str = "auto", n: int = 2) -> str:
        return self.model.point_batching(batching, n)

    def h_jvp_point(self, x, t, v, *, batching: str = "auto"):
        return self.model.h_jvp_point(x, t, v, batching=batching)


#: torch.compile backends accepted by :class:`CompiledTorchBackend` ("eager"/"aot_eager" only exercise dynamo).
COMPILERS = ("inductor", "aot_eager", "eager")


class CompiledTorchBackend(Backend):
    """``torch.compile`` of the forward maps and of the traced JVP graphs (see the module docstring).

    Args:
        batch_sizes: batch sizes of the traced JVP graphs (any batch is served by chunking and padding).
        compiler: the torch.compile backend (``"inductor"``; ``"aot_eager"``/``"eager"`` for quick checks).
        mode: torch.compile mode (None, ``"reduce-overhead"``, ``"max-autotune"``).
    """

    name = "torch-compile"

    def __init__(self, model, *, batch_sizes: Sequence[int] = (1, 8), compiler: str = "inductor",
                 mode: str | None = None):
        super().__init__(model)
        if compiler not in COMPILERS:
            raise InputError(f"compiler must be one of {COMPILERS}, got {compiler!r}")
        from export.specs import check_batch_sizes

        self.batch_sizes = check_batch_sizes(batch_sizes)
        self._compile = lambda fn: torch.compile(fn, backend=compiler, mode=mode, dynamic=False)
        self._fwd = {"h": self._compile(model.h_raw), "eps": self._compile(model.eps_raw)}
        self._jvp: dict[tuple, torch.nn.Module] = {}
        self.info.update(compiler=compiler, mode=mode, batch_sizes=self.batch_sizes,
                         jvp="make_fx-traced aten graph, compiled per batch size (torch.compile of torch.func.jvp "
                             "fails in dynamo with torch 2.13)")

    def _h(self, x, tt):
        with torch.no_grad():
            return self._fwd["h"](x, tt)

    def _eps(self, x, tt):
        with torch.no_grad():
            return self._fwd["eps"](x, tt)

    def _jvp_graph(self, graph: str, batch: int, size: tuple[int, int]):
        key = (graph, batch, size)
        if key not in self._jvp:
            from export.build import model_specs
            from export.trace import trace_static

            spec = model_specs(self.model, graphs=(graph,), batch_sizes=(batch,), size=size)[0]
            start = time.perf_counter()
            self._jvp[key] = self._compile(trace_static(self.model, spec))
            log.info("torch-compile: traced %s (%.1f s; compiles on first call)", spec.name,
                     time.perf_counter() - start)
        return self._jvp[key]

    def _run_jvp(self, graph: str, x, tt, v):
        size = tuple(x.shape[2:])
        with torch.no_grad():
            return run_chunked(lambda b, c: tuple(self._jvp_graph(graph, b, size)(*c)), (x, tt, v),
                               self.batch_sizes)

    def _h_jvp(self, x, tt, v):
        return self._run_jvp("h_jvp", x, tt, v)

    def _eps_jvp(self, x, tt, v):
        return self._run_jvp("eps_jvp", x, tt, v)
