"""Reliability of the geodesic library (issue 16): non-finite and wrong-shaped scores, the size of a path, and
extrapolation that blew up.

Each case is one that failed before: a NaN score stopped the solver after 0 iterations reporting "zero gradient",
a score of the wrong shape was broadcast silently, ``n_points=10**7`` tried to allocate the dense inverse of the
path Laplacian (800 TB), and extrapolation from a coarse or unconverged path shot off to infinity (the model's
"v contains NaN or inf", or, on a closed-form score, points at |x| ~ 1e34 returned as a result).
"""

from __future__ import annotations

import time

import pytest
import torch

from pipeline import geodesic_optim
from pipeline.errors import InputError, NumericalError
from pipeline.geodesic import (
    MAX_PATH_POINTS,
    VELOCITY_SPEED_RATIO,
    end_velocity_for_extrapolation,
    extrapolate,
    geodesic_bvp,
    geodesic_shoot,
    legendre_velocity,
    lerp,
    relative_lam,
)
from pipeline.geodesic_optim import laplacian_precond, laplacian_solve
from pipeline.model import DEFAULT_MODEL_DIR
from pipeline.synthetic import sphere


def _gaussian(x: torch.Tensor) -> torch.Tensor:
    return -x


def _pair(d: int = 4, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(d, generator=g, dtype=dtype), torch.randn(d, generator=g, dtype=dtype)


# --------------------------------------------------------------------------------------------------------------------
# Non-finite and wrong-shaped scores
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gradient", ["autograd", "jvp"])
def test_nan_score_is_reported_not_taken_for_convergence(gradient):
    """Before: 0 iterations, converged, reason "zero gradient"."""
    a, b = _pair()

    def score(x):
        return torch.full_like(x, float("nan"))

    jvp = (lambda x, v: (score(x), score(v))) if gradient == "jvp" else None
    with pytest.raises(NumericalError, match=r"returned NaN or inf at 3 of 3 points \(energy evaluation 1 \(the "
                                             r"initial path\), the path's segment midpoints\)"):
        geodesic_bvp(score, a, b, n_points=4, score_jvp=jvp, gradient=gradient)


def test_score_nan_far_away_only_shortens_the_line_search():
    """A trial point where the score is NaN is a step too long, not a failure: L-BFGS backtracks."""
    calls = {"raised": 0}

    def f(z):
        if float(z.abs().max()) > 3:
            calls["raised"] += 1
            raise NumericalError("non-finite here")
        return 0.5 * 100 * float(z @ z), 100 * z

    run = geodesic_optim.lbfgs(f, torch.ones(3, dtype=torch.float64), max_iter=50, tol=1e-12, history_size=5,
                               step_hook=lambda it, e: None)
    assert calls["raised"] >= 1 and run.history[-1] < 1e-10 * run.history[0]

    def broken(z):
        if run_state["n"] > 0:
            raise NumericalError("NaN everywhere but the start")
        run_state["n"] += 1
        return float(z @ z), 2 * z

    run_state = {"n": 0}
    with pytest.raises(NumericalError, match=r"L-BFGS iteration 1: every one of 30 trial steps .*NaN everywhere"):
        geodesic_optim.lbfgs(broken, torch.ones(3, dtype=torch.float64), max_iter=5, tol=1e-12, history_size=5,
                             step_hook=lambda it, e: None)


def test_energy_overflow_with_a_finite_score_is_reported():
    a, b = torch.zeros(4), torch.full((4,), 10.0)  # float32

    def score(x):
        return torch.full_like(x, 3e37)  # finite, but s . d overflows float32

    with pytest.raises(NumericalError, match=r"curve energy is NaN or inf .*although the score is finite.*float64"):
        geodesic_bvp(score, a, b, n_points=4)


@pytest.mark.parametrize("bad", ["broadcast", "summed", "numpy"])
def test_score_of_the_wrong_shape_is_refused(bad):
    """Before: a (1, *shape) or (N,) score was broadcast against the path without a word."""
    a, b = _pair()
    score = {
        "broadcast": lambda x: -x.mean(0, keepdim=True),  # (1, D)
        "summed": lambda x: -x.sum(1),  # (N,)
        "numpy": lambda x: (-x).detach().numpy(),
    }[bad]
    match = "must return a torch.Tensor" if bad == "numpy" else r"returned shape .* for points of shape"
    with pytest.raises(InputError, match=match):
        geodesic_bvp(score, a, b, n_points=5)
    if bad != "broadcast":  # shooting evaluates one point at a time, where a (1, D) mean is the right shape
        with pytest.raises(InputError, match=match):
            geodesic_shoot(score, a, b - a, lam=1.0, n_steps=2)
    with pytest.raises(InputError, match=match):
        relative_lam(score, a, b, 1.0)


def test_score_jvp_of_the_wrong_shape_is_refused():
    a, b = _pair()
    with pytest.raises(InputError, match=r"score_jvp \(its JVP\) returned shape \(1, 4\)"):
        geodesic_bvp(_gaussian, a, b, n_points=5, score_jvp=lambda x, v: (-x, -v[:1]))
    with pytest.raises(InputError, match="got a tuple of 3"):
        geodesic_bvp(_gaussian, a, b, n_points=5, score_jvp=lambda x, v: (-x, -v, v))


def test_legendre_velocity_with_a_nan_score_raises():
    a, b = _pair()
    path = lerp(a, b, 4)
    with pytest.raises(NumericalError, match="NaN or inf"):
        legendre_velocity(lambda x: torch.full_like(x, float("nan")), path, lam=10.0,
                          score_jvp=lambda x, v: torch.zeros_like(v))


# --------------------------------------------------------------------------------------------------------------------
# Size of a path: the preconditioner is linear in the points, and n_points is bounded
# --------------------------------------------------------------------------------------------------------------------
def _dense_laplacian(k: int) -> torch.Tensor:
    off = torch.ones(k - 1, dtype=torch.float64)
    return 2 * torch.eye(k, dtype=torch.float64) - torch.diag(off, 1) - torch.diag(off, -1)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 14, 63])
def test_laplacian_solve_equals_the_dense_inverse(k):
    g = torch.Generator().manual_seed(k)
    q = torch.randn(k, 7, generator=g, dtype=torch.float64)
    dense = torch.linalg.inv(_dense_laplacian(k)) @ q
    scale = float(dense.abs().max())
    assert float((laplacian_solve(q) - dense).abs().max()) <= 1e-13 * scale
    # the preconditioner as the solver applies it: (N L)^-1 on the flat interior points, in the points' dtype
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-6)):
        like = torch.zeros((), dtype=dtype)
        pre = laplacian_precond(k + 2, like)(q.to(dtype).reshape(-1))
        assert pre.dtype == dtype
        torch.testing.assert_close(pre.double().reshape(k, 7), dense / (k + 1), rtol=0, atol=tol * scale)


def test_n_points_has_an_upper_bound():
    """Before: n_points=10**7 tried to build a dense 10^7 x 10^7 inverse (800 TB)."""
    a, b = _pair()
    for n in (10**7, MAX_PATH_POINTS + 1):
        with pytest.raises(InputError, match=rf"n_points .* must be an integer in \[3, {MAX_PATH_POINTS}\]"):
            geodesic_bvp(_gaussian, a, b, n_points=n)
    with pytest.raises(InputError, match=rf"in \[2, {MAX_PATH_POINTS}\]"):
        lerp(a, b, 10**7)
    with pytest.raises(InputError, match="n_steps must be an integer"):
        geodesic_shoot(_gaussian, a, b, n_steps=10**7)
    with pytest.raises(InputError, match="MAX_PATH_POINTS"):
        extrapolate(_gaussian, a, b, n_points=5000, beyond=2.0)


def test_the_largest_path_is_solved_in_linear_time_and_memory():
    a, b = _pair(2)
    t0 = time.perf_counter()
    res = geodesic_bvp(_gaussian, a, b, n_points=MAX_PATH_POINTS, lam=0.0, max_iter=2)
    assert time.perf_counter() - t0 < 30  # the dense inverse alone was ~1e12 flops and 800 MB
    # lam = 0: the preconditioned first step is the exact Euclidean minimiser, the straight line
    torch.testing.assert_close(res.path, lerp(a, b, MAX_PATH_POINTS), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------------------------------
# Extrapolation and shooting: blow-ups detected, retried, explained
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s2():
    return sphere(2, 3, sigma=0.1, seed=1)


@pytest.mark.parametrize("seed, n_points, max_iter", [(2, 3, 2), (3, 3, 2), (3, 5, 3)])
def test_extrapolation_from_a_coarse_path_stays_on_the_sphere(s2, seed, n_points, max_iter):
    """Before: the Legendre velocity of a 3-point, 2-iteration path was ~6,600x the path's speed and the shot ended at
    |x| ~ 1e34-1e77 (finite float64 garbage, returned as the result)."""
    a, b = s2.sample(2, seed=seed)
    ex = extrapolate(s2.score, a, b, beyond=0.5, lam=1000.0, n_points=n_points, score_jvp=s2.score_jvp,
                     max_iter=max_iter)
    extra = ex.path[n_points:]
    assert ex.velocity == "damped"  # the Legendre velocity was inconsistent with the path's speed
    assert float((extra.norm(dim=-1) - 1).abs().max()) < 0.01  # on the sphere
    assert float((ex.path[-1] - b).norm()) < 1.5 * float((b - a).norm())  # about beyond x the path, not 1e34
    assert ex.shoot.speed_drift < 0.01


def test_converged_paths_keep_the_legendre_velocity(s2):
    a, b = s2.sample(2, seed=3)
    bvp = geodesic_bvp(s2.score, a, b, lam=1000.0, n_points=16, score_jvp=s2.score_jvp)
    v, used = end_velocity_for_extrapolation(s2.score, bvp.path, lam=1000.0, score_jvp=s2.score_jvp)
    assert used == "legendre"
    torch.testing.assert_close(v, legendre_velocity(s2.score, bvp.path, lam=1000.0, score_jvp=s2.score_jvp))
    coarse = geodesic_bvp(s2.score, a, b, lam=1000.0, n_points=3, score_jvp=s2.score_jvp, max_iter=2)
    v_l = legendre_velocity(s2.score, coarse.path, lam=1000.0, score_jvp=s2.score_jvp)
    assert float(v_l.norm()) > 100 * VELOCITY_SPEED_RATIO * coarse.length  # the blow-up's cause, measured
    assert end_velocity_for_extrapolation(s2.score, coarse.path, lam=1000.0, score_jvp=s2.score_jvp)[1] == "damped"
    v_d, used_d = end_velocity_for_extrapolation(s2.score, coarse.path, lam=1000.0, velocity="difference")
    assert used_d == "difference" and v_d.shape == a.shape


def test_shooting_with_an_exploding_velocity_fails_with_the_reason(s2):
    """The inconsistent Legendre velocity, shot directly: every retry (4, 8, 16, 32 substeps) blows up, and the error
    says which quantity, at which step, and what to change, instead of returning points at |x| ~ 1e34."""
    a, b = s2.sample(2, seed=3)
    coarse = geodesic_bvp(s2.score, a, b, lam=1000.0, n_points=3, score_jvp=s2.score_jvp, max_iter=2)
    v = legendre_velocity(s2.score, coarse.path, lam=1000.0, score_jvp=s2.score_jvp)
    with pytest.raises(NumericalError, match=r"shooting blew up: .* at step 1 of 1 .*tried substeps 4, 8, 16, 32, "
                                             r"the first attempt: the metric speed at step 1.*more path points"):
        geodesic_shoot(s2.score, b, v, lam=1000.0, n_steps=1, dt=0.5, substeps=4, score_jvp=s2.score_jvp)
    with pytest.raises(InputError, match="retries must be"):
        geodesic_shoot(s2.score, b, v, retries=-1)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model_index.json").is_file(), reason="no embedded default model")
def test_default_model_extrapolation_at_the_apps_reach():
    """The app's geodesic tab, extrapolating by 0.5 with 3 points, 2 DDIM steps and 3 BVP iterations, failed with
    "v contains NaN or inf": the Legendre end velocity of that path was ~30x the path's metric speed."""
    import numpy as np

    from pipeline.interpolate import extrapolate_images
    from pipeline.model import load_model
    from pipeline.scenes import make_scene

    model = load_model("default", device="cpu")
    a, b = make_scene(20000000).image, make_scene(20000001).image
    res = extrapolate_images(model, a, b, n_points=3, num_steps=2, max_iter=3, beyond=0.5)
    assert res.velocity == "damped" and len(res.images) == 4
    assert bool(torch.isfinite(res.path).all()) and res.shoot.speed_drift < SPEED_TOL
    step_in = float((res.path[2] - res.path[1]).norm())
    assert float((res.path[3] - res.path[2]).norm()) < 2 * step_in  # about the path's own spacing
    assert all(im.dtype == np.uint8 and im.shape == (32, 32, 3) for im in res.images)


SPEED_TOL = 1e-3
