"""Hashes that key the artifact cache: what made an artifact, never whether a file exists.

``key = sha256(weights hash, spec digest, code version[, engine settings])``:

- :func:`weights_hash`: the U-Net's tensors (names, dtypes, shapes, bytes) and config, the noise schedule, the
  prediction type and, for latent models, the empty-prompt conditioning: everything the traced graphs bake in.
- :meth:`GraphSpec.digest <export.specs.GraphSpec.digest>`: the export contract.
- :func:`code_version`: the source of ``export/``, ``accel/`` and ``pipeline/model.py`` (which defines the traced
  functions) and the versions of torch, onnx, onnxscript and diffusers.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parent.parent
#: Source files whose content is part of the code version (relative to the repository root; globs allowed).
CODE_SOURCES: tuple[str, ...] = ("export/*.py", "accel/*.py", "pipeline/model.py")
#: Distributions whose versions are part of the code version.
CODE_PACKAGES: tuple[str, ...] = ("torch", "onnx", "onnxscript", "diffusers")


def _update_tensor(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def weights_hash(model) -> str:
    """sha256 fingerprint of a :class:`~pipeline.model.DiffusionModel`'s computation (weights, config, schedule).

    Hashes every byte of the U-Net's state dict: a few ms for small models, a few seconds for Stable Diffusion's.
    """
    h = hashlib.sha256()
    unet = model.unet
    h.update(type(unet).__name__.encode())
    # diffusers' private config entries say where the config came from, not what it computes: _name_or_path (the
    # folder), _diffusers_version, and _use_default_values (built from a set: its order changes between processes)
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(f"|{model.kind}|{model.prediction_type}|".encode())
    for name, t in unet.state_dict().items():
        _update_tensor(h, name, t)
    _update_tensor(h, "alphas_cumprod", model.alphas_cumprod)
    if model.cond is not None:
        _update_tensor(h, "cond", model.cond)
    return h.hexdigest()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """``{"sources_sha256": ..., "<package>": version, ...}`` of the code that makes artifacts (cached per process)."""
    h = hashlib.sha256()
    for pattern in CODE_SOURCES:
        for path in sorted(_ROOT.glob(pattern)):
            h.update(str(path.relative_to(_ROOT)).encode())
            h.update(path.read_bytes())
    out = {"sources_sha256": h.hexdigest()}
    out.update({dist: _version(dist) for dist in CODE_PACKAGES})
    return out


def code_digest(version: dict[str, str] | None = None) -> str:
    """sha256 of a code version dict (default: this process's :func:`code_version`)."""
    version = code_version() if version is None else version
    return hashlib.sha256(json.dumps(version, sort_keys=True).encode()).hexdigest()


def artifact_key(weights: str, spec_digest: str, code: str, extra: str = "") -> str:
    """The cache key of one artifact: sha256 over the weights hash, spec digest, code digest and ``extra``
    (engine settings such as precision and the TensorRT version)."""
    return hashlib.sha256("|".join((weights, spec_digest, code, extra)).encode()).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
