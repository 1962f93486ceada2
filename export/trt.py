"""TensorRT engines from the ONNX graphs, built with polygraphy (where ``tensorrt`` imports).

fp32 or fp16 (``precision``); dynamic-batch graphs get one optimisation profile spanning the spec's
``batch_range = (min, opt, max)``; a timing cache in the output directory is loaded and updated by every build, so
rebuilding (e.g. after a weights change) reuses the kernel timings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ExportError
from .specs import GraphSpec

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"


def tensorrt_version() -> str:
    """The installed TensorRT version; raises :class:`ExportError` (with the import error) where it does not import."""
    try:
        import tensorrt
    except Exception as err:  # ImportError, or OSError from missing shared libraries
        raise ExportError(f"TensorRT is not available: `import tensorrt` failed ({type(err).__name__}: {err}). "
                          "Install requirements-gpu.txt on a machine with an NVIDIA GPU.") from err
    return str(tensorrt.__version__)


def engine_name(spec: GraphSpec, precision: str) -> str:
    return f"{spec.name}.{precision}.engine"


def build_engine(spec: GraphSpec, onnx_path: str | Path, engine_path: str | Path, *, precision: str,
                 timing_cache: str | Path | None = None) -> Path:
    """Build and save a TensorRT engine for ``spec`` from its ONNX file; returns ``engine_path``."""
    tensorrt_version()
    from polygraphy.backend.trt import CreateConfig, Profile, engine_from_network, network_from_onnx_path, save_engine
    from polygraphy.logger import G_LOGGER

    profiles = None
    if spec.batch_range is not None:
        lo, opt, hi = spec.batch_range
        profile = Profile()
        for s in spec.inputs:
            profile.add(s.name, min=s.concrete(lo), opt=s.concrete(opt), max=s.concrete(hi))
        profiles = [profile]
    cache = None if timing_cache is None else Path(timing_cache)
    config = CreateConfig(fp16=precision == "fp16", profiles=profiles,
                          load_timing_cache=str(cache) if cache is not None and cache.is_file() else None)
    log.info("building TensorRT engine %s (%s)", Path(engine_path).name, precision)
    try:
        with G_LOGGER.verbosity(G_LOGGER.WARNING):
            engine = engine_from_network(network_from_onnx_path(str(onnx_path)), config=config,
                                         save_timing_cache=None if cache is None else str(cache))
            save_engine(engine, path=str(engine_path))
    except Exception as err:
        raise ExportError(f"building the TensorRT engine for {spec.name} failed ({type(err).__name__}: {err})") from err
    return Path(engine_path)
