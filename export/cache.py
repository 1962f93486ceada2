"""The artifact cache: exported graphs made on first use, one directory per model, keyed by hashes.

Location: ``$DIFFGEO_CACHE`` if set, else ``~/.cache/diffgeo/artifacts``; a model's artifacts live in
``<root>/<weights hash[:16]>/`` with the same layout and manifest as a ``python -m export --out`` folder, so an export
folder can be passed to a backend as ``artifacts=`` and the cache can be inspected like one.
"""

from __future__ import annotations

import os
from pathlib import Path

from .build import export_specs, onnx_key, onnx_name
from .errors import GraphUnavailable
from .manifest import Artifact
from .specs import GraphSpec

CACHE_ENV = "DIFFGEO_CACHE"


def cache_root() -> Path:
    """``$DIFFGEO_CACHE`` or ``~/.cache/diffgeo/artifacts``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffgeo" / "artifacts"


def model_cache_dir(weights: str) -> Path:
    """The cache directory of the model with weights hash ``weights``."""
    return cache_root() / weights[:16]


def ensure_artifact(model, spec: GraphSpec, *, weights: str, directory: str | os.PathLike | None = None,
                    kind: str = "onnx", precision: str = "fp32", check: bool = True) -> tuple[Path, Artifact]:
    """The path of a valid artifact for ``spec`` (``kind="onnx"`` or ``"engine"``), exporting it first when it is
    missing, stale or corrupt (with a warning for the latter two). ``directory`` defaults to the model's cache dir.

    Raises :class:`GraphUnavailable` (with the reason) when the graph cannot be exported, now or in an earlier run
    recorded in the manifest's ``failures``; the failure is recorded so that it is not retried on every start."""
    directory = Path(directory) if directory is not None else model_cache_dir(weights)
    manifest = export_specs(model, directory, [spec], precision=precision, tensorrt=kind == "engine", check=check,
                            weights=weights, keep_going=True)
    failure = manifest.failure(onnx_name(spec), onnx_key(spec, weights))
    if failure is not None:
        raise GraphUnavailable(f"{onnx_name(spec)} could not be exported: {failure['reason']}")
    if kind == "onnx":
        art = manifest.artifacts[onnx_name(spec)]
    else:
        from .trt import engine_name

        art = manifest.artifacts[engine_name(spec, precision)]
    return directory / art.name, art
