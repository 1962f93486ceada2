"""Exceptions raised for bad input. Messages say what was wrong and what is accepted."""

from __future__ import annotations


class InputError(ValueError):
    """An argument is invalid: wrong shape, dtype, range, or a value outside the accepted set."""


class ModelLoadError(RuntimeError):
    """A model source could not be loaded (missing files, no network for a hub id, unsupported layout)."""


class Cancelled(RuntimeError):
    """A long computation was stopped through its cancel flag."""


class NumericalError(RuntimeError):
    """A computation on valid arguments produced NaN or inf, or blew up (e.g. a geodesic whose speed exploded).

    The message says which quantity went wrong, where (step, iteration or points), and what to change.
    """
