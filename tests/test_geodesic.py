"""Score-metric geodesics on closed-form scores: straight lines for lam = 0, great circles on spheres, the JVP-assembled
gradient against autograd, shooting against the exact flow and the BVP, and bad input."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from pipeline.errors import Cancelled, InputError, NumericalError
from pipeline.geodesic import (
    METRICS,
    _Counter,
    _energy_grad_autograd,
    _energy_grad_jvp,
    _energy_grad_jvp_denoiser,
    autodiff_jvp,
    curve_energy,
    curve_length,
    end_velocity,
    extrapolate,
    geodesic_bvp,
    geodesic_shoot,
    legendre_velocity,
    lerp,
    metric_norm2,
    relative_lam,
    score_term,
    slerp,
)
from pipeline.synthetic import sphere, torus

F64 = torch.float64


def _gaussian_score(x: torch.Tensor) -> torch.Tensor:
    """Score of a standard-ish anisotropic Gaussian on (N, 2, 3) tensors (a non-flat shape)."""
    scale = torch.linspace(0.5, 2.0, 6, dtype=x.dtype).reshape(2, 3)
    return -x / scale


def _pair(shape=(2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64)


@pytest.fixture(scope="module")
def s2():
    return sphere(2, 3, sigma=0.1, seed=1)


@pytest.fixture(scope="module")
def s2_64():
    return sphere(2, 64, sigma=0.1, seed=2)


# ---- baselines and pieces --------------------------------------------------------------------------------------------
def test_lerp_slerp_shapes_and_ends():
    a, b = _pair()
    for f in (lerp, slerp):
        p = f(a, b, 7)
        assert p.shape == (7, 2, 3)
        assert torch.equal(p[0], a) and torch.equal(p[-1], b)
    u, v = torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    torch.testing.assert_close(slerp(u, v, 5).norm(dim=1), torch.ones(5, dtype=F64))  # unit vectors stay unit
    torch.testing.assert_close(slerp(u, 3 * u, 4), lerp(u, 3 * u, 4))  # parallel: falls back to lerp
    torch.testing.assert_close(slerp(u, -u, 3), lerp(u, -u, 3))  # antiparallel: undefined plane, lerp


def test_metric_norm2_matches_dense_metric():
    x, u = _pair((4, 5), seed=1)
    score = lambda z: torch.sin(z) - z  # noqa: E731
    lam = 7.0
    s = score(x)
    dense = torch.stack([torch.eye(5, dtype=F64) + lam * torch.outer(si, si) for si in s])  # (4, 5, 5)
    ref = torch.einsum("ni,nij,nj->n", u, dense, u)
    torch.testing.assert_close(metric_norm2(score, x, u, lam=lam), ref)


def test_end_velocity_is_second_order():
    t = torch.linspace(0, 1, 9, dtype=F64)[:, None]
    path = torch.cat((t**2, torch.sin(t)), dim=1)  # x(t) = (t^2, sin t) -> x'(1) = (2, cos 1)
    v = end_velocity(path)
    torch.testing.assert_close(v, torch.tensor([2.0, math.cos(1.0)], dtype=F64), rtol=0, atol=5e-3)


# ---- the energy gradient ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sphere-R3", "sphere-R64", "torus-R5"])
def test_jvp_gradient_equals_autograd(name, s2, s2_64):
    M = {"sphere-R3": s2, "sphere-R64": s2_64, "torus-R5": torus(5, sigma=0.2, seed=1)}[name]
    a, b = M.sample(2, seed=4)
    g = torch.Generator().manual_seed(3)
    path = lerp(a, b, 9) + 0.05 * torch.randn(9, a.shape[0], generator=g, dtype=F64)
    path[0], path[-1] = a, b
    e1, g1 = _energy_grad_jvp(M.score, M.score_jvp, path, 1000.0, None, _Counter())
    e2, g2 = _energy_grad_autograd(M.score, path, 1000.0, None, _Counter())
    assert abs(e1 - e2) <= 1e-12 * abs(e2)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10 * float(g2.abs().max()))
    # chunked evaluation gives the same numbers
    e3, g3 = _energy_grad_jvp(M.score, M.score_jvp, path, 1000.0, 3, _Counter())
    torch.testing.assert_close(g3, g1, rtol=1e-12, atol=1e-12 * float(g1.abs().max()))
    assert abs(e3 - e1) <= 1e-12 * abs(e1)


def test_jvp_only_and_pair_forms_agree(s2):
    a, b = s2.sample(2, seed=5)
    jvp_only = lambda x, v: s2.score_jvp(x, v)[1]  # noqa: E731
    path = lerp(a, b, 6)
    c1, c2 = _Counter(), _Counter()
    e1, g1 = _energy_grad_jvp(s2.score, s2.score_jvp, path, 100.0, None, c1)
    e2, g2 = _energy_grad_jvp(s2.score, jvp_only, path, 100.0, None, c2)
    torch.testing.assert_close(g1, g2)
    assert c1.snapshot().score_calls == 0 and c2.snapshot().score_calls == 1  # the pair saves the score call


def test_curve_energy_formula():
    a, b = _pair()
    path = lerp(a, b, 5)
    d = (b - a) / 4
    s = _gaussian_score(0.5 * (path[1:] + path[:-1]))
    ref = 0.5 * 4 * sum(float((d * d).sum()) + 3.0 * float((si * d).sum()) ** 2 for si in s)
    assert abs(float(curve_energy(_gaussian_score, path, lam=3.0)) - ref) < 1e-12 * ref


# ---- boundary value problem ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["linear", "slerp"])
@pytest.mark.parametrize("optimizer", ["lbfgs", "torch-lbfgs"])
def test_lam_zero_gives_evenly_spaced_straight_line(init, optimizer):
    a, b = _pair()
    r = geodesic_bvp(_gaussian_score, a, b, lam=0.0, n_points=8, init=init, optimizer=optimizer, tol=1e-12)
    torch.testing.assert_close(r.path, lerp(a, b, 8), rtol=0, atol=1e-7)
    assert r.path.shape == (8, 2, 3)
    assert abs(r.length - float((b - a).norm())) < 1e-7


def _great_circle_errors(M, r, a, b):
    """Max radial deviation / R, max out-of-plane distance / R, length / true arc length, segment max/min."""
    u = torch.stack((a, b))  # (2, D): the great circle's plane is span(a, b)
    q, _ = torch.linalg.qr(u.T)  # (D, 2)
    rad = float((r.path.norm(dim=-1) / M.radius - 1).abs().max())
    off = float((r.path - (r.path @ q) @ q.T).norm(dim=-1).max()) / M.radius
    arc = float(M.distance(a[None], b[None]))
    return rad, off, r.length / arc, float(r.speeds.max() / r.speeds.min())


@pytest.mark.parametrize("which,gradient", [("s2", "jvp"), ("s2", "autograd"), ("s2_64", "jvp")])
def test_sphere_geodesic_follows_great_circle(which, gradient, request):
    M = request.getfixturevalue(which)
    a, b = M.sample(2, seed=3)
    kw = {"score_jvp": M.score_jvp} if gradient == "jvp" else {}
    r = geodesic_bvp(M.score, a, b, lam=1000.0, n_points=16, gradient=gradient, **kw)
    rad, off, ratio, even = _great_circle_errors(M, r, a, b)
    assert r.converged and r.gradient == gradient
    assert rad < 0.02 and off < 1e-6 and abs(ratio - 1) < 0.02 and even < 1.1, (rad, off, ratio, even)
    # from the deep chord (E ~ 3e5) down to about the great circle's energy
    assert r.energy[-1] < 1e-4 * r.energy[0]
    assert r.evaluations.energy >= r.iterations and r.evaluations.jvp_points == (
        15 * r.evaluations.energy if gradient == "jvp" else 0)


@pytest.mark.parametrize("optimizer", ["lbfgs", "torch-lbfgs", "adam"])
def test_energy_never_ends_above_initial(optimizer, s2):
    a, b = s2.sample(2, seed=6)
    for init in ("linear", "slerp"):
        r = geodesic_bvp(s2.score, a, b, lam=1000.0, n_points=8, score_jvp=s2.score_jvp, optimizer=optimizer,
                         init=init, max_iter=15)
        assert r.energy[-1] <= r.energy[0]
        assert abs(float(curve_energy(s2.score, r.path, lam=1000.0)) - r.energy[-1]) <= 1e-9 * r.energy[0]
        assert r.length <= r.initial_length * (1 + 1e-9)


def test_bvp_does_not_touch_inputs(s2):
    a, b = s2.sample(2, seed=7)
    a0, b0 = a.clone(), b.clone()
    r = geodesic_bvp(s2.score, a, b, n_points=5, score_jvp=s2.score_jvp, max_iter=3)
    assert torch.equal(a, a0) and torch.equal(b, b0)
    assert torch.equal(r.path[0], a) and torch.equal(r.path[-1], b)


def test_bvp_init_path_progress_and_cancel(s2):
    a, b = s2.sample(2, seed=8)
    seen = []
    r = geodesic_bvp(s2.score, a, b, n_points=6, score_jvp=s2.score_jvp, max_iter=4,
                     progress=lambda d, t, desc: seen.append((d, t, desc)), init_path=slerp(a, b, 6))
    assert seen and seen[0] == (1, 4, "geodesic") and len(seen) == r.iterations
    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled):
        geodesic_bvp(s2.score, a, b, n_points=6, score_jvp=s2.score_jvp, cancel=flag)
    with pytest.raises(InputError, match="init_path must start at a"):
        geodesic_bvp(s2.score, a, b, n_points=3, init_path=torch.stack((b, a, b)))


def test_bvp_bad_input(s2):
    a, b = s2.sample(2, seed=9)
    cases = [
        (dict(a=a, b=a.clone()), "same point"),
        (dict(a=a.clone().fill_(math.nan), b=b), "NaN or inf"),
        (dict(a=a, b=torch.full_like(b, math.inf)), "NaN or inf"),
        (dict(a=a, b=b[:2]), "same shape"),
        (dict(a=a, b=b, n_points=2), "n_points"),
        (dict(a=a, b=b, n_points=4.0), "n_points"),
        (dict(a=a, b=b, lam=-1.0), "lam"),
        (dict(a=a, b=b, lam=math.nan), "lam"),
        (dict(a=a, b=b, optimizer="sgd"), "optimizer"),
        (dict(a=a, b=b, init="cubic"), "init"),
        (dict(a=a, b=b, gradient="jvp"), "needs score_jvp"),
        (dict(a=a.tolist(), b=b), "torch.Tensor"),
        (dict(a=a.long(), b=b.long()), "floating-point"),
        (dict(a=a, b=b, max_iter=0), "max_iter"),
    ]
    for kw, msg in cases:
        with pytest.raises(InputError, match=msg):
            geodesic_bvp(s2.score, **kw)
    with pytest.raises(InputError, match="callable"):
        geodesic_bvp("score", a, b)
    with pytest.raises(InputError, match="velocity"):
        extrapolate(s2.score, a, b, velocity="forward")


# ---- the denoiser metric ---------------------------------------------------------------------------------------------
def test_denoiser_energy_formula():
    # a Gaussian score s = -x / c has D s[d] = -d / c: q_i = sigma^4 |d / c|^2
    a, b = _pair()
    path = lerp(a, b, 5)
    d = (b - a) / 4
    scale = torch.linspace(0.5, 2.0, 6, dtype=F64).reshape(2, 3)
    sigma, lam = 0.3, 7.0
    ref = 0.5 * 4 * 4 * (float((d * d).sum()) + lam * sigma**4 * float(((d / scale) ** 2).sum()))
    e = float(curve_energy(_gaussian_score, path, lam=lam, metric="denoiser", sigma=sigma))
    assert abs(e - ref) < 1e-12 * ref
    u = d[None]
    g = metric_norm2(_gaussian_score, a[None], u, lam=lam, metric="denoiser", sigma=sigma)
    assert abs(float(g[0]) - (float((d * d).sum()) + lam * sigma**4 * float(((d / scale) ** 2).sum()))) < 1e-12


@pytest.mark.parametrize("name", ["sphere-R3", "sphere-R64", "torus-R5"])
def test_denoiser_gradient_equals_autograd_and_finite_differences(name, s2, s2_64):
    M = {"sphere-R3": s2, "sphere-R64": s2_64, "torus-R5": torus(5, sigma=0.2, seed=1)}[name]
    a, b = M.sample(2, seed=4)
    g = torch.Generator().manual_seed(3)
    path = lerp(a, b, 9) + 0.05 * torch.randn(9, a.shape[0], generator=g, dtype=F64)
    path[0], path[-1] = a, b
    lam, sigma = 100.0, M.sigma
    e1, g1 = _energy_grad_jvp_denoiser(M.score_jvp, path, lam, sigma, None, _Counter())
    e2, g2 = _energy_grad_autograd(M.score, path, lam, None, _Counter(), metric="denoiser", sigma=sigma)
    assert abs(e1 - e2) <= 1e-12 * abs(e2)
    # the derived gradient (4 JVPs, the third-derivative term by a central difference) against reverse over forward AD
    torch.testing.assert_close(g1[1:-1], g2[1:-1], rtol=1e-6, atol=1e-6 * float(g2.abs().max()))
    # and autograd against a central difference of the energy itself along a random direction of the interior
    v = torch.randn(path.shape, generator=g, dtype=F64)
    v[0] = v[-1] = 0
    h = 1e-6
    energy = lambda p: float(curve_energy(M.score, p, lam=lam, metric="denoiser", sigma=sigma))  # noqa: E731
    fd = (energy(path + h * v) - energy(path - h * v)) / (2 * h)
    assert abs(fd - float((g2 * v).sum())) <= 1e-6 * abs(fd)
    # chunked: the same numbers
    e3, g3 = _energy_grad_jvp_denoiser(M.score_jvp, path, lam, sigma, 3, _Counter())
    torch.testing.assert_close(g3, g1, rtol=1e-9, atol=1e-9 * float(g1.abs().max()))


@pytest.mark.parametrize("gradient", ["jvp", "autograd"])
def test_denoiser_metric_stays_on_the_sphere_better_than_the_score_metric(gradient, s2):
    a, b = s2.sample(2, seed=3)
    ref = geodesic_bvp(s2.score, a, b, lam=1000.0, n_points=16, score_jvp=s2.score_jvp)
    kw = {"score_jvp": s2.score_jvp} if gradient == "jvp" else {}
    r = geodesic_bvp(s2.score, a, b, lam=1000.0, n_points=16, gradient=gradient, metric="denoiser",
                     sigma=s2.sigma, **kw)
    rad, off, _, even = _great_circle_errors(s2, r, a, b)
    rad_ref, *_ = _great_circle_errors(s2, ref, a, b)
    assert r.converged and r.config.metric == "denoiser"
    assert rad < 0.5 * rad_ref and rad < 0.01 and off < 1e-6 and even < 1.1, (rad, rad_ref, off, even)
    arc = float(s2.distance(a[None], b[None])[0])
    assert abs(float(r.speeds.sum()) / arc - 1) < 0.01
    if gradient == "jvp":
        assert r.evaluations.jvp_points == 4 * 15 * r.evaluations.energy


def test_denoiser_metric_stays_on_the_torus_better_than_the_score_metric():
    T = torus(3, sigma=0.1)
    a, b = T.sample(2, seed=101)
    off = {}
    for metric in METRICS:
        r = geodesic_bvp(T.score, a, b, lam=1000.0 if metric == "score" else 100.0, n_points=16,
                         score_jvp=T.score_jvp, metric=metric, sigma=T.sigma, max_iter=500)
        off[metric] = float((r.path - T.project(r.path)).norm(dim=-1).max())
    assert off["denoiser"] < 0.5 * off["score"], off


def test_metric_choice_is_checked(s2):
    a, b = s2.sample(2, seed=9)
    with pytest.raises(InputError, match="score, denoiser|denoiser"):
        geodesic_bvp(s2.score, a, b, n_points=4, metric="riemann")
    with pytest.raises(InputError, match="needs sigma"):
        geodesic_bvp(s2.score, a, b, n_points=4, metric="denoiser")
    with pytest.raises(InputError, match="sigma"):
        geodesic_bvp(s2.score, a, b, n_points=4, metric="denoiser", sigma=0.0)
    with pytest.raises(InputError, match="midpoint"):
        geodesic_bvp(s2.score, a, b, n_points=4, metric="denoiser", sigma=0.1, rule="simpson")
    with pytest.raises(InputError, match="no geodesic equation"):
        extrapolate(s2.score, a, b, n_points=4, metric="denoiser", sigma=0.1)


# ---- shooting --------------------------------------------------------------------------------------------------------
def test_shooting_euclidean_is_a_straight_line():
    x0, v0 = _pair()
    r = geodesic_shoot(_gaussian_score, x0, v0, lam=0.0, n_steps=10, dt=0.1)
    t = torch.arange(11, dtype=F64).reshape(-1, 1, 1) * 0.1
    torch.testing.assert_close(r.path, x0 + t * v0, rtol=0, atol=1e-14)
    torch.testing.assert_close(r.speed, torch.full((11,), float(v0.norm()), dtype=F64))
    assert r.path.shape == (11, 2, 3) and r.velocity.shape == (11, 2, 3)


def test_shooting_conserves_metric_speed(s2):
    x0 = s2.sample(1, seed=1)[0] * 0.995  # near the density ridge (radius 0.99), where the score bends the path
    g = torch.Generator().manual_seed(0)
    v0 = torch.randn(3, generator=g, dtype=F64)
    v0 = v0 - (v0 @ x0) * x0 / (x0 @ x0) + 0.01 * x0  # along the sphere, slightly outward
    r = geodesic_shoot(s2.score, x0, v0, lam=1000.0, n_steps=10, dt=0.05, substeps=4, score_jvp=s2.score_jvp)
    assert r.speed_drift < 1e-5, r.speed_drift
    # forward-mode AD of the score gives the same trajectory
    r2 = geodesic_shoot(s2.score, x0, v0, lam=1000.0, n_steps=3, dt=0.05, substeps=4)
    torch.testing.assert_close(r2.path, r.path[:4], rtol=1e-10, atol=1e-10)


def test_shooting_agrees_with_bvp(s2):
    a, b = s2.sample(2, seed=3)
    # 64 points: up to 40 the discrete path's segments straddle the density ridge (radial error ~2%) and the shot
    # misses b by ~3% of the chord (32 points: 0.030, measured 0.0297-0.0302 across machines, against the old bar
    # 0.03); from 48 points on the two agree to ~3e-4. tol=1e-12: compare with the converged discrete geodesic, not
    # wherever L-BFGS happens to stop (which moved the 32-point figure by 1.5% between BLAS/CPU-kernel configurations).
    bvp = geodesic_bvp(s2.score, a, b, lam=1000.0, n_points=64, score_jvp=s2.score_jvp, tol=1e-12)
    v_a = -legendre_velocity(s2.score, bvp.path.flip(0), lam=1000.0, score_jvp=s2.score_jvp)  # x'(0)
    shot = geodesic_shoot(s2.score, a, v_a, lam=1000.0, n_steps=63, substeps=4, score_jvp=s2.score_jvp)
    # measured 2.7e-4 of the chord (end point) and -1.7e-4 (length ratio - 1), the same to 3 digits with 1 or 2
    # threads, AVX512/AVX2/no-AVX kernels and MKL_CBWR=COMPATIBLE (default tol: 3.9e-4, -2.7e-4): bars 2e-3. They
    # catch a 0.5% error in the start speed (end 6e-3, length 5e-3) or a 0.5% out-of-plane tilt of v_a (end 2.5e-3).
    assert float((shot.path[-1] - b).norm()) < 2e-3 * float((b - a).norm())
    assert abs(shot.length / bvp.length - 1) < 2e-3


def test_extrapolate_continues_along_the_great_circle(s2):
    a, b = s2.sample(2, seed=3)
    ex = extrapolate(s2.score, a, b, beyond=0.5, lam=1000.0, n_points=16, score_jvp=s2.score_jvp)
    assert ex.path.shape == (16 + 8, 3) and ex.n_inner == 16
    assert torch.equal(ex.path[15], b)
    extra = ex.path[16:]
    assert float((extra.norm(dim=-1) - 1).abs().max()) < 0.005  # stays on the sphere
    normal = torch.linalg.cross(a, b)
    normal = normal / normal.norm()
    assert float((extra @ normal).abs().max()) < 1e-8  # in the plane of the great circle
    # the extension adds about beyond * L of metric length, at the path's spacing
    assert abs(ex.shoot.length / (0.5 * ex.bvp.length) - 1) < 0.05
    assert ex.shoot.speed_drift < 1e-5
    # a plain one-sided difference inherits the last segment's jump across the density ridge and leaves the sphere
    ex_d = extrapolate(s2.score, a, b, beyond=0.5, lam=1000.0, n_points=16, score_jvp=s2.score_jvp,
                       velocity="difference")
    assert float((ex_d.path[16:].norm(dim=-1) - 1).abs().max()) > 0.03


def test_autodiff_jvp_falls_back_to_double_backward():
    def score(x):  # not traceable by forward-mode AD (numpy round trip in the middle is caught by torch.func)
        if torch._C._functorch.is_functorch_wrapped_tensor(x):
            raise RuntimeError("no forward mode here")
        return -x**3

    jvp = autodiff_jvp(score)
    x, v = _pair((2, 3), seed=4)
    s, ds = jvp(x, v)
    torch.testing.assert_close(ds, -3 * x**2 * v)
    torch.testing.assert_close(s, -x**3)


def test_curve_length_of_line_is_euclidean():
    a, b = _pair()
    assert abs(curve_length(_gaussian_score, lerp(a, b, 5), lam=0.0) - float((b - a).norm())) < 1e-12


def test_shooting_retries_a_blow_up_then_reports_it():
    # A score that is NaN outside |x_k| <= 2. With lam = 10 the exact geodesic from 0 at speed 10 (1, 1, 1) slows
    # down and stays inside (x_k ~ 1.9 at t = 1), but RK4 with one substep per step jumps outside (NaN): the shot is
    # retried with 2, 4, 8 substeps and succeeds. With lam = 0 (a straight line) the flow itself leaves the region:
    # every retry blows up, and NumericalError names the quantity, the step, the substeps tried and the remedy.
    def score(x):
        return torch.where(x.abs() > 2, torch.full_like(x, float("nan")), -x)

    def score_jvp(x, v):
        return score(x), -v

    x0, v0 = torch.zeros(3, dtype=torch.float64), torch.full((3,), 10.0, dtype=torch.float64)
    shot = geodesic_shoot(score, x0, v0, lam=10.0, n_steps=4, dt=0.25, score_jvp=score_jvp)
    assert shot.retries >= 1 and shot.substeps == 2**shot.retries and bool(torch.isfinite(shot.path).all())
    assert float(shot.path.abs().max()) <= 2 and shot.speed_drift <= 0.25
    with pytest.raises(NumericalError, match=r"shooting blew up: the score or its JVP at step 1 of 4 .*NaN or inf.*"
                                             r"tried substeps 1, 2, 4, 8.*lower dt"):
        geodesic_shoot(score, x0, v0, lam=0.0, n_steps=4, dt=0.25, score_jvp=score_jvp)
    ok = geodesic_shoot(score, x0, v0 / 10, lam=10.0, n_steps=4, dt=0.25, score_jvp=score_jvp)  # stays inside
    assert bool(torch.isfinite(ok.path).all()) and ok.retries == 0 and ok.substeps == 1


def test_relative_lam_scales_by_the_endpoint_score():
    # Gaussian N(0, sigma^2 I): s(x) = -x / sigma^2, so mean |s|^2 at a, b = (|a|^2 + |b|^2) / (2 sigma^4).
    sigma = 0.5
    a, b = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64), torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64)
    lam = relative_lam(lambda x: -x / sigma**2, a, b, 10.0)
    assert lam == pytest.approx(10.0 / ((5.0 + 9.0) / 2 / sigma**4), rel=1e-12)
    with pytest.raises(InputError, match="weight must be"):
        relative_lam(lambda x: -x, a, b, -1.0)
    with pytest.raises(InputError, match="score vanishes"):
        relative_lam(lambda x: 0 * x, a, b, 1.0)


def test_simpson_rule_is_exact_for_a_linear_score():
    # s(x) = -x: along a segment s(x(tau)) . d is linear in tau, so Simpson's rule integrates its square exactly,
    # (c0^2 + c0 c1 + c1^2) / 3, while the midpoint rule gives ((c0 + c1) / 2)^2.
    g = torch.Generator().manual_seed(0)
    path = torch.randn(5, 4, generator=g, dtype=torch.float64)
    d = path[1:] - path[:-1]
    c0, c1 = (-path[:-1] * d).sum(1), (-path[1:] * d).sum(1)
    exact = (c0**2 + c0 * c1 + c1**2) / 3
    assert torch.allclose(score_term(lambda x: -x, path, rule="simpson"), exact, rtol=1e-12)
    assert torch.allclose(score_term(lambda x: -x, path), ((c0 + c1) / 2) ** 2, rtol=1e-12)
    n = 4
    e = curve_energy(lambda x: -x, path, lam=3.0, rule="simpson")
    assert float(e) == pytest.approx(float(0.5 * n * ((d * d).sum(1) + 3.0 * exact).sum()), rel=1e-12)


def test_simpson_bvp_needs_autograd(s2):
    M = s2
    a, b = M.sample(2, seed=3)
    res = geodesic_bvp(M.score, a, b, lam=100.0, n_points=8, rule="simpson", gradient="autograd", max_iter=50)
    assert res.config.rule == "simpson" and res.energy[-1] < res.energy[0]
    assert res.evaluations.score_points > res.evaluations.energy * 7  # midpoints and points
    with pytest.raises(InputError, match="needs gradient=.autograd"):
        geodesic_bvp(M.score, a, b, n_points=8, rule="simpson", score_jvp=M.score_jvp, gradient="jvp")
    with pytest.raises(InputError, match="rule must be one of"):
        geodesic_bvp(M.score, a, b, n_points=8, rule="trapezoid")
