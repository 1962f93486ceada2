"""Realism and smoothness measures of benchmarks/path_quality.py against brute force and known cases."""

from __future__ import annotations

import itertools

import numpy as np

from benchmarks.path_quality import denoising_error, kid, nearest_frames, realism, smoothness


def test_kid_is_the_unbiased_mmd_of_the_cubic_kernel():
    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 0.5
    k = lambda x, y: (x @ y / 3 + 1) ** 3  # noqa: E731
    aa = np.mean([k(fa[i], fa[j]) for i, j in itertools.permutations(range(5), 2)])
    bb = np.mean([k(fb[i], fb[j]) for i, j in itertools.permutations(range(4), 2)])
    ab = np.mean([k(x, y) for x in fa for y in fb])
    assert abs(kid(fa, fb) - (aa + bb - 2 * ab)) < 1e-12


def test_kid_separates_distributions_at_small_sample_sizes():
    rng = np.random.default_rng(1)
    same = [kid(rng.normal(size=(20, 8)), rng.normal(size=(200, 8))) for _ in range(30)]
    shifted = [kid(rng.normal(size=(20, 8)) + 0.7, rng.normal(size=(200, 8))) for _ in range(30)]
    assert abs(np.mean(same)) < 0.2 * np.mean(shifted) and min(shifted) > max(np.mean(same), 0)


def test_realism_ranks_real_images_above_noise():
    rng = np.random.default_rng(2)
    y, x = np.mgrid[:16, :16] / 16

    def smooth(n):
        c = rng.uniform(0, 1, size=(n, 1, 1, 3))
        return (np.clip(c * (0.5 + 0.5 * x[None, ..., None] * y[None, ..., None]), 0, 1) * 255).astype(np.uint8)

    ref, real = smooth(100), smooth(20)
    noise = rng.integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)
    r_real, r_noise = realism(real, ref), realism(noise, ref)
    assert r_real["n"] == 20 and r_real["sfd"] < r_noise["sfd"] and r_real["kid"] < r_noise["kid"]


def test_smoothness_and_nearest_frames():
    frames = np.linspace(0, 1, 5)[:, None, None, None] * np.ones((5, 4, 4, 3))
    s = smoothness(frames)
    assert abs(s["step_mean"] - 0.25) < 1e-12 and abs(s["step_max"] - 0.25) < 1e-12 and s["step_cv"] < 1e-9
    uneven = smoothness(frames[[0, 1, 4]])
    assert uneven["step_max"] == 0.75 and uneven["step_cv"] > 0.4
    d, idx = nearest_frames(frames[[3, 1]] + 0.01, frames)
    assert list(idx) == [3, 1] and np.allclose(d, 0.01)


def test_denoising_error_is_deterministic_and_finite(tiny_model):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    e1, e2 = denoising_error(tiny_model, imgs), denoising_error(tiny_model, imgs)
    assert e1.shape == (3,) and np.array_equal(e1, e2)  # fixed noise draws: deterministic
    assert np.all(np.isfinite(e1)) and np.all(e1 > 0)
    # the same noise draws for every image: the error of one image does not depend on its batch
    np.testing.assert_allclose(denoising_error(tiny_model, imgs[1:2]), e1[1:2], rtol=1e-5)


def test_digit_angles_are_recovered_from_true_rotations():
    from benchmarks.geodesic_metrics import ANGLE_GRID, SPAN, _angles
    from pipeline.digits import rotated_digit, rotation_path

    theta, n = 40.0, 5
    grid = np.arange(0.0, 360.0, ANGLE_GRID)
    pr = {"theta": theta, "grid": grid,
          "bank": np.stack([rotated_digit(1600, g) for g in grid]).astype(np.float64) / 255}
    frames = np.stack(rotation_path(1600, theta, theta + SPAN, n))
    out = _angles(frames, pr)
    assert out["angle_err"] < ANGLE_GRID and out["monotonic"] == 1.0
    np.testing.assert_allclose(out["angles"], SPAN * np.arange(n) / (n - 1), atol=ANGLE_GRID)
    back = _angles(frames[::-1], pr)  # the same frames played backwards: not monotonic, angles far off
    assert back["monotonic"] == 0.0 and back["angle_err"] > 20


def test_lpips_used_only_when_its_package_and_weights_are_here(monkeypatch, tmp_path):
    """perceptual_metric: the reason when lpips is missing or its backbone is not cached; with both present (a stand-in
    package and weights file), a distance that perceptual_scores uses per frame."""
    import sys
    import types

    import numpy as np
    import pytest
    import torch

    from benchmarks import path_quality as pq

    monkeypatch.setitem(sys.modules, "lpips", None)  # import fails
    assert pq.perceptual_metric() == (None, "the lpips package is not installed")

    class FakeLPIPS(torch.nn.Module):  # mean absolute difference, in [-1, 1] inputs
        def __init__(self, **kw):
            super().__init__()

        def forward(self, a, b):
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    dist, why = pq.perceptual_metric()
    assert dist is None and "not in torch.hub's cache" in why
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / pq.LPIPS_BACKBONE).write_bytes(b"weights")
    dist, why = pq.perceptual_metric()
    assert why == "LPIPS (AlexNet)"
    truth = np.stack([np.full((4, 4, 3), v) for v in (0.0, 0.5, 1.0)])
    path = np.stack([np.full((4, 4, 3), v) for v in (0.0, 0.4, 1.0)])
    got = pq.perceptual_scores(dist, path, truth)
    assert got["lpips_nearest"] == pytest.approx(0.2)  # |0.4 - 0.5| x 2 (inputs in [-1, 1])
    assert got["lpips_step_mean"] == pytest.approx((0.8 + 1.2) / 2)
