"""Deterministic DDIM (eta = 0): generation ``sample``, inversion ``invert``, and trajectories on a timestep grid.

The step is written out here (rather than through ``diffusers.DDIMScheduler.step``) because the project needs
arbitrary sub-grids ending at any ``t_end``, inversion and generation on the same grid, and steps that stay
differentiable in ``x``. The schedule itself (``alphas_cumprod``) comes from the model's diffusers scheduler config.

Grid convention: ``timestep_grid(t_end, K) = [t_0 = 0, t_1, ..., t_K = t_end]``; the clean image sits at ``t_0 = 0``
(alpha_bar(0) ~ 1). Generation maps ``x_{t_k} -> x_{t_{k-1}}`` with eps evaluated at ``(x_{t_k}, t_k)``; inversion maps
``x_{t_k} -> x_{t_{k+1}}`` with an approximation of eps at ``(x_{t_{k+1}}, t_{k+1})`` (see :func:`invert`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import InputError
from .progress import CancelFlag, ProgressFn, check_cancelled, report
from .protocols import DiffusionOps
from .validate import check_int

INVERT_METHODS = ("corrected", "explicit")


def check_invert_method(method: str, name: str = "method") -> None:
    """Raise InputError unless ``method`` is one of :data:`INVERT_METHODS` (``name``: the argument as the caller
    calls it)."""
    if method not in INVERT_METHODS:
        raise InputError(f"{name} must be one of {INVERT_METHODS}, got {method!r}")


def timestep_grid(t_end: int, num_steps: int, *, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Evenly spaced integer grid ``[0, ..., t_end]`` with ``num_steps + 1`` distinct points.  -> (num_steps + 1,)"""
    if not 1 <= int(t_end) < num_train_timesteps:
        raise InputError(f"t_end must lie in [1, {num_train_timesteps - 1}], got {t_end}")
    if not 1 <= int(num_steps) <= int(t_end):
        raise InputError(f"num_steps must lie in [1, t_end={t_end}], got {num_steps}")
    return torch.linspace(0, int(t_end), int(num_steps) + 1, dtype=torch.float64).round().long()


def ddim_step(
    x: torch.Tensor, eps: torch.Tensor, ab_from: torch.Tensor, ab_to: torch.Tensor, *, clip_x0: bool = False
) -> torch.Tensor:
    """One DDIM (eta = 0) move between noise levels.

    ``x0_hat = (x - sqrt(1 - ab_from) eps) / sqrt(ab_from)``;  ``x' = sqrt(ab_to) x0_hat + sqrt(1 - ab_to) eps``.
    With ``clip_x0``, ``x0_hat`` is clamped to [-1, 1] (the pixel range) before the move, as diffusers'
    ``clip_sample`` does: it keeps generation from an imperfect model from drifting into saturated colours.
    x, eps: (B, C, H, W); ab_from, ab_to: scalars or (B,) -> (B, C, H, W).

    The coefficients are computed in float64 and rounded once to x's dtype: in bfloat16, 1 - ab rounds to 0 near
    t = 0 and would drop the step's eps term.
    """

    def coefficients(ab) -> tuple[torch.Tensor, torch.Tensor]:  # (sqrt(ab), sqrt(1 - ab)), each (B, 1, 1, 1)
        ab = torch.as_tensor(ab, dtype=torch.float64, device=x.device).reshape(-1, 1, 1, 1)
        return ab.sqrt().to(x.dtype), (1 - ab).sqrt().to(x.dtype)

    (a_from, s_from), (a_to, s_to) = coefficients(ab_from), coefficients(ab_to)
    x0_hat = (x - s_from * eps) / a_from
    if clip_x0:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    return a_to * x0_hat + s_to * eps


@dataclass(frozen=True)
class Trajectory:
    """States of a DDIM trajectory: ``states[k]`` is ``x_{timesteps[k]}``.

    timesteps (K+1,), states (K+1, B, C, H, W).
    """

    timesteps: torch.Tensor
    states: torch.Tensor

    def at(self, t: int) -> torch.Tensor:
        """The state at timestep ``t`` (must be on the grid).  -> (B, C, H, W)"""
        idx = (self.timesteps == int(t)).nonzero()
        if idx.numel() == 0:
            raise InputError(f"t={t} is not on the trajectory's grid {self.timesteps.tolist()}")
        return self.states[int(idx[0, 0])]


@dataclass(frozen=True)
class StepInfo:
    """What a :func:`sample` step hook sees: one point of one generation step ``x_{t_k} -> x_{t_{k-1}}``.

    The hook is called twice per step, k = K..1 in order: with ``when="before"`` and ``x = x_{t_k}`` (the state the
    step will start from, so the hook may optimise it), then with ``when="after"`` and ``x = x_{t_{k-1}}`` (the
    state the DDIM step just produced, so the hook may blend it, e.g. ``m x + (1 - m) x^orig_{t_{k-1}}``). The hook
    returns None to keep ``x`` or a replacement tensor of ``x``'s shape, which the loop then carries on from.
    """

    k: int  # grid index of the step's start, K..1 (``timestep_grid(t_start, K)[k] == t``)
    t: int  # t_k, the noise level the step starts from
    t_prev: int  # t_{k-1}, the noise level the step lands on (0 for the last step)
    when: Literal["before", "after"]  # which side of the DDIM step ``x`` is on
    x: torch.Tensor  # (B, C, H, W): x_{t_k} when "before", x_{t_{k-1}} when "after"


#: ``step_hook(info) -> None | x``: see :class:`StepInfo`.
StepHook = Callable[[StepInfo], torch.Tensor | None]


def _hooked(hook: StepHook | None, info: StepInfo) -> torch.Tensor:
    """The state after ``hook`` saw ``info``: its replacement, or ``info.x`` when it returns None."""
    if hook is None:
        return info.x
    out = hook(info)
    if out is None:
        return info.x
    if not isinstance(out, torch.Tensor) or out.shape != info.x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"step_hook must return None or a tensor of shape {tuple(info.x.shape)}, got {got} "
                         f"(step k={info.k}, {info.when})")
    return out


def _alphas(model, grid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """alpha_bar on the grid, float64 (:func:`ddim_step` rounds its coefficients once).  -> (K + 1,)"""
    return model.alphas_cumprod[grid].to(device=like.device)


def invert(
    model: DiffusionOps,
    x0: torch.Tensor,
    *,
    t_end: int,
    num_steps: int,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    return_trajectory: bool = False,
    method: str = "corrected",
    fixed_point: int = 0,
) -> torch.Tensor | Trajectory:
    """DDIM inversion of model-space ``x0`` to ``x_{t_end}`` in ``num_steps`` steps.

    x0: (B, C, H, W) -> x_{t_end} (B, C, H, W), or the whole :class:`Trajectory` if ``return_trajectory``.
    ``model``: a :class:`~pipeline.model.DiffusionModel` or an ``accel`` backend (anything with ``eps``).

    The generation step of :func:`sample` maps x_{t_{k+1}} to x_{t_k} with eps(x_{t_{k+1}}, t_{k+1}); it is undone
    exactly by the x_{t_{k+1}} that solves x_{t_{k+1}} = step(x_{t_k}, eps(x_{t_{k+1}}, t_{k+1})) (implicit DDIM
    inversion). ``method`` chooses how each step approximates that solution:

    - ``"explicit"``: plain DDIM inversion, eps(x_{t_k}, t_k) in place of the unknown eps (one eps call per step).
    - ``"corrected"`` (default): predict x_{t_{k+1}} with an eps extrapolated linearly in t from the two previous
      steps' corrector evaluations, evaluate eps(prediction, t_{k+1}) once, and take the step with it (predict,
      evaluate, correct). The evaluation is reused for the next prediction, so this costs one eps call per step plus
      one for the first prediction: the cost of plain inversion, with the accuracy of one fixed-point iteration.

    ``fixed_point=n`` adds n fixed-point iterations x_{t_{k+1}} <- step(x_{t_k}, eps(x_{t_{k+1}}, t_{k+1})) to each
    step, one more eps call each, converging to the implicit inversion.
    """
    check_invert_method(method)
    fixed_point = check_int("fixed_point", fixed_point, 0)
    x = model.check_x(x0, "x0")
    grid = timestep_grid(t_end, num_steps, num_train_timesteps=model.num_train_timesteps)
    ab = _alphas(model, grid, x)
    corrected = method == "corrected"
    iterations = fixed_point + int(corrected)
    e_prev = e_last = None  # corrected: the eps evaluated at t_{k-1} and at t_k
    states = [x]
    with torch.no_grad():
        for k in range(num_steps):
            check_cancelled(cancel)
            if not corrected or k == 0:
                eps = model.eps(x, int(grid[k]))
            elif k == 1:
                eps = e_last
            else:  # linear extrapolation in t of the evaluations at t_{k-1} and t_k to t_{k+1}
                slope = float(grid[k + 1] - grid[k]) / float(grid[k] - grid[k - 1])
                eps = e_last + slope * (e_last - e_prev)
            x_next = ddim_step(x, eps, ab[k], ab[k + 1])
            for _ in range(iterations):
                eps = model.eps(x_next, int(grid[k + 1]))
                x_next = ddim_step(x, eps, ab[k], ab[k + 1])
            e_prev, e_last = e_last, eps
            x = x_next
            states.append(x)
            report(progress, k + 1, num_steps, "DDIM inversion")
    return Trajectory(grid, torch.stack(states)) if return_trajectory else x


def sample(
    model: DiffusionOps,
    x_t: torch.Tensor,
    *,
    t_start: int,
    num_steps: int,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    return_trajectory: bool = False,
    clip_x0: bool = False,
    step_hook: StepHook | None = None,
) -> torch.Tensor | Trajectory:
    """DDIM generation from ``x_{t_start}`` down to the clean ``x_0`` in ``num_steps`` steps.

    x_t: (B, C, H, W) -> x_0 (B, C, H, W), or the :class:`Trajectory` (ordered by increasing t) if asked.
    ``clip_x0`` clamps each step's x_0 prediction to [-1, 1]. Off by default, so that ``sample`` inverts
    :func:`invert` (clipping costs ~12 dB of reconstruction PSNR on the default model); :func:`generate` turns it on
    for pixel models, where it keeps samples from pure noise out of saturated colours.

    ``step_hook(info)`` (see :class:`StepInfo`) is called at each step k = K..1, after the cancel check, once before
    the DDIM step (``info.x = x_{t_k}``) and once after it (``info.x = x_{t_{k-1}}``); a returned tensor replaces x
    (None keeps it). The loop runs under ``torch.no_grad()``: a hook that differentiates enables grad itself. The
    trajectory records the states the loop carried: ``states[k]`` is x_{t_k} as the step from t_k started from it
    (after the "before" hook), ``states[k - 1]`` as the step and the "after" hook left it. Progress is reported
    after each step's "after" hook.
    """
    x = model.check_x(x_t, "x_t")
    clip = bool(clip_x0)
    grid = timestep_grid(t_start, num_steps, num_train_timesteps=model.num_train_timesteps)
    ab = _alphas(model, grid, x)
    states: list[torch.Tensor | None] = [None] * (num_steps + 1)
    with torch.no_grad():
        for k in range(num_steps, 0, -1):
            check_cancelled(cancel)
            t, t_prev = int(grid[k]), int(grid[k - 1])
            x = _hooked(step_hook, StepInfo(k, t, t_prev, "before", x))
            states[k] = x
            eps = model.eps(x, t)
            x = ddim_step(x, eps, ab[k], ab[k - 1], clip_x0=clip)
            x = _hooked(step_hook, StepInfo(k, t, t_prev, "after", x))
            report(progress, num_steps - k + 1, num_steps, "DDIM generation")
    states[0] = x
    return Trajectory(grid, torch.stack(states)) if return_trajectory else x


def generate(
    model: DiffusionOps,
    n: int,
    *,
    num_steps: int = 50,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> torch.Tensor:
    """Draw ``n`` samples with DDIM from pure noise at t = T - 1; returns model-space x_0 (n, C, H, W)."""
    g = torch.Generator().manual_seed(int(seed))
    s = model.sample_size
    noise = torch.randn(n, model.channels, s, s, generator=g, dtype=torch.float64).to(model.device, model.dtype)
    return sample(model, noise, t_start=model.num_train_timesteps - 1, num_steps=num_steps, progress=progress,
                  cancel=cancel, clip_x0=model.kind == "pixel")
