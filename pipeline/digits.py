"""Rotated handwritten digits: real data for the geodesic benchmark (seed 001's Rotated MNIST, made small).

The 1,797 8 x 8 digits that ship with scikit-learn (``sklearn.datasets.load_digits``; 0..16 grey levels) are
upsampled to a ``DIGIT_INNER``-pixel square, padded to ``size`` pixels (black border, so a rotation keeps the strokes)
and rotated about the centre by an angle in degrees (bilinear, :func:`skimage.transform.rotate`). Images are grey,
white strokes on black, repeated over 3 channels so the project's RGB models and trainer take them unchanged.

Splits are by digit index, never by angle: ``DIGIT_SPLITS["train"]`` (the first 1,500) trains the model,
``"heldout"`` (the last 297) is kept for benchmarks. The training pool pairs training digits with random angles
(uniform in [0, 360)), drawn from a seeded generator, so a pool is reproducible from its seed and size.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import InputError

#: Digit indices of each split (load_digits has 1,797 images).
DIGIT_SPLITS: dict[str, range] = {"train": range(0, 1500), "heldout": range(1500, 1797)}

#: Side in pixels of the upsampled digit before padding (the canvas is ``size``; 12 of 16 leaves a 2-pixel border).
DIGIT_INNER = {16: 12, 32: 24}


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 in [0, 1], labels (1797,) int)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images / 16.0, d.target.astype(int)


def digit_label(index: int) -> int:
    """The class (0-9) of digit ``index``."""
    return int(_digits()[1][_check_index(index)])


def _check_index(index: int) -> int:
    if not 0 <= int(index) < 1797:
        raise InputError(f"digit index must lie in [0, 1797), got {index}")
    return int(index)


def _check_size(size: int) -> int:
    if size not in DIGIT_INNER:
        raise InputError(f"size must be one of {sorted(DIGIT_INNER)}, got {size}")
    return size


@functools.lru_cache(maxsize=4096)
def _canvas(index: int, size: int) -> np.ndarray:
    """Digit ``index`` upsampled and padded, unrotated.  -> (size, size) float64 in [0, 1]."""
    from skimage.transform import resize

    inner = DIGIT_INNER[size]
    up = resize(_digits()[0][index], (inner, inner), order=3, mode="edge", anti_aliasing=False)
    out = np.zeros((size, size))
    p = (size - inner) // 2
    out[p : p + inner, p : p + inner] = np.clip(up, 0.0, 1.0)
    return out


def rotated_digit(index: int, angle: float, *, size: int = 16) -> np.ndarray:
    """Digit ``index`` rotated by ``angle`` degrees (counter-clockwise) about the centre.  -> (size, size, 3) uint8"""
    from skimage.transform import rotate

    img = rotate(_canvas(_check_index(index), _check_size(size)), float(angle), order=1, mode="constant", cval=0.0)
    return np.repeat(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)


def rotation_path(index: int, angle_a: float, angle_b: float, num: int, *, size: int = 16) -> list[np.ndarray]:
    """``num`` frames of digit ``index`` at angles evenly spaced from ``angle_a`` to ``angle_b`` (both included)."""
    return [rotated_digit(index, a, size=size) for a in np.linspace(angle_a, angle_b, num)]


def make_digit_pool(n: int, *, size: int = 16, seed: int = 0, split: str = "train") -> np.ndarray:
    """``n`` training images: digits of ``split`` drawn uniformly with angles uniform in [0, 360), from ``seed``.
    -> (n, size, size, 3) uint8"""
    if split not in DIGIT_SPLITS:
        raise InputError(f"split must be one of {sorted(DIGIT_SPLITS)}, got {split!r}")
    rng = np.random.default_rng(seed)
    r = DIGIT_SPLITS[split]
    idx = rng.integers(r.start, r.stop, n)
    ang = rng.uniform(0.0, 360.0, n)
    return np.stack([rotated_digit(int(i), float(a), size=size) for i, a in zip(idx, ang, strict=True)])
