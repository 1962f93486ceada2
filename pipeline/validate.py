"""Argument checks shared by the library: each raises :class:`~pipeline.errors.InputError` with a message that names
the argument, says what is accepted, and shows the value it got.

Numbers may be Python or numpy scalars (``np.integer``, ``np.floating``); a bool is never taken for a number (``True``
is an ``int`` to Python, but ``num_steps=True`` is a mistake). Each check returns the value as a plain Python object
(``int``, ``float``, ``bool``, or the matched choice), so callers can use the result directly.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

import numpy as np

from .errors import InputError

T = TypeVar("T")


def _range_text(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    """``in [lo, hi]``, ``in (lo, hi]``, ``>= lo``, ``> lo``, ``<= hi``, ``< hi`` or ``""``."""
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for bools (Python's or numpy's) and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """True for Python and numpy integers and floats, False for bools and everything else."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an ``int``; it must be an integer (not a bool) in ``[lo, hi]`` (a bound of None: unbounded)."""
    if not is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"{name} must be an integer{_range_text(lo, hi)}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a ``float``; it must be a finite number (int or float, not a bool) in ``[lo, hi]``.

    ``lo_open`` / ``hi_open`` exclude the bound itself (``lo=0, lo_open=True``: a positive number).
    """
    ok = is_number(value) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        raise InputError(f"{name} must be a finite number{_range_text(lo, hi, lo_open, hi_open)}, got {value!r}")
    return float(value)


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` itself; it must be one of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value tested against a set or dict
        ok = False
    if not ok:
        raise InputError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """``value`` as a ``bool`` (None kept when ``allow_none``); it must be True or False (Python's or numpy's)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        accepted = "True, False or None" if allow_none else "True or False"
        raise InputError(f"{name} must be {accepted}, got {value!r}")
    return bool(value)


def check_finite(name: str, value: T) -> T:
    """``value`` itself; a torch tensor or numpy array (or anything ``np.asarray`` reads as numbers) whose values must
    all be finite: NaN or inf raises, saying how many of the values are not finite. Integer and bool arrays pass."""
    import torch

    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.is_complex()):
            return value
        bad = int((~torch.isfinite(value.detach())).sum())
        total = value.numel()
    else:
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.inexact):
            if arr.dtype == object:
                raise InputError(f"{name} must be numbers, got an array of {arr.dtype}")
            return value
        bad = int((~np.isfinite(arr)).sum())
        total = arr.size
    if bad:
        raise InputError(f"{name} contains NaN or inf ({bad} of {total} values); give finite values")
    return value
