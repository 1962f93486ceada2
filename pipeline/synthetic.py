"""Closed-form scores of noise-smoothed data on known manifolds: the ground truth for score-metric geodesics.

Data uniform on a manifold M embedded isometrically in R^D, smoothed by Gaussian noise:
``p_sigma = p_data * N(0, sigma^2 I_D)``. Its score ``s(x) = grad log p_sigma(x) = (E[y | x] - x) / sigma^2`` (Tweedie),
with ``y ~ p_data`` weighted by ``N(x; y, sigma^2 I)``.

Notation (shapes: ``x, v: (N, D)``; the manifold spans the first ``m`` columns of an orthonormal ``Q: (D, m)``):

| code        | math                                                                          |
|-------------|-------------------------------------------------------------------------------|
| ``Q``       | isometric embedding R^m -> R^D (random orthonormal columns, from ``seed``)    |
| ``Px``      | ``Q Q^T x``, the component of x in the manifold's m-dim subspace              |
| ``n``       | ``k + 1``: the sphere S^k sits in R^n (n = m)                                  |
| ``kappa``   | ``R |Px| / sigma^2``                                                            |
| ``A_n``     | ``I_{n/2}(kappa) / I_{n/2-1}(kappa)`` (modified Bessel ratio)                  |
| ``B_n``     | ``A_n(kappa) / kappa`` (smooth and even in kappa; ``B_n(0) = 1/n``)             |
| ``C_n``     | ``B_n'(kappa) / kappa``                                                         |

**Sphere S^k of radius R** (uniform surface measure). The component orthogonal to the subspace is pure Gaussian, and
inside the subspace ``p(x) ∝ exp(-(r^2 + R^2) / 2 sigma^2) kappa^{-nu} I_nu(kappa)``, ``nu = n/2 - 1``, ``r = |Px|``
(the von Mises-Fisher normaliser). Differentiating, with ``d/dk [k^-nu I_nu(k)] = k^-nu I_{nu+1}(k)``:

    s(x) = (R A_n(kappa) Px / |Px| - x) / sigma^2 = (rho B_n(kappa) Px - x) / sigma^2,     rho = R^2 / sigma^2
    D s(x)[v] = (rho B_n Pv + rho (R / sigma^2)^2 C_n(kappa) (Px . Pv) Px - v) / sigma^2          (symmetric)

This is exact in any dimension D (no approximation: the sphere's own dimension enters only through n). For S^2 (n = 3)
``A_3(k) = coth k - 1/k`` (the Langevin function; ``p(r) ∝ [exp(-(r-R)^2/2s^2) - exp(-(r+R)^2/2s^2)] / r``), for the
circle ``A_2 = I_1 / I_0``. ``A_n`` is computed for every n from exponentially scaled Bessel functions
(``scipy.special.ive``), and where those underflow (orders in the hundreds and up, moderate kappa) by the backward
recurrence of the ratios ``r_j = I_{j+1}/I_j = kappa / (2 (j + 1) + kappa r_{j+1})`` (stable for this minimal solution;
Gautschi 1967), started high enough that the starting error is contracted by ``prod r_j^2 < e^-40``; small kappa uses
the Taylor series. ``B_n' = (1 - kappa^2 B_n^2 - n B_n) / kappa`` (from ``A' = 1 - A^2 - (n-1) A / kappa``) makes the
derivatives exact, so autograd, ``torch.func.jvp`` and the closed-form JVP all agree.

**Torus** (tube radius r around a circle of radius R in R^3, uniform surface measure, optionally embedded in R^D).
``p_sigma`` is a Gaussian mixture over the torus; the integral over the two angles uses the periodic trapezoidal rule
on a grid with arc spacing h <= sigma / 2 (error ~ exp(-2 pi^2 (w / h)^2) for a posterior of width w; w shrinks to
~sigma / 1.5 three sigmas outside the tube, so the error stays below ~1e-12 where the density is not negligible), so
the score and
its JVP are those of that mixture, in closed form: ``s = (E_pi[y] - x) / sigma^2``,
``D s[v] = Cov_pi(y) v / sigma^4 - v / sigma^2``. Its true geodesics are computed numerically (see
:meth:`SmoothedTorus.geodesic`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .errors import InputError
from .validate import check_float, check_int

_SERIES_KAPPA = 1e-2  # below this kappa, B_n and C_n come from their Taylor series


# --------------------------------------------------------------------------------------------------------------------
# Bessel ratio A_n(kappa) = I_{n/2}(kappa) / I_{n/2-1}(kappa), and B_n = A_n / kappa, C_n = B_n' / kappa
# --------------------------------------------------------------------------------------------------------------------
def _ratio_recurrence(kappa: torch.Tensor, nu: float) -> torch.Tensor:
    """I_{nu+1}/I_nu by the backward recurrence, started at the order where the accumulated contraction
    prod r_j^2 (estimated with the Amos-type ratio) falls below e^-40.  (...) -> (...)"""
    kmax = float(kappa.max())
    top, contraction = nu, 0.0
    while contraction < 40.0 and top < nu + 1e6:
        top += 1.0
        contraction -= 2 * math.log(kmax / (top + 1.0 + math.sqrt((top + 1.0) ** 2 + kmax**2)))
    r = kappa / (top + 1.0 + torch.sqrt((top + 1.0) ** 2 + kappa * kappa))  # (...), start at order `top`
    for j in range(int(round(top - nu)) - 1, -1, -1):
        r = kappa / (2.0 * (nu + j + 1.0) + kappa * r)
    return r


def _ratio_asymptotic(kappa: torch.Tensor, n: int, terms: int = 8) -> torch.Tensor:
    """Large-kappa expansion A_n = sum_m a_m kappa^-m from the Riccati equation A' = 1 - A^2 - (n-1) A / kappa:
    a_0 = 1, a_m = [(m - n) a_{m-1} - sum_{i=1}^{m-1} a_i a_{m-i}] / 2 (so a_1 = -(n-1)/2).  (...) -> (...)"""
    a = [1.0]
    for m in range(1, terms):
        a.append(((m - n) * a[m - 1] - sum(a[i] * a[m - i] for i in range(1, m))) / 2)
    inv = 1.0 / kappa
    out = torch.full_like(kappa, a[-1])
    for c in reversed(a[:-1]):  # Horner
        out = out * inv + c
    return out


def bessel_ratio(kappa: torch.Tensor, n: int) -> torch.Tensor:
    """A_n(kappa) = I_{n/2}(kappa) / I_{n/2-1}(kappa) for kappa > 0 (no autograd; use :func:`b_ratio`).  (...) -> (...)

    The ratio of exponentially scaled Bessel functions (``scipy.special.ive``) where both are well above underflow;
    the large-kappa expansion where ``kappa > max(1e5, 1e3 n^2)`` (relative error < ~1e-20) or beyond ive's range
    (``kappa > 2e9``, far off the sphere: the leading terms still hold to ~(n^2 / kappa)^8); elsewhere (high orders at
    moderate kappa) the backward recurrence ``r_j = kappa / (2 (j + 1) + kappa r_{j+1})``.
    """
    import numpy as np
    from scipy.special import ive

    nu = n / 2.0 - 1.0
    k = kappa.detach().to("cpu", torch.float64).numpy()
    with np.errstate(all="ignore"):
        num, den = ive(nu + 1.0, k), ive(nu, k)
        r = num / den
    out = torch.from_numpy(r)
    big = (k > max(1e5, 1e3 * n * n)) | (k > 2e9)
    if big.any():
        out[torch.from_numpy(big)] = _ratio_asymptotic(torch.from_numpy(k[big]), n)
    bad = ~big & (~np.isfinite(r) | (num < 1e-280) | (den < 1e-280))
    if bad.any():
        out[torch.from_numpy(bad)] = _ratio_recurrence(torch.from_numpy(k[bad]), nu)
    return out.to(device=kappa.device, dtype=kappa.dtype)


def _b_series(kappa: torch.Tensor, n: int) -> torch.Tensor:
    k2 = kappa * kappa
    return 1.0 / n - k2 / (n * n * (n + 2)) + 2.0 * k2 * k2 / (n**3 * (n + 2) * (n + 4))


def _c_series(kappa: torch.Tensor, n: int) -> torch.Tensor:
    return -2.0 / (n * n * (n + 2)) + 8.0 * kappa * kappa / (n**3 * (n + 2) * (n + 4))


def _b_value(kappa: torch.Tensor, n: int) -> torch.Tensor:
    small = kappa < _SERIES_KAPPA
    safe = torch.where(small, torch.ones_like(kappa), kappa)
    return torch.where(small, _b_series(kappa, n), bessel_ratio(safe, n) / safe)


class _BRatio(torch.autograd.Function):
    """B_n(kappa) = A_n(kappa) / kappa with exact first derivative kappa C_n(kappa) (and, recursively, higher ones)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(kappa: torch.Tensor, n: int) -> torch.Tensor:
        return _b_value(kappa, n)

    @staticmethod
    def setup_context(ctx, inputs, output):
        kappa, n = inputs
        ctx.n = n
        ctx.save_for_backward(kappa)
        ctx.save_for_forward(kappa)

    @staticmethod
    def backward(ctx, grad):
        (kappa,) = ctx.saved_tensors
        return grad * kappa * c_ratio(kappa, ctx.n), None

    @staticmethod
    def jvp(ctx, tangent, _n):
        (kappa,) = ctx.saved_tensors
        return tangent * kappa * c_ratio(kappa, ctx.n)


def b_ratio(kappa: torch.Tensor, n: int) -> torch.Tensor:
    """B_n(kappa) = A_n(kappa) / kappa, differentiable (autograd and forward mode).  (...) -> (...)"""
    return _BRatio.apply(kappa, n)


def c_ratio(kappa: torch.Tensor, n: int) -> torch.Tensor:
    """C_n(kappa) = B_n'(kappa) / kappa = (1 - kappa^2 B^2 - n B) / kappa^2, Taylor series near 0.  (...) -> (...)"""
    small = kappa < _SERIES_KAPPA
    safe = torch.where(small, torch.ones_like(kappa), kappa)
    b = b_ratio(safe, n)
    closed = (1.0 - safe * safe * b * b - n * b) / (safe * safe)
    return torch.where(small, _c_series(kappa, n), closed)


# --------------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------------
def random_embedding(ambient: int, m: int, seed: int | None, *, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal Q (ambient, m): the first m axes if ``seed`` is None, else the QR of a seeded Gaussian matrix."""
    if seed is None:
        return torch.eye(ambient, m, dtype=dtype)
    g = torch.Generator().manual_seed(int(seed))
    q, r = torch.linalg.qr(torch.randn(ambient, m, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)  # (ambient, m), unique sign convention


def _check_points(x, ambient: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (N, {ambient}), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != ambient:
        raise InputError(f"{name} must have shape (N, {ambient}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be floating point, got {x.dtype}")
    return x


def _check_positive(value: float, name: str) -> float:
    return check_float(name, value, 0, lo_open=True)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)  # (N, 1)


# --------------------------------------------------------------------------------------------------------------------
# Sphere S^k of radius R in R^D
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmoothedSphere:
    """Uniform data on the sphere S^k of radius ``radius`` embedded in R^``ambient``, smoothed by N(0, sigma^2 I).

    Points are (N, ambient) tensors; the sphere lives in ``span(Q)``, ``Q = random_embedding(ambient, k + 1, seed)``.
    """

    k: int  # sphere dimension: S^k sits in R^(k+1)
    ambient: int  # D
    radius: float = 1.0  # R
    sigma: float = 0.1  # noise level of p_sigma = p_data * N(0, sigma^2 I)
    seed: int | None = 0  # embedding seed; None = the first k+1 axes
    Q: torch.Tensor = field(init=False, repr=False)  # (D, k+1) float64

    def __post_init__(self):
        check_int("k (sphere dimension)", self.k, 1)
        check_int(f"ambient dimension (at least k + 1 = {self.k + 1})", self.ambient, self.k + 1)
        _check_positive(self.radius, "radius")
        _check_positive(self.sigma, "sigma")
        object.__setattr__(self, "Q", random_embedding(self.ambient, self.k + 1, self.seed))

    @property
    def n(self) -> int:
        """Dimension of the subspace holding the sphere (k + 1)."""
        return self.k + 1

    def _q(self, x: torch.Tensor) -> torch.Tensor:
        return self.Q.to(device=x.device, dtype=x.dtype)

    def _kappa(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Q = self._q(x)
        px = (x @ Q) @ Q.T  # (N, D)
        kappa = self.radius * px.norm(dim=-1, keepdim=True) / self.sigma**2  # (N, 1)
        return px, kappa

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """s(x) = (rho B_n(kappa) Px - x) / sigma^2.  (N, D) -> (N, D)"""
        x = _check_points(x, self.ambient, "x")
        px, kappa = self._kappa(x)
        rho = self.radius**2 / self.sigma**2
        return (rho * b_ratio(kappa, self.n) * px - x) / self.sigma**2

    def score_jvp(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(x), D s(x)[v]), D s[v] = (rho B Pv + rho (R/sigma^2)^2 C (Px.Pv) Px - v) / sigma^2.

        x, v: (N, D) -> two (N, D)
        """
        x, v = _check_points(x, self.ambient, "x"), _check_points(v, self.ambient, "v")
        if v.shape != x.shape:
            raise InputError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
        Q = self._q(x)
        px, kappa = self._kappa(x)
        pv = (v @ Q) @ Q.T  # (N, D)
        s2, rho = self.sigma**2, self.radius**2 / self.sigma**2
        b = b_ratio(kappa, self.n)
        c = c_ratio(kappa, self.n)
        s = (rho * b * px - x) / s2
        ds = (rho * b * pv + rho * (self.radius / s2) ** 2 * c * _dot(px, pv) * px - v) / s2
        return s, ds

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log p_sigma(x) up to an additive constant, for k = 1 and k = 2 (torch, differentiable).  (N, D) -> (N,)

        k = 1: ``log I_0(kappa)``; k = 2: ``log(sinh(kappa) / kappa)``; plus ``-|x|^2 / 2 sigma^2``.
        """
        x = _check_points(x, self.ambient, "x")
        _, kappa = self._kappa(x)
        kappa = kappa[:, 0]
        if self.k == 1:
            log_bessel = torch.log(torch.special.i0e(kappa)) + kappa
        elif self.k == 2:  # log(sinh k / k) = k + log1p(-exp(-2k)) - log(2k), series near 0
            safe = kappa.clamp_min(1e-3)
            log_bessel = torch.where(
                kappa < 1e-3, kappa**2 / 6, safe + torch.log1p(-torch.exp(-2 * safe)) - torch.log(2 * safe)
            )
        else:
            raise InputError(f"log_density has a closed form here for k = 1 and k = 2 only, got k = {self.k}")
        return log_bessel - (x * x).sum(-1) / (2 * self.sigma**2)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest point on the sphere: R Px / |Px|.  (N, D) -> (N, D)"""
        x = _check_points(x, self.ambient, "x")
        Q = self._q(x)
        px = (x @ Q) @ Q.T
        norm = px.norm(dim=-1, keepdim=True)
        if bool((norm == 0).any()):
            raise InputError("cannot project a point orthogonal to the sphere's subspace (its projection is 0)")
        return self.radius * px / norm

    def _angle(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ua, ub = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
        # atan2 form: accurate for small and near-pi angles alike
        return torch.atan2((ua - ub * _dot(ua, ub)).norm(dim=-1), (ua * ub).sum(-1))  # (N,)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Great-circle distance R * angle between the projections of a and b.  (N, D), (N, D) -> (N,)"""
        return self.radius * self._angle(self.project(a), self.project(b))

    def geodesic(self, a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
        """The great-circle arc from proj(a) to proj(b) at n evenly spaced points.  (D,), (D,) -> (n, D)

        Antipodal points have no unique geodesic: raises :class:`InputError`.
        """
        pa, pb = self.project(a.reshape(1, -1)), self.project(b.reshape(1, -1))
        theta = float(self._angle(pa, pb)[0])
        if theta > math.pi - 1e-9:
            raise InputError("a and b are antipodal on the sphere: their great circle is not unique")
        t = torch.linspace(0, 1, n, dtype=pa.dtype, device=pa.device)[:, None]  # (n, 1)
        if theta < 1e-12:
            return pa.expand(n, -1).clone()
        return (torch.sin((1 - t) * theta) * pa + torch.sin(t * theta) * pb) / math.sin(theta)

    def sample(self, num: int, *, seed: int = 0, noisy: bool = False) -> torch.Tensor:
        """``num`` points uniform on the sphere (``noisy``: from p_sigma instead).  -> (num, D) float64"""
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(num, self.n, generator=g, dtype=torch.float64)
        y = self.radius * (z / z.norm(dim=-1, keepdim=True)) @ self.Q.T  # (num, D)
        if noisy:
            y = y + self.sigma * torch.randn(num, self.ambient, generator=g, dtype=torch.float64)
        return y


def sphere(k: int, ambient: int, *, radius: float = 1.0, sigma: float = 0.1, seed: int | None = 0) -> SmoothedSphere:
    """Noise-smoothed uniform S^k of radius R in R^ambient (see :class:`SmoothedSphere`)."""
    return SmoothedSphere(k=k, ambient=ambient, radius=radius, sigma=sigma, seed=seed)


def circle(ambient: int = 2, *, radius: float = 1.0, sigma: float = 0.1, seed: int | None = 0) -> SmoothedSphere:
    """Noise-smoothed uniform circle S^1 of radius R in R^ambient."""
    return SmoothedSphere(k=1, ambient=ambient, radius=radius, sigma=sigma, seed=seed)


# --------------------------------------------------------------------------------------------------------------------
# Torus in R^3 (optionally embedded in R^D)
# --------------------------------------------------------------------------------------------------------------------
def torus_point(theta: torch.Tensor, phi: torch.Tensor, major: float, minor: float) -> torch.Tensor:
    """X(theta, phi) = ((R + r cos phi) cos theta, (R + r cos phi) sin theta, r sin phi).  (...), (...) -> (..., 3)"""
    ring = major + minor * torch.cos(phi)
    return torch.stack((ring * torch.cos(theta), ring * torch.sin(theta), minor * torch.sin(phi)), dim=-1)


@dataclass(frozen=True)
class SmoothedTorus:
    """Uniform (surface-measure) data on a torus in R^3, embedded in R^``ambient``, smoothed by N(0, sigma^2 I)."""

    ambient: int = 3  # D >= 3
    major: float = 1.0  # R, radius of the centre circle
    minor: float = 0.4  # r, tube radius (r < R)
    sigma: float = 0.1  # noise level
    seed: int | None = None  # embedding seed; None = the first 3 axes
    grid: tuple[int, int] | None = None  # quadrature nodes (theta, phi); None: spacing <= 0.5 sigma
    Q: torch.Tensor = field(init=False, repr=False)  # (D, 3)
    nodes: torch.Tensor = field(init=False, repr=False)  # (M, 3) quadrature points on the torus
    log_weights: torch.Tensor = field(init=False, repr=False)  # (M,) normalised log quadrature weights

    def __post_init__(self):
        check_int("ambient dimension", self.ambient, 3)
        _check_positive(self.major, "major radius")
        _check_positive(self.minor, "minor radius")
        _check_positive(self.sigma, "sigma")
        if self.minor >= self.major:
            raise InputError(f"minor radius {self.minor} must be below the major radius {self.major}")
        if self.grid is None:
            gt = max(16, math.ceil(2 * math.pi * (self.major + self.minor) / (0.5 * self.sigma)))
            gp = max(16, math.ceil(2 * math.pi * self.minor / (0.5 * self.sigma)))
        else:
            gt, gp = (int(g) for g in self.grid)
        theta = torch.arange(gt, dtype=torch.float64) * (2 * math.pi / gt)
        phi = torch.arange(gp, dtype=torch.float64) * (2 * math.pi / gp)
        tt, pp = torch.meshgrid(theta, phi, indexing="ij")
        nodes = torus_point(tt, pp, self.major, self.minor).reshape(-1, 3)  # (M, 3)
        area = (self.major + self.minor * torch.cos(pp)).reshape(-1)  # surface element, (M,)
        object.__setattr__(self, "Q", random_embedding(self.ambient, 3, self.seed))
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "log_weights", torch.log(area / area.sum()))

    def _posterior(self, x: torch.Tensor):
        Q = self.Q.to(device=x.device, dtype=x.dtype)
        y = self.nodes.to(device=x.device, dtype=x.dtype)  # (M, 3)
        x3 = x @ Q  # (N, 3)
        d2 = (x3 * x3).sum(-1, keepdim=True) - 2 * x3 @ y.T + (y * y).sum(-1)  # (N, M)
        logits = self.log_weights.to(device=x.device, dtype=x.dtype) - d2 / (2 * self.sigma**2)
        return Q, y, x3, logits

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """s(x) = (Q E_pi[y] - x) / sigma^2, pi the posterior over quadrature nodes.  (N, D) -> (N, D)"""
        x = _check_points(x, self.ambient, "x")
        Q, y, _, logits = self._posterior(x)
        mean = torch.softmax(logits, dim=-1) @ y  # (N, 3)
        return (mean @ Q.T - x) / self.sigma**2

    def score_jvp(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(x), D s(x)[v]) with D s[v] = Q Cov_pi(y) Q^T v / sigma^4 - v / sigma^2.  2 x (N, D) -> 2 x (N, D)"""
        x, v = _check_points(x, self.ambient, "x"), _check_points(v, self.ambient, "v")
        if v.shape != x.shape:
            raise InputError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
        Q, y, _, logits = self._posterior(x)
        pi = torch.softmax(logits, dim=-1)  # (N, M)
        mean = pi @ y  # (N, 3)
        v3 = v @ Q  # (N, 3)
        yv = v3 @ y.T  # (N, M): y_j . v3
        cov_v = (pi * yv) @ y - mean * _dot(mean, v3)  # (N, 3): E[y (y.v)] - E[y] (E[y].v)
        s2 = self.sigma**2
        return (mean @ Q.T - x) / s2, cov_v @ Q.T / s2**2 - v / s2

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log p_sigma(x) up to an additive constant (logsumexp over the quadrature; differentiable).  (N, D) -> (N,)"""
        x = _check_points(x, self.ambient, "x")
        Q, _, x3, logits = self._posterior(x)
        perp2 = (x * x).sum(-1) - (x3 * x3).sum(-1)
        return torch.logsumexp(logits, dim=-1) - perp2 / (2 * self.sigma**2)

    def angles(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Torus angles (theta, phi) of the nearest torus point.  (N, D) -> (N,), (N,)"""
        x3 = _check_points(x, self.ambient, "x") @ self.Q.to(device=x.device, dtype=x.dtype)
        theta = torch.atan2(x3[:, 1], x3[:, 0])
        rho = torch.hypot(x3[:, 0], x3[:, 1]) - self.major
        if bool((torch.hypot(rho, x3[:, 2]) == 0).any()):
            raise InputError("a point on the torus's centre circle has no unique nearest torus point")
        return theta, torch.atan2(x3[:, 2], rho)

    def embed(self, theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """Torus point at angles (theta, phi) in R^D.  (...), (...) -> (..., D)"""
        return torus_point(theta, phi, self.major, self.minor) @ self.Q.to(theta.dtype).T

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest point on the torus.  (N, D) -> (N, D)"""
        return self.embed(*self.angles(x))

    def _shortest(self, a: torch.Tensor, b: torch.Tensor, n_fine: int = 64) -> torch.Tensor:
        """Fine discrete surface geodesic between two points, in R^3.  (D,), (D,) -> (n_fine + 1, 3)"""
        import numpy as np
        from scipy.optimize import minimize

        big, small = self.major, self.minor

        def points(ang):  # (n, 2) -> (n, 3), d/dtheta (n, 3), d/dphi (n, 3)
            th, ph = ang[:, 0], ang[:, 1]
            ring = big + small * np.cos(ph)
            p = np.stack((ring * np.cos(th), ring * np.sin(th), small * np.sin(ph)), 1)
            dth = np.stack((-ring * np.sin(th), ring * np.cos(th), 0 * th), 1)
            dph = np.stack((-small * np.sin(ph) * np.cos(th), -small * np.sin(ph) * np.sin(th), small * np.cos(ph)), 1)
            return p, dth, dph

        def solve(start, end, n_seg, init):
            def energy(flat):
                # E = n sum_i |X_{i+1} - X_i|^2 over the curve; dE/d(angles) by the chain rule
                ang = np.concatenate((start[None], flat.reshape(-1, 2), end[None]))  # (n_seg + 1, 2)
                p, dth, dph = points(ang)
                d = p[1:] - p[:-1]  # (n_seg, 3)
                gp = 2 * n_seg * (d[:-1] - d[1:])  # dE/dX_i for interior i, (n_seg - 1, 3)
                grad = np.stack(((gp * dth[1:-1]).sum(1), (gp * dph[1:-1]).sum(1)), 1)
                return n_seg * float((d * d).sum()), grad.reshape(-1)

            res = minimize(energy, init.reshape(-1), jac=True, method="L-BFGS-B",
                           options={"maxiter": 5000, "gtol": 1e-9})
            return np.concatenate((start[None], res.x.reshape(-1, 2), end[None]))  # (n_seg + 1, 2)

        (ta, pa), (tb, pb) = (tuple(float(z[0]) for z in self.angles(p.reshape(1, -1))) for p in (a, b))
        best, best_len = None, math.inf
        for dt in (-2 * math.pi, 0.0, 2 * math.pi):  # the lifts of b's angles within pi + 0.25 of a's
            for dp in (-2 * math.pi, 0.0, 2 * math.pi):
                start, end = np.array([ta, pa]), np.array([tb + dt, pb + dp])
                if np.abs(end - start).max() > math.pi + 0.25:
                    continue
                ang = np.stack((start, end))  # coarse to fine: 12 segments, then n_fine
                for n_seg in (12, n_fine):
                    s_old, s_new = np.linspace(0, 1, len(ang)), np.linspace(0, 1, n_seg + 1)
                    init = np.stack([np.interp(s_new, s_old, ang[:, j]) for j in range(2)], 1)[1:-1]
                    ang = solve(start, end, n_seg, init)
                pts = points(ang)[0]
                length = float(np.linalg.norm(pts[1:] - pts[:-1], axis=1).sum())
                if length < best_len:
                    best, best_len = pts, length
        return torch.from_numpy(best)

    def geodesic(self, a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
        """Shortest surface geodesic from proj(a) to proj(b), n points evenly spaced by arc length.  -> (n, D)

        Numerical: the discrete Euclidean energy of a 64-segment curve constrained to the torus (angle coordinates)
        minimised by L-BFGS-B (coarse to fine, from 12 segments) from the straight line in angle space, for each lift
        of b's angles within pi + 0.25 of a's (one to four candidates); the shortest wins. A local method: the result
        is the shortest of those candidates' local minima, which can miss a geodesic that winds away from the straight
        line in angle space (e.g. through the inner equator for points far apart in theta).
        """
        fine = self._shortest(a, b)  # (n_fine + 1, 3)
        seg = (fine[1:] - fine[:-1]).norm(dim=-1)
        arc = torch.cat((torch.zeros(1, dtype=seg.dtype), seg.cumsum(0)))  # (n_fine + 1,)
        target = torch.linspace(0, float(arc[-1]), n, dtype=arc.dtype)
        idx = torch.searchsorted(arc, target).clamp(1, len(arc) - 1)
        w = ((target - arc[idx - 1]) / (arc[idx] - arc[idx - 1]).clamp_min(1e-300))[:, None]
        pts = (1 - w) * fine[idx - 1] + w * fine[idx]  # (n, 3)
        return pts @ self.Q.T

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Surface geodesic distance (numerical, see :meth:`geodesic`).  (N, D), (N, D) -> (N,)"""
        out = []
        for pa, pb in zip(a.reshape(-1, self.ambient), b.reshape(-1, self.ambient), strict=True):
            fine = self._shortest(pa, pb)
            out.append(float((fine[1:] - fine[:-1]).norm(dim=-1).sum()))
        return torch.tensor(out, dtype=torch.float64)

    def sample(self, num: int, *, seed: int = 0, noisy: bool = False) -> torch.Tensor:
        """``num`` points uniform (surface measure) on the torus, by rejection on phi (``noisy``: from p_sigma).

        -> (num, D) float64
        """
        g = torch.Generator().manual_seed(int(seed))
        theta = 2 * math.pi * torch.rand(num, generator=g, dtype=torch.float64)
        phi = torch.empty(0, dtype=torch.float64)
        while phi.numel() < num:
            cand = 2 * math.pi * torch.rand(2 * num, generator=g, dtype=torch.float64)
            keep = torch.rand(2 * num, generator=g, dtype=torch.float64) * (self.major + self.minor)
            phi = torch.cat((phi, cand[keep < self.major + self.minor * torch.cos(cand)]))
        y = self.embed(theta, phi[:num])
        if noisy:
            y = y + self.sigma * torch.randn(num, self.ambient, generator=g, dtype=torch.float64)
        return y


def torus(
    ambient: int = 3, *, major: float = 1.0, minor: float = 0.4, sigma: float = 0.1, seed: int | None = None
) -> SmoothedTorus:
    """Noise-smoothed uniform torus in R^3 embedded in R^ambient (see :class:`SmoothedTorus`)."""
    return SmoothedTorus(ambient=ambient, major=major, minor=minor, sigma=sigma, seed=seed)
