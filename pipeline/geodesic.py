"""Score-metric geodesics (docs/maths.md section 5) on any score given as a batched callable.

The metric at x is ``G(x) = I + lam s(x) s(x)^T`` (never formed: ``g_x(u, u) = |u|^2 + lam (s(x) . u)^2``). It
stretches the direction of the score, i.e. across the data manifold, and leaves tangential directions Euclidean, so
short curves follow the data.

``metric=`` chooses among :data:`METRICS`: ``"score"`` (above, the paper's, the default) or ``"denoiser"``,
``G(x) = I + lam (I - J_D)^T (I - J_D)`` with ``D(x) = x + sigma^2 s(x)`` the Tweedie denoiser at the score's noise
level sigma (``g_x(u, u) = |u|^2 + lam sigma^4 |D s(x)[u]|^2``, one JVP): it stretches every direction off the data,
not only the score's (docs/maths.md section 5.11; boundary value problem only, see :data:`SHOOT_METRICS`).

Notation:

| code             | math                                                                                |
|------------------|-------------------------------------------------------------------------------------|
| ``score(x)``     | s(x), batched: (N, *shape) -> (N, *shape)                                           |
| ``score_jvp``    | ``(x, v) -> D s(x)[v]``, or the pair ``(s(x), D s(x)[v])`` (what ``DiffusionModel``   |
|                  | gives; the pair saves the separate score call)                                       |
| ``lam``          | lambda, the metric's weight                                                          |
| ``path``         | x_0 = a, x_1, ..., x_N = b: (N + 1, *shape), ``n_points = N + 1``                     |
| ``d_i, m_i``     | x_{i+1} - x_i and (x_i + x_{i+1}) / 2, i = 0..N-1                                    |
| ``H d``          | D s(m)[d] (the score's Jacobian, the log-density Hessian, applied to d)              |

**Boundary value problem** (:func:`geodesic_bvp`). Minimise over the interior points the discrete energy
``E = (N/2) sum_i (|d_i|^2 + lam (s(m_i) . d_i)^2)``. With ``f = (s(m) . d)^2``:
``df/dx_i = 2 (s.d) (1/2 J^T d - s)``, ``df/dx_{i+1} = 2 (s.d) (1/2 J^T d + s)``, J = D s(m). For a true score J is the
Hessian of log p, symmetric, so ``J^T d = H d`` is a JVP: the gradient is assembled from one batched score call and one
batched JVP call (``gradient="jvp"``), which is what exported forward/JVP engines can drive. A *learned* score's
Jacobian is only approximately symmetric; then the JVP-assembled gradient is that of the symmetrised problem, not the
exact gradient of E, and ``gradient="autograd"`` (a VJP through the score) is the exact reference.

The solver (``optimizer="lbfgs"``, :mod:`pipeline.geodesic_optim`) is L-BFGS preconditioned by the inverse Hessian
of the Euclidean part, ``(N L)^-1`` with L the path Laplacian, and a backtracking line search. On the sphere benchmark
(benchmarks/results/geodesics.md) it used 42-44 energy evaluations on average, against 253-336 for scipy's L-BFGS-B
and 497-647 for torch.optim.LBFGS on the same energy and gradient, and 227-356 for itself without the preconditioner.

**A property of the midpoint rule.** The score enters only at segment midpoints, and the smoothed density's score
vanishes on its ridge (for data on a sphere of radius R smoothed by sigma, the shell r* ~ R - sigma^2 / R). A segment
whose midpoint sits on the ridge can therefore move radially for free, so a path whose ends lie on the data (r = R)
can drop its interior to the shell r ~ 2 r* - R, about 2 sigma^2 / R inside, through one ridge-straddling segment at
each end. It shrinks as sigma^2 and as the segments get shorter than the jump, and it also makes the discrete energy
multi-modal (which interior points take the inner shell). The continuous geodesics (shot by :func:`geodesic_shoot`)
stay much closer to the sphere; see the benchmark. On images the same blind spot shows as E_end >> E_mid (the
score term evaluated at the path points instead of the midpoints): segments many sigma long whose midpoint scores
the solver has made orthogonal to them (benchmarks/results/geodesic_image_study.md). ``rule="simpson"``
(:func:`score_term`) also weighs the points; it is an option, not the default: on the tuning images it did not
converge within 200 iterations and mostly decoded worse than the midpoint rule.

**Initial value problem** (:func:`geodesic_shoot`). The Euler-Lagrange equation ``(I + lam s s^T) x'' =
-lam (x' . H x') s`` solved by Sherman-Morrison: ``x'' = -lam (x' . D s(x)[x']) s / (1 + lam |s|^2)``, integrated with
classical RK4 (one score and one JVP per stage). Metric speed ``sqrt(g_x(x', x'))`` is conserved by the exact flow; its
drift measures the integration error. A shot whose state, score or acceleration turns non-finite, or whose speed drifts
by more than ``SPEED_DRIFT_LIMIT``, is retried with twice the substeps (``SHOOT_RETRIES`` times), then fails with
:class:`~pipeline.errors.NumericalError` naming what blew up, where, and what to change.

**Robustness.** Scores are checked on every call (:func:`guard_score`): a result that is not a tensor of the input's
shape raises :class:`InputError` (it would otherwise broadcast silently), NaN or inf raises ``NumericalError`` naming
the points; a non-finite energy likewise. ``n_points`` is bounded by ``MAX_PATH_POINTS`` and the preconditioner is
applied in time and memory linear in it (:func:`pipeline.geodesic_optim.laplacian_solve`). Extrapolation checks its
start velocity against the path's speed (:func:`end_velocity_for_extrapolation`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .errors import InputError, NumericalError
from .geodesic_optim import adam, laplacian_precond, lbfgs, torch_lbfgs
from .progress import CancelFlag, ProgressFn, check_cancelled, report
from .validate import check_choice, check_finite, check_float, check_int

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
ScoreJvpFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]

#: Default lambda of ``G = I + lam s s^T``. What sets the metric's strength is lam |s|^2 (:func:`relative_lam`); on the
#: default model's images at t* = 400 this default makes the score term outweigh the Euclidean one by 1e6 or more.
DEFAULT_LAM = 1000.0

#: Largest ``n_points`` (path points, both ends included) of a geodesic or baseline path, and largest ``n_steps + 1``
#: of a shot. The path, the L-BFGS memory (``2 history_size`` more copies) and every batched score call grow linearly
#: with it (10,000 points of the default 3 x 32 x 32 model are 123 MB per copy); image paths use tens of points. A
#: larger request fails at once with :class:`InputError` instead of running out of memory later.
MAX_PATH_POINTS = 10_000

#: Largest ``substeps`` (RK4 steps between two recorded points) of :func:`geodesic_shoot`, including its retries.
MAX_SUBSTEPS = 1024

#: Retries of :func:`geodesic_shoot` after a blow-up, each with twice the substeps of the one before.
SHOOT_RETRIES = 3

#: A shot has blown up when its metric speed at a recorded point differs from the start's by more than this fraction
#: (the exact flow conserves it; RK4 that changes it by a quarter is not following the geodesic any more, and an
#: exploding speed passes this bound before it overflows) or turns non-finite.
SPEED_DRIFT_LIMIT = 0.25

#: :func:`end_velocity_for_extrapolation` trusts the Legendre end velocity when its metric speed at b lies within this
#: factor of the last segment's metric speed ``N sqrt(|d|^2 + lam (s(m) . d)^2)`` (equal for a resolved discrete
#: geodesic); outside it the midpoint correction of the discrete momentum dominates and the damped difference is used.
VELOCITY_SPEED_RATIO = 2.0

#: Metrics offered (docs/maths.md sections 5 and 5.9). ``"score"``: the paper's ``G = I + lam s s^T``.
#: ``"denoiser"``: ``G = I + lam (I - J_D)^T (I - J_D)`` with ``D(x) = x + sigma^2 s(x)`` the Tweedie denoiser in x's
#: scale, i.e. ``g_x(u, u) = |u|^2 + lam sigma^4 |D s(x)[u]|^2``: near the data ``I - J_D`` ~ the projection on the
#: normal space, so every way off the data is stretched, not only the score's direction (needs ``sigma``).
METRICS = ("score", "denoiser")

#: The metric of :func:`geodesic_bvp` and the image functions when none is named.
DEFAULT_METRIC = "score"

#: Default lam per metric (the CLI's ``--lam`` when not given). The score metric's lam is absolute (its strength is
#: ``lam |s|^2``, :func:`relative_lam`); the denoiser metric's is relative already (a unit step off the data costs
#: about ``1 + lam``). The denoiser's 100 is the smallest of the weights tried (10, 100, 1000) that keeps sphere and
#: torus paths within the benchmark's bars (benchmarks/results/geodesic_metrics.md); on the held-out images no weight
#: beat LERP, and smaller weights only come closer to it (lam = 0 is LERP).
METRIC_LAMS = {"score": DEFAULT_LAM, "denoiser": 100.0}

#: Metrics with an initial value problem (:func:`geodesic_shoot`): the denoiser metric's geodesic equation needs
#: third derivatives of log p and a linear solve with G per step, which is not implemented.
SHOOT_METRICS = ("score",)

INITS = ("linear", "slerp")
RULES = ("midpoint", "simpson")
OPTIMIZERS = ("lbfgs", "torch-lbfgs", "adam")
GRADIENTS = ("auto", "jvp", "autograd")


# --------------------------------------------------------------------------------------------------------------------
# Small pure pieces
# --------------------------------------------------------------------------------------------------------------------
def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row dot product.  (N, *shape), (N, *shape) -> (N,)"""
    return (a * b).flatten(1).sum(1)


def _expand(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, ..., 1) broadcastable against ``like`` (N, *shape)."""
    return c.reshape(-1, *([1] * (like.ndim - 1)))


def _grid(n_points: int, like: torch.Tensor) -> torch.Tensor:
    return torch.linspace(0, 1, n_points, dtype=torch.float64, device=like.device)


def lerp_at(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x(t) = (1 - t) a + t b at parameters t (any reals; t > 1 extrapolates).

    (*shape), (*shape), (n,) -> (n, *shape)
    """
    a, b = _check_pair(a, b)
    t = t.to(device=a.device, dtype=a.dtype).reshape(-1, *([1] * a.ndim))
    return (1 - t) * a[None] + t * b[None]


def slerp_at(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of a and b as vectors: ``x(t) = [sin((1-t) W) a + sin(t W) b] / sin W``, W = angle(a, b).

    The norms are not normalised (the radius is interpolated too, as used for Gaussian noise); t > 1 continues along
    the same great circle. When a and b are (anti)parallel (``sin W < 1e-6``) the plane is undefined and it returns
    :func:`lerp_at`. (*shape), (*shape), (n,) -> (n, *shape)
    """
    a, b = _check_pair(a, b)
    af, bf = a.reshape(-1).double(), b.reshape(-1).double()
    na, nb = af.norm(), bf.norm()
    if float(na) == 0 or float(nb) == 0:
        return lerp_at(a, b, t)
    cos = float((af @ bf) / (na * nb))
    omega = math.acos(max(-1.0, min(1.0, cos)))
    if math.sin(omega) < 1e-6:
        return lerp_at(a, b, t)
    t = t.to(device=a.device, dtype=torch.float64).reshape(-1)
    wa = (torch.sin((1 - t) * omega) / math.sin(omega)).to(a)
    wb = (torch.sin(t * omega) / math.sin(omega)).to(a)
    return _expand(wa, a[None]) * a[None] + _expand(wb, a[None]) * b[None]


def lerp(a: torch.Tensor, b: torch.Tensor, n_points: int) -> torch.Tensor:
    """Linear interpolation at t_i = i / (n - 1), both ends included.  (*shape), (*shape) -> (n, *shape)"""
    a, b = _check_pair(a, b)
    return lerp_at(a, b, _grid(_check_n_points(n_points, minimum=2), a))


def slerp(a: torch.Tensor, b: torch.Tensor, n_points: int) -> torch.Tensor:
    """Spherical interpolation (:func:`slerp_at`) at t_i = i / (n - 1), ends exactly a and b.  -> (n, *shape)"""
    a, b = _check_pair(a, b)
    out = slerp_at(a, b, _grid(_check_n_points(n_points, minimum=2), a))
    out[0], out[-1] = a, b
    return out


def segments(path: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment vectors d_i = x_{i+1} - x_i and midpoints m_i.  (N + 1, *shape) -> 2 x (N, *shape)"""
    return path[1:] - path[:-1], 0.5 * (path[1:] + path[:-1])


def metric_norm2(score: ScoreFn, x: torch.Tensor, u: torch.Tensor, *, lam: float = DEFAULT_LAM,
                 metric: str = "score", sigma: float | None = None) -> torch.Tensor:
    """g_x(u, u): ``|u|^2 + lam (s(x) . u)^2`` (``metric="score"``) or ``|u|^2 + lam sigma^4 |D s(x)[u]|^2``
    (``metric="denoiser"``, one JVP; :func:`denoiser_residual`).  x, u: (N, *shape) -> (N,)"""
    metric = check_choice("metric", metric, METRICS)
    if metric == "denoiser":
        r = denoiser_residual(score, x, u, sigma=_check_sigma(sigma, metric))
        return _dot(u, u) + lam * _dot(r, r)
    return _dot(u, u) + lam * _dot(score(x), u) ** 2


def differentiable_jvp(score: ScoreFn, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """D s(x)[v] by forward-mode AD, differentiable in x and v (reverse over forward), falling back to the
    double-backward trick with ``create_graph=True`` for callables forward mode cannot trace.  -> (N, *shape)"""
    try:
        return torch.func.jvp(score, (x,), (v,))[1]
    except (RuntimeError, NotImplementedError, TypeError):
        with torch.enable_grad():
            return torch.autograd.functional.jvp(score, x, v, create_graph=True)[1]


def denoiser_residual(score: ScoreFn, x: torch.Tensor, u: torch.Tensor, *, sigma: float) -> torch.Tensor:
    """(I - J_D(x)) u up to sign: ``sigma^2 D s(x)[u]``, where ``D(x) = x + sigma^2 s(x)`` is the Tweedie denoiser in
    x's scale (``J_D = I + sigma^2 D s``). Differentiable (:func:`differentiable_jvp`).  x, u: (N, *shape) -> same"""
    return sigma**2 * differentiable_jvp(score, x, u)


def relative_lam(score: ScoreFn, a: torch.Tensor, b: torch.Tensor, weight: float) -> float:
    """lam = weight / mean(|s(a)|^2, |s(b)|^2): the metric weight at which a step along the endpoints' score costs
    ``1 + weight`` times its Euclidean length squared.

    What shapes the geodesic is ``lam |s|^2``, not lam: the score of a noise-smoothed density has
    ``|s|^2 ~ D / sigma^2`` away from the data, so a fixed lam means different metrics at different noise levels and
    image sizes (lam = 1000 is weight ~ 2.4e6 at t* = 400 and ~ 5e6 at t* = 200 on the default 32 x 32 pixel model;
    see benchmarks/results/geodesic_image_study.md).
    a, b: (*shape) -> float
    """
    a, b = _check_pair(a, b)
    weight = check_float("weight", weight, 0.0)
    score = guard_score(score, lambda: "the endpoints a and b")
    with torch.no_grad():
        s = score(torch.stack((a, b)))  # (2, *shape)
        s2 = _dot(s, s).double().mean()  # mean |s|^2 at the two ends
    if not float(s2) > 0:
        raise InputError("the score vanishes at both endpoints: a relative lam is undefined there; give lam directly")
    return float(weight) / float(s2)


def geodesic_acceleration(s: torch.Tensor, hv: torch.Tensor, v: torch.Tensor, lam: float) -> torch.Tensor:
    """x'' = -lam (v . D s[v]) s / (1 + lam |s|^2)  (Sherman-Morrison).

    s, hv = D s(x)[v], v: (N, *shape) -> (N, *shape)
    """
    return _expand(-lam * _dot(v, hv) / (1.0 + lam * _dot(s, s)), s) * s


# --------------------------------------------------------------------------------------------------------------------
# Counting evaluations and chunking
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluations:
    """Work done: batched calls and points evaluated."""

    energy: int = 0  # energy (+ gradient) evaluations
    score_calls: int = 0  # calls of score(x) (each on up to ``chunk`` points)
    score_points: int = 0  # points at which s was evaluated (including through score_jvp pairs or autograd)
    jvp_calls: int = 0  # calls of score_jvp
    jvp_points: int = 0  # points at which D s[v] was evaluated
    vjp_points: int = 0  # points at which a VJP (backward through the score) was taken


class _Counter:
    """Mutable tally behind :class:`Evaluations` (private: results carry the frozen snapshot)."""

    def __init__(self):
        self.c = dict.fromkeys(Evaluations.__dataclass_fields__, 0)

    def add(self, **kw: int) -> None:
        for k, v in kw.items():
            self.c[k] += int(v)

    def snapshot(self) -> Evaluations:
        return Evaluations(**self.c)


def _chunks(n: int, chunk: int | None) -> list[slice]:
    size = n if chunk is None else max(1, int(chunk))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _score_and_jvp(score: ScoreFn, score_jvp: ScoreJvpFn, x: torch.Tensor, v: torch.Tensor, counter: _Counter):
    """(s(x), D s(x)[v]) from a score_jvp returning the JVP alone or the pair.  -> 2 x (N, *shape)"""
    out = score_jvp(x, v)
    counter.add(jvp_calls=1, jvp_points=x.shape[0])
    if isinstance(out, tuple):
        counter.add(score_points=x.shape[0])
        return out[0], out[1]
    counter.add(score_calls=1, score_points=x.shape[0])
    return score(x), out


def _check_score_output(out, x: torch.Tensor, what: str, where: Callable[[], str]) -> torch.Tensor:
    """``out`` itself when it is a tensor of x's shape with finite values: a wrong type or shape raises
    :class:`InputError` (a broadcast result would be used silently), NaN or inf :class:`NumericalError` saying at how
    many of the points and ``where()``."""
    if not isinstance(out, torch.Tensor):
        raise InputError(f"{what} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise InputError(f"{what} returned shape {tuple(out.shape)} for points of shape {tuple(x.shape)}; it must "
                         "return one value per point, of the input's shape (a broadcast result is refused)")
    finite = torch.isfinite(out.detach())
    finite = finite.flatten(1).all(dim=1) if finite.ndim > 1 else finite  # (N,): per point
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        raise NumericalError(f"{what} returned NaN or inf at {n_bad} of {finite.numel()} points ({where()}); "
                             "the score must be finite there: check the model (weights, dtype) or keep the path "
                             "where the score is finite")
    return out


def guard_score(score: ScoreFn, where: Callable[[], str] = lambda: "", what: str = "score") -> ScoreFn:
    """``score`` wrapped so that every output is checked (:func:`_check_score_output`): a tensor of the input's shape
    (else :class:`InputError`) without NaN or inf (else :class:`NumericalError` naming ``where()``)."""

    def guarded(x: torch.Tensor) -> torch.Tensor:
        return _check_score_output(score(x), x, what, where)

    return guarded


def guard_score_jvp(score_jvp: ScoreJvpFn, where: Callable[[], str] = lambda: "",
                    what: str = "score_jvp") -> ScoreJvpFn:
    """``score_jvp`` wrapped like :func:`guard_score`: its JVP (and its score, when it returns the pair) checked."""

    def guarded(x: torch.Tensor, v: torch.Tensor):
        out = score_jvp(x, v)
        if isinstance(out, tuple):
            if len(out) != 2:
                raise InputError(f"{what} must return D s(x)[v] or the pair (s(x), D s(x)[v]), got a tuple of "
                                 f"{len(out)}")
            return (_check_score_output(out[0], x, f"{what} (its score)", where),
                    _check_score_output(out[1], x, f"{what} (its JVP)", where))
        return _check_score_output(out, x, what, where)

    return guarded


def autodiff_jvp(score: ScoreFn) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(x, v) -> (s(x), D s(x)[v]) by forward-mode AD (``torch.func.jvp``), falling back to the double-backward trick
    (``torch.autograd.functional.jvp``) for callables that forward mode cannot trace."""
    mode = {"forward": True}

    def jvp(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if mode["forward"]:
            try:
                return torch.func.jvp(score, (x,), (v,))
            except (RuntimeError, NotImplementedError, TypeError):
                mode["forward"] = False
        with torch.enable_grad():
            try:
                s, ds = torch.autograd.functional.jvp(score, x, v)
            except TypeError as err:  # torch's own words for a score that returns no tensor
                raise InputError(f"score must return a torch.Tensor of its input's shape ({err})") from err
        return s.detach(), ds.detach()

    return jvp


# --------------------------------------------------------------------------------------------------------------------
# Energy, length and the gradient
# --------------------------------------------------------------------------------------------------------------------
def score_term(score: ScoreFn, path: torch.Tensor, *, rule: str = "midpoint", chunk: int | None = None
               ) -> torch.Tensor:
    """q_i ~ the mean of (s(x(tau)) . d_i)^2 over segment i, by a quadrature rule (differentiable; float64).

    ``"midpoint"``: q_i = (s(m_i) . d_i)^2. ``"simpson"``: q_i = [(s(x_i) . d_i)^2 + 4 (s(m_i) . d_i)^2 +
    (s(x_{i+1}) . d_i)^2] / 6, which also sees the score at the path points (N + 1 more score evaluations), so a
    segment cannot hide a large change of log p behind a midpoint where s . d happens to vanish.
    (N + 1, *shape) -> (N,)
    """
    d, m = segments(path)
    n = d.shape[0]
    c_mid = torch.cat([_dot(score(m[c]), d[c]) for c in _chunks(n, chunk)]).double()  # (N,)
    if rule == "midpoint":
        return c_mid**2
    s_pts = torch.cat([score(path[c]) for c in _chunks(n + 1, chunk)])  # (N + 1, *shape)
    c0, c1 = _dot(s_pts[:-1], d).double(), _dot(s_pts[1:], d).double()  # (N,) each
    return (c0**2 + 4 * c_mid**2 + c1**2) / 6


def denoiser_term(score: ScoreFn, path: torch.Tensor, *, sigma: float, chunk: int | None = None) -> torch.Tensor:
    """q_i = |(I - J_D(m_i)) d_i|^2 = sigma^4 |D s(m_i)[d_i]|^2, the denoiser metric's term of segment i at its
    midpoint (one JVP per segment; differentiable by reverse over forward AD; float64).  (N + 1, *shape) -> (N,)"""
    d, m = segments(path)
    n = d.shape[0]
    r = torch.cat([denoiser_residual(score, m[c], d[c], sigma=sigma) for c in _chunks(n, chunk)])  # (N, *shape)
    return _dot(r, r).double()


def metric_term(score: ScoreFn, path: torch.Tensor, *, metric: str = "score", sigma: float | None = None,
                rule: str = "midpoint", chunk: int | None = None) -> torch.Tensor:
    """q_i of the chosen metric: :func:`score_term` (``"score"``, ``rule`` applies) or :func:`denoiser_term`
    (``"denoiser"``, midpoint rule).  (N + 1, *shape) -> (N,)"""
    if metric == "denoiser":
        return denoiser_term(score, path, sigma=_check_sigma(sigma, metric), chunk=chunk)
    return score_term(score, path, rule=rule, chunk=chunk)


def curve_energy(score: ScoreFn, path: torch.Tensor, *, lam: float = DEFAULT_LAM, chunk: int | None = None,
                 rule: str = "midpoint", metric: str = "score", sigma: float | None = None) -> torch.Tensor:
    """E = (N/2) sum_i (|d_i|^2 + lam q_i), q_i = (s(m_i) . d_i)^2 for the score metric's midpoint rule (see
    :func:`score_term`), sigma^4 |D s(m_i)[d_i]|^2 for ``metric="denoiser"`` (:func:`denoiser_term`)
    (differentiable; summed in float64).  (N + 1, *shape) -> ()"""
    d, _ = segments(path)
    n = d.shape[0]
    q = metric_term(score, path, metric=metric, sigma=sigma, rule=rule, chunk=chunk)
    return 0.5 * n * (_dot(d, d).double() + lam * q).sum()


def curve_length(score: ScoreFn, path: torch.Tensor, *, lam: float = DEFAULT_LAM, chunk: int | None = None,
                 rule: str = "midpoint", metric: str = "score", sigma: float | None = None) -> float:
    """L = sum_i sqrt(|d_i|^2 + lam q_i), the metric length of the polygon (q_i: :func:`metric_term`)."""
    with torch.no_grad():
        d, _ = segments(path)
        q = metric_term(score, path, metric=metric, sigma=sigma, rule=rule, chunk=chunk)
        return float((_dot(d, d).double() + lam * q).sqrt().sum())


def _energy_grad_jvp(score, score_jvp, path, lam, chunk, counter) -> tuple[float, torch.Tensor]:
    """E and dE/dx for every path point, assembled from scores and score JVPs at the midpoints.

    dE/dx_j = N (d_{j-1} - d_j) + (N lam / 2) [2 c_{j-1} (1/2 H_{j-1} d_{j-1} + s_{j-1}) + 2 c_j (1/2 H_j d_j - s_j)],
    c_i = s_i . d_i. Assumes a symmetric score Jacobian (exact for a true score).  -> float, (N + 1, *shape)
    """
    d, m = segments(path)
    n = d.shape[0]
    parts = [_score_and_jvp(score, score_jvp, m[c], d[c], counter) for c in _chunks(n, chunk)]
    s = torch.cat([p[0] for p in parts])  # (N, *shape)
    hd = torch.cat([p[1] for p in parts])  # (N, *shape)
    c = _dot(s, d)  # (N,)
    energy = 0.5 * n * float((_dot(d, d).double() + lam * c.double() ** 2).sum())
    half_hd = 0.5 * hd
    c_ = _expand(c, d)
    g_left = 2 * c_ * (half_hd - s)  # df_i / dx_i, (N, *shape)
    g_right = 2 * c_ * (half_hd + s)  # df_i / dx_{i+1}
    grad = torch.zeros_like(path)
    grad[:-1] += -n * d + 0.5 * n * lam * g_left
    grad[1:] += n * d + 0.5 * n * lam * g_right
    return energy, grad


def _jvp_only(score_jvp: ScoreJvpFn, x: torch.Tensor, v: torch.Tensor, counter: _Counter) -> torch.Tensor:
    """D s(x)[v] from a score_jvp returning the JVP alone or the pair (the score is then discarded)."""
    out = score_jvp(x, v)
    counter.add(jvp_calls=1, jvp_points=x.shape[0])
    return out[1] if isinstance(out, tuple) else out


def _energy_grad_jvp_denoiser(score_jvp, path, lam, sigma, chunk, counter) -> tuple[float, torch.Tensor]:
    """E and dE/dx of the denoiser metric from score JVPs only (docs/maths.md section 5.9).

    With ``r = sigma^2 J(m) d`` (J = D s, q = |r|^2): ``dq/dd = 2 sigma^2 J^T r`` and
    ``dq/dm = 2 sigma^2 D^2 s(m)[d, r]``, so ``dq/dx_{i+1} = dq/dd + dq/dm / 2`` and ``dq/dx_i = -dq/dd + dq/dm / 2``.
    ``J^T r = J r`` and the symmetric third-derivative tensor assume a true score (s = grad log p); the mixed second
    derivative is the central difference ``[J(m + h u) d - J(m - h u) d] / (2 h) |r|`` of two more JVPs along
    ``u = r / |r|``, ``h = sigma eps^(1/3)`` (eps of the dtype): 4 JVPs per segment and energy evaluation.
    -> float, (N + 1, *shape)
    """
    d, m = segments(path)
    n = d.shape[0]
    h = sigma * torch.finfo(path.dtype).eps ** (1 / 3)
    parts = []
    for c in _chunks(n, chunk):
        dc, mc = d[c], m[c]
        r = sigma**2 * _jvp_only(score_jvp, mc, dc, counter)  # (k, *shape)
        jr = _jvp_only(score_jvp, mc, r, counter)  # J r
        rn = r.flatten(1).norm(dim=1)  # (k,)
        u = r / _expand(rn.clamp_min(torch.finfo(r.dtype).tiny), r)
        both = _jvp_only(score_jvp, torch.cat((mc + h * u, mc - h * u)), torch.cat((dc, dc)), counter)
        k = dc.shape[0]
        t3 = _expand(rn / (2 * h), r) * (both[:k] - both[k:])  # D^2 s(m)[d, r]
        parts.append((r, jr, t3))
    r = torch.cat([p[0] for p in parts])
    jr = torch.cat([p[1] for p in parts])
    t3 = torch.cat([p[2] for p in parts])
    energy = 0.5 * n * float((_dot(d, d).double() + lam * _dot(r, r).double()).sum())
    dq_dd = 2 * sigma**2 * jr
    half_dq_dm = sigma**2 * t3
    grad = torch.zeros_like(path)
    grad[:-1] += -n * d + 0.5 * n * lam * (half_dq_dm - dq_dd)
    grad[1:] += n * d + 0.5 * n * lam * (half_dq_dm + dq_dd)
    return energy, grad


def _energy_grad_autograd(score, path, lam, chunk, counter, rule: str = "midpoint", metric: str = "score",
                          sigma: float | None = None) -> tuple[float, torch.Tensor]:
    """E and dE/dx for every path point by reverse-mode AD through the score (through its JVP for the denoiser
    metric), chunk by chunk of segments."""
    n = path.shape[0] - 1
    grad = torch.zeros_like(path)
    energy = 0.0
    for c in _chunks(n, chunk):
        with torch.enable_grad():
            pts = path[c.start : c.stop + 1].detach().requires_grad_(True)  # (k + 1, *shape)
            d, _ = segments(pts)
            q = metric_term(score, pts, metric=metric, sigma=sigma, rule=rule)
            e = 0.5 * n * (_dot(d, d).double() + lam * q).sum()
            (g,) = torch.autograd.grad(e, pts)
        k = d.shape[0] + (pts.shape[0] if rule == "simpson" else 0)  # points the score was evaluated at
        if metric == "denoiser":
            counter.add(jvp_calls=1, jvp_points=d.shape[0])
        counter.add(score_calls=1 if rule == "midpoint" else 2, score_points=k, vjp_points=k)
        grad[c.start : c.stop + 1] += g
        energy += float(e.detach())
    return energy, grad


# --------------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------------
def _check_point(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        raise InputError(f"{name} is empty")
    return check_finite(name, x.detach())


def _check_pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _check_point(a, "a"), _check_point(b, "b")
    if a.shape != b.shape:
        raise InputError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype or a.device != b.device:
        raise InputError(f"a and b must share dtype and device, got {a.dtype}/{a.device} and {b.dtype}/{b.device}")
    return a, b


def _check_n_points(n_points, *, minimum: int = 3) -> int:
    """n_points as an int in [minimum, MAX_PATH_POINTS]."""
    return check_int("n_points (path points, both endpoints included)", n_points, minimum, MAX_PATH_POINTS)


def _check_lam(lam) -> float:
    return check_float("lam", lam, 0.0)


def _check_sigma(sigma, metric: str) -> float | None:
    """sigma (> 0) when the metric needs it (``"denoiser"``), else passed through unchecked."""
    if metric != "denoiser":
        return None if sigma is None else float(sigma)
    if sigma is None:
        raise InputError('metric="denoiser" needs sigma, the noise level of the score (sqrt(1 - alpha_bar(t*)) for a '
                         "diffusion model at t*, the smoothing std for a closed-form density)")
    return check_float("sigma", sigma, 0.0, lo_open=True)


# --------------------------------------------------------------------------------------------------------------------
# Boundary value problem
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BVPConfig:
    """Options of :func:`geodesic_bvp` (each default in a comment)."""

    lam: float = DEFAULT_LAM  # lambda of G = I + lam s s^T (docs/maths.md section 5.1)
    n_points: int = 16  # path points, both endpoints included (N + 1)
    init: str = "linear"  # "linear" | "slerp": the starting curve
    optimizer: str = "lbfgs"  # "lbfgs" (own two-loop + Armijo) | "torch-lbfgs" (strong Wolfe) | "adam"
    gradient: str = "auto"  # "auto" (jvp when score_jvp is given, else autograd) | "jvp" | "autograd"
    max_iter: int = 200  # optimiser iterations
    tol: float = 1e-7  # stop when |E_k - E_{k-1}| / |E_k| < tol (raised to 8 eps of the dtype)
    history_size: int = 10  # L-BFGS memory
    precondition: bool = True  # "lbfgs": H0 = inverse Hessian of the Euclidean part, (N L)^-1
    lr: float = 0.3  # Adam step, as a fraction of rms(b - a) / (n_points - 1) per coordinate
    chunk: int | None = None  # midpoints per score/JVP call (None: all N in one batch)
    rule: str = "midpoint"  # quadrature of the score term over a segment: "midpoint" | "simpson" (see score_term)
    metric: str = DEFAULT_METRIC  # "score" (G = I + lam s s^T) | "denoiser" (G = I + lam (I - J_D)^2); see METRICS
    sigma: float | None = None  # noise level of the score; needed by metric="denoiser" (D(x) = x + sigma^2 s(x))


@dataclass(frozen=True)
class GeodesicResult:
    """A solved boundary value problem. ``path`` includes both endpoints."""

    path: torch.Tensor  # (n_points, *shape)
    energy: list[float]  # E after each iteration, energy[0] = E of the initial curve
    length: float  # metric length sum_i sqrt(g(d_i, d_i)) of the final polygon
    initial_length: float  # the same for the initial curve
    evaluations: Evaluations
    converged: bool
    iterations: int
    seconds: float
    reason: str  # why the optimiser stopped
    gradient: str  # "jvp" or "autograd": how the gradient was computed
    config: BVPConfig = field(default_factory=BVPConfig)

    @property
    def speeds(self) -> torch.Tensor:
        """Euclidean segment lengths |d_i| of the path.  -> (n_points - 1,)"""
        return (self.path[1:] - self.path[:-1]).flatten(1).norm(dim=1)


def geodesic_bvp(
    score: ScoreFn,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    lam: float | None = None,
    n_points: int = 16,
    score_jvp: ScoreJvpFn | None = None,
    init: str = "linear",
    optimizer: str = "lbfgs",
    gradient: str = "auto",
    max_iter: int = 200,
    tol: float = 1e-7,
    history_size: int = 10,
    precondition: bool = True,
    lr: float = 0.3,
    chunk: int | None = None,
    rule: str = "midpoint",
    metric: str = DEFAULT_METRIC,
    sigma: float | None = None,
    init_path: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> GeodesicResult:
    """Discrete geodesic from a to b under a score-built metric: minimise E over the interior points.

    ``E = (N/2) sum_{i<N} (|d_i|^2 + lam q_i)``, ``d_i = x_{i+1} - x_i``, ``m_i = (x_i + x_{i+1}) / 2``, with
    ``q_i = (s(m_i) . d_i)^2`` (``metric="score"``, the paper's) or ``q_i = sigma^4 |D s(m_i)[d_i]|^2``
    (``metric="denoiser"``: ``G = I + lam (I - J_D)^T (I - J_D)``, see :data:`METRICS`).

    Args:
        score: batched score, (N, *shape) -> (N, *shape).
        a, b: endpoints, (*shape) each (any shape; a single point, no batch axis).
        lam: metric weight (>= 0; 0 gives the Euclidean straight line); None: the metric's default,
            :data:`METRIC_LAMS`.
        n_points: points of the path including both endpoints (>= 3).
        score_jvp: ``(x, v) -> D s(x)[v]`` or ``(s(x), D s(x)[v])``; enables the JVP-assembled gradient.
        init: starting curve, ``"linear"`` or ``"slerp"`` (ignored when ``init_path`` is given).
        optimizer, gradient, max_iter, tol, history_size, precondition, lr, chunk: see :class:`BVPConfig`.
        rule: quadrature of the score term, ``"midpoint"`` (the energy of docs/maths.md section 5.2) or
            ``"simpson"`` (also the path points; autograd gradient only), see :func:`score_term`. Score metric only.
        metric: one of :data:`METRICS`. ``"denoiser"``'s JVP-assembled gradient (``gradient="jvp"``) takes 4 score
            JVPs per segment (:func:`_energy_grad_jvp_denoiser`); its autograd gradient differentiates the JVP.
        sigma: the noise level of ``score`` (> 0), needed by ``metric="denoiser"``.
        init_path: an explicit starting curve (n_points, *shape) whose ends are a and b.
        progress: ``progress(iteration, max_iter, "geodesic")`` after each iteration; cancel: stop flag.

    Returns:
        :class:`GeodesicResult` (path (n_points, *shape), energy history, metric length, evaluations, ...).
    """
    t0 = time.perf_counter()
    a, b = _check_pair(a, b)
    if torch.equal(a, b):
        raise InputError("a and b are the same point: a geodesic needs two distinct endpoints")
    if not callable(score):
        raise InputError(f"score must be a callable (N, *shape) -> (N, *shape), got {type(score).__name__}")
    if score_jvp is not None and not callable(score_jvp):
        raise InputError(f"score_jvp must be None or a callable (x, v) -> D s(x)[v], got {type(score_jvp).__name__}")
    metric = check_choice("metric", metric, METRICS)
    cfg = BVPConfig(
        lam=_check_lam(METRIC_LAMS[metric] if lam is None else lam), n_points=_check_n_points(n_points),
        init=check_choice("init", init, INITS),
        optimizer=check_choice("optimizer", optimizer, OPTIMIZERS),
        gradient=check_choice("gradient", gradient, GRADIENTS), max_iter=check_int("max_iter", max_iter, 1),
        tol=check_float("tol", tol, 0.0, lo_open=True), history_size=check_int("history_size", history_size, 1),
        precondition=bool(precondition), lr=check_float("lr", lr, 0.0, lo_open=True),
        chunk=None if chunk is None else check_int("chunk", chunk, 1), rule=check_choice("rule", rule, RULES),
        metric=metric, sigma=None,
    )
    cfg = replace(cfg, sigma=_check_sigma(sigma, cfg.metric))
    if cfg.metric != "score" and cfg.rule != "midpoint":
        raise InputError(f'rule={cfg.rule!r} is a quadrature of the score metric; metric={cfg.metric!r} takes '
                         'rule="midpoint"')
    grad_mode = cfg.gradient
    if grad_mode == "auto":
        grad_mode = "jvp" if score_jvp is not None else "autograd"
    if grad_mode == "jvp" and score_jvp is None:
        raise InputError('gradient="jvp" needs score_jvp; pass one or use gradient="autograd"')
    if grad_mode == "jvp" and cfg.rule != "midpoint":
        raise InputError(f'rule={cfg.rule!r} needs gradient="autograd" (the JVP-assembled gradient is the midpoint '
                         'rule\'s); pass gradient="autograd" or rule="midpoint"')

    if init_path is not None:
        init_path = _check_point(init_path, "init_path")
        if init_path.shape != (cfg.n_points, *a.shape):
            raise InputError(f"init_path must have shape {(cfg.n_points, *a.shape)}, got {tuple(init_path.shape)}")
        if not (torch.equal(init_path[0], a) and torch.equal(init_path[-1], b)):
            raise InputError("init_path must start at a and end at b")
        path0 = init_path.to(a)
    else:
        path0 = (lerp if cfg.init == "linear" else slerp)(a, b, cfg.n_points)  # (n, *shape)

    counter = _Counter()
    shape = a.shape
    tol_eff = max(cfg.tol, 8 * torch.finfo(a.dtype).eps)

    def where() -> str:
        k = counter.c["energy"]
        return (f"energy evaluation {k}" + (" (the initial path)" if k <= 1 else "") + ", the path's "
                + ("points and " if cfg.rule == "simpson" else "") + "segment midpoints")

    raw_score = score
    score = guard_score(score, where)
    score_jvp = None if score_jvp is None else guard_score_jvp(score_jvp, where)

    def objective(z: torch.Tensor) -> tuple[float, torch.Tensor]:  # z: flat interior points
        check_cancelled(cancel)
        path = torch.cat((a[None], z.reshape(-1, *shape), b[None]))  # (n, *shape)
        counter.add(energy=1)
        if grad_mode == "jvp" and cfg.metric == "denoiser":
            e, g = _energy_grad_jvp_denoiser(score_jvp, path, cfg.lam, cfg.sigma, cfg.chunk, counter)
        elif grad_mode == "jvp":
            e, g = _energy_grad_jvp(score, score_jvp, path, cfg.lam, cfg.chunk, counter)
        else:
            e, g = _energy_grad_autograd(score, path, cfg.lam, cfg.chunk, counter, cfg.rule, cfg.metric, cfg.sigma)
        g = g[1:-1].reshape(-1)
        if not (math.isfinite(e) and bool(torch.isfinite(g).all())):
            what = "curve energy" if not math.isfinite(e) else "energy gradient"
            raise NumericalError(f"the {what} is NaN or inf at {where()} although the score is finite there "
                                 f"(E = {e:.6g}, lam = {cfg.lam:g}, {a.dtype}): the score term overflowed; lower lam "
                                 "or compute in float64")
        return e, g

    def hook(it: int, e: float) -> None:
        report(progress, it, cfg.max_iter, "geodesic")

    z0 = path0[1:-1].reshape(-1)
    with torch.no_grad():
        if cfg.optimizer == "lbfgs":
            precond = laplacian_precond(cfg.n_points, a) if cfg.precondition else None
            run = lbfgs(objective, z0, max_iter=cfg.max_iter, tol=tol_eff, history_size=cfg.history_size,
                         step_hook=hook, precond=precond)
        elif cfg.optimizer == "torch-lbfgs":
            run = torch_lbfgs(objective, z0, max_iter=cfg.max_iter, tol=tol_eff, history_size=cfg.history_size,
                               step_hook=hook)
        else:
            step = cfg.lr * float((b - a).double().pow(2).mean().sqrt()) / (cfg.n_points - 1)
            run = adam(objective, z0, max_iter=cfg.max_iter, tol=tol_eff, lr=step, step_hook=hook)
    path = torch.cat((a[None], run.z.reshape(-1, *shape), b[None])).detach()
    if run.history[-1] > run.history[0]:  # never hand back a curve worse than the start (Adam can overshoot)
        path, run.history = path0.clone(), run.history + [run.history[0]]
    score = guard_score(raw_score, lambda: "the final and initial paths (metric length)")
    length_kw = dict(lam=cfg.lam, chunk=cfg.chunk, rule=cfg.rule, metric=cfg.metric, sigma=cfg.sigma)
    return GeodesicResult(
        path=path, energy=run.history, length=curve_length(score, path, **length_kw),
        initial_length=curve_length(score, path0, **length_kw),
        evaluations=counter.snapshot(),
        converged=run.converged, iterations=run.iterations, seconds=time.perf_counter() - t0, reason=run.reason,
        gradient=grad_mode, config=cfg,
    )


# --------------------------------------------------------------------------------------------------------------------
# Initial value problem
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShootResult:
    """A geodesic integrated from (x0, v0). Times are k * dt, k = 0..n_steps."""

    path: torch.Tensor  # (n_steps + 1, *shape)
    velocity: torch.Tensor  # (n_steps + 1, *shape): x' at each recorded point
    speed: torch.Tensor  # (n_steps + 1,) float64: metric speed sqrt(|x'|^2 + lam (s . x')^2)
    dt: float
    evaluations: Evaluations
    seconds: float
    scheme: str = "rk4"
    substeps: int = 1  # RK4 steps per recorded step that the returned shot used (after any retries)
    retries: int = 0  # attempts that blew up before it (each retry doubles the substeps)

    @property
    def speed_drift(self) -> float:
        """max_k |speed_k / speed_0 - 1|: zero for the exact flow."""
        return float((self.speed / self.speed[0] - 1).abs().max())

    @property
    def length(self) -> float:
        """Metric length of the shot curve, by the trapezoidal rule on the speed."""
        return float(self.dt * (self.speed[1:] + self.speed[:-1]).sum() / 2)


class _BlowUp(Exception):
    """Internal: one shooting attempt blew up (``quantity`` at recorded step ``step``, ``detail`` the numbers)."""

    def __init__(self, quantity: str, step: int, detail: str):
        super().__init__(f"{quantity} at step {step}: {detail}")
        self.quantity, self.step, self.detail = quantity, step, detail


def geodesic_shoot(
    score: ScoreFn,
    x0: torch.Tensor,
    v0: torch.Tensor,
    *,
    lam: float = DEFAULT_LAM,
    n_steps: int = 16,
    dt: float | None = None,
    substeps: int = 1,
    score_jvp: ScoreJvpFn | None = None,
    retries: int = SHOOT_RETRIES,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> ShootResult:
    """Integrate the geodesic equation x'' = -lam (x' . D s(x)[x']) s / (1 + lam |s|^2) from x(0) = x0, x'(0) = v0.

    Classical RK4 on (x, v), ``substeps`` RK4 steps of ``dt / substeps`` between recorded points (4 score + JVP
    evaluations per RK4 step). Without ``score_jvp`` the JVP comes from :func:`autodiff_jvp`.

    **Blow-ups.** The exact flow conserves the metric speed ``sqrt(|x'|^2 + lam (s . x')^2)``. An attempt has blown up
    when a stage's state, score or JVP turns NaN or inf, or the speed at a recorded point drifts from the start's by
    more than :data:`SPEED_DRIFT_LIMIT` (relative); the shot is then restarted with twice the substeps, at most
    ``retries`` times (and up to :data:`MAX_SUBSTEPS`), and then :class:`~pipeline.errors.NumericalError` says which
    quantity blew up, at which step, with how many substeps, and what to change. ``ShootResult.substeps`` and
    ``.retries`` say what the returned shot used.

    x0, v0: (*shape) -> :class:`ShootResult` with path (n_steps + 1, *shape) at times k dt (default dt = 1 / n_steps).
    Raises :class:`InputError` for bad arguments (also a score of the wrong shape), ``NumericalError`` as above.
    """
    t0 = time.perf_counter()
    x0, v0 = _check_point(x0, "x0"), _check_point(v0, "v0")
    if x0.shape != v0.shape:
        raise InputError(f"x0 and v0 must have the same shape, got {tuple(x0.shape)} and {tuple(v0.shape)}")
    if not callable(score):
        raise InputError(f"score must be a callable (N, *shape) -> (N, *shape), got {type(score).__name__}")
    lam = _check_lam(lam)
    n_steps = check_int("n_steps", n_steps, 1, MAX_PATH_POINTS - 1)
    substeps = check_int("substeps", substeps, 1, MAX_SUBSTEPS)
    retries = check_int("retries", retries, 0, 10)
    dt = 1.0 / n_steps if dt is None else check_float("dt", dt, 0.0, lo_open=True)
    counter = _Counter()
    state = {"where": ""}

    def where() -> str:
        return state["where"]

    raw_jvp = score_jvp if score_jvp is not None else autodiff_jvp(score)
    score, jvp = guard_score(score, where), guard_score_jvp(raw_jvp, where)

    attempts: list[tuple[int, _BlowUp]] = []
    sub = substeps
    while True:
        try:
            path, vel, speeds = _rk4_shot(score, jvp, x0, v0, lam, n_steps, dt, sub, counter, state,
                                          progress, cancel)
            break
        except _BlowUp as err:
            attempts.append((sub, err))
            if len(attempts) > retries or 2 * sub > MAX_SUBSTEPS:
                raise NumericalError(_blowup_message(attempts, n_steps, dt)) from None
            sub *= 2
    return ShootResult(
        path=path, velocity=vel, speed=speeds, dt=dt, evaluations=counter.snapshot(),
        seconds=time.perf_counter() - t0, substeps=sub, retries=len(attempts),
    )


def _blowup_message(attempts: list[tuple[int, _BlowUp]], n_steps: int, dt: float) -> str:
    """What blew up in each attempt of a shot, and what to change."""
    sub, last = attempts[-1]
    tried = ", ".join(str(s) for s, _ in attempts)
    first = attempts[0][1]
    return (f"shooting blew up: {last.quantity} at step {last.step} of {n_steps} (t = {last.step * dt:.3g}) with "
            f"{sub} RK4 substeps per step ({last.detail}); tried substeps {tried}"
            + (f", the first attempt: {first.quantity} at step {first.step}" if len(attempts) > 1 else "")
            + ". The exact flow keeps the metric speed constant, so the step is too large for the score's curvature "
            "there or the start velocity leaves the region where the score is usable: shoot a shorter time (lower "
            "dt or n_steps; for extrapolation lower beyond), raise substeps, or start from a consistent velocity "
            "(for extrapolation: more path points and solver iterations, or a lower lam)")


def _rk4_shot(score, jvp, x0, v0, lam, n_steps, dt, substeps, counter, state, progress, cancel):
    """One RK4 attempt of :func:`geodesic_shoot`.  -> path, velocity (n_steps + 1, *shape), speed (n_steps + 1,);
    raises :class:`_BlowUp` when a stage state, score or JVP is not finite or the metric speed leaves its band."""

    def accel(x: torch.Tensor, v: torch.Tensor, k: int, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        state["where"] = f"RK4 {stage} of step {k + 1} of {n_steps}"
        for name, t in (("position", x), ("velocity", v)):
            if not bool(torch.isfinite(t).all()):
                raise _BlowUp(f"the {name}", k + 1, f"the {name} of RK4 {stage} is NaN or inf")
        try:
            s, hv = _score_and_jvp(score, jvp, x[None], v[None], counter)  # (1, *shape) each
        except NumericalError as err:
            raise _BlowUp("the score or its JVP", k + 1, str(err)) from None
        acc = geodesic_acceleration(s, hv, v[None], lam)[0].detach()
        if not bool(torch.isfinite(acc).all()):
            raise _BlowUp("the acceleration", k + 1, f"x'' of RK4 {stage} overflowed to NaN or inf")
        return acc, s[0].detach()

    def speed(s: torch.Tensor, v: torch.Tensor) -> float:
        return float((_dot(v[None], v[None]).double() + lam * _dot(s[None], v[None]).double() ** 2).sqrt())

    def check_speed(sp: float, k: int) -> None:
        s0 = speeds[0]
        if not math.isfinite(sp) or (s0 > 0 and abs(sp / s0 - 1) > SPEED_DRIFT_LIMIT):
            raise _BlowUp("the metric speed", k, f"{sp:.4g} against {s0:.4g} at the start; the exact flow "
                          f"conserves it, the accepted drift is {SPEED_DRIFT_LIMIT:g}")

    h = dt / substeps
    x, v = x0.clone(), v0.clone()
    xs, vs, speeds = [x], [v], []
    with torch.no_grad():
        for k in range(n_steps):
            check_cancelled(cancel)
            for j in range(substeps):
                a1, s1 = accel(x, v, k, f"stage 1 of substep {j + 1}")
                if j == 0:
                    speeds.append(speed(s1, v))
                    check_speed(speeds[-1], k)
                a2, _ = accel(x + 0.5 * h * v, v + 0.5 * h * a1, k, f"stage 2 of substep {j + 1}")
                a3, _ = accel(x + 0.5 * h * (v + 0.5 * h * a1), v + 0.5 * h * a2, k, f"stage 3 of substep {j + 1}")
                a4, _ = accel(x + h * (v + 0.5 * h * a2), v + h * a3, k, f"stage 4 of substep {j + 1}")
                x = x + h * v + (h * h / 6) * (a1 + a2 + a3)
                v = v + (h / 6) * (a1 + 2 * a2 + 2 * a3 + a4)
            for name, t in (("position", x), ("velocity", v)):
                if not bool(torch.isfinite(t).all()):
                    raise _BlowUp(f"the {name}", k + 1, f"the {name} after the step is NaN or inf")
            xs.append(x), vs.append(v)
            report(progress, k + 1, n_steps, "shooting")
        state["where"] = f"the end point (step {n_steps})"
        try:
            s_end = score(x[None])[0]
        except NumericalError as err:
            raise _BlowUp("the score", n_steps, str(err)) from None
        counter.add(score_calls=1, score_points=1)
        speeds.append(speed(s_end, v))
        check_speed(speeds[-1], n_steps)
    return torch.stack(xs), torch.stack(vs), torch.tensor(speeds, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------------------------
# Extrapolation: BVP a -> b, then shoot past b
# --------------------------------------------------------------------------------------------------------------------
#: Start velocities at b for extrapolation (:func:`end_velocity_for_extrapolation`): the Legendre transform of the last
#: segment (checked against the path's speed), the damped difference :func:`damped_end_velocity`, the one-sided
#: difference :func:`end_velocity`.
VELOCITIES = ("legendre", "damped", "difference")


@dataclass(frozen=True)
class ExtrapolationResult:
    """A geodesic from a through b continued past b. ``path[n_inner - 1]`` is b."""

    path: torch.Tensor  # (n_inner + n_extra, *shape): the BVP path, then the shot points after b
    n_inner: int  # points of the a -> b part (= n_points)
    bvp: GeodesicResult
    shoot: ShootResult
    velocity_b: torch.Tensor  # (*shape): the initial velocity at b (parameter t in [0, 1] on a -> b)
    velocity: str = "legendre"  # how velocity_b was obtained: "legendre" | "damped" | "difference"


def check_shoot_metric(metric: str) -> str:
    """``metric`` when it is one of :data:`SHOOT_METRICS` (extrapolation shoots the geodesic equation); else
    :class:`InputError` saying which metrics can extrapolate."""
    metric = check_choice("metric", metric, METRICS)
    if metric not in SHOOT_METRICS:
        raise InputError(f"metric={metric!r} has no geodesic equation here (its initial value problem needs third "
                         "derivatives of log p and a linear solve with G per step); extrapolation takes metric in "
                         f"{SHOOT_METRICS}. Interpolation (the boundary value problem) takes every metric in {METRICS}")
    return metric


def end_velocity(path: torch.Tensor) -> torch.Tensor:
    """x'(1) of a path sampled at t_i = i / N, by the second-order one-sided difference
    ``N (3 x_N - 4 x_{N-1} + x_{N-2}) / 2`` (first order ``N (x_N - x_{N-1})`` for 2-point paths).  -> (*shape)"""
    n = path.shape[0] - 1
    if n < 2:
        return n * (path[-1] - path[-2])
    return 0.5 * n * (3 * path[-1] - 4 * path[-2] + path[-3])


def _end_score(score: ScoreFn, path: torch.Tensor, what: str) -> torch.Tensor:
    """s(x_N), checked (:func:`guard_score`).  -> (1, *shape)"""
    with torch.no_grad():
        return guard_score(score, lambda: f"the path's end point b ({what})")(path[-1:])


def damped_end_velocity(score: ScoreFn, path: torch.Tensor, *, lam: float) -> torch.Tensor:
    """x'(1) as the last segment's velocity with its component along s_b damped by the metric at b:
    ``x' = G(b)^-1 N d = N d - lam (s_b . N d) s_b / (1 + lam |s_b|^2)`` (``d = x_N - x_{N-1}``, ``s_b = s(x_N)``).

    The Legendre transform of the segment's Euclidean momentum ``N d``: no midpoint correction (compare
    :func:`legendre_velocity`), so its Euclidean speed never exceeds the segment's, while a step across the density
    (along s_b) is damped the same way.  path: (N + 1, *shape) -> (*shape)
    """
    n = path.shape[0] - 1
    lam = _check_lam(lam)
    with torch.no_grad():
        p = n * (path[-1:] - path[-2:-1])  # (1, *shape)
        sb = _end_score(score, path, "damped_end_velocity")
        v = p - _expand(lam * _dot(sb, p) / (1 + lam * _dot(sb, sb)), p) * sb
    if not bool(torch.isfinite(v).all()):
        raise NumericalError(f"the damped end velocity is NaN or inf (|N d| = {float(p.norm()):.4g}, "
                             f"|s_b| = {float(sb.norm()):.4g}, lam = {lam:g}): lower lam or compute in float64")
    return v[0]


def legendre_velocity(score: ScoreFn, path: torch.Tensor, *, lam: float, score_jvp: ScoreJvpFn | None = None,
                      ) -> torch.Tensor:
    """x'(1) of a discrete geodesic by the discrete Legendre transform of its last segment.

    The end momentum of the discrete Lagrangian ``L_d = (N/2) g_m(d, d)`` of the last segment is
    ``p = dL_d/dx_N = N (d + lam c (1/2 H d + s))`` (``s, H d`` at the midpoint, ``c = s . d``; the same terms as the
    energy gradient, symmetric Jacobian assumed), and ``x' = G(b)^-1 p = p - lam (s_b . p) s_b / (1 + lam |s_b|^2)``
    (Sherman-Morrison, ``s_b = s(x_N)``). Unlike a finite difference it damps the component along s_b that the
    metric penalises, so a last segment that jumps across a density ridge (where s(m) ~ 0) does not launch the
    continuation off the data.

    The term ``N lam c H d / 2`` is the midpoint rule's correction, of order 1/N on a resolved geodesic; on a coarse
    or unconverged path (c = s . d far from 0, lam |s|^2 large) it dominates and the velocity comes out many times
    faster than the path: :func:`end_velocity_for_extrapolation` checks that. Scores and JVPs are checked
    (:func:`guard_score`); a non-finite result raises :class:`~pipeline.errors.NumericalError`.
    path: (N + 1, *shape) -> (*shape)
    """
    n = path.shape[0] - 1
    lam = _check_lam(lam)

    def where() -> str:
        return "the last segment's midpoint (legendre_velocity)"

    jvp = guard_score_jvp(score_jvp if score_jvp is not None else autodiff_jvp(score), where)
    counter = _Counter()
    d, m = segments(path[-2:])  # (1, *shape)
    with torch.no_grad():
        s, hd = _score_and_jvp(guard_score(score, where), jvp, m, d, counter)
        c = _expand(_dot(s, d), d)
        p = n * (d + lam * c * (0.5 * hd + s))  # (1, *shape)
        sb = _end_score(score, path, "legendre_velocity")
        v = p - _expand(lam * _dot(sb, p) / (1 + lam * _dot(sb, sb)), p) * sb
    if not bool(torch.isfinite(v).all()):
        raise NumericalError(f"the Legendre end velocity is NaN or inf (end momentum |p| = {float(p.norm()):.4g}, "
                             f"s . d = {float(c.flatten()[0]):.4g}, lam = {lam:g}): lower lam, compute in float64, "
                             "or use velocity='damped'")
    return v[0]


def end_velocity_for_extrapolation(score: ScoreFn, path: torch.Tensor, *, lam: float,
                                   score_jvp: ScoreJvpFn | None = None, velocity: str = "legendre",
                                   ) -> tuple[torch.Tensor, str]:
    """The start velocity at b for continuing ``path`` past b, and how it was obtained.

    ``velocity="legendre"`` (default): :func:`legendre_velocity`, kept when its metric speed at b,
    ``sqrt(|v|^2 + lam (s_b . v)^2)``, lies within :data:`VELOCITY_SPEED_RATIO` of the last segment's metric speed
    ``N sqrt(|d|^2 + lam (s(m) . d)^2)`` (they agree on a resolved discrete geodesic, where the path is traversed at
    constant speed); otherwise the midpoint correction dominates (a coarse or unconverged path: 3 points and a few
    solver iterations on the default model give 30x the path's speed, and the shot leaves the data within one step)
    and :func:`damped_end_velocity` is used instead. ``"damped"``: :func:`damped_end_velocity`. ``"difference"``:
    :func:`end_velocity` (no damping).  path: (N + 1, *shape) -> ((*shape), "legendre" | "damped" | "difference")
    """
    velocity = check_choice("velocity", velocity, VELOCITIES)
    lam = _check_lam(lam)
    if velocity == "difference":
        return end_velocity(path), "difference"
    if velocity == "damped":
        return damped_end_velocity(score, path, lam=lam), "damped"
    v = legendre_velocity(score, path, lam=lam, score_jvp=score_jvp)
    with torch.no_grad():
        n = path.shape[0] - 1
        d, m = segments(path[-2:])
        s_m, s_b = guard_score(score, lambda: "the last segment (end_velocity_for_extrapolation)")(
            torch.cat((m, path[-1:])))  # (*shape) each
        seg_speed = n * math.sqrt(float(_dot(d, d)[0].double()) + lam * float(_dot(s_m[None], d)[0].double()) ** 2)
        v_speed = math.sqrt(float(_dot(v[None], v[None])[0].double()) + lam * float(_dot(s_b[None], v[None])[0]) ** 2)
    if seg_speed > 0 and 1 / VELOCITY_SPEED_RATIO <= v_speed / seg_speed <= VELOCITY_SPEED_RATIO:
        return v, "legendre"
    return damped_end_velocity(score, path, lam=lam), "damped"


def extrapolate(
    score: ScoreFn,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    beyond: float = 0.5,
    lam: float = DEFAULT_LAM,
    n_points: int = 16,
    score_jvp: ScoreJvpFn | None = None,
    velocity: str = "legendre",
    substeps: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    **solver,
) -> ExtrapolationResult:
    """The geodesic from a through b, continued past b for ``beyond`` times the a -> b metric length.

    Solves the BVP a -> b (:func:`geodesic_bvp`, ``solver`` options passed on), takes the velocity at b in the BVP's
    parameter (t in [0, 1], so the metric speed is about the a -> b length L) by
    :func:`end_velocity_for_extrapolation` (``velocity="legendre"``, default: the Legendre velocity, or the damped
    difference where the Legendre one is inconsistent with the path's speed; ``"damped"``; ``"difference"``), and
    shoots (:func:`geodesic_shoot`, which retries a blow-up with more substeps) for time ``beyond``:
    ``round(beyond (n_points - 1))`` (at least 1) more points evenly spread over it (the path's own spacing when
    ``beyond (n_points - 1)`` is an integer), each ``substeps`` RK4 steps apart, adding ~``beyond * L`` of metric
    length. ``ExtrapolationResult.velocity`` says which velocity was used. A shot that still blows up raises
    :class:`~pipeline.errors.NumericalError` saying what blew up and what to change.
    """
    beyond = check_float("beyond", beyond, 0.0, lo_open=True)
    velocity = check_choice("velocity", velocity, VELOCITIES)
    check_shoot_metric(solver.get("metric", DEFAULT_METRIC))
    n_points = _check_n_points(n_points)
    n_extra = max(1, round(beyond * (n_points - 1)))
    if n_points + n_extra > MAX_PATH_POINTS:
        raise InputError(f"beyond={beyond:g} with n_points={n_points} asks for {n_extra} extra points; the whole path "
                         f"must stay within MAX_PATH_POINTS={MAX_PATH_POINTS}")
    bvp = geodesic_bvp(score, a, b, lam=lam, n_points=n_points, score_jvp=score_jvp, progress=progress,
                       cancel=cancel, **solver)
    v_b, used = end_velocity_for_extrapolation(score, bvp.path, lam=lam, score_jvp=score_jvp, velocity=velocity)
    shoot = geodesic_shoot(score, bvp.path[-1], v_b, lam=lam, n_steps=n_extra, dt=beyond / n_extra,
                           substeps=substeps, score_jvp=score_jvp, progress=progress, cancel=cancel)
    return ExtrapolationResult(path=torch.cat((bvp.path, shoot.path[1:])), n_inner=n_points, bvp=bvp, shoot=shoot,
                               velocity_b=v_b, velocity=used)
