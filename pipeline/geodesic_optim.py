"""Optimisers on a flat vector for the geodesic boundary value problem (:func:`pipeline.geodesic.geodesic_bvp`).

Each takes an objective ``f(z) -> (energy, gradient)`` of the flat interior points and a start ``z0``, and returns
an :class:`OptimRun` (final point, energy per iteration, convergence and why it stopped):

- :func:`lbfgs`: the project's L-BFGS with an optional preconditioner (the inverse Hessian of the Euclidean part,
  :func:`laplacian_precond`) and a backtracking line search; the solver's default;
- :func:`torch_lbfgs`: ``torch.optim.LBFGS`` with its strong-Wolfe line search (a reference);
- :func:`adam`: Adam with an absolute step (a reference).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import NumericalError

Objective = Callable[[torch.Tensor], tuple[float, torch.Tensor]]


@dataclass
class OptimRun:
    """What an optimiser reports back: the final point, the energy per iteration, and why it stopped."""

    z: torch.Tensor
    history: list[float]
    converged: bool = False
    iterations: int = 0
    reason: str = ""


def rel_change(old: float, new: float) -> float:
    """|old - new| / max(|old|, |new|) (guarded against 0): the stopping rule's relative energy change."""
    return abs(old - new) / max(abs(new), abs(old), 1e-300)


def lbfgs(f: Objective, z0: torch.Tensor, *, max_iter: int, tol: float, history_size: int,
          step_hook: Callable[[int, float], None],
          precond: Callable[[torch.Tensor], torch.Tensor] | None = None) -> OptimRun:
    """L-BFGS (two-loop recursion) with a backtracking Armijo line search (safeguarded quadratic steps).

    ``precond`` applies the initial inverse Hessian H0 (scaled each iteration by ``s.y / y.H0 y``); the BVP passes the
    inverse of the Euclidean part's Hessian, ``(N L)^-1`` (L the path Laplacian), which makes lam = 0 a one-step solve
    and removes the N^2 conditioning of the discretisation. Stops when the relative energy change of an iteration
    falls below ``tol`` (converged), after ``max_iter`` iterations, or when the line search cannot decrease E (the
    floating-point floor: converged if the last relative change was already below ``10 tol``).

    ``f`` may raise :class:`~pipeline.errors.NumericalError` where E or its gradient is not finite. At ``z0`` that
    propagates; at a trial point of the line search the step is shortened instead, and only when every trial of an
    iteration failed that way is the last such error raised again (naming the iteration).
    """
    precond = precond if precond is not None else (lambda q: q)
    z = z0.clone()
    e, g = f(z)
    run = OptimRun(z=z, history=[e])
    mem_s: list[torch.Tensor] = []
    mem_y: list[torch.Tensor] = []
    for it in range(1, max_iter + 1):
        # two-loop recursion: direction p = -H g
        q = g.clone()
        alphas = []
        for s_, y_ in zip(reversed(mem_s), reversed(mem_y), strict=True):
            rho = 1.0 / float(y_ @ s_)
            a = rho * float(s_ @ q)
            alphas.append((a, rho))
            q -= a * y_
        q = precond(q)
        if mem_s:
            q *= float(mem_s[-1] @ mem_y[-1]) / float(mem_y[-1] @ precond(mem_y[-1]))
        for (a, rho), s_, y_ in zip(reversed(alphas), mem_s, mem_y, strict=True):
            b = rho * float(y_ @ q)
            q += (a - b) * s_
        p = -q
        gtp = float(g @ p)
        if not gtp < 0:  # not a descent direction (stale memory): restart with steepest descent
            mem_s.clear(), mem_y.clear()
            p = -precond(g)
            gtp = float(g @ p)
            if not gtp < 0:
                run.converged, run.reason = True, "zero gradient"
                break
        # backtracking line search on E(z + t p), Armijo c1 = 1e-4
        t, accepted, n_failed = 1.0, False, 0
        for trial in range(30):
            z_new = z + t * p
            try:
                e_new, g_new = f(z_new)
            except NumericalError as err:  # non-finite at the trial point: a shorter step
                e_new, n_failed = float("nan"), n_failed + 1
                if n_failed == trial + 1 == 30:
                    raise NumericalError(f"L-BFGS iteration {it}: every one of 30 trial steps (down to "
                                         f"{t:.3g} of the first) met a non-finite value; the last: {err}") from err
            if math.isfinite(e_new) and e_new <= e + 1e-4 * t * gtp:
                accepted = True
                break
            # minimiser of the quadratic through e, gtp, e_new; kept within [0.1 t, 0.5 t]
            denom = 2 * (e_new - e - gtp * t) if math.isfinite(e_new) else float("inf")
            t_q = -gtp * t * t / denom if denom > 0 else 0.1 * t
            t = min(max(t_q, 0.1 * t), 0.5 * t)
        if not accepted:
            run.converged = len(run.history) > 1 and rel_change(run.history[-2], run.history[-1]) < 10 * tol
            run.reason = "line search found no decrease"
            break
        s_vec, y_vec = z_new - z, g_new - g
        if float(s_vec @ y_vec) > 1e-10 * float(s_vec.norm()) * float(y_vec.norm()):
            mem_s.append(s_vec), mem_y.append(y_vec)
            if len(mem_s) > history_size:
                mem_s.pop(0), mem_y.pop(0)
        z, g, e_old, e = z_new, g_new, e, e_new
        run.z, run.iterations = z, it
        run.history.append(e)
        step_hook(it, e)
        if rel_change(e_old, e) < tol:
            run.converged, run.reason = True, "relative energy change below tol"
            break
    else:
        run.reason = "max_iter reached"
    return run


def torch_lbfgs(f: Objective, z0: torch.Tensor, *, max_iter: int, tol: float, history_size: int,
                step_hook: Callable[[int, float], None]) -> OptimRun:
    """torch.optim.LBFGS (strong Wolfe line search), one iteration per ``step`` so the same stopping rule applies.

    The energy at the accepted point is looked up among the line search's own evaluations (torch moves the
    parameters there by the same ``add_`` it evaluated with, so the match is exact); no extra evaluation is spent.
    """
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([z], lr=1.0, max_iter=1, max_eval=25, history_size=history_size,
                            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
    seen: list[tuple[torch.Tensor, float]] = []

    def closure():
        e, g = f(z.detach())
        z.grad = g
        seen.append((z.detach().clone(), e))
        return torch.tensor(e, dtype=torch.float64)

    e0 = float(closure())
    run = OptimRun(z=z0.clone(), history=[e0])
    for it in range(1, max_iter + 1):
        seen.clear()
        opt.step(closure)
        here = z.detach()
        match = [e for zz, e in seen if torch.equal(zz, here)]
        e = match[-1] if match else float(f(here)[0])
        run.z, run.iterations = here.clone(), it
        run.history.append(e)
        step_hook(it, e)
        if rel_change(run.history[-2], e) < tol:
            run.converged, run.reason = True, "relative energy change below tol"
            break
    else:
        run.reason = "max_iter reached"
    return run


def adam(f: Objective, z0: torch.Tensor, *, max_iter: int, tol: float, lr: float,
         step_hook: Callable[[int, float], None]) -> OptimRun:
    """Adam with step ``lr`` (absolute, per coordinate); stops when the relative change of a 10-iteration moving
    average of E falls below ``tol``."""
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    e, g = f(z.detach())
    run = OptimRun(z=z0.clone(), history=[e])
    best_z, best_e = z0.clone(), e
    for it in range(1, max_iter + 1):
        z.grad = g
        opt.step()
        e, g = f(z.detach())
        run.history.append(e)
        run.iterations = it
        if e < best_e:
            best_z, best_e = z.detach().clone(), e
        step_hook(it, e)
        if it >= 20:
            recent, before = sum(run.history[-10:]) / 10, sum(run.history[-20:-10]) / 10
            if rel_change(before, recent) < tol:
                run.converged, run.reason = True, "relative change of the mean energy below tol"
                break
    else:
        run.reason = "max_iter reached"
    run.z = best_z  # the best iterate: Adam is not monotone; the history ends with its energy
    if best_e != run.history[-1]:
        run.history.append(best_e)
    return run


def laplacian_solve(q: torch.Tensor) -> torch.Tensor:
    """u = L^-1 q column by column, L = tridiag(-1, 2, -1) of size k (Dirichlet ends), in O(k D) time and memory.

    The inverse of L has the closed form ``(L^-1)_ij = min(i, j) (k + 1 - max(i, j)) / (k + 1)`` (1-based), so
    ``u_i = [(k + 1 - i) sum_{j <= i} j q_j + i sum_{j > i} (k + 1 - j) q_j] / (k + 1)``: two cumulative sums (the
    second taken from the end, so no large prefix is subtracted), computed in float64 and returned in q's dtype.
    Equals ``torch.linalg.inv(L) @ q`` to rounding without forming the k x k matrix.  q: (k, D) -> (k, D)
    """
    k = q.shape[0]
    q64 = q.to(torch.float64)
    j = torch.arange(1, k + 1, dtype=torch.float64, device=q.device)[:, None]  # (k, 1)
    left = torch.cumsum(j * q64, dim=0)  # sum_{j <= i} j q_j
    tail = torch.flip(torch.cumsum(torch.flip((k + 1 - j) * q64, (0,)), dim=0), (0,))  # sum_{j >= i} (k+1-j) q_j
    right = torch.cat((tail[1:], torch.zeros_like(tail[:1])))  # sum_{j > i}
    u = ((k + 1 - j) * left + j * right) / (k + 1)
    return u.to(q.dtype)


def laplacian_precond(n_points: int, like: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """q -> (N L)^-1 q on flat interior points, L = tridiag(-1, 2, -1) of size n_points - 2 (the Hessian of the
    Euclidean energy (N/2) sum |d_i|^2 is N L per coordinate), applied by :func:`laplacian_solve` in time and memory
    linear in the number of points (no dense inverse).  (n_interior * D,) -> (n_interior * D,)"""
    n_seg, k = n_points - 1, n_points - 2
    return lambda q: (laplacian_solve(q.reshape(k, -1)) / n_seg).to(like.dtype).reshape(-1)
