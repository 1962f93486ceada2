"""Gradio values -> checked Python values: images, mask editors, point lists, numbers, and the shared settings.

Every function raises ``InputError`` with a message that names the input and says what is accepted; the tabs' request
dataclasses are built from these.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pipeline import images, validate
from pipeline.errors import InputError
from ui.config import LOCAL_LIMITS, MAX_SOURCE_CHARS, Limits

Point = tuple[float, float]

#: Largest seed (the seed box's maximum).
MAX_SEED = 2**31 - 1


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
    try:
        return images.to_uint8_rgb(value, name=name)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, Image.DecompressionBombError):  # e.g. a file cut off after its header
        raise InputError(f"{name} is not a readable image file (PNG, JPEG, WebP, BMP, TIFF)") from None


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
    layers = value.get("layers") or []
    if not isinstance(layers, (list, tuple)):
        raise InputError(f"the mask layers on {name} must be a list of images")
    layers = [ly for ly in layers if ly is not None]
    if not need_mask:
        return image, None
    if not layers:
        raise InputError(f"the mask on {name} is empty: paint over the region with the brush")
    union = np.zeros(image.shape[:2], dtype=bool)
    for layer in layers:
        try:
            arr = np.asarray(Image.open(layer)) if isinstance(layer, (str, os.PathLike)) else np.asarray(layer)
        except (OSError, ValueError, Image.DecompressionBombError):
            raise InputError(f"a mask layer on {name} is not a readable image") from None
        if arr.dtype == object or arr.ndim not in (2, 3):
            raise InputError(f"a mask layer on {name} must be an image, got an array of shape {arr.shape}")
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


#: Longest points text accepted (the views use the last two points).
MAX_POINTS_CHARS = 200


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters (a 5,000-character value is not echoed back)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}…{text[-3:]} ({len(text)} characters)"


def parse_points(text: str | None) -> list[Point]:
    """``"x1,y1; x2,y2"`` (pixels of the input image) -> [(x1, y1), (x2, y2)]; empty text gives []. Coordinates must be
    finite (the views clamp them to the image)."""
    if text is not None and not isinstance(text, str):
        raise InputError(f"points must be text like 'x1,y1; x2,y2' (pixels), got {shown(text)}")
    if len(text or "") > MAX_POINTS_CHARS:
        raise InputError(f"points must be at most {MAX_POINTS_CHARS} characters like 'x1,y1; x2,y2' (pixels), got "
                         f"{len(text)} characters")
    points = []
    for part in re.split(r"[;\n]+", text or ""):
        if not part.strip():
            continue
        nums = re.split(r"[,\s]+", part.strip().strip("()"))
        try:
            x, y = (float(n) for n in nums if n)
        except ValueError:
            raise InputError(f"points must look like 'x1,y1; x2,y2' (pixels); could not read {shown(part.strip())}") \
                from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InputError(f"points must be finite pixel coordinates like 'x1,y1; x2,y2'; got {shown(part.strip())}")
        points.append((x, y))
    return points


def format_points(points: list[Point]) -> str:
    """The inverse of :func:`parse_points`, to whole pixels."""
    return "; ".join(f"{x:.0f},{y:.0f}" for x, y in points)


def _as_number(value: Any) -> Any:
    """Numbers as they are, numeric text parsed (``"nan"`` parses, and is refused by the checks); anything else
    unchanged, for the checks to refuse."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def whole_number(value: Any, name: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``. Sliders and number boxes send ints or floats (a float must be whole);
    numeric text is read; NaN, infinity, bools, None and other text are refused with a message naming ``name``."""
    v = _as_number(value)
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        v = int(v)
    try:
        return validate.check_int(name, v, lo, hi)
    except InputError:
        raise InputError(f"{name} must be a whole number in [{lo}, {hi}], got {shown(value)}") from None


def number(value: Any, name: str, lo: float, hi: float) -> float:
    """``value`` as a finite float in ``[lo, hi]``; NaN, infinity, bools, None and text that is not a number are
    refused with a message naming ``name`` and the range."""
    try:
        return validate.check_float(name, _as_number(value), lo, hi)
    except InputError:
        raise InputError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {shown(value)}") from None


def choice(value: Any, name: str, choices: tuple) -> Any:
    """``value`` if it is one of ``choices`` (a message naming ``name`` and the choices otherwise)."""
    try:
        return validate.check_choice(name, value, choices)
    except InputError:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}; got {shown(value)}") from None


def flag(value: Any, name: str) -> bool:
    """A checkbox's value: True or False."""
    try:
        return bool(validate.check_bool(name, value))
    except InputError:
        raise InputError(f"{name} must be true or false, got {shown(value)}") from None


def model_source(value: Any) -> str | None:
    """The model dropdown's value: None (the page's model) or a source text of at most ``MAX_SOURCE_CHARS``
    printable characters (hosted mode then accepts only the offered names: ``ModelManager.resolve``)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"model must be a model name or source (text), got {shown(value)}")
    if len(value) > MAX_SOURCE_CHARS:
        raise InputError(f"model source must be at most {MAX_SOURCE_CHARS} characters, got {len(value)}")
    if not value.isprintable():
        raise InputError(f"model source must be printable text, got {shown(value)}")
    return value


@dataclass(frozen=True)
class Settings:
    """The shared settings of every model-bound tab: model choice (a dropdown name), backend, steps and seed."""

    model: str | None
    backend: str
    steps: int
    seed: int

    @classmethod
    def from_gradio(cls, model: Any, backend: Any, steps: Any, seed: Any, limits: Limits = LOCAL_LIMITS) -> Settings:
        """The settings widgets' values, checked against ``limits`` (the backends and steps this app offers). The
        model choice is resolved by ``ModelManager.resolve``; an empty seed box means seed 0."""
        model = model_source(model)
        backend = choice("auto" if backend is None else backend, "backend", limits.backends)
        steps = whole_number(steps, "steps", *limits.steps)
        seed = whole_number(seed if seed is not None else 0, "seed", 0, MAX_SEED)
        return cls(model, backend, steps, seed)
