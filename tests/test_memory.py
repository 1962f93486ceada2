"""pipeline.memory: batches split to fit a memory budget give the same results, the probe measures real memory."""

from __future__ import annotations

import sys

import pytest
import torch

from pipeline import memory
from pipeline.errors import InputError


@pytest.fixture()
def model(tiny_model):
    tiny_model.info.pop("memory", None)
    yield tiny_model
    tiny_model.info.pop("memory", None)


@pytest.fixture()
def model64(tiny_model64):
    tiny_model64.info.pop("memory", None)
    yield tiny_model64
    tiny_model64.info.pop("memory", None)


def _inputs(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, model.channels, model.sample_size, model.sample_size)
    return (torch.randn(shape, generator=g).to(model.dtype), torch.randn(shape, generator=g).to(model.dtype))


def test_small_models_are_not_split(model, monkeypatch):
    monkeypatch.delenv("DIFFGEO_MAX_BATCH", raising=False)
    assert model.max_batch() is None and model.info["memory"] == {"limit": None, "reason": "under the probe threshold"}


def test_split_maps_equal_whole_batch(model64, monkeypatch):
    """In float64, so that batch-size-dependent kernel choices cannot hide a wrong split (float32 differs by 1e-6,
    the size of its own error against float64)."""
    model = model64
    x, v = _inputs(model, 5)
    whole = {"eps": model.eps(x, 300), "h": model.h(x, 300), "eps_jvp": model.eps_jvp(x, 300, v),
             "h_jvp": model.h_jvp(x, 300, v), "score_jvp": model.score_jvp(x, 300, v),
             "point": model.h_jvp_point(x[:1], 300, v)}
    calls = []
    inner = model._eps_jvp
    monkeypatch.setattr(model, "_eps_jvp", lambda *a: calls.append(a[0].shape[0]) or inner(*a))
    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "2")
    assert model.max_batch() == 2
    split = {"eps": model.eps(x, 300), "h": model.h(x, 300), "eps_jvp": model.eps_jvp(x, 300, v),
             "h_jvp": model.h_jvp(x, 300, v), "score_jvp": model.score_jvp(x, 300, v),
             "point": model.h_jvp_point(x[:1], 300, v)}
    assert calls == [2, 2, 1, 2, 2, 1], "eps_jvp and score_jvp ran in parts of at most 2"
    for k in whole:
        a, b = whole[k], split[k]
        for u, w in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
            assert u.shape == w.shape, k
            torch.testing.assert_close(u, w, rtol=1e-12, atol=1e-12, msg=k)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_measure_peak_sees_an_allocation():
    def alloc():
        t = torch.ones(50_000_000)  # 200 MB, touched
        return float(t[-1])

    peak = memory.measure_peak(alloc, "cpu")
    assert peak is not None and 150e6 < peak < 400e6, peak
    assert memory.measure_peak(lambda: None, "cpu") < 50e6


def test_probe_sets_the_limit_from_the_budget(model, monkeypatch):
    """The limit from measured peaks: peak(1) = 300 MB, peak(2) = 500 MB -> 250 MB a sample (the larger of the
    difference and half of peak(2), on the safe side), 50 MB fixed."""
    monkeypatch.delenv("DIFFGEO_MAX_BATCH", raising=False)
    monkeypatch.setattr(memory, "PROBE_MIN_WORK", 0)
    peaks = iter([500e6, 300e6, 500e6, 300e6])  # batch 2 first
    sizes = []

    def fake_peak(fn, device):
        fn()
        return int(next(peaks))

    monkeypatch.setattr(memory, "measure_peak", fake_peak)
    inner = model._eps_jvp
    monkeypatch.setattr(model, "_eps_jvp", lambda *a: sizes.append(a[0].shape[0]) or inner(*a))
    monkeypatch.setenv("DIFFGEO_MEMORY_BUDGET", "1GB")
    assert model.max_batch() == (2**30 - 50_000_000) // 250_000_000 == 4
    assert sizes == [2, 1], "the probe ran eps_jvp at batch 2, then 1"
    fig = model.info["memory"]
    assert (fig["per_sample_bytes"], fig["fixed_bytes"], fig["limit"]) == (250_000_000, 50_000_000, 4)
    x, v = _inputs(model, 9)
    sizes.clear()
    model.eps_jvp(x, 100, v)
    assert sizes == [4, 4, 1], "a batch of 9 ran in parts of at most 4, with no second probe"
    model.info.pop("memory")
    monkeypatch.setenv("DIFFGEO_MEMORY_BUDGET", "1kB")  # below one sample: still 1, never 0
    assert model.max_batch() == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_real_probe_records_its_figures(model, monkeypatch):
    monkeypatch.delenv("DIFFGEO_MAX_BATCH", raising=False)
    monkeypatch.delenv("DIFFGEO_MEMORY_BUDGET", raising=False)
    monkeypatch.setattr(memory, "PROBE_MIN_WORK", 0)
    limit = model.max_batch()
    fig = model.info["memory"]
    assert len(fig["peak_bytes"]) == 2 and all(p >= 0 for p in fig["peak_bytes"])
    assert fig["per_sample_bytes"] >= memory.MIN_SAMPLE_BYTES and limit == fig["limit"] >= 1
    assert limit == min(memory.MAX_LIMIT, (fig["budget_bytes"] - fig["fixed_bytes"]) // fig["per_sample_bytes"])


def test_no_probe_inside_a_transform(model, monkeypatch):
    monkeypatch.delenv("DIFFGEO_MAX_BATCH", raising=False)
    monkeypatch.setattr(memory, "PROBE_MIN_WORK", 0)
    x, v = _inputs(model, 2)
    seen = []

    def f(y):
        seen.append(memory.max_batch(model))
        return model.eps(y, 200)

    torch.func.jvp(f, (x,), (v,))
    assert seen == [None] and "memory" not in model.info


def test_budget_and_override_parsing(monkeypatch):
    assert memory._parse_bytes("8GB") == 8 * 2**30 and memory._parse_bytes("512 MiB") == 512 * 2**20
    assert memory._parse_bytes("1000") == 1000
    with pytest.raises(InputError, match="DIFFGEO_MEMORY_BUDGET"):
        memory._parse_bytes("lots")
    monkeypatch.setenv("DIFFGEO_MEMORY_BUDGET", "3GB")
    assert memory.memory_budget("cpu") == 3 * 2**30
    monkeypatch.delenv("DIFFGEO_MEMORY_BUDGET")
    assert 0 < memory.memory_budget("cpu") <= memory.CPU_BUDGET_CAP
    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "x")
    with pytest.raises(InputError, match="DIFFGEO_MAX_BATCH"):
        memory.max_batch(object())
    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "0")
    assert memory.max_batch(object()) is None


def _gradient_case(model, k=5):
    """A plan with k directions at one grid step, for the curve loss's gradient (pipeline.edit.loop)."""
    from pipeline.ddim import Trajectory
    from pipeline.edit.loop import MatchPlan

    x, _ = _inputs(model, 1, seed=3)
    g = torch.Generator().manual_seed(4)
    dirs = torch.randn((k, *x.shape[1:]), generator=g, dtype=x.dtype)
    traj = Trajectory(torch.tensor([0, 300]), torch.stack([x, x]))
    ref = torch.rand((2, k), generator=g, dtype=x.dtype) + 0.5
    weights = torch.rand((2, k), generator=g, dtype=x.dtype) + 0.1
    plan = MatchPlan(traj, traj, torch.ones(x.shape[-2:]), dirs, ref, weights)
    return x, plan


def test_gradient_in_parts_equals_whole(model64, monkeypatch):
    """The edits' curve-loss gradient summed over parts of at most 2 directions equals the whole batch's (float64)."""
    from pipeline.edit import EditConfig
    from pipeline.edit.loop import _curve_loss_and_grad

    x, plan = _gradient_case(model64)
    sel = torch.arange(5)
    monkeypatch.delenv("DIFFGEO_MAX_BATCH", raising=False)
    whole = _curve_loss_and_grad(model64, x, 300, 1, sel, plan, EditConfig())
    sizes = []
    from pipeline.edit import loop

    inner = loop.rates
    monkeypatch.setattr(loop, "rates", lambda m, xv, t, v, **kw: sizes.append(v.shape[0]) or inner(m, xv, t, v, **kw))
    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "2")
    parts = _curve_loss_and_grad(model64, x, 300, 1, sel, plan, EditConfig())
    assert sizes == [2, 2, 1]
    torch.testing.assert_close(parts[0], whole[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(parts[1], whole[1], rtol=1e-10, atol=1e-14)
    assert float(whole[1].abs().max()) > 0


def test_gradient_probe_sets_its_own_limit(model, monkeypatch):
    """A model over the probe threshold measures one rate gradient at 2 directions, then 1, once; peaks 900 MB and
    500 MB -> 450 MB a direction (half of peak(2), the safe side), 50 MB fixed: 2 directions in 1 GiB."""
    from pipeline.edit import EditConfig
    from pipeline.edit.loop import _curve_loss_and_grad

    monkeypatch.delenv("DIFFGEO_MAX_BATCH", raising=False)
    monkeypatch.setattr(memory, "PROBE_MIN_WORK", 0)
    monkeypatch.setenv("DIFFGEO_MEMORY_BUDGET", "1GB")
    model.info.pop("grad_memory", None)
    model.info["memory"] = {"limit": None, "reason": "set by the test"}  # the maps' own limit: not probed here
    peaks = iter([900e6, 500e6])
    probed = []

    def fake_peak(fn, device):
        fn()
        probed.append(1)
        return int(next(peaks))

    monkeypatch.setattr(memory, "measure_peak", fake_peak)
    x, plan = _gradient_case(model)
    try:
        _curve_loss_and_grad(model, x, 300, 1, torch.arange(5), plan, EditConfig())
        _curve_loss_and_grad(model, x, 300, 1, torch.arange(5), plan, EditConfig())
        fig = model.info["grad_memory"]
        assert len(probed) == 2, "probed once per model"
        assert (fig["per_sample_bytes"], fig["fixed_bytes"], fig["limit"]) == (450_000_000, 50_000_000, 2)
    finally:
        model.info.pop("grad_memory", None)


def test_geodesic_solver_chunks_by_the_batch_limit(model, monkeypatch):
    """The geodesic's energy gradient runs in chunks of half the model's batch limit (the backward pass keeps the
    score's activations); an explicit chunk is kept, no limit means no chunking; chunking gives the same path."""
    import numpy as np

    from pipeline import interpolate

    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "4")
    assert interpolate.solver_chunk(model, {"max_iter": 3}) == {"max_iter": 3, "chunk": 2}
    assert interpolate.solver_chunk(model, {"chunk": 5}) == {"chunk": 5}
    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "1")
    assert interpolate.solver_chunk(model, {})["chunk"] == 1
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (model.image_size, model.image_size, 3), dtype=np.uint8) for _ in range(2))
    kw = dict(n_points=5, t_star=100, num_steps=2, max_iter=3)
    chunked = interpolate.interpolate_images(model, a, b, **kw).path
    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "0")
    assert interpolate.solver_chunk(model, {}) == {}
    whole = interpolate.interpolate_images(model, a, b, **kw).path
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-5)
