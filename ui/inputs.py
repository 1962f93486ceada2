"""Gradio values -> checked Python values: images, mask editors, point lists, numbers, and the shared settings.

Every function raises ``InputError`` with a message that names the input and says what is accepted; the tabs' request
dataclasses are built from these.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pipeline import images
from pipeline.errors import InputError
from ui.config import BACKENDS

Point = tuple[float, float]


def read_image(value: Any, name: str = "image") -> np.ndarray:
    """An image input's value (a file path, an array or a PIL image) -> uint8 (H, W, 3).

    Size is checked from the header before decoding, so a huge file fails fast. RGBA is flattened on white,
    grayscale repeated to RGB, 16-bit scaled to 8-bit (``pipeline.images.to_uint8_rgb``).
    """
    if value is None or (isinstance(value, str) and not value):
        raise InputError(f"{name} is missing: upload an image")
    if isinstance(value, (str, os.PathLike)):
        try:
            with Image.open(value) as im:
                w, h = im.size
                if min(w, h) < images.MIN_SIDE or max(w, h) > images.MAX_SIDE:
                    raise InputError(f"{name} is {w}x{h} pixels; each side must lie in "
                                     f"[{images.MIN_SIDE}, {images.MAX_SIDE}]")
                if "A" in im.getbands() or "transparency" in im.info:
                    im = im.convert("RGBA")
                    value = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im).convert("RGB")
        except (OSError, Image.DecompressionBombError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"{name} is not a readable image file (PNG, JPEG, WebP, BMP, TIFF)") from None
    return images.to_uint8_rgb(value, name=name)


def read_editor(value: Any, name: str = "image", *, need_mask: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """An ImageEditor value ``{"background", "layers", "composite"}`` -> (uint8 image (H, W, 3), bool mask (H, W)).

    The mask is the union over the brush layers of ``alpha > 0`` (layers without alpha: any non-zero channel).
    """
    if value is None:
        raise InputError(f"{name} is missing: upload an image and paint over the region")
    if not isinstance(value, dict):  # a bare image (e.g. from a script): no mask
        value = {"background": value, "layers": [], "composite": None}
    background = value.get("background")
    if background is None:
        background = value.get("composite")
    image = read_image(background, name)
    layers = [ly for ly in (value.get("layers") or []) if ly is not None]
    if not need_mask:
        return image, None
    if not layers:
        raise InputError(f"the mask on {name} is empty: paint over the region with the brush")
    union = np.zeros(image.shape[:2], dtype=bool)
    for layer in layers:
        arr = np.asarray(Image.open(layer)) if isinstance(layer, (str, os.PathLike)) else np.asarray(layer)
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[..., 3]
        elif arr.ndim == 3:
            arr = arr.max(axis=2)
        if arr.shape != union.shape:
            raise InputError(f"a mask layer on {name} is {arr.shape[1]}x{arr.shape[0]} but the image is "
                             f"{union.shape[1]}x{union.shape[0]}; draw the mask on the image itself")
        union |= arr > 0
    mask = images.to_mask(union, shape=image.shape[:2], name=f"the mask on {name}")
    return image, mask


def parse_points(text: str | None) -> list[Point]:
    """``"x1,y1; x2,y2"`` (pixels of the input image) -> [(x1, y1), (x2, y2)]; empty text gives []."""
    points = []
    for part in re.split(r"[;\n]+", text or ""):
        if not part.strip():
            continue
        nums = re.split(r"[,\s]+", part.strip().strip("()"))
        try:
            x, y = (float(n) for n in nums if n)
        except ValueError:
            raise InputError(f"points must look like 'x1,y1; x2,y2' (pixels); could not read {part.strip()!r}") \
                from None
        points.append((x, y))
    return points


def format_points(points: list[Point]) -> str:
    """The inverse of :func:`parse_points`, to whole pixels."""
    return "; ".join(f"{x:.0f},{y:.0f}" for x, y in points)


def whole_number(value: Any, name: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]`` (sliders and number boxes may send floats or strings)."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number in [{lo}, {hi}], got {value!r}") from None
    if not lo <= v <= hi:
        raise InputError(f"{name} must lie in [{lo}, {hi}], got {v}")
    return v


def number(value: Any, name: str) -> float:
    """``value`` as a float."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class Settings:
    """The shared settings of every model-bound tab: model choice (a dropdown name), backend, steps and seed."""

    model: str | None
    backend: str
    steps: int
    seed: int

    @classmethod
    def from_gradio(cls, model: Any, backend: Any, steps: Any, seed: Any) -> Settings:
        """The settings widgets' values, checked. The model choice is resolved by ``ModelManager.resolve``."""
        steps = whole_number(steps, "steps", 1, 1000)
        seed = whole_number(seed if seed is not None else 0, "seed", 0, 2**31 - 1)
        backend = backend or "auto"
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        return cls(model if model is None else str(model), backend, steps, seed)
