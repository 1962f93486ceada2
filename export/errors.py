"""Exceptions of the export step. Messages say what was wrong and what is accepted."""

from __future__ import annotations


class ExportError(RuntimeError):
    """A graph could not be exported, built into an engine, or loaded from the artifact store."""


class ParityError(ExportError):
    """An exported graph (ONNX or engine) disagrees with PyTorch beyond the documented tolerance."""


class ManifestError(ExportError):
    """A manifest is missing, unreadable, or does not have the expected format."""


class GraphUnavailable(ExportError):
    """A graph that could not be exported (recorded in the manifest's ``failures``): backends run it in PyTorch."""
