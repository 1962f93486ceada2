"""Export: ONNX graphs of h, eps and their JVPs (+ parity checks), TensorRT engines, and the artifact cache.

``python -m export --model SRC --out DIR`` or, from Python::

    from export import export_graphs
    manifest = export_graphs(model, "artifacts/", batch_sizes=(1, 8), graphs=("h", "h_jvp", "eps", "eps_jvp"))

Contracts are data (:mod:`export.specs`), artifacts are keyed by hashes (:mod:`export.fingerprint`) and recorded in a
manifest (:mod:`export.manifest`). onnx, onnxruntime, polygraphy and tensorrt are imported only when used.
"""

from .build import check_exportable, check_recorded, export_graphs, export_specs, model_specs
from .cache import CACHE_ENV, cache_root, ensure_artifact, model_cache_dir
from .errors import ExportError, GraphUnavailable, ManifestError, ParityError
from .fingerprint import artifact_key, code_digest, code_version, weights_hash
from .manifest import TOLERANCES, Artifact, CheckResult, Manifest, Tolerance
from .specs import DEFAULT_GRAPHS, GRAPHS, PRECISIONS, GraphSpec, TensorSpec, graph_spec

__all__ = [
    "CACHE_ENV", "DEFAULT_GRAPHS", "GRAPHS", "PRECISIONS", "TOLERANCES", "Artifact", "CheckResult", "ExportError",
    "GraphSpec", "GraphUnavailable", "Manifest", "ManifestError",
    "ParityError", "TensorSpec", "Tolerance", "artifact_key", "cache_root",
    "check_exportable", "check_recorded", "code_digest", "code_version", "ensure_artifact", "export_graphs",
    "export_specs", "graph_spec", "model_cache_dir", "model_specs", "weights_hash",
]
