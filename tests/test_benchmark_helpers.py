"""Fast checks of benchmark helpers that reported figures depend on (the benchmarks themselves: test_benchmarks.py)."""

from __future__ import annotations

import pytest
import torch
from test_ddim import CountingEps

from benchmarks.default_model import inversion_calls, parse_inversion
from pipeline import InputError
from pipeline.ddim import invert


@pytest.mark.parametrize("spec", ["corrected", "explicit", "explicit+2", "corrected+1"])
def test_inversion_calls_match_the_model_calls_invert_makes(tiny_model, spec):
    method, n = parse_inversion(spec)
    counter = CountingEps(tiny_model)
    x0 = torch.zeros(1, 3, tiny_model.sample_size, tiny_model.sample_size)
    invert(counter, x0, t_end=200, num_steps=5, method=method, fixed_point=n)
    assert counter.calls == inversion_calls(spec, 5)


@pytest.mark.parametrize("spec", ["", "implicit", "explicit+", "explicit+x", "explicit+-1", "corrected+1+1"])
def test_bad_inversion_specs_are_rejected(spec):
    with pytest.raises(InputError, match="METHOD"):
        parse_inversion(spec)
