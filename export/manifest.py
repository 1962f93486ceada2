"""The manifest of an artifact directory: what each file is, what made it, and how it compared with PyTorch.

One ``manifest.json`` per directory (an export's ``--out`` folder, or one model's folder in the artifact cache)::

    {"format": 1, "model_source": ..., "weights_hash": ..., "code_version": {...},
     "artifacts": {"h_jvp_b8.onnx": {"spec": {...}, "key": ..., "files": {"h_jvp_b8.onnx": "<sha256>", ...},
                                     "checks": [{"runner": ..., "max_abs": {...}, "max_rel": {...}, ...}], ...}}}

An artifact is valid only when its recorded key equals the key expected now (weights, spec, code version) and every
listed file exists with the recorded sha256 (:meth:`Manifest.problem`); anything else is rebuilt, never trusted
because a file exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import ManifestError
from .fingerprint import file_sha256
from .specs import GraphSpec

FORMAT = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Tolerance:
    """Parity tolerances. An element passes polygraphy's check when ``|a - b| <= atol`` or ``|a - b| / |b| <= rtol``;
    an output passes ours when ``max|a - b| / max|b| <= max_rel`` (a norm-wise relative error)."""

    atol: float
    rtol: float
    max_rel: float


#: Documented tolerances per precision. fp32: measured errors are ~1e-6 relative (docs/maths.md section 7.4),
#: 100x headroom.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, max_rel=1e-4),
    "fp16": Tolerance(atol=5e-2, rtol=5e-2, max_rel=2e-2),  # half-precision TensorRT engines
}


@dataclass(frozen=True)
class CheckResult:
    """One parity check of an exported graph against the eager PyTorch function, on random inputs."""

    runner: str  # what ran the graph, e.g. "onnxruntime[CPUExecutionProvider]" or "tensorrt"
    reference: str  # what it was compared with
    batches: tuple[int, ...]  # batch size of each random input set
    max_abs: dict[str, float]  # per output: max |a - b|
    max_rel: dict[str, float]  # per output: max |a - b| / max |b|
    tolerance: Tolerance
    polygraphy_passed: bool  # polygraphy Comparator, elementwise atol/rtol
    passed: bool  # polygraphy_passed and every max_rel <= tolerance.max_rel
    seconds: float

    @classmethod
    def from_dict(cls, d: dict) -> CheckResult:
        return cls(**{**d, "batches": tuple(d["batches"]), "tolerance": Tolerance(**d["tolerance"])})


@dataclass(frozen=True)
class Artifact:
    """One exported graph (``kind="onnx"``) or TensorRT engine (``kind="engine"``) and its provenance."""

    name: str  # manifest key and main file name: "h.onnx", "h_jvp_b8.onnx", "h_jvp_b8.fp16.engine"
    kind: str  # "onnx" | "engine"
    spec: GraphSpec
    key: str  # artifact_key(weights_hash, spec_digest, code_digest, extra)
    weights_hash: str
    spec_digest: str
    code_digest: str
    precision: str  # "fp32" for ONNX graphs; the engine's precision otherwise
    files: dict[str, str]  # file name (relative to the directory) -> sha256
    checks: tuple[CheckResult, ...]  # empty when exported with --skip-check
    seconds: float  # time to export (trace + export) or build
    created: str  # ISO 8601, UTC
    extra: dict[str, str] = field(default_factory=dict)  # e.g. {"tensorrt": "10.x"}

    @property
    def checked(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Artifact:
        return cls(**{**d, "spec": GraphSpec.from_dict(d["spec"]),
                      "checks": tuple(CheckResult.from_dict(c) for c in d["checks"])})


@dataclass(frozen=True)
class Manifest:
    """Everything in one artifact directory."""

    model_source: str
    weights_hash: str
    code_version: dict[str, str]
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    format: int = FORMAT
    #: Graphs that could not be exported (exception, parity, memory or time limit): artifact name -> record with at
    #: least ``reason`` and ``created`` (and ``seconds``, ``peak_rss_bytes`` where measured). A later successful
    #: export of the same name removes its record. Backends run such a graph in PyTorch and log the reason.
    failures: dict[str, dict] = field(default_factory=dict)

    # ---- I/O --------------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        """Read ``directory/manifest.json``; raises :class:`ManifestError` if it is missing or malformed."""
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"no {MANIFEST_NAME} in {directory}")
        try:
            d = json.loads(path.read_text())
            if d.get("format") != FORMAT:
                raise ManifestError(f"{path} has format {d.get('format')!r}; this code reads format {FORMAT}")
            arts = {k: Artifact.from_dict(v) for k, v in d["artifacts"].items()}
            failures = {str(k): dict(v) for k, v in d.get("failures", {}).items()}
            return cls(model_source=d["model_source"], weights_hash=d["weights_hash"],
                       code_version=dict(d["code_version"]), artifacts=arts, format=d["format"], failures=failures)
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ManifestError(f"{path} is not a valid manifest ({type(err).__name__}: {err})") from err

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/manifest.json`` atomically (temporary file + rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        d = {"format": self.format, "model_source": self.model_source, "weights_hash": self.weights_hash,
             "code_version": self.code_version, "artifacts": {k: a.to_dict() for k, a in self.artifacts.items()},
             "failures": self.failures}
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=directory)
        with os.fdopen(fd, "w") as f:
            json.dump(d, f, indent=1, sort_keys=True)
        os.replace(tmp, directory / MANIFEST_NAME)
        return directory / MANIFEST_NAME

    def with_artifact(self, artifact: Artifact, **fields) -> Manifest:
        """A copy with ``artifact`` added (or replaced) and top-level ``fields`` updated."""
        failures = {k: v for k, v in self.failures.items() if k != artifact.name}
        return replace(self, artifacts={**self.artifacts, artifact.name: artifact}, failures=failures, **fields)

    def with_failure(self, name: str, reason: str, **figures) -> Manifest:
        """A copy recording that artifact ``name`` could not be made, and why (``figures``: e.g. ``seconds``,
        ``peak_rss_bytes``, ``key``). A stale artifact of that name is dropped: the failure is the newer news."""
        from datetime import datetime, timezone

        record = {"reason": str(reason), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  **figures}
        artifacts = {k: v for k, v in self.artifacts.items() if k != name}
        return replace(self, artifacts=artifacts, failures={**self.failures, name: record})

    def failure(self, name: str, expected_key: str | None = None) -> dict | None:
        """The failure record of ``name`` (None if none; with ``expected_key``, only one made for that key or with
        no key recorded)."""
        rec = self.failures.get(name)
        if rec is None or (expected_key is not None and rec.get("key") not in (None, expected_key)):
            return None
        return rec

    # ---- validation -------------------------------------------------------------------------------------------------
    def problem(self, name: str, directory: str | os.PathLike, expected_key: str) -> str | None:
        """Why artifact ``name`` cannot be used (missing, stale key, missing or corrupt file), or None if it can."""
        art = self.artifacts.get(name)
        if art is None:
            return "not in the manifest"
        if art.key != expected_key:
            return f"stale (key {art.key[:12]} != expected {expected_key[:12]}: weights, spec or code changed)"
        if art.checks and not art.checked:
            return "its recorded parity check failed"
        for fname, digest in art.files.items():
            path = Path(directory) / fname
            if not path.is_file():
                return f"file {fname} is missing"
            if file_sha256(path) != digest:
                return f"file {fname} is corrupt (sha256 differs from the manifest)"
        return None


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``directory`` (``.lock`` file; a no-op where ``fcntl`` is unavailable), so two
    processes filling the same cache do not interleave."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        f = open(Path(directory) / ".lock", "a")  # noqa: SIM115  (closed below)
    except OSError:  # a read-only artifact folder: valid artifacts can still be read, nothing can be written
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
