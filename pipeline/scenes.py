"""Procedural "scenes": smooth or textured backgrounds with 1-3 coloured shapes, with ground truth.

Every scene is a pure function of its integer seed (a ``numpy.random.Generator`` seeded by it), so a seed names a
scene forever. Besides the image, a :class:`Scene` carries ground truth the quality benchmarks use: the visible mask of
each object, the scene re-rendered without each object, the background alone, and the shape parameters.

Rendering (all in [0, 1] floats, quantised to uint8 at the end):

- The background ``B`` and the coverage ``a_i`` of each shape are evaluated on a grid ``SUPERSAMPLE`` times finer and
  averaged over each pixel's ``SUPERSAMPLE^2`` sub-samples (anti-aliasing).
- Shapes are composited in order with the "over" operator: ``I <- a_i c_i + (1 - a_i) I``, starting from ``I = B``.
- The visible coverage of object i is ``v_i = a_i prod_{j > i} (1 - a_j)``; its mask is ``v_i > 0`` (the object's
  anti-aliased support, minus what later objects cover completely).
- ``removed[i]`` is the same composite with object i skipped.

Ground-truth invariant (exact, tested): every pixel where ``removed[i]`` differs from ``image`` lies inside
``masks[i]``. Where ``v_i = 0`` either ``a_i = 0`` (the over step is the identity, bit for bit) or some later
``a_j = 1`` (which overwrites the pixel exactly), so both composites agree there. The converse does not hold: a masked
pixel may keep its value when the object's colour matches what lies under it.

Families (:data:`FAMILIES`): ``"smooth"`` (the default; gradients, horizons, low-frequency texture, solid shapes: the
embedded model's training data) and ``"textured"`` (a texture background and mostly textured shapes, from an
independent random stream of the same seed: where removal must fill a hole with structure, not a smooth blend).

Seed splits (disjoint; training uses only ``TRAIN_SEEDS``):

| split        | seeds                        | use                                        |
|--------------|------------------------------|--------------------------------------------|
| ``TRAIN``    | [0, 10_000_000)              | training data of the embedded model        |
| ``TUNING``   | [10_000_000, 11_000_000)     | choosing hyper-parameters, statistics, ... |
| ``HELDOUT``  | [20_000_000, 21_000_000)     | benchmarks and reported numbers only       |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InputError
from .progress import ProgressFn, report
from .validate import check_int

#: Seeds of the training split. The embedded model is trained on scenes from this range only.
TRAIN_SEEDS = range(0, 10_000_000)
#: Seeds for tuning (hyper-parameters, saliency statistics, thresholds). Never trained on, never reported.
TUNING_SEEDS = range(10_000_000, 11_000_000)
#: Held-out seeds: benchmarks and reported figures only. Never trained or tuned on.
HELDOUT_SEEDS = range(20_000_000, 21_000_000)
#: The splits by name.
SPLITS: dict[str, range] = {"train": TRAIN_SEEDS, "tuning": TUNING_SEEDS, "heldout": HELDOUT_SEEDS}

#: Sub-samples per pixel side for anti-aliasing (SUPERSAMPLE^2 samples per pixel).
SUPERSAMPLE = 4
#: Shape kinds, in the order ``params["kind"]`` may name them.
SHAPE_KINDS = ("disk", "ellipse", "square", "triangle", "ring", "bar")
#: Background kinds of the ``"smooth"`` family.
BACKGROUND_KINDS = ("gradient", "horizon", "texture")
#: Scene families: ``"smooth"`` (the default: smooth backgrounds, solid shapes; the embedded model's training data)
#: and ``"textured"`` (texture backgrounds and mostly textured shapes: holes must be filled with structure).
FAMILIES = ("smooth", "textured")
#: Texture kinds of the ``"textured"`` family, for backgrounds and object fills.
TEXTURE_KINDS = ("stripes", "checks", "dots", "noise", "wood", "marble")
_MIN_SIZE = 8


# --------------------------------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    """One rendered scene and its ground truth. Arrays are (H, W[, 3]); colour values uint8 RGB."""

    seed: int
    image: np.ndarray  # (H, W, 3) uint8
    background: np.ndarray  # (H, W, 3) uint8, no objects
    masks: list[np.ndarray]  # per object, (H, W) bool: visible anti-aliased support (v_i > 0)
    coverage: list[np.ndarray]  # per object, (H, W) float32 in [0, 1]: visible coverage v_i
    removed: list[np.ndarray]  # per object, (H, W, 3) uint8: the scene rendered without object i
    params: list[dict[str, Any]]  # per object: kind, center (x, y) and radius in pixels, angle (rad), color (RGB 0-1)
    background_params: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def num_objects(self) -> int:
        return len(self.params)


# --------------------------------------------------------------------------------------------------------------------
# Random specification (seed -> parameters)
# --------------------------------------------------------------------------------------------------------------------
def _random_color(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour in [0, 1], (3,)."""
    return rng.uniform(0.0, 1.0, size=3)


def _sample_background(rng: np.random.Generator) -> dict[str, Any]:
    """Background parameters: kind, colours, gradient direction; all geometry in units of the image side."""
    kind = BACKGROUND_KINDS[int(rng.choice(len(BACKGROUND_KINDS), p=[0.4, 0.35, 0.25]))]
    p: dict[str, Any] = {
        "kind": kind,
        "c0": _random_color(rng),
        "c1": _random_color(rng),
        "angle": float(rng.uniform(0, 2 * np.pi)),  # gradient direction
    }
    if kind == "horizon":
        p["c2"] = _random_color(rng)
        p["c3"] = _random_color(rng)
        p["level"] = float(rng.uniform(0.3, 0.7))  # horizon height (fraction of the side)
        p["tilt"] = float(rng.uniform(-0.35, 0.35))  # horizon slope
    elif kind == "texture":
        k = 3
        p["freqs"] = rng.uniform(-3.0, 3.0, size=(k, 2))  # cycles per image side
        p["phases"] = rng.uniform(0, 2 * np.pi, size=k)
        p["amps"] = rng.uniform(0.3, 1.0, size=k) / k
        p["c2"] = _random_color(rng)
    return p


def _sample_shape(rng: np.random.Generator, size: int, bg_mean: np.ndarray) -> dict[str, Any]:
    """Shape parameters in pixels: kind, center (x, y), radius, angle, colour (and aspect / inner radius)."""
    kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    color = _random_color(rng)
    for _ in range(8):  # keep objects visible against the background's mean colour
        if np.abs(color - bg_mean).sum() > 0.45:
            break
        color = _random_color(rng)
    p: dict[str, Any] = {
        "kind": kind,
        "center": (float(rng.uniform(0.15, 0.85) * size), float(rng.uniform(0.15, 0.85) * size)),
        "radius": float(rng.uniform(0.10, 0.28) * size),
        "angle": float(rng.uniform(0, 2 * np.pi)),
        "color": tuple(float(c) for c in color),
    }
    if kind == "ellipse":
        p["aspect"] = float(rng.uniform(0.35, 0.75))
    elif kind == "ring":
        p["inner"] = float(rng.uniform(0.4, 0.65))
    elif kind == "bar":
        p["aspect"] = float(rng.uniform(0.2, 0.4))
    return p


def _sample_texture(rng: np.random.Generator, *, lo: float, hi: float) -> dict[str, Any]:
    """Texture parameters: kind, two colours, orientation, frequency in cycles per unit (the image side for a
    background, the object's diameter for a fill) drawn log-uniformly in [lo, hi], phase, and per-kind extras."""
    kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    c0 = _random_color(rng)
    c1 = _random_color(rng)
    for _ in range(8):  # the two colours differ visibly, so the texture carries structure
        if np.abs(c0 - c1).sum() > 0.6:
            break
        c1 = _random_color(rng)
    p: dict[str, Any] = {"kind": kind, "c0": c0, "c1": c1, "angle": float(rng.uniform(0, np.pi)),
                         "freq": float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                         "phase": float(rng.uniform(0, 2 * np.pi)), "sharp": float(rng.uniform(1.0, 6.0))}
    if kind == "dots":
        p["dot"] = float(rng.uniform(0.2, 0.4))  # dot radius as a fraction of the lattice period
    elif kind in ("noise", "wood", "marble"):
        k = 16
        ang = rng.uniform(0, 2 * np.pi, size=k)
        rad = rng.uniform(0.5, 1.0, size=k)  # band: half to the full frequency
        p["waves"] = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)  # (k, 2), in units of freq
        p["wave_phases"] = rng.uniform(0, 2 * np.pi, size=k)
        if kind == "wood":
            p["origin"] = rng.uniform(-0.6, 0.6, size=2)
            p["turbulence"] = float(rng.uniform(0.05, 0.15))
        elif kind == "marble":
            p["turbulence"] = float(rng.uniform(0.8, 2.0))
    return p


def _sample_textured_spec(seed: int, size: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """seed -> the ``"textured"`` family's parameters: a texture background (2-10 cycles per side) and 1-3 shapes,
    70 % of them filled with their own texture (1.5-4 cycles per diameter) and the rest solid. An independent stream
    ``[seed, 2]``, so the two families of one seed are unrelated scenes."""
    rng = np.random.default_rng([seed, 2])
    tex = _sample_texture(rng, lo=2.0, hi=10.0)
    bg = {"kind": "textured", "texture": tex, "c0": tex["c0"], "c1": tex["c1"]}
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    bg_mean = (np.asarray(bg["c0"]) + np.asarray(bg["c1"])) / 2
    shapes = []
    for _ in range(n):
        p = _sample_shape(rng, size, bg_mean)
        if rng.uniform() < 0.7:
            p["fill"] = _sample_texture(rng, lo=1.5, hi=4.0)
            p["color"] = tuple(float(c) for c in (p["fill"]["c0"] + p["fill"]["c1"]) / 2)
        shapes.append(p)
    return bg, shapes


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise InputError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    return family


def _sample_spec(seed: int, size: int, family: str = "smooth") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """seed -> (background parameters, shape parameters) of ``family``. Deterministic."""
    if _check_family(family) == "textured":
        return _sample_textured_spec(seed, size)
    rng = np.random.default_rng(seed)
    bg = _sample_background(rng)
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    bg_mean = (np.asarray(bg["c0"]) + np.asarray(bg["c1"])) / 2
    shapes = [_sample_shape(rng, size, bg_mean) for _ in range(n)]
    return bg, shapes


# --------------------------------------------------------------------------------------------------------------------
# Rendering (parameters -> float images)
# --------------------------------------------------------------------------------------------------------------------
def _fine_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample centres in pixel units: two (S*size, S*size) arrays x (columns) and y (rows)."""
    n = SUPERSAMPLE * size
    c = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE
    return np.meshgrid(c, c)  # x varies along columns


def _box_average(a: np.ndarray) -> np.ndarray:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks.  (S*H, S*W, ...) -> (H, W, ...)."""
    s = SUPERSAMPLE
    h, w = a.shape[0] // s, a.shape[1] // s
    return a.reshape(h, s, w, s, *a.shape[2:]).mean(axis=(1, 3))


def _render_background(p: dict[str, Any], x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Background colour at the sub-samples, then box-averaged.  -> (H, W, 3) float32 in [0, 1]."""
    u, v = x / size - 0.5, y / size - 0.5  # centred unit coordinates
    if p["kind"] == "textured":
        return _box_average(_texture(p["texture"], u, v))
    d = np.cos(p["angle"]) * u + np.sin(p["angle"]) * v  # in [-0.71, 0.71]
    g = np.clip(d / 1.42 + 0.5, 0, 1)[..., None]  # gradient parameter in [0, 1]
    c0, c1 = np.asarray(p["c0"], np.float32), np.asarray(p["c1"], np.float32)
    out = (1 - g) * c0 + g * c1  # (S*H, S*W, 3)
    if p["kind"] == "horizon":
        below = (v > (p["level"] - 0.5) + p["tilt"] * u)[..., None]
        c2, c3 = np.asarray(p["c2"], np.float32), np.asarray(p["c3"], np.float32)
        gv = np.clip(v + 0.5, 0, 1)[..., None]
        ground = (1 - gv) * c2 + gv * c3
        out = np.where(below, ground, out)
    elif p["kind"] == "texture":
        f = np.zeros_like(u)
        for (fx, fy), ph, a in zip(p["freqs"], p["phases"], p["amps"], strict=True):
            f += a * np.cos(2 * np.pi * (fx * u + fy * v) + ph)
        t = np.clip(0.5 + f, 0, 1)[..., None]
        out = (1 - 0.5 * t) * out + 0.5 * t * np.asarray(p["c2"], np.float32)
    return _box_average(out.astype(np.float32))


def _texture(p: dict[str, Any], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A texture's colour at coordinates (u, v) in its unit (see :func:`_sample_texture`).  -> (..., 3) float32.

    Each kind is a field ``t`` in [0, 1] mixing the two colours: stripes and marble a wave along ``angle`` (marble
    bent by band-limited noise), checks the product of two waves, dots a lattice of disks, noise a sum of 16 random
    waves in the band [freq / 2, freq], wood rings around an origin bent by that noise. ``sharp`` steepens the
    profile of the waves (1: sinusoidal, 6: nearly square); anti-aliasing comes from the supersampled grid."""
    ca, sa = np.cos(p["angle"]), np.sin(p["angle"])
    a, b = ca * u + sa * v, -sa * u + ca * v  # texture frame
    f, ph, kind = p["freq"], p["phase"], p["kind"]

    def wave(z):
        return np.tanh(p["sharp"] * z) / np.tanh(p["sharp"])

    def noise():
        n = np.zeros_like(u)
        for (kx, ky), q in zip(p["waves"], p["wave_phases"], strict=True):
            n += np.cos(2 * np.pi * f * (kx * a + ky * b) + q)
        return n / np.sqrt(len(p["wave_phases"]) / 2)  # unit variance

    if kind == "stripes":
        t = 0.5 + 0.5 * wave(np.cos(2 * np.pi * f * a + ph))
    elif kind == "checks":
        t = 0.5 + 0.5 * wave(np.sin(2 * np.pi * f * a + ph) * np.sin(2 * np.pi * f * b + ph))
    elif kind == "dots":
        da, db = a * f - np.round(a * f), b * f - np.round(b * f)  # offset from the nearest lattice point
        t = (da * da + db * db <= p["dot"] ** 2).astype(np.float32)
    elif kind == "noise":
        t = 0.5 + 0.5 * wave(0.5 * noise())
    elif kind == "wood":
        ou, ov = p["origin"]
        r = np.sqrt((u - ou) ** 2 + (v - ov) ** 2)
        t = 0.5 + 0.5 * wave(np.cos(2 * np.pi * f * (r + p["turbulence"] / f * noise()) + ph))
    elif kind == "marble":
        t = 0.5 + 0.5 * wave(np.sin(2 * np.pi * f * a + p["turbulence"] * noise() + ph))
    else:
        raise InputError(f"unknown texture kind {kind!r}; accepted: {', '.join(TEXTURE_KINDS)}")
    t = np.clip(t, 0, 1)[..., None].astype(np.float32)
    return (1 - t) * np.asarray(p["c0"], np.float32) + t * np.asarray(p["c1"], np.float32)


def _render_fill(p: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A shape's colour: its solid ``color`` (3,), or its texture fill box-averaged (H, W, 3), in the shape's own frame
    (centre, angle, unit = diameter), so that the texture moves and turns with the shape."""
    if "fill" not in p:
        return np.asarray(p["color"], np.float32)
    cx, cy = p["center"]
    ca, sa = np.cos(p["angle"]), np.sin(p["angle"])
    dx, dy = (x - cx) / (2 * p["radius"]), (y - cy) / (2 * p["radius"])
    return _box_average(_texture(p["fill"], ca * dx + sa * dy, -sa * dx + ca * dy))


def _shape_inside(p: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Point-in-shape test at the sub-samples.  -> (S*H, S*W) bool."""
    cx, cy = p["center"]
    r = p["radius"]
    ca, sa = np.cos(p["angle"]), np.sin(p["angle"])
    dx, dy = x - cx, y - cy
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # shape frame (rotated by -angle)
    kind = p["kind"]
    if kind == "disk":
        return u * u + v * v <= r * r
    if kind == "ellipse":
        return (u / r) ** 2 + (v / (r * p["aspect"])) ** 2 <= 1.0
    if kind == "square":
        s = 0.8 * r
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    if kind == "bar":
        return (np.abs(u) <= r) & (np.abs(v) <= r * p["aspect"])
    if kind == "ring":
        q = u * u + v * v
        return (q <= r * r) & (q >= (r * p["inner"]) ** 2)
    if kind == "triangle":  # equilateral, circumradius r: three half-planes at distance r/2 from the centre
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            inside &= np.cos(a) * u + np.sin(a) * v <= r / 2
        return inside
    raise InputError(f"unknown shape kind {kind!r}; accepted: {', '.join(SHAPE_KINDS)}")


def _coverage(p: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage a_i of one shape.  -> (H, W) float32 in [0, 1] (exactly 0 or 1 off edges).

    Only the pixels of the shape's bounding box (centre +- 1.2 radius, which holds every kind) are tested.
    """
    s = SUPERSAMPLE
    h, w = x.shape[0] // s, x.shape[1] // s
    cx, cy = p["center"]
    ext = 1.2 * p["radius"] + 1
    c0, c1 = max(int(np.floor(cx - ext)), 0), min(int(np.ceil(cx + ext)), w)
    r0, r1 = max(int(np.floor(cy - ext)), 0), min(int(np.ceil(cy + ext)), h)
    out = np.zeros((h, w), np.float32)
    if r1 > r0 and c1 > c0:
        box = (slice(s * r0, s * r1), slice(s * c0, s * c1))
        out[r0:r1, c0:c1] = _box_average(_shape_inside(p, x[box], y[box]).astype(np.float32))
    return out


def _composite(
    bg: np.ndarray, alphas: Sequence[np.ndarray], colors: Sequence[np.ndarray], skip: int = -1
) -> np.ndarray:
    """Over-composite shapes on the background: I <- a_i c_i + (1 - a_i) I, skipping index ``skip``.  -> (H, W, 3)."""
    img = bg
    for i, (a, c) in enumerate(zip(alphas, colors, strict=True)):
        if i == skip:
            continue
        a3 = a[..., None]
        img = a3 * c + (1 - a3) * img
    return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 with rounding."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render(
    bg_params: dict[str, Any],
    shapes: Sequence[dict[str, Any]],
    *,
    size: int = 32,
    seed: int = -1,
    ground_truth: bool = True,
) -> Scene:
    """Render a scene from explicit parameters (as ``Scene.params`` / ``Scene.background_params`` hold them).

    With ``ground_truth=False`` only ``image`` is filled (the rest are empty lists / the image), for fast datasets.
    """
    size = _check_size(size)
    x, y = _fine_grid(size)
    bg = _render_background(bg_params, x, y, size)
    alphas = [_coverage(p, x, y) for p in shapes]
    colors = [_render_fill(p, x, y) for p in shapes]
    image = _to_uint8(_composite(bg, alphas, colors))
    if not ground_truth:
        return Scene(seed, image, image, [], [], [], [dict(p) for p in shapes], dict(bg_params))
    visible = []
    for i, a in enumerate(alphas):
        v = a.copy()
        for later in alphas[i + 1 :]:
            v *= 1 - later  # v_i = a_i prod_{j>i} (1 - a_j)
        visible.append(v.astype(np.float32))
    return Scene(
        seed=seed,
        image=image,
        background=_to_uint8(bg),
        masks=[v > 0 for v in visible],
        coverage=visible,
        removed=[_to_uint8(_composite(bg, alphas, colors, skip=i)) for i in range(len(shapes))],
        params=[dict(p) for p in shapes],
        background_params=dict(bg_params),
    )


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------
def _check_size(size: int) -> int:
    return check_int("size", size, _MIN_SIZE)


def _check_seed(seed: int) -> int:
    return check_int("seed", seed, 0)


def make_scene(seed: int, *, size: int = 32, family: str = "smooth") -> Scene:
    """The scene named by ``seed`` in ``family`` (:data:`FAMILIES`) at ``size`` x ``size`` pixels, with its ground
    truth. Deterministic in ``seed``.

    Shape geometry and textures scale with ``size``: the same seed gives the same scene at every resolution (a
    texture finer than the pixels averages out at small sizes).
    """
    seed, size = _check_seed(seed), _check_size(size)
    bg, shapes = _sample_spec(seed, size, family)
    return render(bg, shapes, size=size, seed=seed)


#: Rotational symmetry period (radians) of each shape kind: a turn by a multiple of it leaves the shape unchanged.
#: Disks and rings are rotation-invariant (0: any turn is invisible), so :func:`scene_path` translates them.
SYMMETRY_PERIOD = {"disk": 0.0, "ring": 0.0, "ellipse": np.pi, "bar": np.pi, "square": np.pi / 2,
                   "triangle": 2 * np.pi / 3}
_MAX_TURN = 2 * np.pi / 3  # the largest turn drawn for "rotate"


def scene_path(seed: int, num: int, *, size: int = 32, motion: str | None = None, family: str = "smooth"
               ) -> list[Scene]:
    """``num`` frames in which the top object of scene ``seed`` moves or rotates along a parameter s in [0, 1].

    motion: ``"translate"`` (the centre moves in a straight line by 0.25-0.45 of the side, clipped to stay in view;
    where clipping would cut the move below half, the opposite direction is taken if it moves further), ``"rotate"``
    (the object turns by 60-120 degrees), or ``None`` (chosen by the seed). Frame k has s = k / (num - 1).
    The ground-truth frames for geodesic interpolation between the two ends.

    Every path moves visibly: rotation-invariant kinds (disk, ring; ``SYMMETRY_PERIOD`` 0) always translate, and the
    turn of a kind with symmetry period P < 240 degrees is scaled by (P / 2) / 120 degrees, so it stays within
    (0, P / 2] and the last frame never coincides with the first (a square turns by 22.5-45 degrees, a triangle by
    30-60; ellipses and bars keep 60-120). The random draws are the same for every kind, so the scene itself is
    ``make_scene(seed)``, and ellipse and bar rotations and translations not shortened by the border are unchanged.
    ``family``: as :func:`make_scene`; a textured object's fill moves and turns with it.
    """
    seed, size = _check_seed(seed), _check_size(size)
    num = check_int("num", num, 2)
    if motion not in (None, "translate", "rotate"):
        raise InputError(f"motion must be None, 'translate' or 'rotate', got {motion!r}")
    bg, shapes = _sample_spec(seed, size, family)
    rng = np.random.default_rng([seed, 1])  # an independent stream: the scene itself is make_scene(seed)
    top = shapes[-1]
    if motion is None:
        motion = "rotate" if rng.uniform() < 0.5 else "translate"
    period = SYMMETRY_PERIOD[top["kind"]]
    if period == 0.0:
        motion = "translate"
    frames = []
    if motion == "rotate":
        turn = float(rng.uniform(np.pi / 3, _MAX_TURN) * rng.choice([-1, 1]))
        turn *= min(1.0, (period / 2) / _MAX_TURN)  # stay within half a symmetry period
        for s in np.linspace(0, 1, num):
            frames.append(shapes[:-1] + [{**top, "angle": top["angle"] + s * turn}])
    else:
        a = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.25, 0.45) * size
        c0 = np.asarray(top["center"])
        step = dist * np.array([np.cos(a), np.sin(a)])
        c1 = np.clip(c0 + step, 0.15 * size, 0.85 * size)
        back = np.clip(c0 - step, 0.15 * size, 0.85 * size)
        if np.linalg.norm(c1 - c0) < 0.5 * dist and np.linalg.norm(back - c0) > np.linalg.norm(c1 - c0):
            c1 = back  # the clipped move would be short (object near the border, heading out): go the other way
        for s in np.linspace(0, 1, num):
            c = (1 - s) * c0 + s * c1
            frames.append(shapes[:-1] + [{**top, "center": (float(c[0]), float(c[1]))}])
    return [replace(render(bg, f, size=size, seed=seed), background_params={**bg, "motion": motion}) for f in frames]


def make_dataset(
    seeds: Sequence[int] | range, size: int = 32, *, progress: ProgressFn | None = None,
    family: str | Sequence[str] = "smooth",
) -> np.ndarray:
    """Images of the scenes named by ``seeds``.  -> (N, size, size, 3) uint8 (no ground truth: fast).

    ``family``: one of :data:`FAMILIES` for all, or one per seed (a mixture)."""
    size = _check_size(size)
    seeds = list(seeds)
    families = [family] * len(seeds) if isinstance(family, str) else list(family)
    if len(families) != len(seeds):
        raise InputError(f"family: give one name or one per seed ({len(seeds)}), got {len(families)}")
    out = np.empty((len(seeds), size, size, 3), np.uint8)
    for k, (s, fam) in enumerate(zip(seeds, families, strict=True)):
        bg_p, shapes = _sample_spec(_check_seed(s), size, fam)
        out[k] = render(bg_p, shapes, size=size, seed=s, ground_truth=False).image
        if (k + 1) % 1000 == 0 or k + 1 == len(seeds):
            report(progress, k + 1, len(seeds), "rendering scenes")
    return out


def split_seeds(split: str, n: int, *, offset: int = 0) -> range:
    """The first ``n`` seeds of a split after ``offset``: ``split`` in ``SPLITS`` ("train", "tuning", "heldout")."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    r = SPLITS[split]
    if n < 0 or offset < 0 or offset + n > len(r):
        raise InputError(f"split {split!r} has {len(r)} seeds; cannot take {n} after offset {offset}")
    return r[offset : offset + n]


def split_of(seed: int) -> str:
    """Name of the split holding ``seed`` ("train", "tuning", "heldout"), or "none"."""
    for name, r in SPLITS.items():
        if seed in r:
            return name
    return "none"
