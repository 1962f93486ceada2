"""Parity of exported graphs with PyTorch, through polygraphy's runners and Comparator.

The graph (ONNX Runtime or TensorRT runner) and the eager PyTorch function (:class:`TorchRunner`; polygraphy's own
``PytRunner`` moves every input to CUDA, so it cannot run on a CPU-only machine) see the same random inputs
(``x, v ~ N(0, 1)``, ``t`` uniform over the training timesteps). polygraphy's ``SimpleCompareFunc`` checks every element
(``atol``/``rtol``) and we record, per output, the max absolute error and the norm-wise relative error
``max|a - b| / max|b|`` (:class:`~export.manifest.Tolerance`).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .errors import ParityError
from .manifest import TOLERANCES, CheckResult
from .specs import GraphSpec
from .trace import example_inputs, graph_function

log = logging.getLogger(__name__)


def _torch_runner_class():
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class TorchRunner(BaseRunner):
        """A polygraphy runner around an eager PyTorch function (any device; inputs and outputs as numpy)."""

        def __init__(self, fn, spec: GraphSpec, device: torch.device, name: str = "torch-eager", loader=None):
            super().__init__(name=name, prefix="torch-runner")
            self._fn, self._spec, self._device, self._loader = fn, spec, device, loader

        def activate_impl(self):
            if self._loader is not None:  # load the model only now: after the graph's runner has freed its session
                model = self._loader()
                self._fn, self._device = graph_function(model, self._spec.graph), model.device

        def deactivate_impl(self):
            if self._loader is not None:
                self._fn = None

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for s in self._spec.inputs:
                meta.add(s.name, np.dtype(s.dtype), s.shape)
            return meta

        def infer_impl(self, feed_dict):
            args = [torch.from_numpy(np.ascontiguousarray(feed_dict[n])).to(self._device)
                    for n in self._spec.input_names]
            start = time.perf_counter()
            with torch.no_grad():
                outs = self._fn(*args)
            self.inference_time = time.perf_counter() - start
            names = self._spec.output_names
            return OrderedDict((n, o.detach().cpu().numpy()) for n, o in zip(names, outs, strict=True))

    return TorchRunner


def check_batches(spec: GraphSpec, samples: int = 2) -> tuple[int, ...]:
    """Batch size of each random input set: the static batch, or 1 and the optimum for dynamic graphs."""
    if spec.batch is not None:
        return (spec.batch,) * samples
    other = max(2, spec.batch_range[1])  # the optimum, or 2: at least one batch > 1
    return ((1,) + (other,) * (samples - 1))[:samples]


def _feeds(num_timesteps: int, spec: GraphSpec, batches: tuple[int, ...], seed: int) -> list[OrderedDict]:
    gen = torch.Generator().manual_seed(seed)
    feeds = []
    for b in batches:
        inputs = example_inputs(spec, batch=b, num_timesteps=num_timesteps, generator=gen)
        feeds.append(OrderedDict((n, t.numpy()) for n, t in zip(spec.input_names, inputs, strict=True)))
    return feeds


def compare(model, spec: GraphSpec, runner, runner_label: str, *, precision: str = "fp32", samples: int = 2,
            seed: int = 0, raise_on_failure: bool = True) -> CheckResult:
    """Run ``runner`` (a polygraphy runner of the exported graph) and the eager PyTorch function on the same random
    inputs and compare every output. Raises :class:`ParityError` on failure unless ``raise_on_failure=False``.

    ``model`` may be a :class:`LazyModel`: the PyTorch model is then loaded only after the graph's runner has run and
    freed its session, so the two never share the process's memory."""
    from polygraphy.comparator import Comparator, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    tol = TOLERANCES[precision]
    batches = check_batches(spec, samples)
    reference = "torch eager" + (" (torch.func.jvp)" if spec.is_jvp else "")
    if isinstance(model, LazyModel):
        torch_runner = _torch_runner_class()(None, spec, None, loader=model.load)
    else:
        torch_runner = _torch_runner_class()(graph_function(model, spec.graph), spec, model.device)
    start = time.perf_counter()
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        results = Comparator.run([runner, torch_runner],
                                 data_loader=_feeds(model.num_train_timesteps, spec, batches, seed))
        accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=tol.atol, rtol=tol.rtol))
    (_, graph_iters), (_, ref_iters) = list(results.items())
    max_abs: dict[str, float] = {}
    max_rel: dict[str, float] = {}
    for name in spec.output_names:
        errs = [float(np.max(np.abs(g[name].astype(np.float64) - r[name])))
                for g, r in zip(graph_iters, ref_iters, strict=True)]
        scales = [float(np.max(np.abs(r[name]))) for r in ref_iters]
        max_abs[name] = max(errs)
        max_rel[name] = max(e / max(s, 1e-30) for e, s in zip(errs, scales, strict=True))
    pg_passed = bool(accuracy)
    passed = pg_passed and all(r <= tol.max_rel for r in max_rel.values())
    result = CheckResult(runner=runner_label, reference=reference, batches=batches, max_abs=max_abs, max_rel=max_rel,
                         tolerance=tol, polygraphy_passed=pg_passed, passed=passed,
                         seconds=round(time.perf_counter() - start, 3))
    log.info("%s %s vs %s: max abs %s, max rel %s -> %s", spec.name, runner_label, reference,
             {k: f"{v:.2e}" for k, v in max_abs.items()}, {k: f"{v:.2e}" for k, v in max_rel.items()},
             "PASSED" if passed else "FAILED")
    if not passed and raise_on_failure:
        raise ParityError(
            f"{spec.name} on {runner_label} disagrees with {reference}: max rel error {max_rel} "
            f"(accepted <= {tol.max_rel}), polygraphy elementwise check (atol={tol.atol}, rtol={tol.rtol}) "
            f"{'passed' if pg_passed else 'failed'}"
        )
    return result


#: Graph files (weights included) above this size get no CPU memory arena of their own (:func:`cpu_arena_for`): the
#: parity check runs them without one, the backend on the process's shared arena
#: (:func:`accel.ort_backend.shared_cpu_arena`).
LEAN_SESSION_BYTES = 256 << 20


def graph_bytes(onnx_path: str | Path) -> int:
    """Bytes of an ONNX graph and its external data file (if any)."""
    path = Path(onnx_path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def cpu_arena_for(nbytes: int) -> bool:
    """Whether an ONNX Runtime CPU session of a graph of ``nbytes`` should have a CPU memory arena of its own.

    A session's arena keeps the peak of every run for the next and grows in powers of two. Measured on SD 1.5's
    ``h_jvp`` graph (1.3 GiB of weights, batch 1, 2 threads): peak resident 10.8 GiB with it and 6.6 GiB without, and
    2.3 GiB held between runs instead of 10.8; on ``eps_jvp``, 21.7 GiB. Small graphs keep it (many small allocations
    a run, a few MiB held). The parity check, which frees its session before PyTorch's turn, runs large graphs
    without an arena; the backend gives them a shared one (:func:`accel.ort_backend.shared_cpu_arena`).
    """
    return nbytes <= LEAN_SESSION_BYTES


class LazyModel:
    """A model the parity check loads only when PyTorch's turn comes (``load()``: a fresh load each time, freed when
    that turn ends): for the largest graphs, where the model and an ONNX Runtime session of the same weights together
    pass the memory there is. ``num_train_timesteps`` is all the inputs need before that."""

    def __init__(self, load, num_train_timesteps: int):
        self.load, self.num_train_timesteps = load, int(num_train_timesteps)


def check_onnx(model, spec: GraphSpec, onnx_path: str | Path, *, samples: int = 2, seed: int = 0,
               raise_on_failure: bool = True) -> CheckResult:
    """Parity of an ONNX graph (polygraphy's ONNX Runtime runner, CPU provider) with PyTorch. The session is made as
    the backend makes it for a graph of this size (:func:`cpu_arena_for`); polygraphy runs the graph, frees the
    session, then runs PyTorch, so the two peaks do not add up."""
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner

    def session():
        so = ort.SessionOptions()
        so.enable_cpu_mem_arena = cpu_arena_for(graph_bytes(onnx_path))
        so.log_severity_level = 3
        return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    runner = OnnxrtRunner(session)
    return compare(model, spec, runner, "onnxruntime[CPUExecutionProvider]", samples=samples, seed=seed,
                   raise_on_failure=raise_on_failure)


def check_engine(model, spec: GraphSpec, engine_path: str | Path, *, precision: str, samples: int = 2, seed: int = 0,
                 raise_on_failure: bool = True) -> CheckResult:
    """Parity of a TensorRT engine (polygraphy's TrtRunner) with PyTorch at ``precision``'s tolerance."""
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    runner = TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path))))
    return compare(model, spec, runner, f"tensorrt[{precision}]", precision=precision, samples=samples, seed=seed,
                   raise_on_failure=raise_on_failure)
