"""DDIM inversion and generation: an exactly solvable model, the tiny model, grids, progress and cancel.

Exact reference: for data x_0 ~ N(0, I) every marginal is N(0, I) and the ideal noise predictor is
``eps(x_t, t) = sqrt(1 - ab_t) x_t``. Writing ``ab_t = cos^2(theta_t)``, one DDIM step from t to t' multiplies x by
``sqrt(ab ab') + sqrt((1 - ab)(1 - ab')) = cos(theta_t - theta_t')``, while the true probability-flow map is the
identity. So inversion on a grid multiplies x_0 by ``prod_k cos(dtheta_k)``, an invert -> sample round trip by the
square of that, and the round-trip error ``1 - prod_k cos^2(dtheta_k) ~ sum_k dtheta_k^2 = O(1 / K)`` shrinks as the
number of steps K grows.
"""

from __future__ import annotations

import threading

import pytest
import torch

from accel.base import Backend
from pipeline import Cancelled, InputError
from pipeline.ddim import StepInfo, Trajectory, ddim_step, generate, invert, sample, timestep_grid


class GaussianEps(Backend):
    """The exact noise predictor of N(0, I) data, eps(x, t) = sqrt(1 - ab_t) x, on the schedule of ``model``."""

    def _eps(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return (1 - self.alphas_cumprod[tt.cpu()]).sqrt().to(x).view(-1, 1, 1, 1) * x


def _cos_product(alphas_cumprod: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    theta = torch.arccos(alphas_cumprod[grid].sqrt())  # (K + 1,)
    return torch.cos(theta[1:] - theta[:-1]).prod()


def _x0(model, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.sample_size
    return torch.randn(n, model.channels, s, s, generator=g, dtype=torch.float64).to(model.dtype)


def test_gaussian_model_inversion_is_exact_in_closed_form(tiny_model64):
    m = tiny_model64
    backend = GaussianEps(m)
    x0 = _x0(m)
    grid = timestep_grid(800, 10)
    x_t = invert(backend, x0, t_end=800, num_steps=10, method="explicit")
    torch.testing.assert_close(x_t, x0 * _cos_product(m.alphas_cumprod, grid), rtol=1e-12, atol=0)
    back = sample(backend, x_t, t_start=800, num_steps=10, clip_x0=False)
    torch.testing.assert_close(back, x0 * _cos_product(m.alphas_cumprod, grid) ** 2, rtol=1e-12, atol=0)


def test_gaussian_model_round_trip_error_shrinks_like_one_over_steps(tiny_model64):
    m = tiny_model64
    backend = GaussianEps(m)
    x0 = _x0(m)
    errors = []
    for k in (5, 10, 20, 40):
        x_t = invert(backend, x0, t_end=900, num_steps=k, method="explicit")
        back = sample(backend, x_t, t_start=900, num_steps=k, clip_x0=False)
        errors.append(float((back - x0).norm() / x0.norm()))
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False))
    assert 1.6 < errors[0] / errors[1] < 2.4 and 1.6 < errors[2] / errors[3] < 2.4  # O(1 / K)
    assert errors[-1] < 0.1


def test_tiny_model_round_trip_error_decreases_with_steps(tiny_model):
    m = tiny_model
    x0 = _x0(m, n=1, seed=1).clamp(-1, 1)
    errors = []
    for k in (2, 8, 32):
        back = sample(m, invert(m, x0, t_end=300, num_steps=k, method="explicit"), t_start=300, num_steps=k,
                      clip_x0=False)
        errors.append(float((back - x0).norm() / x0.norm()))
    assert errors[0] > errors[1] > errors[2]


def test_gaussian_model_fixed_point_inversion_is_undone_by_sampling(tiny_model64):
    """Implicit inversion solves x' = step(x, eps(x')): in closed form x' = x / cos(dtheta), so the round trip is
    exact."""
    m = tiny_model64
    backend = GaussianEps(m)
    x0 = _x0(m)
    grid = timestep_grid(900, 10)
    errors = []
    for n in (0, 1, 3, 40):
        x_t = invert(backend, x0, t_end=900, num_steps=10, method="explicit", fixed_point=n)
        back = sample(backend, x_t, t_start=900, num_steps=10)
        errors.append(float((back - x0).norm() / x0.norm()))
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-10
    x_t = invert(backend, x0, t_end=900, num_steps=10, fixed_point=40)
    torch.testing.assert_close(x_t, x0 / _cos_product(m.alphas_cumprod, grid), rtol=1e-10, atol=0)


def test_tiny_model_fixed_point_inversion_improves_round_trip(tiny_model):
    m = tiny_model
    x0 = _x0(m, n=1, seed=2).clamp(-1, 1)
    errors = []
    for n in (0, 2):
        back = sample(m, invert(m, x0, t_end=300, num_steps=8, method="explicit", fixed_point=n), t_start=300,
                      num_steps=8)
        errors.append(float((back - x0).norm() / x0.norm()))
    assert errors[1] < 0.5 * errors[0]
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="fixed_point"):
            invert(m, x0, t_end=300, num_steps=8, fixed_point=bad)


class CountingEps(Backend):
    """Wraps a model (or another backend) and counts its eps calls."""

    def __init__(self, inner):
        super().__init__(inner.torch_model)
        self.inner, self.calls = inner, 0

    def _eps(self, x, tt):
        self.calls += 1
        return self.inner._eps(x, tt)


def _round_trip_error(model, x0, *, t_end, k, **kw) -> float:
    back = sample(model, invert(model, x0, t_end=t_end, num_steps=k, **kw), t_start=t_end, num_steps=k)
    return float((back - x0).norm() / x0.norm())


def test_gaussian_model_corrected_inversion_costs_one_call_per_step_and_converges_faster(tiny_model64):
    """Predict-evaluate-correct: K + 1 eps calls (explicit: K), and a round-trip error of higher order in 1 / K."""
    m = tiny_model64
    x0 = _x0(m)
    explicit, corrected = [], []
    for k in (5, 10, 20, 40):
        counter = CountingEps(GaussianEps(m))
        invert(counter, x0, t_end=900, num_steps=k)
        assert counter.calls == k + 1
        explicit.append(_round_trip_error(counter, x0, t_end=900, k=k, method="explicit"))
        corrected.append(_round_trip_error(counter, x0, t_end=900, k=k))
    assert all(c < 0.15 * e for c, e in zip(corrected, explicit, strict=True))
    assert corrected[1] > corrected[2] > corrected[3]
    assert corrected[2] / corrected[3] > 3.5  # at least second order (explicit: first order, ratio ~2)


def test_tiny_model_corrected_inversion_improves_round_trip_at_the_same_cost(tiny_model):
    m = tiny_model
    x0 = _x0(m, n=1, seed=2).clamp(-1, 1)
    counter = CountingEps(m)
    invert(counter, x0, t_end=300, num_steps=8, method="explicit")
    assert counter.calls == 8
    explicit = _round_trip_error(m, x0, t_end=300, k=8, method="explicit")
    corrected = _round_trip_error(m, x0, t_end=300, k=8, method="corrected")
    one_iteration = _round_trip_error(m, x0, t_end=300, k=8, method="explicit", fixed_point=1)
    assert corrected < 0.5 * explicit and corrected < one_iteration
    assert _round_trip_error(m, x0, t_end=300, k=8, fixed_point=2) < corrected
    with pytest.raises(InputError, match="method"):
        invert(m, x0, t_end=300, num_steps=8, method="implicit")


def test_ddim_step_inverts_itself_for_fixed_eps():
    x, eps = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    ab_a, ab_b = torch.tensor([0.9, 0.5], dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    torch.testing.assert_close(ddim_step(ddim_step(x, eps, ab_a, ab_b), eps, ab_b, ab_a), x)


def test_trajectories(tiny_model):
    m = tiny_model
    x0 = _x0(m, n=2)
    traj = invert(m, x0, t_end=500, num_steps=4, return_trajectory=True)
    assert isinstance(traj, Trajectory) and traj.timesteps.tolist() == [0, 125, 250, 375, 500]
    assert traj.states.shape == (5, 2, 3, 16, 16)
    torch.testing.assert_close(traj.states[0], x0)
    torch.testing.assert_close(traj.at(500), invert(m, x0, t_end=500, num_steps=4))
    gen = sample(m, traj.at(500), t_start=500, num_steps=4, return_trajectory=True)
    assert gen.timesteps.tolist() == traj.timesteps.tolist()  # ordered by increasing t
    torch.testing.assert_close(gen.states[-1], traj.at(500))
    with pytest.raises(InputError, match="not on the trajectory's grid"):
        traj.at(100)


def test_latent_inversion_shapes(tiny_latent_model):
    x0 = _x0(tiny_latent_model, n=1)
    traj = invert(tiny_latent_model, x0, t_end=200, num_steps=2, return_trajectory=True)
    assert traj.states.shape == (3, 1, 4, 8, 8) and bool(torch.isfinite(traj.states).all())


def test_generate_shapes(tiny_model):
    out = generate(tiny_model, 2, num_steps=2, seed=3)
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out, generate(tiny_model, 2, num_steps=2, seed=3))


def test_timestep_grid_validation():
    grid = timestep_grid(999, 20)
    assert grid[0] == 0 and grid[-1] == 999 and grid.shape == (21,) and bool((grid[1:] > grid[:-1]).all())
    assert timestep_grid(3, 3).tolist() == [0, 1, 2, 3]
    for t_end, k, match in [(0, 1, "t_end must lie in"), (1000, 5, "t_end must lie in"), (10, 0, "num_steps"),
                            (10, 11, "num_steps")]:
        with pytest.raises(InputError, match=match):
            timestep_grid(t_end, k)
    with pytest.raises(InputError, match="t_end must lie in"):
        timestep_grid(100, 5, num_train_timesteps=100)


def test_bad_inputs(tiny_model):
    with pytest.raises(InputError, match="NaN"):
        invert(tiny_model, torch.full((1, 3, 16, 16), float("nan")), t_end=10, num_steps=2)
    with pytest.raises(InputError, match="channels"):
        sample(tiny_model, torch.zeros(1, 1, 16, 16), t_start=10, num_steps=2)


def test_progress_is_called_and_cancel_stops(tiny_model):
    x0 = _x0(tiny_model, n=1)
    calls = []
    invert(tiny_model, x0, t_end=100, num_steps=3, progress=lambda *a: calls.append(a))
    sample(tiny_model, x0, t_start=100, num_steps=3, progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)] * 2
    assert calls[0][2] == "DDIM inversion" and calls[-1][2] == "DDIM generation"
    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled):
        invert(tiny_model, x0, t_end=100, num_steps=3, cancel=flag)
    done = []
    with pytest.raises(Cancelled):
        sample(tiny_model, x0, t_start=100, num_steps=3, progress=lambda *a: done.append(a),
               cancel=lambda: len(done) == 2)
    assert len(done) == 2


# ---- the step hook ---------------------------------------------------------------------------------------------------
def test_step_hook_returning_none_gives_sample_exactly(tiny_model):
    x = _x0(tiny_model, n=2, seed=4)
    for clip in (False, True):
        plain = sample(tiny_model, x, t_start=300, num_steps=4, clip_x0=clip, return_trajectory=True)
        hooked = sample(tiny_model, x, t_start=300, num_steps=4, clip_x0=clip, return_trajectory=True,
                        step_hook=lambda info: None)
        assert torch.equal(plain.timesteps, hooked.timesteps) and torch.equal(plain.states, hooked.states)


def test_step_hook_sees_every_step_in_order_before_and_after(tiny_model):
    x = _x0(tiny_model, n=1, seed=5)
    seen: list[StepInfo] = []
    traj = sample(tiny_model, x, t_start=300, num_steps=4, return_trajectory=True, step_hook=seen.append)
    grid = timestep_grid(300, 4).tolist()  # [0, 75, 150, 225, 300]
    expected = [(k, grid[k], grid[k - 1], when) for k in (4, 3, 2, 1) for when in ("before", "after")]
    assert [(i.k, i.t, i.t_prev, i.when) for i in seen] == expected
    for i in seen:  # "before" sees x_{t_k}, "after" the state the step produced, x_{t_{k-1}}
        assert torch.equal(i.x, traj.states[i.k if i.when == "before" else i.k - 1])
    assert torch.equal(seen[0].x, x)


def test_step_hook_replacing_x_is_applied(tiny_model):
    """Zeroing x after the step at k = 2 and scaling it before the step at k = 1, checked against a hand-run loop."""
    m = tiny_model
    x = _x0(m, n=1, seed=6)
    grid = timestep_grid(300, 3)
    ab = m.alphas_cumprod[grid].to(x)

    def hook(info: StepInfo) -> torch.Tensor | None:
        if info.k == 2 and info.when == "after":
            return torch.zeros_like(info.x)
        if info.k == 1 and info.when == "before":
            return 0.5 * info.x + 0.1
        return None

    out = sample(m, x, t_start=300, num_steps=3, step_hook=hook)
    with torch.no_grad():
        h = ddim_step(x, m.eps(x, int(grid[3])), ab[3], ab[2])  # k = 3
        h = ddim_step(h, m.eps(h, int(grid[2])), ab[2], ab[1])  # k = 2 ...
        h = torch.zeros_like(h)  # ... replaced after the step
        h = 0.5 * h + 0.1  # k = 1: replaced before the step
        h = ddim_step(h, m.eps(h, int(grid[1])), ab[1], ab[0])
    assert torch.equal(out, h)
    assert not torch.equal(out, sample(m, x, t_start=300, num_steps=3))


def test_step_hook_keeps_progress_and_cancel(tiny_model):
    x = _x0(tiny_model, n=1)
    calls, order = [], []
    sample(tiny_model, x, t_start=100, num_steps=3, progress=lambda *a: (calls.append(a), order.append("report")),
           step_hook=lambda info: order.append(info.when))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)] and calls[-1][2] == "DDIM generation"
    assert order == ["before", "after", "report"] * 3
    seen = []
    with pytest.raises(Cancelled):  # the cancel check comes before the step's hook
        sample(tiny_model, x, t_start=100, num_steps=3, cancel=lambda: len(seen) == 2, step_hook=seen.append)
    assert [i.when for i in seen] == ["before", "after"]
    with pytest.raises(InputError, match="step_hook must return None or a tensor of shape"):
        sample(tiny_model, x, t_start=100, num_steps=3, step_hook=lambda info: info.x[:, :1])
