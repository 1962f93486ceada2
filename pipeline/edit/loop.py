"""The curve-matching loop every task runs (:func:`match_curves`): DDIM generation (:func:`pipeline.ddim.sample`)
with a step hook that takes damped Polyak gradient steps on the curve loss before each active step and blends
outside the edit mask with the original trajectory after each step (see :mod:`pipeline.edit`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import masks as M
from ..ddim import StepInfo, Trajectory, sample, timestep_grid
from ..errors import InputError
from ..memory import grad_batch
from ..progress import CancelFlag, ProgressFn, check_cancelled, report
from ..protocols import DiffusionOps
from .configs import EditConfig
from .curves import LOG_FLOOR, rates, trajectory_curves
from .regions import seeded_subset

#: Damping of the Polyak step length L / ||g||^2 (1 would reach L = 0 in one step if L were linear in x).
POLYAK = 0.5
#: Loss (log-rate units squared) treated as zero: a 1e-4 relative rate mismatch is far below the rates' own noise, and
#: at float32 rounding level ``L / <g, d>`` is a ratio of noise terms that would take full ``lr``-capped steps.
LOSS_FLOOR = 1e-8
#: Sums of loss weights or of mask cells used as denominators are at least this: an empty selection gives 0, not NaN.
MASS_FLOOR = 1e-12


# --------------------------------------------------------------------------------------------------------------------
# What a task hands the loop, and what it returns
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatchPlan:
    """What a task hands the loop. Axes of length S+1 are indexed by grid step k (t_k; k = 0 is never active)."""

    start: Trajectory  # inversion of the start image; generation begins from x_init or start.states[-1]
    outside: Trajectory  # trajectory kept outside the mask (x^orig)
    edit: torch.Tensor  # (h, w) in [0, 1]: feathered edit mask m
    directions: torch.Tensor  # (K, C, h, w) unit target directions e_p
    reference: torch.Tensor  # (S+1, K) reference rates r*
    weights: torch.Tensor  # (S+1, K) loss weights (0: inactive)
    anchor: Trajectory | None = None  # preservation anchor a_k; None: the state before this step's updates
    x_init: torch.Tensor | None = None  # (1, C, h, w) state at t_edit; None: start.states[-1]


@dataclass(frozen=True)
class MatchOutput:
    """What the loop returns."""

    x0: torch.Tensor  # (1, C, h, w) generated model-space x_0
    loss: np.ndarray  # (N,) curve loss per gradient iteration (before its update)
    loss_steps: np.ndarray  # (N,) timestep of each iteration
    rate_evals: int  # directions whose rates were differentiated, summed over iterations
    round_trip: torch.Tensor | None = None  # (1, C, h, w) the plain round trip x_0^rec of the exact correction


# --------------------------------------------------------------------------------------------------------------------
# The loss, the optimisation step and the loop
# --------------------------------------------------------------------------------------------------------------------
def curve_loss(r: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """``sum_p w_p max(|log r_p - log r*_p| - tol, 0)^2 / sum_p w_p``.  r, ref, w: (K,) -> ()

    ``tolerance`` (log units) is a dead zone: a patch whose rate is within a factor ``exp(tol)`` of its reference
    counts as matched and gets no gradient (0: the plain squared log error).
    """
    d = torch.log(r.clamp_min(LOG_FLOOR)) - torch.log(ref.clamp_min(LOG_FLOOR))
    if tolerance > 0:
        d = torch.sign(d) * (d.abs() - tolerance).clamp_min(0)
    return (w * d * d).sum() / w.sum().clamp_min(MASS_FLOOR)


def without_mean(d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``d`` (B, C, h, w) without its per-channel component along the (soft) mask ``m`` (1, 1, h, w):
    ``d - m <d, m> / <m, m>``, so a step along it leaves each channel's m-weighted sum of x unchanged."""
    return d - m * (d * m).sum((-2, -1), keepdim=True) / (m * m).sum((-2, -1), keepdim=True).clamp_min(MASS_FLOOR)


def _optimise(model, x: torch.Tensor, k: int, t: int, plan: MatchPlan, cfg: EditConfig, m: torch.Tensor,
              gen: torch.Generator, cancel: CancelFlag | None) -> tuple[torch.Tensor, list[float], int]:
    """``cfg.iterations`` damped Polyak steps on x_{t_k}, capped in length.  x: (1, C, h, w).

    ``x <- x - min(polyak * L / <g, d>, lr / rms_m(d)) * d`` with ``g = m * grad L`` and the descent direction
    ``d = m * blur(g)`` (``d = g`` when ``grad_blur = 0``): the Polyak step (to L = 0 for a linearised loss) shrinks
    with the loss, so a curve that already matches is left alone; the cap ``lr`` bounds the rms of one update. With
    ``keep_mean`` the component of d along m is removed per channel (``d - m <d, m> / <m, m>``), so an update does not
    move the region's weighted mean: the curves steer structure while the start content keeps its colour.
    """
    active = (plan.weights[k] > 0).nonzero().flatten()
    anchor = x.detach().clone() if plan.anchor is None else plan.anchor.states[k]
    denom = m.sum().clamp_min(MASS_FLOOR) * x.shape[1]  # mean over the (soft) region and channels
    losses, evals = [], 0
    for _ in range(cfg.iterations):
        check_cancelled(cancel)
        sel = active[seeded_subset(active.numel(), cfg.max_patches, gen)]
        lc, g = _curve_loss_and_grad(model, x, t, k, sel, plan, cfg)
        xv = x.detach().requires_grad_(True)
        with torch.enable_grad():
            lp = (m * (xv - anchor) ** 2).sum() / denom
            (gp,) = torch.autograd.grad(cfg.preserve_weight * lp, xv)
        loss = cfg.curve_weight * lc + cfg.preserve_weight * lp.detach()
        g = cfg.curve_weight * g + gp
        losses.append(float(lc))
        evals += int(sel.numel())
        g = g * m
        d = M.gaussian_blur(g, cfg.grad_blur) * m if cfg.grad_blur > 0 else g  # descent direction (preconditioned)
        if cfg.keep_mean:
            d = without_mean(d, m)
        gd = (g * d).sum()
        if gd > 0 and loss.detach() > LOSS_FLOOR:  # below the floor the Polyak ratio is rounding noise over noise
            step = torch.minimum(POLYAK * loss.detach() / gd, cfg.lr / (d.pow(2).sum() / denom).sqrt())
            x = x.detach() - step * d
    return x.detach(), losses, evals


def _curve_loss_and_grad(model, x: torch.Tensor, t: int, k: int, sel: torch.Tensor, plan: MatchPlan,
                         cfg: EditConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The curve loss of the directions ``sel`` at x_{t_k} and its gradient in x (1, C, h, w).

    The loss is a weighted sum over directions (:func:`curve_loss`), so it is summed over parts of at most
    :func:`pipeline.memory.grad_batch` directions, each differentiated and freed before the next: the same loss and
    gradient, with the memory of one part (on Stable Diffusion, 32 directions at once would hold tens of GB)."""
    weights = plan.weights[k, sel]
    total = weights.sum().clamp_min(MASS_FLOOR)

    def part(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xv = x.detach().requires_grad_(True)
        with torch.enable_grad():
            r = rates(model, xv, t, plan.directions[sel[idx]], grad_mode=cfg.grad_mode)  # (k',)
            w = weights[idx]
            lc = curve_loss(r, plan.reference[k, sel[idx]], w, cfg.tolerance) * (w.sum().clamp_min(MASS_FLOOR) / total)
            (g,) = torch.autograd.grad(lc, xv)
        return lc.detach(), g

    def probe_run(n: int) -> None:  # one part of n directions, for the memory probe
        part(torch.arange(min(n, sel.numel())))

    limit = grad_batch(model, probe_run) if sel.numel() > 1 else None
    if limit is None or sel.numel() <= limit:
        return part(torch.arange(sel.numel()))
    lc, g = torch.zeros((), dtype=x.dtype, device=x.device), torch.zeros_like(x)
    for i in range(0, sel.numel(), limit):
        lc_i, g_i = part(torch.arange(i, min(i + limit, sel.numel())))
        lc, g = lc + lc_i, g + g_i
    return lc, g


def match_curves(model: DiffusionOps, plan: MatchPlan, cfg: EditConfig, *, progress: ProgressFn | None = None,
                 cancel: CancelFlag | None = None, round_trip: torch.Tensor | None = None) -> MatchOutput:
    """Generate from ``x_{t_edit}`` with curve matching at the active steps and blending outside the mask.

    Per step k = S..1: optimise x_{t_k} (:func:`_optimise`), then
    ``x_{t_{k-1}} = m * ddim(x_{t_k}) + (1 - m) * x^orig_{t_{k-1}}``: :func:`pipeline.ddim.sample` with a step hook
    (:func:`_generate`).  -> x_0 (1, C, h, w) and the loss history.
    With ``cfg.exact`` the same loop also runs without updates, giving the round trip ``x_0^rec`` of the start, and
    returns ``x_0 + (x_0^start - x_0^rec)``: exactly the start image where the loss changed nothing (DDIM inversion
    is only approximately invertible), a first-order correction elsewhere.

    With ``cfg.relative`` (and no ``x_init``) that plain loop runs first, recording its states ``x^rec_{t_k}``; the
    loop then asks for the *change* the task wants rather than for the inversion's own curve:
    ``r*_loop = r* c^rec / c^inv`` (curves along the plain regeneration and along the inversion), and a preservation
    anchor equal to the inversion is replaced by the plain regeneration. Without it the round-trip error (the
    regenerated path is not the inverted one) reads as a curve mismatch and as a preservation error, and the loop
    spends its updates undoing it: with the identity reference (saliency factor 1) the region changed by ~30 dB
    PSNR on the tuning split, and the exact correction then counts that difference twice.
    ``progress(done, total, desc)`` after each step; ``cancel`` is checked before each iteration and step.
    ``round_trip``: that plain round trip when a previous call on the same ``plan.start`` returned it
    (``MatchOutput.round_trip``; several fills of one start share it), so it is not generated again.
    """
    n = plan.start.timesteps.numel() - 1
    total = n * (1 + int(cfg.exact or cfg.relative))  # progress units: one per step of each generation pass
    optimise = cfg.curve_weight > 0 and cfg.iterations > 0 and plan.directions.shape[0] > 0
    relative = cfg.relative and optimise and plan.x_init is None
    rec = None if relative else round_trip
    loop_plan = plan
    if relative:  # the plain regeneration first: it is also the exact correction's round trip
        rec, _, _, _, states = _generate(model, plan, cfg, False, None, progress, cancel, 0, total,
                                         record=True)
        loop_plan = _relative_plan(model, plan, Trajectory(plan.start.timesteps, states))
    x0, losses, steps, evals, _ = _generate(model, loop_plan, cfg, optimise, plan.x_init, progress, cancel,
                                            n if relative else 0, total)
    if cfg.exact:
        if rec is None and (optimise or plan.x_init is not None):  # the plain round trip, from the plain inversion
            rec = _generate(model, plan, cfg, False, None, progress, cancel, n, total)[0]
        elif rec is None:
            rec = x0
            report(progress, total, total, "round-trip correction")
        x0 = x0 + (plan.start.states[0] - rec) * M.as_model_mask(plan.edit, x0)
    report(progress, total, total, "done")  # passes skipped (no second pass needed) count as done
    return MatchOutput(x0.detach(), np.asarray(losses, np.float64), np.asarray(steps, np.int64), evals,
                       None if rec is None else rec.detach())


def _relative_plan(model: DiffusionOps, plan: MatchPlan, rec: Trajectory) -> MatchPlan:
    """The plan the optimised loop follows when ``cfg.relative``: ``r* c^rec / c^inv`` at the active entries, and the
    plain regeneration ``rec`` as the anchor where the anchor was the inversion (see :func:`match_curves`)."""
    steps = (plan.weights > 0).any(dim=1)  # (S+1,)
    c_inv = trajectory_curves(model, plan.start, plan.directions, steps=steps)  # (S, K), NaN off
    c_rec = trajectory_curves(model, rec, plan.directions, steps=steps)
    ratio = torch.nan_to_num(c_rec.clamp_min(LOG_FLOOR) / c_inv.clamp_min(LOG_FLOOR), nan=1.0)  # (S, K)
    reference = plan.reference * torch.cat([ratio[:1], ratio])  # (S+1, K)
    anchor = rec if plan.anchor is plan.start else plan.anchor
    return replace(plan, reference=reference, anchor=anchor)


def _generate(model: DiffusionOps, plan: MatchPlan, cfg: EditConfig, optimise: bool, x_init: torch.Tensor | None,
              progress, cancel, done: int, total: int, record: bool = False
              ) -> tuple[torch.Tensor, list[float], list[int], int, torch.Tensor | None]:
    """One generation pass of :func:`match_curves` (with or without the gradient steps) from ``x_init`` (None: the
    inversion's end): :func:`pipeline.ddim.sample` on the plan's grid with a step hook that optimises x_{t_k} before
    each active step (:func:`_optimise`) and blends outside the mask after each step,
    ``x_{t_{k-1}} <- m x_{t_{k-1}} + (1 - m) x^orig_{t_{k-1}}``.  -> x_0 (1, C, h, w), losses, their timesteps, rate
    evaluations, and with ``record`` the states on the grid (S+1, 1, C, h, w) (``states[k]`` = the state at t_k the
    step started from, ``states[0]`` = x_0), else None. Progress: ``done + i`` of ``total`` after the i-th step."""
    grid = plan.start.timesteps
    n, t_edit = grid.numel() - 1, int(grid[-1])
    if not torch.equal(grid.cpu(), timestep_grid(t_edit, n, num_train_timesteps=model.num_train_timesteps)):
        raise InputError(f"the plan's trajectory must lie on timestep_grid({t_edit}, {n}) (a DDIM inversion's grid), "
                         f"got {grid.tolist()}")
    m = M.as_model_mask(plan.edit, plan.start.states[-1])  # (1, 1, h, w)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    clip = model.kind == "pixel" if cfg.clip_x0 is None else bool(cfg.clip_x0)
    losses: list[float] = []
    steps: list[int] = []
    evals = 0

    def hook(info: StepInfo) -> torch.Tensor | None:
        nonlocal evals
        if info.when == "after":  # blend outside the mask with the original trajectory
            return m * info.x + (1 - m) * plan.outside.states[info.k - 1]
        if optimise and bool((plan.weights[info.k] > 0).any()):
            x, ls, e = _optimise(model, info.x, info.k, info.t, plan, cfg, m, gen, cancel)
            losses.extend(ls)
            steps.extend([info.t] * len(ls))
            evals += e
            return x
        return None

    def step_progress(i: int, _n: int, _desc: str) -> None:  # i-th step of this pass: k = n - i + 1
        desc = f"curve matching (t={int(grid[n - i + 1])})" if optimise else "round-trip correction"
        report(progress, done + i, total, desc)

    out = sample(model, plan.start.states[-1] if x_init is None else x_init, t_start=t_edit, num_steps=n,
                 progress=step_progress, cancel=cancel, return_trajectory=record, clip_x0=clip, step_hook=hook)
    if record:
        return out.states[0], losses, steps, evals, out.states
    return out, losses, steps, evals, None
