"""The shared argument checks (pipeline.validate): numpy scalars accepted, bools refused, messages that say what is
accepted; and their use by the modules that replaced their own copies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import InputError
from pipeline.validate import check_bool, check_choice, check_finite, check_float, check_int, is_int, is_number


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_check_int_accepts_python_and_numpy_integers(value):
    out = check_int("num_steps", value, 1, 10)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 3.0, np.float64(3.0), "3", None])
def test_check_int_rejects_bools_floats_and_strings(value):
    with pytest.raises(InputError, match=r"num_steps must be an integer in \[0, 10\], got"):
        check_int("num_steps", value, 0, 10)


def test_check_int_ranges_in_the_message():
    with pytest.raises(InputError, match=r"t_edit must be an integer in \[1, 999\], got 1000"):
        check_int("t_edit", 1000, 1, 999)
    with pytest.raises(InputError, match=r"seed must be an integer >= 0, got -1"):
        check_int("seed", -1, 0)
    with pytest.raises(InputError, match=r"k must be an integer <= 4, got (np.int64\()?5"):
        check_int("k", np.int64(5), hi=4)
    assert check_int("anything", -(10**12)) == -(10**12)  # no bounds: any integer


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float64(0.5), np.int64(1)])
def test_check_float_accepts_python_and_numpy_numbers(value):
    out = check_float("lr", value, 0.0, 1.0)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [True, np.bool_(False), math.nan, math.inf, -math.inf, "0.5", None, [0.5]])
def test_check_float_rejects_bools_non_finite_and_non_numbers(value):
    with pytest.raises(InputError, match=r"lr must be a finite number in \[0.0, 1.0\], got"):
        check_float("lr", value, 0.0, 1.0)


def test_check_float_open_bounds():
    assert check_float("tol", 1e-9, 0.0, lo_open=True) == 1e-9
    with pytest.raises(InputError, match=r"tol must be a finite number > 0.0, got 0.0"):
        check_float("tol", 0.0, 0.0, lo_open=True)
    with pytest.raises(InputError, match=r"beyond must be a finite number in \(0.0, 10.0\], got 0"):
        check_float("beyond", 0, 0.0, 10.0, lo_open=True)
    assert check_float("beyond", 10, 0.0, 10.0, lo_open=True) == 10.0
    with pytest.raises(InputError, match=r"p must be a finite number in \[0.0, 1.0\), got 1.0"):
        check_float("p", 1.0, 0.0, 1.0, hi_open=True)
    with pytest.raises(InputError, match=r"x must be a finite number <= 2.0, got 3"):
        check_float("x", 3, hi=2.0)


def test_check_choice_names_the_choices():
    assert check_choice("grad_mode", "fd", ("forward", "double", "fd")) == "fd"
    with pytest.raises(InputError, match=r"grad_mode must be one of 'forward', 'double', 'fd'; got 'magic'"):
        check_choice("grad_mode", "magic", ("forward", "double", "fd"))
    with pytest.raises(InputError, match=r"mode must be one of 'a', 'b'; got \['a'\]"):
        check_choice("mode", ["a"], ("a", "b"))
    with pytest.raises(InputError, match="must be one of"):
        check_choice("mode", ["a"], {"a", "b"})  # unhashable value against a set: refused, not a TypeError


def test_check_bool():
    assert check_bool("relative", True) is True and check_bool("relative", np.bool_(False)) is False
    assert check_bool("clip_x0", None, allow_none=True) is None
    with pytest.raises(InputError, match=r"relative must be True or False, got 1"):
        check_bool("relative", 1)
    with pytest.raises(InputError, match=r"relative must be True or False, got None"):
        check_bool("relative", None)
    with pytest.raises(InputError, match=r"clip_x0 must be True, False or None, got 'yes'"):
        check_bool("clip_x0", "yes", allow_none=True)


# ---- the modules that use them ---------------------------------------------------------------------------------------
def test_edit_config_checks_accept_numpy_and_refuse_bools():
    from pipeline import edit as E

    cfg = E.check_config(E.RemoveConfig(num_steps=np.int64(5), lr=np.float32(0.02), window=(np.int64(0), 50)))
    assert cfg.num_steps == 5
    for bad, match in [(dict(num_steps=True), r"num_steps must be an integer in \[1, 200\]"),
                       (dict(lr=True), "lr must be a finite number >= 0.0"),
                       (dict(grad_mode="magic"), "grad_mode must be one of 'forward', 'double', 'fd'"),
                       (dict(relative=1), "relative must be True or False"),
                       (dict(clip_x0="no"), "clip_x0 .* must be True, False or None"),
                       (dict(window=(True, 50)), "window must be None or a pair")]:
        with pytest.raises(InputError, match=match):
            E.check_config(E.RemoveConfig(**bad))


def test_geodesic_and_interpolate_checks():
    import torch

    from pipeline.geodesic import geodesic_bvp, lerp

    a, b = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    assert lerp(a, b, np.int64(4)).shape == (4, 3)  # numpy ints are integers now
    with pytest.raises(InputError, match=r"n_points \(path points, both endpoints included\) must be an integer in "
                                          r"\[2, 10000\], got True"):
        lerp(a, b, True)
    with pytest.raises(InputError, match="max_iter must be an integer >= 1, got 0"):
        geodesic_bvp(lambda x: -x, a, b, max_iter=0)
    with pytest.raises(InputError, match="rule must be one of 'midpoint', 'simpson'; got 'trapezoid'"):
        geodesic_bvp(lambda x: -x, a, b, rule="trapezoid")
    with pytest.raises(InputError, match=r"tol must be a finite number > 0.0, got 0"):
        geodesic_bvp(lambda x: -x, a, b, tol=0)


# --------------------------------------------------------------------------------------------------------------------
# Property tests (hypothesis): any value, any bounds
# --------------------------------------------------------------------------------------------------------------------
FAST = settings(max_examples=60, deadline=None, database=None)  # database=None: no .hypothesis/ in the tree
THOROUGH = settings(max_examples=2000, deadline=None, database=None)

_NUMPY_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
ints = st.one_of(st.integers(-(2**70), 2**70),
                 st.sampled_from(_NUMPY_INTS).flatmap(
                     lambda t: st.integers(int(np.iinfo(t).min), int(np.iinfo(t).max)).map(t)))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.floats(width=32).map(np.float32), st.floats().map(np.float64))
others = st.one_of(st.booleans(), st.just(np.bool_(True)), st.just(np.bool_(False)), st.none(), st.text(max_size=5),
                   st.lists(st.integers(), max_size=2), st.just(object()), st.complex_numbers(max_magnitude=10))
anything = st.one_of(ints, floats, others)
bounds = st.one_of(st.none(), st.integers(-1000, 1000))


def _check_int_property(value, lo, hi):
    ok = is_int(value) and (lo is None or value >= lo) and (hi is None or value <= hi)
    if ok:
        out = check_int("n", value, lo, hi)
        assert type(out) is int and out == value
    else:
        with pytest.raises(InputError, match=r"^n must be an integer.*, got "):
            check_int("n", value, lo, hi)


@FAST
@given(anything, bounds, bounds)
def test_property_check_int(value, lo, hi):
    _check_int_property(value, lo, hi)


@pytest.mark.slow
@THOROUGH
@given(anything, bounds, bounds)
def test_property_check_int_thoroughly(value, lo, hi):
    _check_int_property(value, lo, hi)


def _check_float_property(value, lo, hi, lo_open, hi_open):
    finite = is_number(value) and math.isfinite(value)
    ok = finite and (lo is None or (value > lo if lo_open else value >= lo)) \
        and (hi is None or (value < hi if hi_open else value <= hi))
    if ok:
        out = check_float("x", value, lo, hi, lo_open=lo_open, hi_open=hi_open)
        assert type(out) is float and out == float(value)
    else:
        with pytest.raises(InputError, match=r"^x must be a finite number.*, got "):
            check_float("x", value, lo, hi, lo_open=lo_open, hi_open=hi_open)


@FAST
@given(anything, bounds, bounds, st.booleans(), st.booleans())
def test_property_check_float(value, lo, hi, lo_open, hi_open):
    _check_float_property(value, lo, hi, lo_open, hi_open)


@pytest.mark.slow
@THOROUGH
@given(anything, bounds, bounds, st.booleans(), st.booleans())
def test_property_check_float_thoroughly(value, lo, hi, lo_open, hi_open):
    _check_float_property(value, lo, hi, lo_open, hi_open)


@FAST
@given(anything)
def test_property_bools_are_never_numbers(value):
    if isinstance(value, (bool, np.bool_)):
        assert not is_int(value) and not is_number(value)
        assert check_bool("flag", value) is bool(value)
    else:
        assert is_int(value) <= is_number(value)  # every integer is a number
        with pytest.raises(InputError, match="flag must be True or False"):
            check_bool("flag", value)


@FAST
@given(anything, st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), max_size=5))
def test_property_check_choice(value, choices):
    try:
        inside = value in choices
    except TypeError:
        inside = False
    if inside:
        assert check_choice("mode", value, choices) is value
    else:
        with pytest.raises(InputError, match=r"^mode must be one of"):
            check_choice("mode", value, choices)


@FAST
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20),
       st.sampled_from(["numpy", "torch"]))
def test_property_check_finite(values, kind):
    import torch

    arr = np.asarray(values) if kind == "numpy" else torch.tensor(values, dtype=torch.float64)
    n_bad = sum(not math.isfinite(v) for v in values)
    if n_bad == 0:
        assert check_finite("x", arr) is arr
    else:
        with pytest.raises(InputError, match=rf"x contains NaN or inf \({n_bad} of {len(values)} values\)"):
            check_finite("x", arr)
    assert check_finite("i", np.arange(3)) is not None  # integers are always finite
