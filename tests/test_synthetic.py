"""Closed-form scores of smoothed manifolds against independent references (scipy Bessel functions, autograd of the
log-density, Monte Carlo over the data, forward-mode AD), all in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ive

from pipeline.errors import InputError
from pipeline.synthetic import (
    _ratio_asymptotic,
    _ratio_recurrence,
    b_ratio,
    bessel_ratio,
    c_ratio,
    circle,
    sphere,
    torus,
)

F64 = torch.float64


# ---- Bessel ratio ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 5, 64])
def test_bessel_ratio_matches_scipy(n):
    k = torch.tensor([1e-3, 0.3, 1.0, 7.0, 100.0, 1e4, 1e6], dtype=F64)
    ref = ive(n / 2, k.numpy()) / ive(n / 2 - 1, k.numpy())
    np.testing.assert_allclose(bessel_ratio(k, n).numpy(), ref, rtol=1e-13)


def test_bessel_ratio_n3_is_langevin():
    k = torch.tensor([0.05, 0.5, 3.0, 40.0], dtype=F64)
    torch.testing.assert_close(bessel_ratio(k, 3), 1 / torch.tanh(k) - 1 / k, rtol=1e-13, atol=0)


def _mp_ratio(k: float, n: int) -> float:
    import mpmath  # a torch dependency (through sympy); arbitrary precision reference

    mpmath.mp.dps = 40
    return float(mpmath.besseli(n / 2, k) / mpmath.besseli(n / 2 - 1, k))


def test_recurrence_and_asymptotic_branches():
    # the fallbacks against an arbitrary-precision reference, including where scipy's ive underflows (n = 3072)
    for n in (3, 64, 3072):
        k = torch.tensor([50.0, 800.0, 1e4], dtype=F64)
        ref = torch.tensor([_mp_ratio(float(kk), n) for kk in k], dtype=F64)
        torch.testing.assert_close(_ratio_recurrence(k, n / 2 - 1), ref, rtol=1e-12, atol=0)
        torch.testing.assert_close(bessel_ratio(k, n), ref, rtol=1e-12, atol=0)
    kb = torch.tensor([1e6, 1e8], dtype=F64)
    for n in (2, 3, 64):
        ref = torch.tensor([_mp_ratio(float(kk), n) for kk in kb], dtype=F64)
        torch.testing.assert_close(_ratio_asymptotic(kb, n), ref, rtol=1e-14, atol=0)
    assert torch.isfinite(bessel_ratio(torch.tensor([4e9, 1e15], dtype=F64), 3)).all()  # beyond ive's range


@pytest.mark.parametrize("n", [2, 3, 7])
def test_b_ratio_derivatives(n):
    k = torch.tensor([1e-3, 5e-3, 0.02, 0.3, 2.0, 50.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: b_ratio(z, n), (k,))
    assert torch.autograd.gradgradcheck(lambda z: b_ratio(z, n), (k,))
    assert torch.autograd.gradcheck(lambda z: b_ratio(z, n), (k,), check_forward_ad=True, check_backward_ad=False,
                                     check_undefined_grad=False)
    # C = B' / kappa continuous across the series switch
    near = torch.tensor([0.01 - 1e-9, 0.01 + 1e-9], dtype=F64)
    c = c_ratio(near, n)
    assert abs(float(c[0] - c[1])) < 1e-8 * abs(float(c[0]))


# ---- sphere ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,ambient,seed", [(1, 2, None), (2, 3, 0), (2, 10, 3), (1, 5, 1)])
def test_sphere_score_is_grad_log_density(k, ambient, seed):
    M = sphere(k, ambient, sigma=0.3, seed=seed)
    x = M.sample(6, seed=1, noisy=True).requires_grad_(True)
    (g,) = torch.autograd.grad(M.log_density(x).sum(), x)
    torch.testing.assert_close(M.score(x.detach()), g, rtol=1e-10, atol=1e-10)


def _mc_score(M, x, n=200_000, seed=7):
    """Tweedie by Monte Carlo over the data: s = (E[y | x] - x) / sigma^2 with weights N(x; y, sigma^2)."""
    y = M.sample(n, seed=seed)
    w = torch.softmax(-torch.cdist(x, y) ** 2 / (2 * M.sigma**2), dim=-1)  # (N, n)
    return (w @ y - x) / M.sigma**2


@pytest.mark.parametrize("M", [sphere(2, 3, sigma=0.4), sphere(4, 7, sigma=0.5, seed=2), circle(3, sigma=0.3)],
                         ids=["S2-R3", "S4-R7", "S1-R3"])
def test_sphere_score_matches_monte_carlo(M):
    x = M.sample(5, seed=1, noisy=True)
    err = (M.score(x) - _mc_score(M, x)).norm(dim=-1)
    assert float(err.max()) < 0.03 * M.radius / M.sigma**2, err  # MC error ~1% of the score scale R / sigma^2


@pytest.mark.parametrize("M", [sphere(2, 3, sigma=0.1), sphere(2, 64, sigma=0.05, seed=1), sphere(9, 12, seed=4),
                               circle(2, sigma=0.2)], ids=["S2-R3", "S2-R64", "S9-R12", "S1-R2"])
def test_sphere_score_jvp_matches_autodiff(M):
    x = M.sample(4, seed=2, noisy=True)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    s, ds = M.score_jvp(x, v)
    s_ref, ds_ref = torch.func.jvp(M.score, (x,), (v,))
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ds, ds_ref, rtol=1e-9, atol=1e-9)
    _, ds_bw = torch.autograd.functional.jvp(M.score, x, v)  # double-backward route
    torch.testing.assert_close(ds, ds_bw, rtol=1e-9, atol=1e-9)
    # symmetric Jacobian: u . J v == v . J u
    u = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    _, du = M.score_jvp(x, u)
    torch.testing.assert_close((u * ds).sum(-1), (v * du).sum(-1), rtol=1e-10, atol=1e-9)


def test_sphere_score_at_centre_is_finite():
    M = sphere(2, 3)
    x = torch.zeros(1, 3, dtype=F64)
    assert torch.isfinite(M.score(x)).all()
    assert torch.isfinite(M.score_jvp(x, torch.ones_like(x))[1]).all()


def test_sphere_geometry():
    M = sphere(2, 5, radius=2.0, seed=3)
    a, b = M.sample(2, seed=1)
    torch.testing.assert_close(a.norm(), torch.tensor(2.0, dtype=F64))
    g = M.geodesic(a, b, 11)
    assert g.shape == (11, 5)
    torch.testing.assert_close(g.norm(dim=-1), torch.full((11,), 2.0, dtype=F64))
    torch.testing.assert_close(g[0], a), torch.testing.assert_close(g[-1], b)
    seg = (g[1:] - g[:-1]).norm(dim=-1)
    torch.testing.assert_close(seg, seg.mean().expand(10))
    angle = math.acos(float(a @ b) / 4)
    torch.testing.assert_close(M.distance(a[None], b[None]), torch.tensor([2 * angle], dtype=F64))
    torch.testing.assert_close(M.project(3 * a[None])[0], a)
    with pytest.raises(InputError, match="antipodal"):
        M.geodesic(a, -a, 5)


def test_sphere_bad_input():
    with pytest.raises(InputError, match="k"):
        sphere(0, 3)
    with pytest.raises(InputError, match="ambient"):
        sphere(2, 2)
    with pytest.raises(InputError, match="sigma"):
        sphere(2, 3, sigma=0.0)
    with pytest.raises(InputError, match=r"shape \(N, 3\)"):
        sphere(2, 3).score(torch.zeros(2, 4, dtype=F64))
    with pytest.raises(InputError, match="closed form"):
        sphere(3, 4).log_density(torch.ones(1, 4, dtype=F64))


# ---- torus -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tor():
    return torus(5, sigma=0.15, seed=2)


def test_torus_score_is_grad_log_density(tor):
    x = tor.sample(5, seed=1, noisy=True).requires_grad_(True)
    (g,) = torch.autograd.grad(tor.log_density(x).sum(), x)
    torch.testing.assert_close(tor.score(x.detach()), g, rtol=1e-10, atol=1e-10)


def test_torus_quadrature_converged_and_matches_monte_carlo(tor):
    from pipeline.synthetic import SmoothedTorus

    x = tor.sample(4, seed=3, noisy=True)
    fine = SmoothedTorus(ambient=5, sigma=0.15, seed=2, grid=(300, 100))
    torch.testing.assert_close(tor.score(x), fine.score(x), rtol=1e-9, atol=1e-9)
    err = (tor.score(x) - _mc_score(tor, x, n=300_000)).norm(dim=-1)
    assert float(err.max()) < 0.05 * tor.major / tor.sigma**2, err


def test_torus_score_jvp_matches_autodiff(tor):
    x = tor.sample(3, seed=4, noisy=True)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    s, ds = tor.score_jvp(x, v)
    s_ref, ds_ref = torch.func.jvp(tor.score, (x,), (v,))
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(ds, ds_ref, rtol=1e-9, atol=1e-8)


def test_torus_geodesic(tor):
    a, b = tor.sample(2, seed=5)
    g = tor.geodesic(a, b, 9)
    assert g.shape == (9, 5)
    torch.testing.assert_close(tor.project(g), g, rtol=0, atol=1e-5)  # on the torus (chords of a 96-segment curve)
    seg = (g[1:] - g[:-1]).norm(dim=-1)  # chords of equal arcs: equal up to the curvature term ~arc^3 k^2 / 24
    assert float(seg.max() / seg.min()) < 1.03  # measured 1.0111 on every configuration (excess 0.011 vs 0.03)
    d_ba = float(tor.distance(b[None], a[None]))
    # chord < sum of chords <= arc length (exact inequalities: measured 1.9654, 2.1141, 2.1210); the upper bar is on
    # the excess d_ba / chords - 1, measured 0.0033 on every configuration against 0.01
    assert float((a - b).norm()) < float(seg.sum()) <= d_ba < 1.01 * float(seg.sum())


def test_torus_sample_on_surface(tor):
    y = tor.sample(50, seed=0)
    torch.testing.assert_close(tor.project(y), y, rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="minor radius"):
        torus(major=1.0, minor=1.0)
