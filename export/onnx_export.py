"""One graph spec -> one ONNX file (plus its external-data file for models over 1 GiB), with the dynamo exporter.

Dynamic-batch graphs (``h``, ``eps``) export the eager module with ``dynamic_shapes``; static-batch JVP graphs export
the cleaned make_fx trace (:func:`export.trace.trace_static`). The exporter's console chatter goes to the debug log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from .errors import ExportError
from .specs import GraphSpec
from .trace import GraphModule, example_inputs, trace_static

log = logging.getLogger(__name__)

EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go to an external .data file (protobuf caps a file at 2 GiB)


def param_bytes(model) -> int:
    """Bytes of the U-Net's weights (what an exported graph carries as initializers)."""
    return sum(p.numel() * p.element_size() for p in model.unet.parameters())


def export_onnx(model, spec: GraphSpec, path: str | Path) -> list[Path]:
    """Export ``spec``'s graph of ``model`` to ``path``; returns the files written (the .onnx first).

    Raises :class:`ExportError` (with the exporter's message) if tracing or export fails.
    """
    import onnx  # fail early with a clear ImportError if the export extras are missing

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    for stale in (path, data):
        stale.unlink(missing_ok=True)
    external = param_bytes(model) > EXTERNAL_DATA_BYTES
    chatter = io.StringIO()
    # "torchvision is not installed", initializer deduplication and similar notices
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if spec.batch is None:  # dynamic batch: export the eager module
                module = GraphModule(model, spec.graph).eval()
                args = example_inputs(spec, batch=max(2, spec.batch_range[1]), device=model.device)
                lo, _, hi = spec.batch_range
                B = torch.export.Dim("B", min=lo, max=hi)
                dynamic_shapes = tuple({i: B for i, d in enumerate(s.shape) if isinstance(d, str)}
                                       for s in spec.inputs)
            else:  # static batch: export the traced aten graph
                module = trace_static(model, spec)
                args = example_inputs(spec, device=model.device)
                dynamic_shapes = None
            torch.onnx.export(module, args, str(path), input_names=list(spec.input_names),
                              output_names=list(spec.output_names), opset_version=spec.opset,
                              dynamic_shapes=dynamic_shapes, external_data=external, dynamo=True)
    except Exception as err:
        log.debug("exporter output:\n%s", chatter.getvalue())
        raise ExportError(f"exporting {spec.name} to ONNX failed ({type(err).__name__}: {err})") from err
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    log.debug("exporter output:\n%s", chatter.getvalue())
    if not path.is_file():
        raise ExportError(f"the exporter reported success but wrote no {path}")
    onnx.checker.check_model(str(path))
    return [path] + ([data] if data.is_file() else [])
