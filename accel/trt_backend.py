"""The ``tensorrt`` backend: TensorRT engines built with polygraphy from the exported ONNX graphs.

Engines are artifacts like the ONNX files (keyed by weights, spec, code version, precision and TensorRT version;
built on first use with a timing cache, checked against PyTorch). Inputs and outputs stay on the GPU as torch
tensors (polygraphy's ``TrtRunner`` with ``copy_outputs_to_host=False``). Where ``tensorrt`` does not import (e.g. on
the CPU-only development machines) creating the backend raises :class:`BackendUnavailable` with the import error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .base import BackendUnavailable, Tensors
from .graph_backend import GraphBackend

log = logging.getLogger(__name__)


def tensorrt_status() -> tuple[bool, str]:
    """(available, reason): whether ``import tensorrt`` works and a CUDA device is visible."""
    try:
        import tensorrt
    except Exception as err:  # ImportError, or OSError from missing shared libraries
        return False, f"`import tensorrt` failed ({type(err).__name__}: {err})"
    if not torch.cuda.is_available():
        return False, f"tensorrt {tensorrt.__version__} imports but torch sees no CUDA device"
    return True, f"tensorrt {tensorrt.__version__} on {torch.cuda.get_device_name()}"


class TensorRTBackend(GraphBackend):
    """TensorRT engines (fp32 or fp16) through polygraphy's ``TrtRunner``; the model must be on a CUDA device."""

    name = "tensorrt"
    kind = "engine"

    def __init__(self, model, *, artifacts: str | os.PathLike | None = None, batch_sizes: Sequence[int] = (1, 8),
                 precision: str = "fp32", point_graph: bool = True, check: bool = True):
        ok, reason = tensorrt_status()
        if not ok:
            raise BackendUnavailable(f"the tensorrt backend is unavailable: {reason}. It needs an NVIDIA GPU and "
                                     "requirements-gpu.txt installed; use 'onnxruntime' or 'torch' instead")
        if model.device.type != "cuda":
            raise BackendUnavailable(f"the tensorrt backend needs the model on a CUDA device, got {model.device}; "
                                     "load it with load_model(..., device='cuda')")
        super().__init__(model, artifacts=artifacts, batch_sizes=batch_sizes, point_graph=point_graph, check=check,
                         overhead=4.0, precision=precision)
        self.info.update(tensorrt=reason)

    def _load(self, spec, path: Path):
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        runner = TrtRunner(EngineFromBytes(BytesFromPath(str(path))), name=spec.name)
        runner.activate()
        log.info("tensorrt: %s engine loaded (%s)", spec.name, self.precision)
        return runner

    def _execute(self, runner, spec, feeds: dict[str, torch.Tensor]) -> Tensors:
        device = self.model.device
        feeds = {k: v.to(device) for k, v in feeds.items()}
        out = runner.infer(feeds, copy_outputs_to_host=False)
        return tuple(out[n].clone() for n in spec.output_names)  # the runner reuses its output buffers

    def close(self) -> None:
        """Release the engines' GPU memory."""
        for _, runner in self._handles.values():
            runner.deactivate()
        self._handles.clear()
