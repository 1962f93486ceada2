"""Image interpolation and extrapolation along score-metric geodesics, with LERP/SLERP baselines (docs/maths.md 5.8).

1. Both images go to model space (``model.encode``) and are inverted by DDIM (eta = 0) to the noise level ``t_star``.
2. A path between them at ``t_star``: the geodesic of ``G(x) = I + lam s(x) s(x)^T`` (``metric="score"``) or of
   the denoiser metric (``metric="denoiser"``, docs/maths.md section 5.11) with
   ``s(x) = -eps(x, t_star) / sigma(t_star)`` (:func:`pipeline.geodesic.geodesic_bvp`), or LERP / SLERP.
3. Every path point is generated back to t = 0 by DDIM and decoded (``model.decode``, the VAE for latent models).

The endpoints of the path are the inverted images, so the first and last outputs are DDIM round trips of the inputs
(equal to the inputs up to the inversion error). Outputs are at the model's image size (``model.image_size``); inputs
of other sizes are resized to it first.

**What the geodesic does on images** (benchmarks/results/geodesic_image_study.md, tuning scenes). ``s . d`` is the
change of log p_t along a step, and with the default lam the score term outweighs the Euclidean one by 1e6 or more
(``ImagePath.lam_relative`` = lam mean |s|^2 at the ends; :func:`pipeline.geodesic.relative_lam`), so the geodesic is
the shortest path at t_star on which log p_t stays constant: about as short as the chord, norm-typical like SLERP. It
does not move objects: DDIM inversion turns a small motion of an object into a large, noise-like change of x_t, so
the path through the inverted frames of a moving object is several chords long, and because ``G >= I`` its energy is
at least its Euclidean length squared / 2 for every lam, far above the cross-fade's. Started on that path the solver
stays near it (a local minimum that decodes well), so this is the metric, not the solver. Measured against the
ground-truth frames the geodesic is therefore not systematically closer than LERP: farther at t_star = 400 (LERP's
lower-norm middle decodes to a blend, the iso-density path to sharper but wrong images), mixed at 200, and the same
images as LERP at lower t_star.

``model`` is a :class:`~pipeline.model.DiffusionModel` or an ``accel`` backend (``pipeline.protocols.DiffusionOps``):
DDIM, scores and score JVPs come from its maps. ``gradient="autograd"`` always differentiates ``model.torch_model``
(exported graphs give no gradients) and is the default for models that support autograd, because it is the exact
gradient for a learned score, whose Jacobian is only approximately symmetric; on other backends the default is the
JVP-assembled gradient (``gradient="jvp"``), which exported forward and JVP graphs can drive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import ddim
from .errors import InputError
from .geodesic import (
    DEFAULT_METRIC,
    GRADIENTS,
    MAX_PATH_POINTS,
    METRIC_LAMS,
    METRICS,
    GeodesicResult,
    ScoreFn,
    ScoreJvpFn,
    ShootResult,
    _check_n_points,
    check_shoot_metric,
    curve_energy,
    curve_length,
    end_velocity_for_extrapolation,
    geodesic_bvp,
    geodesic_shoot,
    lerp_at,
    relative_lam,
    slerp_at,
)
from .images import image_to_tensor, tensor_to_uint8
from .memory import max_batch
from .progress import CancelFlag, ProgressFn, check_cancelled
from .protocols import DiffusionOps
from .validate import check_choice, check_float, check_int

METHODS = ("geodesic", "lerp", "slerp")

#: The metric of :func:`interpolate_images` when none is named (:data:`pipeline.geodesic.METRICS`), chosen from the
#: held-out figures of benchmarks/results/geodesic_metrics.md (see benchmarks/results/geodesic_metric_study.md).
DEFAULT_IMAGE_METRIC = DEFAULT_METRIC


@dataclass(frozen=True)
class ImagePath:
    """Images along a path in model space at ``t_star``. ``images[n_inner - 1]`` is the round trip of image b; any
    later images are extrapolated past b."""

    images: list[np.ndarray]  # uint8 (H, W, 3) at the model's image size, one per path point
    path: torch.Tensor  # (n, C, h, w): the model-space path at t_star
    x0: torch.Tensor  # (n, C, h, w): each point generated back to t = 0 (model space, before the VAE)
    method: str  # "geodesic" | "lerp" | "slerp"
    t_star: int
    lam: float
    energy: list[float]  # geodesic: E per solver iteration; lerp/slerp: [E] of the path (a -> b part)
    length: float  # score-metric length of the a -> b part
    euclidean_length: float  # sum |x_{i+1} - x_i| over the a -> b part
    n_inner: int  # points from a to b inclusive
    geodesic: GeodesicResult | None = None  # solver diagnostics ("geodesic" only)
    shoot: ShootResult | None = None  # shooting diagnostics (extrapolation with "geodesic" only)
    seconds: dict[str, float] = field(default_factory=dict)  # "invert", "path", "decode"
    # lam mean(|s(a)|^2, |s(b)|^2) at the inverted ends: the weight of the score term relative to the Euclidean one
    # for a step along s (pipeline.geodesic.relative_lam); what actually sets the metric's strength
    lam_relative: float | None = None
    # extrapolation with "geodesic" only: how the start velocity at b was obtained, "legendre" or "damped" (the
    # Legendre one was inconsistent with the path's speed; pipeline.geodesic.end_velocity_for_extrapolation)
    velocity: str | None = None
    metric: str = DEFAULT_METRIC  # the metric of the geodesic (and of energy / length for every method): METRICS
    sigma: float | None = None  # sqrt(1 - alpha_bar(t_star)): the noise level the denoiser metric uses


# --------------------------------------------------------------------------------------------------------------------
# Score at t_star
# --------------------------------------------------------------------------------------------------------------------
def score_functions(model: DiffusionOps, t_star: int) -> tuple[ScoreFn, ScoreJvpFn]:
    """The model's score at ``t_star`` as the batched callables :mod:`pipeline.geodesic` takes:
    ``x -> s(x, t_star)`` and ``x, v -> (s(x, t_star), D s(x, t_star)[v])``.

    x, v: (N, C, h, w) -> (N, C, h, w) (and a pair of them for the JVP).
    """
    return (lambda x: model.score(x, t_star)), (lambda x, v: model.score_jvp(x, t_star, v))


# --------------------------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------------------------
def _check_common(model, t_star, num_steps, method, inversion="corrected", metric=DEFAULT_METRIC) -> None:
    check_choice("method", method, METHODS)
    check_choice("metric", metric, METRICS)
    ddim.check_invert_method(inversion, "inversion")
    check_int("t_star", t_star, 1, model.num_train_timesteps - 1)
    check_int(f"num_steps (DDIM steps between 0 and t_star={t_star})", num_steps, 1, t_star)


def invert_pair(model: DiffusionOps, image_a, image_b, *, t_star: int, num_steps: int, inversion: str = "corrected",
                progress: ProgressFn | None = None, cancel: CancelFlag | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images -> model space -> DDIM inversion to t_star (``inversion``: the method of :func:`pipeline.ddim.invert`),
    both in one batch.  -> two (C, h, w)"""
    size = model.image_size
    imgs = torch.cat([image_to_tensor(im, size, name=nm) for im, nm in ((image_a, "image_a"), (image_b, "image_b"))])
    x0 = model.encode(imgs)  # (2, C, h, w)
    xt = ddim.invert(model, x0, t_end=t_star, num_steps=num_steps, method=inversion,
                     progress=progress, cancel=cancel)
    return xt[0], xt[1]


def decode_path(model: DiffusionOps, path: torch.Tensor, *, t_star: int, num_steps: int, batch_size: int = 16,
                clip_x0: bool = False, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
                ) -> tuple[torch.Tensor, list[np.ndarray]]:
    """DDIM generation of every path point from t_star to 0 (``clip_x0``: clamp each step's x_0 prediction to
    [-1, 1], see :func:`pipeline.ddim.sample`), then ``model.decode``.

    path: (n, C, h, w) -> x0 (n, C, h, w) and n uint8 (H, W, 3) images.
    """
    x0s, images = [], []
    for i in range(0, path.shape[0], batch_size):
        check_cancelled(cancel)
        x0 = ddim.sample(model, path[i : i + batch_size], t_start=t_star, num_steps=num_steps, clip_x0=clip_x0,
                         progress=progress, cancel=cancel)
        with torch.no_grad():
            pix = model.decode(x0)  # (b, 3, H, W) in [-1, 1]
        x0s.append(x0)
        images.extend(tensor_to_uint8(p) for p in pix)
    return torch.cat(x0s), images


def _solver_scores(model: DiffusionOps, t_star, gradient):
    """(score, score_jvp, gradient) for the solver: ``gradient="autograd"`` differentiates ``model.torch_model``;
    ``"auto"`` is autograd where the model supports it, else the JVP-assembled gradient."""
    check_choice("gradient", gradient, GRADIENTS)
    if gradient == "auto":
        gradient = "autograd" if model.supports_autograd else "jvp"
    return (*score_functions(model.torch_model if gradient == "autograd" else model, t_star), gradient)


def _path_stats(score, path, lam, chunk, rule="midpoint", metric=DEFAULT_METRIC, sigma=None
                ) -> tuple[float, float, float]:
    kw = dict(lam=lam, chunk=chunk, rule=rule, metric=metric, sigma=sigma)
    if metric == "denoiser":
        score = _differentiable(score)
    with torch.no_grad() if metric == "score" else torch.enable_grad():
        e = float(curve_energy(score, path, **kw))
    eu = float((path[1:] - path[:-1]).flatten(1).norm(dim=1).sum())
    return e, curve_length(score, path, **kw), eu


def _resolve_lam(lam: float | None, metric: str) -> float:
    """lam, or the metric's default (:data:`pipeline.geodesic.METRIC_LAMS`) when None; the metric is checked."""
    metric = check_choice("metric", metric, METRICS)
    return METRIC_LAMS[metric] if lam is None else check_float("lam", lam, 0.0)


def _differentiable(score):
    """The score as the denoiser metric's forward-mode JVP needs it (evaluated with gradients enabled)."""
    def f(x):
        with torch.enable_grad():
            return score(x)
    return f


def model_sigma(model: DiffusionOps, t_star: int) -> float:
    """sigma(t_star) = sqrt(1 - alpha_bar(t_star)), the noise level of the score at t_star (the denoiser metric's
    ``D(x) = x + sigma^2 s(x)``)."""
    return float(model.sigma(t_star).reshape(-1)[0])


def _start(model, image_a, image_b, *, t_star, num_steps, method, lam, gradient, inversion, progress, cancel,
           metric=DEFAULT_METRIC):
    """Shared first phase of the public functions: validate, build the scores, DDIM-invert both ends.
    -> (score, score_jvp, gradient mode, xa, xb, lam relative to the score, {"invert": seconds})"""
    _check_common(model, t_star, num_steps, method, inversion, metric)
    score, score_jvp, grad_mode = _solver_scores(model, t_star, gradient)
    t0 = time.perf_counter()
    xa, xb = invert_pair(model, image_a, image_b, t_star=t_star, num_steps=num_steps, inversion=inversion,
                         progress=progress, cancel=cancel)
    secs = {"invert": time.perf_counter() - t0}
    return score, score_jvp, grad_mode, xa, xb, float(lam) / relative_lam(score, xa, xb, 1.0), secs


def solver_chunk(model: DiffusionOps, solver: dict) -> dict:
    """``solver`` with a default ``chunk`` (path segments per backward pass of the energy's gradient): half of the
    model's batch limit (:func:`pipeline.memory.max_batch`), since a backward pass through the score keeps its
    activations, about twice a call without gradients (ddpm-256, limit 6: the 6 segments of a 7-point path in one
    pass peaked at 13.95 GiB); no chunking where the model has no limit. An explicit ``chunk`` is kept."""
    if "chunk" in solver:
        return solver
    limit = max_batch(model)
    return solver if limit is None else {**solver, "chunk": max(1, limit // 2)}


def _decode_timed(model, path, secs: dict, **kwargs):
    """:func:`decode_path` of ``path``, its wall time recorded as ``secs["decode"]``.  -> (x0, images)"""
    t0 = time.perf_counter()
    out = decode_path(model, path, **kwargs)
    secs["decode"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------
def interpolate_images(
    model: DiffusionOps,
    image_a,
    image_b,
    *,
    n_points: int = 9,
    t_star: int = 400,
    lam: float | None = None,
    method: str = "geodesic",
    metric: str = DEFAULT_IMAGE_METRIC,
    num_steps: int = 50,
    gradient: str = "auto",
    batch_size: int = 16,
    clip_x0: bool = False,
    inversion: str = "corrected",
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    **solver,
) -> ImagePath:
    """Interpolate two images along a score-metric geodesic at noise level ``t_star`` (or LERP / SLERP there).

    Args:
        model: a :class:`~pipeline.model.DiffusionModel` or an ``accel`` backend (DDIM, scores and JVPs).
        image_a, image_b: any accepted image (see :mod:`pipeline.images`), resized to the model's image size.
        n_points: path points including both ends (>= 3).
        t_star: noise level of the path (DDIM inversion target), in [1, T - 1].
        lam: metric weight lambda (``G = I + lam s s^T`` for ``metric="score"``, ``G = I + lam (I - J_D)^2`` for
            ``"denoiser"``, where lam is already relative: a step off the data costs ~(1 + lam) |u|^2); None: the
            metric's default, :data:`pipeline.geodesic.METRIC_LAMS`.
        method: ``"geodesic"`` | ``"lerp"`` | ``"slerp"``.
        metric: the geodesic's metric, one of :data:`pipeline.geodesic.METRICS` (``"score"``: the paper's;
            ``"denoiser"``: every direction off the data stretched, with sigma = sqrt(1 - alpha_bar(t_star))). Energy
            and length of LERP / SLERP are reported in the same metric.
        num_steps: DDIM steps between 0 and t_star (inversion and generation alike).
        gradient: ``"auto"`` | ``"jvp"`` | ``"autograd"`` (see the module docstring).
        batch_size: path points generated per DDIM batch.
        clip_x0: clamp the x_0 prediction of every DDIM generation step to [-1, 1] (off: the ends are then exact
            DDIM round trips; on: interior points far from the data decode to less saturated colours).
        inversion: how the ends are DDIM-inverted, ``"corrected"`` or ``"explicit"`` (:func:`pipeline.ddim.invert`).
        progress, cancel: callback ``progress(done, total, desc)`` per step of each phase; stop flag.
        solver: options of :func:`pipeline.geodesic.geodesic_bvp` (``max_iter``, ``optimizer``, ``tol``, ``chunk``,
            ``init``, ``rule``, ...).

    Returns:
        :class:`ImagePath` with ``n_points`` uint8 images at the model's image size.
    """
    lam = _resolve_lam(lam, metric)
    score, score_jvp, grad_mode, xa, xb, lam_rel, secs = _start(
        model, image_a, image_b, t_star=t_star, num_steps=num_steps, method=method, lam=lam, gradient=gradient,
        inversion=inversion, progress=progress, cancel=cancel, metric=metric)
    sigma = model_sigma(model, t_star)
    if metric == "denoiser":
        lam_rel = float(lam)
    solver = solver_chunk(model, solver)
    t0 = time.perf_counter()
    geo = None
    if method == "geodesic":
        geo = geodesic_bvp(_differentiable(score) if metric == "denoiser" else score, xa, xb, lam=lam,
                           n_points=n_points, score_jvp=score_jvp, gradient=grad_mode, metric=metric, sigma=sigma,
                           progress=progress, cancel=cancel, **solver)
        path, energy, length = geo.path, geo.energy, geo.length
        euclid = float(geo.speeds.sum())
    else:
        t = torch.linspace(0, 1, _check_n_points(n_points), dtype=torch.float64)
        path = (lerp_at if method == "lerp" else slerp_at)(xa, xb, t)
        e, length, euclid = _path_stats(score, path, lam, solver.get("chunk"), solver.get("rule", "midpoint"),
                                        metric, sigma)
        energy = [e]
    secs["path"] = time.perf_counter() - t0
    x0, images = _decode_timed(model, path, secs, t_star=t_star, num_steps=num_steps, batch_size=batch_size,
                               clip_x0=clip_x0, progress=progress, cancel=cancel)
    return ImagePath(images=images, path=path, x0=x0, method=method, t_star=t_star, lam=float(lam), energy=energy,
                     length=length, euclidean_length=euclid, n_inner=path.shape[0], geodesic=geo, seconds=secs,
                     lam_relative=lam_rel, metric=metric, sigma=sigma)


def extrapolate_images(
    model: DiffusionOps,
    image_a,
    image_b,
    *,
    beyond: float = 0.5,
    n_points: int = 9,
    t_star: int = 400,
    lam: float | None = None,
    method: str = "geodesic",
    metric: str = "score",
    num_steps: int = 50,
    gradient: str = "auto",
    substeps: int = 4,
    batch_size: int = 16,
    clip_x0: bool = False,
    inversion: str = "corrected",
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    **solver,
) -> ImagePath:
    """Continue the path from a through b past b, by ``beyond`` times the a -> b length.

    ``"geodesic"``: solve the BVP a -> b, then shoot from b with the BVP's end velocity
    (:func:`pipeline.geodesic.end_velocity_for_extrapolation`: the Legendre velocity, or the damped difference when
    the Legendre one is inconsistent with the path's speed; ``ImagePath.velocity`` says which) for parameter time
    ``beyond`` (``round(beyond (n_points - 1))`` extra points evenly spread over it, ``substeps`` RK4 steps each,
    retried with more substeps after a blow-up; see :func:`pipeline.geodesic.extrapolate`). A shot that still blows
    up raises :class:`~pipeline.errors.NumericalError` naming what blew up and what to change.
    ``"lerp"`` / ``"slerp"``: the same formulas at t in (1, 1 + beyond]. Other arguments as :func:`interpolate_images`.
    ``metric``: the geodesic's metric; shooting exists for :data:`pipeline.geodesic.SHOOT_METRICS` only (``"score"``),
    so ``method="geodesic"`` with another metric raises :class:`~pipeline.errors.InputError`; LERP / SLERP report
    energy and length in any metric of :data:`pipeline.geodesic.METRICS`.

    Returns :class:`ImagePath` with ``n_points + n_extra`` images; ``n_inner = n_points``.
    """
    beyond = check_float("beyond (extra length as a fraction of the a -> b path)", beyond, 0.0, 10.0, lo_open=True)
    n_extra = max(1, round(beyond * (_check_n_points(n_points) - 1)))
    if n_points + n_extra > MAX_PATH_POINTS:
        raise InputError(f"beyond={beyond:g} with n_points={n_points} asks for {n_extra} extra points; the whole path "
                         f"must stay within {MAX_PATH_POINTS} points")
    lam = _resolve_lam(lam, metric)
    if method == "geodesic":
        check_shoot_metric(metric)
    score, score_jvp, grad_mode, xa, xb, lam_rel, secs = _start(
        model, image_a, image_b, t_star=t_star, num_steps=num_steps, method=method, lam=lam, gradient=gradient,
        inversion=inversion, progress=progress, cancel=cancel, metric=metric)
    sigma = model_sigma(model, t_star)
    if metric == "denoiser":
        lam_rel = float(lam)
    solver = solver_chunk(model, solver)
    t0 = time.perf_counter()
    geo = shot = used = None
    if method == "geodesic":
        geo = geodesic_bvp(score, xa, xb, lam=lam, n_points=n_points, score_jvp=score_jvp, gradient=grad_mode,
                           progress=progress, cancel=cancel, **solver)
        # shooting needs D s[v]: always the model's JVP, whatever drove the BVP gradient
        _, jvp = score_functions(model, t_star)
        v_b, used = end_velocity_for_extrapolation(score, geo.path, lam=lam, score_jvp=jvp)
        shot = geodesic_shoot(score, geo.path[-1], v_b, lam=lam, n_steps=n_extra,
                              dt=beyond / n_extra, substeps=substeps, score_jvp=jvp, progress=progress, cancel=cancel)
        path = torch.cat((geo.path, shot.path[1:]))
        energy, length, euclid = geo.energy, geo.length, float(geo.speeds.sum())
    else:
        t = torch.arange(n_points + n_extra, dtype=torch.float64) / (n_points - 1)
        t[n_points:] = 1 + beyond * torch.arange(1, n_extra + 1, dtype=torch.float64) / n_extra
        path = (lerp_at if method == "lerp" else slerp_at)(xa, xb, t)
        e, length, euclid = _path_stats(score, path[:n_points], lam, solver.get("chunk"),
                                        solver.get("rule", "midpoint"), metric, sigma)
        energy = [e]
    secs["path"] = time.perf_counter() - t0
    x0, images = _decode_timed(model, path, secs, t_star=t_star, num_steps=num_steps, batch_size=batch_size,
                               clip_x0=clip_x0, progress=progress, cancel=cancel)
    return ImagePath(images=images, path=path, x0=x0, method=method, t_star=t_star, lam=float(lam), energy=energy,
                     length=length, euclidean_length=euclid, n_inner=n_points, geodesic=geo, shoot=shot, seconds=secs,
                     lam_relative=lam_rel, velocity=used, metric=metric, sigma=sigma)
