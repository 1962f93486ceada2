"""Generation rates, rate maps, generation curves and saliency (docs/maths.md section 3).

Notation:

| code                               | paper                                                                   |
|------------------------------------|-------------------------------------------------------------------------|
| ``generation_rate(model, x, t, v)``| r_t(x_t, v) = ||D h_t(x_t)[v]|| / ||v||                                 |
| ``patch_directions``               | e_p, the unit-norm perturbation of patch p                              |
| ``rate_map``                       | {r_t(x_t, e_p)}_p, the *direct* estimator                               |
| ``tangent_basis``                  | V_k, sigma_k: top-k right singular vectors / values of D h_t(x_t)       |
| ``projected_rate_map``             | r_t(p)^2 = sum_i sigma_i^2 (v_i . e_p)^2 / ||V_k^T e_p||^2               |
| ``CurveResult.curves``             | c_p(t) = r_t(x_t, e_p) along the DDIM trajectory of x_0                  |
| ``CurveResult.accumulated``        | C_p(t) = sum_{t' >= t} c_p(t') dt', normalised to end at 1               |
| ``saliency_from_curves``           | S(p), e.g. sum_k |c_p(t_{k+1}) - c_p(t_k)| (rate fluctuation)            |

**Patches.** A patch p is a ``patch_size x patch_size`` square of *model space*, over all channels; patches tile model
space row by row (index ``p = row * (W / patch_size) + col``), so ``patch_size`` must divide the model-space height and
width. ``e_p`` is the patch indicator divided by its norm, or (``smooth = s > 0``) the indicator blurred by a
Gaussian of standard deviation ``s`` model-space pixels (zero outside the image), divided by its norm.

**Latent models.** Directions live in latent space: a latent patch of ``patch_size`` latent pixels stands for the
``patch_size * model.vae_scale`` square of pixels of the model's image above it (e.g. 8 x 8 pixels per latent pixel
for Stable Diffusion; approximately, since the VAE's receptive field reaches beyond it). Maps have the latent grid's
resolution; :func:`generation_curves` upsamples the saliency to the input image's size.

**Models and backends.** ``model`` is anything implementing :class:`pipeline.protocols.DiffusionOps`: the
:class:`~pipeline.model.DiffusionModel` itself or an ``accel`` backend. Rate maps ask for many directions at one
point (``model.h_jvp_point``): the PyTorch model evaluates them by ``torch.func.vmap`` over the tangents of
``torch.func.jvp``, the primal h_t(x_t) computed once per batch, not once per direction (a rate map of a
1.1M-parameter 32x32 U-Net with 8 directions per batch: 1.4x less CPU time than repeating x; with 1 direction per
batch vmap is 1.2x slower, so ``auto`` does not use it there; see ``benchmarks/results/rates.md``); exported-graph
backends run their point graphs. The projected estimator's VJPs always run on ``model.torch_model``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InputError
from .progress import CancelFlag, ProgressFn, check_cancelled, report
from .protocols import BATCHINGS as BATCHINGS  # re-exported: rate_map's batching choices
from .protocols import DiffusionOps
from .validate import check_choice, check_int

log = logging.getLogger(__name__)

#: Saliency statistics of a generation curve (see :func:`saliency_from_curves`).
STATISTICS = ("tv", "mean", "peak", "std")
#: Curve normalisations applied before the statistic (see :func:`saliency_from_curves`).
NORMALIZATIONS = ("none", "time", "curve")
#: Rate-map estimators.
ESTIMATORS = ("direct", "projected")
#: Default saliency statistic and normalisation: total variation of the per-timestep-normalised curves. Chosen on a
#: quick sanity check (12 scenes of the tuning split, the embedded default model, direct estimator, patch 4, T = 10,
#: object masks as labels): mean ROC AUC 0.77 +- 0.04 (s.e.) for tv + "time" and 0.76 for std + "time", but 0.44
#: for tv, 0.40 for the mean rate and 0.30 for the peak without normalisation (below 0.5: object patches had *lower*
#: raw rates there); a window t > 300 lowered tv + "time" to 0.68. A first probe on 16 px digits preferred the mean
#: rate (0.71 vs 0.62 for tv). The tuning-split study (benchmarks/results/edit_saliency_study.md; docs/maths.md 3.7)
#: found std + "time" marginally ahead of tv + "time"; tv stays the default as the paper's statistic.
DEFAULT_STATISTIC = "tv"
DEFAULT_NORMALIZE = "time"
DEFAULT_BATCH_SIZE = 16  # directions per JVP batch: per-direction cost is flat from 8 to 32 on CPU, memory grows


# --------------------------------------------------------------------------------------------------------------------
# The rate of one direction
# --------------------------------------------------------------------------------------------------------------------
def generation_rate(model: DiffusionOps, x_t: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Generation rate of direction v at x_t.

    ``r_t(x, v) = ||D h_t(x)[v]|| / ||v||;  x, v: (B, C, H, W), t: int or (B,) -> (B,)``

    Differentiable in ``x_t`` when called with grad enabled (reverse-over-forward through autograd), which the editing
    code uses (with a model that supports autograd). A zero direction raises :class:`InputError`.
    """
    x = model.check_x(x_t, "x_t")
    v = model.check_x(v, "v")
    if v.shape != x.shape:
        raise InputError(f"v must have the shape of x_t {tuple(x.shape)}, got {tuple(v.shape)}")
    v_norm = v.flatten(1).norm(dim=1)  # (B,)
    zero = (v_norm == 0).nonzero().flatten().tolist()
    if zero:
        raise InputError(f"direction v is zero for batch items {zero}; a rate needs a nonzero direction")
    tt = model.timesteps(t, x.shape[0])
    _, jv = model.h_jvp(x, tt, v)  # (B, C_h, H_h, W_h)
    return jv.flatten(1).norm(dim=1) / v_norm


# --------------------------------------------------------------------------------------------------------------------
# Patch directions e_p
# --------------------------------------------------------------------------------------------------------------------
def patch_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Rows and columns of the patch grid, ``(H / p, W / p)``; ``p`` must divide both sides."""
    patch_size = check_int("patch_size", patch_size, 1)
    if height % patch_size or width % patch_size:
        divisors = [d for d in range(1, min(height, width) + 1) if height % d == 0 and width % d == 0]
        raise InputError(
            f"patch_size {patch_size} does not divide the model-space size {height}x{width}; "
            f"accepted patch sizes: {divisors}"
        )
    return height // patch_size, width // patch_size


def patch_size_for_grid(side: int, grid: int) -> int:
    """The patch size that tiles a model space of ``side`` pixels into about ``grid`` patches per side: the largest
    divisor of ``side`` not above ``side / grid`` (at least 1, so a grid finer than the model gives 1-pixel patches).

    A grid, unlike a patch size in pixels, costs the same on every model: ``grid**2`` JVPs per timestep (e.g. grid 8:
    patch 4 on a 32-pixel model, 32 on a 256-pixel one, 8 latent pixels on SD 1.5's 64).
    """
    side, grid = check_int("side", side, 1), check_int("grid", grid, 1)
    patch = max(1, side // grid)
    while side % patch:
        patch -= 1
    return patch


def _gaussian_blur_1d(rows: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each row of ``rows`` (N, L) with a Gaussian of std ``sigma`` samples, zero outside.  -> (N, L)"""
    radius = max(1, math.ceil(3 * sigma))
    k = torch.arange(-radius, radius + 1, dtype=rows.dtype, device=rows.device)
    kernel = torch.exp(-0.5 * (k / sigma) ** 2)
    kernel = kernel / kernel.sum()
    return F.conv1d(rows[:, None], kernel[None, None], padding=radius)[:, 0]  # (N, L)


def patch_directions(
    shape: Sequence[int],
    patch_size: int,
    *,
    indices: Sequence[int] | torch.Tensor | None = None,
    smooth: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Unit-norm patch perturbations e_p for the patches in ``indices`` (default: all, row-major).

    ``e_p = g_rows(p) (x) g_cols(p) / sqrt(C)`` with ``g`` the (optionally Gaussian-blurred) 1-D patch indicator of
    unit norm, the same in every channel.  shape = (C, H, W) -> (P, C, H, W), ``||e_p|| = 1``.
    """
    if len(shape) != 3:
        raise InputError(f"shape must be (C, H, W), got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    nh, nw = patch_grid(h, w, patch_size)
    if not smooth >= 0 or not math.isfinite(smooth):
        raise InputError(f"smooth (a Gaussian std in model-space pixels) must be >= 0, got {smooth}")
    idx = torch.arange(nh * nw) if indices is None else torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= nh * nw):
        raise InputError(f"patch indices must lie in [0, {nh * nw - 1}] for a {nh}x{nw} patch grid")
    rows, cols = (idx // nw).to(device), (idx % nw).to(device)  # (P,)
    ys = torch.arange(h, device=device) // patch_size  # (H,)
    xs = torch.arange(w, device=device) // patch_size  # (W,)
    g_rows = (ys[None, :] == rows[:, None]).to(dtype)  # (P, H)
    g_cols = (xs[None, :] == cols[:, None]).to(dtype)  # (P, W)
    if smooth > 0:
        g_rows, g_cols = _gaussian_blur_1d(g_rows, smooth), _gaussian_blur_1d(g_cols, smooth)
    g_rows = g_rows / g_rows.norm(dim=1, keepdim=True)
    g_cols = g_cols / g_cols.norm(dim=1, keepdim=True)
    e = g_rows[:, :, None] * g_cols[:, None, :] / math.sqrt(c)  # (P, H, W)
    return e[:, None].expand(-1, c, -1, -1).contiguous()  # (P, C, H, W)


# --------------------------------------------------------------------------------------------------------------------
# Many directions at one point
# --------------------------------------------------------------------------------------------------------------------
def _check_single(model: DiffusionOps, x_t: torch.Tensor) -> torch.Tensor:
    x = model.check_x(x_t, "x_t")
    if x.shape[0] != 1:
        raise InputError(f"x_t must hold one image, shape (1, {model.channels}, H, W); got batch {x.shape[0]}")
    return x


def _vjp_many(vjp_fn: Callable, u: torch.Tensor) -> torch.Tensor:
    """``U -> J^T U`` for many cotangents through one ``torch.func.vjp`` closure.  (n, C_h, H_h, W_h) -> (n, C, H, W)"""
    try:
        return torch.func.vmap(lambda ui: vjp_fn(ui[None])[0][0])(u)
    except (RuntimeError, NotImplementedError):
        return torch.cat([vjp_fn(ui[None])[0] for ui in u])


def _check_batch_size(batch_size: int) -> int:
    return check_int("batch_size", batch_size, 1)


# --------------------------------------------------------------------------------------------------------------------
# Direct estimator
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _MapRun:
    rates: torch.Tensor  # (H/p, W/p)
    batching: str
    evaluations: int  # JVP directions evaluated


def _direct_map(model: DiffusionOps, x, tt, *, patch_size, batch_size, smooth, batching, progress, cancel
                ) -> _MapRun:
    c, h, w = x.shape[1:]
    nh, nw = patch_grid(h, w, patch_size)
    n = nh * nw
    model.point_batching(batching, batch_size)  # an unsupported batching fails before any work
    rates = torch.empty(n, dtype=x.dtype, device=x.device)  # (P,)
    n_batches = math.ceil(n / batch_size)
    with torch.no_grad():
        for b, start in enumerate(range(0, n, batch_size)):
            check_cancelled(cancel)
            idx = torch.arange(start, min(n, start + batch_size))
            e = patch_directions((c, h, w), patch_size, indices=idx, smooth=smooth, dtype=x.dtype, device=x.device)
            _, jv = model.h_jvp_point(x, tt, e, batching=batching)  # (n_b, C_h, H_h, W_h)
            rates[start : start + len(idx)] = jv.flatten(1).norm(dim=1)  # ||e_p|| = 1
            report(progress, b + 1, n_batches, "rate map")
    return _MapRun(rates.reshape(nh, nw), model.point_batching(batching, batch_size), n)


def rate_map(
    model: DiffusionOps,
    x_t: torch.Tensor,
    t: int | torch.Tensor,
    *,
    patch_size: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    smooth: float = 0.0,
    batching: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> torch.Tensor:
    """Direct rate map of one image: ``r_t(x_t, e_p)`` for every patch p.

    ``map[p] = ||D h_t(x_t)[e_p]||;  x_t: (1, C, H, W) -> (H / patch_size, W / patch_size)``

    Directions go ``batch_size`` at a time through ``model.h_jvp_point`` (``batching``, see :data:`BATCHINGS`); with
    the PyTorch model's vmap the primal h_t(x_t) is computed once per batch. The result does not depend on
    ``batch_size``.
    """
    x = _check_single(model, x_t)
    tt = model.timesteps(t, 1)
    run = _direct_map(model, x, tt, patch_size=patch_size, batch_size=_check_batch_size(batch_size), smooth=smooth,
                      batching=batching, progress=progress, cancel=cancel)
    return run.rates


# --------------------------------------------------------------------------------------------------------------------
# Projected estimator: a tangent basis by block power iteration
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TangentBasis:
    """Top-k right singular vectors and values of ``J = D h_t(x_t)``, from block power iteration on ``J^T J``."""

    V: torch.Tensor  # (k, C, H, W) orthonormal right singular vectors v_i (as images)
    sigmas: torch.Tensor  # (k,) singular values sigma_i, descending
    iters: int  # power iterations run
    residual: float  # max_i ||J^T J v_i - sigma_i^2 v_i|| / sigma_1^2 (0 when converged exactly)
    jvps: int  # JVP directions evaluated
    vjps: int  # VJP cotangents evaluated
    batching: str  # how the JVPs were batched: "vmap" | "repeat" | "graph"
    seconds: float


def tangent_basis(
    model: DiffusionOps,
    x_t: torch.Tensor,
    t: int | torch.Tensor,
    *,
    k: int = 16,
    iters: int = 10,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> TangentBasis:
    """Top-k right singular pairs of ``J = D h_t(x_t)`` by subspace (block power) iteration (Park et al., 2023).

    ``Q_0`` = orthonormalised Gaussian (D, k); each iteration ``Q <- qr(J^T J Q)`` (k JVPs, then one VJP closure
    applied to k cotangents); finally Rayleigh-Ritz: ``J Q = P S R^T`` (thin SVD) gives ``V = Q R``, ``sigma = S``.
    x_t: (1, C, H, W) -> V (k, C, H, W), sigmas (k,). JVPs through ``model.h_jvp_point``; the VJPs use PyTorch
    autograd on ``model.torch_model``.
    """
    start = time.perf_counter()
    x = _check_single(model, x_t)
    tt = model.timesteps(t, 1)
    d = x[0].numel()
    k = check_int("k", k, 1, d)  # at most the model-space dimension
    iters = check_int("iters", iters, 1)
    batch_size = _check_batch_size(batch_size)
    shape = x.shape[1:]  # (C, H, W)
    h0, vjp_fn = torch.func.vjp(lambda xx: model.torch_model.h_raw(xx, tt), x)  # primal once; J^T u for any u

    def apply_j(q: torch.Tensor) -> torch.Tensor:  # (D, k) -> J Q as (k, M)
        cols = q.T.reshape(-1, *shape)  # (k, C, H, W)
        return torch.cat([model.h_jvp_point(x, tt, cols[i : i + batch_size])[1].flatten(1)
                          for i in range(0, k, batch_size)])

    def apply_jt(u: torch.Tensor) -> torch.Tensor:  # (k, M) -> J^T U^T as (D, k)
        u = u.reshape(k, *h0.shape[1:])  # (k, C_h, H_h, W_h)
        rows = [_vjp_many(vjp_fn, u[i : i + batch_size]).flatten(1) for i in range(0, k, batch_size)]
        return torch.cat(rows).T

    gen = torch.Generator().manual_seed(int(seed))
    q = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64).to(x)).Q  # (D, k)
    with torch.no_grad():
        for i in range(iters):
            check_cancelled(cancel)
            q = torch.linalg.qr(apply_jt(apply_j(q))).Q  # (D, k)
            report(progress, i + 1, iters, "tangent basis")
        u = apply_j(q)  # (k, M) = (J Q)^T
        _, s, rt = torch.linalg.svd(u.T, full_matrices=False)  # J Q = P diag(s) R^T; rt = R^T (k, k)
        v = q @ rt.T  # (D, k) Ritz vectors
        jtj_v = apply_jt(u) @ rt.T  # (D, k) = J^T J V
        res = (jtj_v - v * s**2).norm(dim=0).max() / s[0].clamp_min(torch.finfo(s.dtype).tiny) ** 2
    return TangentBasis(
        V=v.T.reshape(k, *shape).contiguous(),  # (k, C, H, W)
        sigmas=s,
        iters=int(iters),
        residual=float(res),
        jvps=k * (iters + 1),
        vjps=k * (iters + 1),
        batching=model.point_batching("auto", min(k, batch_size)),
        seconds=time.perf_counter() - start,
    )


def project_rates(basis: TangentBasis, patch_size: int, *, smooth: float = 0.0, chunk: int = 256) -> torch.Tensor:
    """Projected rate map from a tangent basis (pure; no model calls).

    ``r(p)^2 = sum_i sigma_i^2 (v_i . e_p)^2 / ||V^T e_p||^2`` (the rate of ``v = V V^T e_p``; 0 where
    ``V^T e_p = 0``).  V: (k, C, H, W), sigmas (k,) -> (H / patch_size, W / patch_size)
    """
    k = basis.V.shape[0]
    shape = basis.V.shape[1:]
    nh, nw = patch_grid(shape[1], shape[2], patch_size)
    vf = basis.V.reshape(k, -1)  # (k, D)
    s2 = basis.sigmas.to(vf) ** 2  # (k,)
    out = []
    for start in range(0, nh * nw, chunk):
        idx = torch.arange(start, min(nh * nw, start + chunk))
        e = patch_directions(shape, patch_size, indices=idx, smooth=smooth, dtype=vf.dtype, device=vf.device)
        coef2 = (e.reshape(len(idx), -1) @ vf.T) ** 2  # (n, k) = (v_i . e_p)^2
        den = coef2.sum(dim=1)  # (n,) = ||V^T e_p||^2
        num = coef2 @ s2  # (n,)
        out.append(torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(den)).sqrt())
    return torch.cat(out).reshape(nh, nw)


def projected_rate_map(
    model: DiffusionOps,
    x_t: torch.Tensor,
    t: int | torch.Tensor,
    *,
    patch_size: int,
    k: int = 16,
    iters: int = 10,
    seed: int = 0,
    smooth: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    basis: TangentBasis | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> torch.Tensor:
    """Projected rate map of one image, from the top-k tangent basis (computed unless ``basis`` is given).

    ``r_t(p)^2 = sum_i sigma_i^2 (v_i . e_p)^2 / ||V_k^T e_p||^2;  x_t: (1, C, H, W) -> (H / p, W / p)``
    """
    x = _check_single(model, x_t)
    if basis is None:
        basis = tangent_basis(model, x, t, k=k, iters=iters, seed=seed, batch_size=batch_size, progress=progress,
                              cancel=cancel)
    elif tuple(basis.V.shape[1:]) != tuple(x.shape[1:]):
        raise InputError(f"basis vectors have shape {tuple(basis.V.shape[1:])}, x_t has {tuple(x.shape[1:])}")
    return project_rates(basis, patch_size, smooth=smooth)


# --------------------------------------------------------------------------------------------------------------------
# Saliency from curves
# --------------------------------------------------------------------------------------------------------------------
def _window(timesteps: torch.Tensor, statistic: str, t_min: int | None) -> torch.Tensor:
    """Boolean mask of the timesteps the statistic uses (t > t_min); raises if too few remain.  (T,) -> (T,)"""
    keep = torch.ones_like(timesteps, dtype=torch.bool) if t_min is None else timesteps > t_min
    need = 2 if statistic in ("tv", "std") else 1
    if int(keep.sum()) < need:
        raise InputError(f"statistic {statistic!r} needs at least {need} timesteps in the window t > {t_min}; "
                         f"got {int(keep.sum())} of {timesteps.tolist()}")
    return keep


def saliency_from_curves(
    curves: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    statistic: str = DEFAULT_STATISTIC,
    t_min: int | None = None,
    normalize: str = DEFAULT_NORMALIZE,
) -> torch.Tensor:
    """Saliency of each component from its generation curve (pure).

    Curves are taken in order of t, restricted to ``t > t_min`` if given, normalised, then reduced over time:

    - normalize ``"none"``; ``"time"``: each timestep's map divided by its mean over components (removes the global
      time profile); ``"curve"``: each curve divided by its own mean over the window (shape only; ``mean`` is then 1).
    - statistic ``"tv"``: ``S(p) = sum_k |c_p(t_{k+1}) - c_p(t_k)|`` (rate fluctuation, the paper's choice);
      ``"mean"``: mean rate; ``"peak"``: max rate; ``"std"``: standard deviation over time.

    curves: (T, ...) e.g. (T, H/p, W/p); timesteps: (T,) -> (...)
    """
    check_choice("statistic", statistic, STATISTICS)
    check_choice("normalize", normalize, NORMALIZATIONS)
    curves, timesteps = torch.as_tensor(curves), torch.as_tensor(timesteps)
    if curves.ndim < 2 or timesteps.shape != curves.shape[:1]:
        raise InputError(f"curves must be (T, ...) with timesteps (T,); got curves {tuple(curves.shape)}, "
                         f"timesteps {tuple(timesteps.shape)}")
    if not bool(torch.isfinite(curves).all()):
        raise InputError("curves contain NaN or inf")
    order = torch.argsort(timesteps)
    c, ts = curves[order], timesteps[order]  # (T, ...) by increasing t
    c = c[_window(ts, statistic, t_min)]  # (T', ...)
    c = c if c.is_floating_point() else c.to(torch.float64)
    tiny = torch.finfo(c.dtype).tiny
    if normalize == "time":
        c = c / c.flatten(1).mean(dim=1).clamp_min(tiny).reshape(-1, *([1] * (c.ndim - 1)))
    elif normalize == "curve":
        c = c / c.mean(dim=0, keepdim=True).clamp_min(tiny)
    if statistic == "tv":
        return (c[1:] - c[:-1]).abs().sum(dim=0)
    if statistic == "mean":
        return c.mean(dim=0)
    if statistic == "peak":
        return c.amax(dim=0)
    return c.std(dim=0)


def accumulate_curves(curves: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """Accumulated curves ``C_p(t_k) = sum_{j <= k} c_p(t_j) dt_j / sum_j c_p(t_j) dt_j`` in the given order.

    With curves in generation order (decreasing t) this is ``sum_{t' >= t} c_p(t') dt'`` normalised to end at 1.
    curves: (T, ...), dt: (T,) time spacing of each sample -> (T, ...)
    """
    w = dt.to(curves).reshape(-1, *([1] * (curves.ndim - 1)))  # (T, 1, ...)
    acc = torch.cumsum(curves * w, dim=0)  # (T, ...)
    total = acc[-1:].clamp_min(torch.finfo(acc.dtype).tiny)
    return acc / total


# --------------------------------------------------------------------------------------------------------------------
# Generation curves of an image
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurveResult:
    """Generation curves of one image, its accumulated curves and saliency, with diagnostics.

    Timesteps are in generation order (decreasing t), so ``accumulated[-1]`` is 1.
    """

    timesteps: torch.Tensor  # (T,) long, decreasing
    curves: torch.Tensor  # (T, H/p, W/p) c_p(t), model-space patch grid
    accumulated: torch.Tensor  # (T, H/p, W/p) C_p(t), normalised cumulative from large t to small, ends at 1
    saliency: torch.Tensor  # (H_in, W_in) saliency at the input image's size (bilinear upsampling)
    patch_saliency: torch.Tensor  # (H/p, W/p) saliency per patch
    estimator: str  # "direct" | "projected"
    patch_size: int  # in model-space pixels
    pixels_per_patch: int  # patch side in pixels of the model's image (patch_size * vae_scale)
    statistic: str
    normalize: str
    t_min: int | None
    batching: str  # how JVPs were batched: "vmap" | "repeat"
    jvp_evaluations: int  # JVP directions evaluated in total
    seconds: float  # wall time, inversion included
    basis_residual: float | None = None  # projected: worst power-iteration residual over timesteps

    def patch_index(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the patch under input-image pixel (x, y) (x to the right, y down)."""
        h, w = self.saliency.shape
        nh, nw = self.curves.shape[1:]
        if not (0 <= x < w and 0 <= y < h):
            raise InputError(f"point ({x}, {y}) lies outside the {w}x{h} image")
        return min(int(y * nh / h), nh - 1), min(int(x * nw / w), nw - 1)

    def curve_at(self, x: float, y: float) -> torch.Tensor:
        """Generation curve c_p(t) of the patch under input-image pixel (x, y).  -> (T,)"""
        r, c = self.patch_index(x, y)
        return self.curves[:, r, c]


def generation_curves(
    model: DiffusionOps,
    image,
    *,
    num_timesteps: int = 20,
    t_max: int | None = None,
    patch_size: int = 2,
    estimator: str = "direct",
    statistic: str = DEFAULT_STATISTIC,
    t_min: int | None = None,
    normalize: str = DEFAULT_NORMALIZE,
    smooth: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    k: int = 16,
    iters: int = 10,
    seed: int = 0,
    inversion: str = "corrected",
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> CurveResult:
    """Generation curves of every patch of an image along its DDIM trajectory, and the saliency they give.

    The image (uint8 (H, W, 3) array, PIL image, (3, H, W) tensor in [-1, 1], or anything :mod:`pipeline.images`
    accepts) is resized to the model, encoded (latent models), DDIM-inverted on ``timestep_grid(t_max,
    num_timesteps) = [0, t_1, ..., t_T = t_max]`` and ``c_p(t_k) = r_{t_k}(x_{t_k}, e_p)`` is computed at the T noisy
    grid points ``t_1..t_T`` (``t_max`` defaults to the last training timestep).

    Args:
        estimator: ``"direct"`` (one JVP per patch) or ``"projected"`` (top-``k`` tangent basis per timestep,
            ``iters`` power iterations, ``seed``).
        statistic, t_min, normalize: the saliency statistic (:func:`saliency_from_curves`).
        smooth: Gaussian std of the patch directions, in model-space pixels (0: hard patches).
        inversion: the DDIM inversion method, ``"corrected"`` or ``"explicit"`` (:func:`pipeline.ddim.invert`).

    Returns a :class:`CurveResult`; shapes (T,), (T, H/p, W/p), saliency (H_in, W_in).
    """
    from .ddim import check_invert_method, invert, timestep_grid
    from .images import image_to_tensor, to_uint8_rgb

    start = time.perf_counter()
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("statistic", statistic, STATISTICS)
    check_choice("normalize", normalize, NORMALIZATIONS)
    check_invert_method(inversion, "inversion")
    batch_size = _check_batch_size(batch_size)
    nh, nw = patch_grid(model.sample_size, model.sample_size, patch_size)
    t_max = model.num_train_timesteps - 1 if t_max is None else t_max
    grid = timestep_grid(t_max, num_timesteps, num_train_timesteps=model.num_train_timesteps)  # (T + 1,) increasing
    n_t = int(num_timesteps)
    _window(grid[1:], statistic, t_min)  # fail before the expensive part

    arr = to_uint8_rgb(image)  # (H_in, W_in, 3) uint8
    in_size = arr.shape[:2]
    pixels = image_to_tensor(arr, model.image_size, dtype=model.dtype, device=model.device)  # (1, 3, S_img, S_img)
    with torch.no_grad():
        x0 = model.encode(pixels)  # (1, C, S, S)

    # Progress units: one per inversion step, then per timestep one per JVP batch (direct) or per iteration.
    per_t = math.ceil(nh * nw / batch_size) if estimator == "direct" else iters
    total = n_t + n_t * per_t

    def stage(offset: int, desc: str) -> ProgressFn | None:
        return None if progress is None else (lambda d, _n, _desc="": progress(offset + d, total, desc))

    traj = invert(model, x0, t_end=int(t_max), num_steps=n_t, method=inversion,
                  progress=stage(0, "DDIM inversion"), cancel=cancel, return_trajectory=True)

    maps, batching, evals, residuals = [], "", 0, []
    for j, k_grid in enumerate(range(n_t, 0, -1)):  # generation order: t_T, ..., t_1
        check_cancelled(cancel)
        x_t, tt = traj.states[k_grid], model.timesteps(int(grid[k_grid]), 1)  # (1, C, S, S)
        sub = stage(n_t + j * per_t, f"rates at t={int(grid[k_grid])} ({j + 1}/{n_t})")
        if estimator == "direct":
            run = _direct_map(model, x_t, tt, patch_size=patch_size, batch_size=batch_size, smooth=smooth,
                              batching="auto", progress=sub, cancel=cancel)
            maps.append(run.rates)
            batching, evals = run.batching, evals + run.evaluations
        else:
            basis = tangent_basis(model, x_t, tt, k=k, iters=iters, seed=seed, batch_size=batch_size, progress=sub,
                                  cancel=cancel)
            maps.append(project_rates(basis, patch_size, smooth=smooth))
            batching, evals, residuals = basis.batching, evals + basis.jvps, residuals + [basis.residual]

    timesteps = grid[1:].flip(0)  # (T,) decreasing
    curves = torch.stack(maps).detach().cpu()  # (T, H/p, W/p)
    dt = (grid[1:] - grid[:-1]).flip(0)  # (T,) spacing below each t_k
    accumulated = accumulate_curves(curves, dt)
    patch_sal = saliency_from_curves(curves, timesteps, statistic=statistic, t_min=t_min, normalize=normalize)
    saliency = F.interpolate(patch_sal[None, None].to(curves.dtype), size=in_size, mode="bilinear",
                             align_corners=False)[0, 0]  # (H_in, W_in)
    return CurveResult(
        timesteps=timesteps,
        curves=curves,
        accumulated=accumulated,
        saliency=saliency,
        patch_saliency=patch_sal,
        estimator=estimator,
        patch_size=int(patch_size),
        pixels_per_patch=int(patch_size) * model.vae_scale,
        statistic=statistic,
        normalize=normalize,
        t_min=t_min,
        batching=batching,
        jvp_evaluations=evals,
        seconds=time.perf_counter() - start,
        basis_residual=max(residuals) if residuals else None,
    )
