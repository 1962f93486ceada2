"""Images and masks in, images out: conversion between what users hand in and model-space tensors.

Accepted images (every route, :func:`to_uint8_rgb`, :func:`load_image`, :func:`image_to_tensor`, gives the same
pixels for the same picture):

- files (paths) and PIL images of any mode. The EXIF orientation is applied first (``ImageOps.exif_transpose``).
  ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` are converted by PIL (``convert("RGB")``);
  16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I``: values in [0, 65535]) is scaled to 8 bits (rounded);
  ``F`` (float grey) must lie in [0, 1]; every mode with alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, or a
  ``transparency`` entry, as in palette PNGs) is composited on white (:data:`ALPHA_BACKGROUND`);
- numpy arrays (H, W), (H, W, 1) (grey), (H, W, 2) (grey + alpha), (H, W, 3) (RGB) or (H, W, 4) (RGBA); dtypes uint8,
  uint16 (scaled, rounded), bool, other integers in [0, 255], floats in [0, 1] (NaN and inf refused). Alpha is
  composited on white, as for PIL images. A 4-channel array is always read as RGBA: a CMYK picture must be handed in
  as a file or a PIL image (its mode says what the channels are; an array cannot);
- torch tensors (3, H, W), (1, H, W), (1, 3, H, W) in [-1, 1] (values outside are clamped; NaN and inf refused).

Transparent pixels are composited on white rather than their alpha dropped: a dropped alpha shows whatever colour
the transparent pixels happen to store (often black, or leftovers of an editor), which is not what the picture
looks like. Images are resized to the model's resolution (Lanczos down, bicubic up) and results resized back to the
input's size, so any input size works within ``MIN_SIDE``..``MAX_SIDE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import InputError
from .validate import check_finite

MIN_SIDE = 8  # smallest accepted image side, pixels
MAX_SIDE = 4096  # largest accepted image side, pixels

#: Colour (uint8 RGB) that transparent pixels are composited on, for every image with alpha (PIL modes with an alpha
#: band or a ``transparency`` entry, (H, W, 2) and (H, W, 4) arrays).
ALPHA_BACKGROUND = (255, 255, 255)

#: PIL modes of 16-bit grey images; their values [0, 65535] are scaled to [0, 255] (``I`` is a 32-bit integer mode,
#: what older Pillow versions and some TIFFs give for 16-bit grey: read as 16-bit, values outside [0, 65535] refused).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

_ORIENTATION = 0x0112  # EXIF tag of the orientation


def _check_size(w: int, h: int, name: str) -> None:
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise InputError(f"{name} is {w}x{h} pixels; sides must lie in [{MIN_SIDE}, {MAX_SIDE}]")


def upright(image: Image.Image) -> Image.Image:
    """A PIL image turned upright by its EXIF orientation (``ImageOps.exif_transpose``); the image itself when it
    has no orientation tag (or an unreadable EXIF block)."""
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a corrupt EXIF block: nothing to orient by
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info


def _pil_to_array(image: Image.Image, name: str) -> np.ndarray:
    """A PIL image of any mode -> an array :func:`to_uint8_rgb` reads unambiguously: uint16 (H, W) for 16-bit grey,
    float32 (H, W) for ``F``, uint8 (H, W, 4) RGBA for modes with alpha, uint8 (H, W, 3) RGB otherwise."""
    _check_size(*image.size, name)
    image = upright(image)
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(image)
        if arr.min() < 0 or arr.max() > 65535:
            raise InputError(f"{name} is a 32-bit integer image (mode I) with values in [{arr.min()}, {arr.max()}]; "
                             "it is read as 16-bit grey, values in [0, 65535]")
        return arr.astype(np.uint16)
    if mode == "F":
        return np.asarray(image)
    try:
        if _has_alpha(image):
            return np.asarray(image.convert("RGBA"))
        return np.asarray(image.convert("RGB"))
    except (ValueError, OSError) as err:
        raise InputError(f"{name} has PIL mode {mode!r}, which cannot be converted to RGB ({err})") from err


def _channels_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """Scale an image array of any accepted dtype to uint8, elementwise (same shape)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # rounded: v * 257 -> v
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        check_finite(name, arr)
        if arr.min() < 0 or arr.max() > 1:
            raise InputError(f"float {name} values must lie in [0, 1]; got [{arr.min():.3g}, {arr.max():.3g}]")
        return np.round(arr.astype(np.float64) * 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(f"integer {name} values must lie in [0, 255], got [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8)
    raise InputError(f"{name} has unsupported dtype {arr.dtype}; use uint8, uint16, bool or float in [0, 1]")


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) RGBA -> uint8 (H, W, 3): the colours over :data:`ALPHA_BACKGROUND` by their alpha (PIL's
    ``Image.alpha_composite``, so arrays and PIL images with alpha give the same pixels)."""
    background = Image.new("RGBA", (rgba.shape[1], rgba.shape[0]), (*ALPHA_BACKGROUND, 255))
    return np.asarray(Image.alpha_composite(background, Image.fromarray(np.ascontiguousarray(rgba), "RGBA"))
                      .convert("RGB"))


def _tensor_to_array(image: torch.Tensor, name: str) -> np.ndarray:
    t = image.detach()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise InputError(f"{name} tensor must have shape (3, H, W) or (1, 3, H, W) in [-1, 1], "
                         f"got {tuple(image.shape)}")
    if not t.is_floating_point():
        raise InputError(f"{name} tensor must be floating-point in [-1, 1], got {t.dtype}")
    _check_size(t.shape[2], t.shape[1], name)
    t = check_finite(f"{name} tensor", t.to("cpu", torch.float64))
    return ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def to_uint8_rgb(image, *, name: str = "image") -> np.ndarray:
    """Any accepted image (see the module docstring) -> uint8 (H, W, 3) array (a new, writeable array; the input is
    never modified). Raises :class:`InputError` naming ``name`` for anything it cannot read unambiguously."""
    if image is None:
        raise InputError(f"{name} is missing: give an RGB image (array, PIL image or tensor)")
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, name=name)
    if isinstance(image, Image.Image):
        arr = _pil_to_array(image, name)
    elif isinstance(image, torch.Tensor):
        arr = _tensor_to_array(image, name)
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise InputError(f"{name} must be a numpy array, a PIL image or a torch tensor, got {type(image).__name__}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
        raise InputError(f"{name} must have shape (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4), "
                         f"got {arr.shape}")
    _check_size(arr.shape[1], arr.shape[0], name)
    arr = _channels_to_uint8(arr, name)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.shape[2] == 2:  # grey + alpha
        arr = np.concatenate((np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:]), axis=2)
    if arr.shape[2] == 4:
        arr = composite_on_white(arr) if (arr[..., 3] < 255).any() else arr[..., :3]
    if arr is image or not (arr.flags.c_contiguous and arr.flags.writeable and arr.flags.owndata):
        arr = np.array(arr, order="C")  # a new, writeable array of its own (PIL's arrays are read-only views)
    return arr


def load_image(path: str | os.PathLike, *, name: str = "image") -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) (any mode, EXIF orientation applied; see :func:`to_uint8_rgb`).

    The size is checked from the header before the pixels are decoded, so an oversized file fails fast. A file that
    is missing or not an image raises :class:`InputError`.
    """
    try:
        with Image.open(path) as im:
            _check_size(*im.size, name)
            im.load()
            return to_uint8_rgb(im, name=name)
    except InputError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise InputError(f"{name} {os.fspath(path)!r} is not a readable image file ({err})") from err


def resize_uint8(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 (H, W, 3) array to ``size = (H', W')`` (Lanczos down, bicubic up)."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr.copy()
    down = h * w < arr.shape[0] * arr.shape[1]
    return np.asarray(Image.fromarray(arr).resize((w, h), Image.LANCZOS if down else Image.BICUBIC))


def image_to_tensor(image, size: int | None = None, *, dtype=torch.float32, device=None, name="image") -> torch.Tensor:
    """Accepted image -> (1, 3, size, size) tensor in [-1, 1] (resized when ``size`` is given); the pixels are those
    of :func:`to_uint8_rgb`."""
    arr = to_uint8_rgb(image, name=name)
    if size is not None:
        arr = resize_uint8(arr, (size, size))
    t = torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]  # (1, 3, H, W)
    return t.to(device=device, dtype=dtype)


def tensor_to_uint8(x: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor in [-1, 1] -> uint8 (H, W, 3), resized to ``size = (H', W')`` if given.
    A tensor with NaN or inf raises :class:`InputError` (it used to become a black image)."""
    arr = to_uint8_rgb(x, name="tensor")
    return resize_uint8(arr, size) if size is not None else arr


def mask_array(mask, *, name: str = "mask") -> np.ndarray:
    """A mask in any accepted form -> a numeric or bool (H, W) array, before thresholding.

    Paths and PIL images: EXIF orientation applied; modes with alpha (``RGBA``, ``LA``, ``PA``, a ``transparency``
    entry) give their alpha (0-255) when it has any transparency (a painted layer), and are read like the same
    image without alpha when it is fully opaque (a black-and-white mask saved with an alpha channel); ``1``, ``L``,
    16-bit and ``F`` their values; other modes (``P``, ``RGB``, ``CMYK``, ...) the maximum over the RGB channels of
    ``convert("RGB")``. Arrays: (H, W) as is, (H, W, 2) and (H, W, 4) their alpha (or, fully opaque, the maximum over
    the other channels), (H, W, 1) and (H, W, 3) the maximum over channels. Tensors: as arrays.
    """
    if isinstance(mask, (str, os.PathLike)):
        try:
            with Image.open(mask) as im:
                _check_size(*im.size, name)
                im.load()
                return mask_array(im.copy(), name=name)
        except InputError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
            raise InputError(f"{name} {os.fspath(mask)!r} is not a readable image file ({err})") from err
    if isinstance(mask, Image.Image):
        im = upright(mask)
        if _has_alpha(im):
            rgba = np.asarray(im.convert("RGBA"))
            return rgba[..., 3] if rgba[..., 3].min() < 255 else rgba[..., :3].max(axis=2)
        if im.mode in ("1", "L", "F", *SIXTEEN_BIT_MODES):
            return np.asarray(im)
        try:
            return np.asarray(im.convert("RGB")).max(axis=2)
        except (ValueError, OSError) as err:
            raise InputError(f"{name} has PIL mode {im.mode!r}, which cannot be read as a mask ({err})") from err
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu()
        mask = (mask.float() if mask.dtype in (torch.bfloat16, torch.float16) else mask).numpy()
    if not isinstance(mask, np.ndarray):
        raise InputError(f"{name} must be a (H, W) array or image, got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] in (2, 4):
        alpha = mask[..., -1]
        if alpha.dtype == np.bool_:
            opaque = bool(alpha.all())
        elif np.issubdtype(alpha.dtype, np.integer):
            opaque = bool(alpha.size) and int(alpha.min()) == np.iinfo(alpha.dtype).max
        else:  # float alpha in [0, 1]
            opaque = bool(alpha.size) and float(np.nanmin(alpha)) >= 1.0
        return mask[..., :-1].max(axis=2) if opaque else alpha
    if mask.ndim == 3:
        return mask.max(axis=2)
    if mask.ndim != 2:
        raise InputError(f"{name} must have shape (H, W) (or (H, W, C)), got {mask.shape}")
    return mask


def _binarize(m: np.ndarray, name: str) -> np.ndarray:
    if m.dtype == np.bool_:
        return m
    if not np.issubdtype(m.dtype, np.number) or np.issubdtype(m.dtype, np.complexfloating):
        raise InputError(f"{name} has unsupported dtype {m.dtype}")
    if np.issubdtype(m.dtype, np.floating):
        return check_finite(name, m) > 0.5
    return m > 0


def to_mask(mask, *, shape: tuple[int, int] | None = None, name: str = "mask", allow_full: bool = False) -> np.ndarray:
    """Accepted mask -> bool (H, W).

    Accepts bool, integer or float (H, W) arrays (nonzero = inside; floats: > 0.5), (H, W, C) arrays, PIL images of
    any mode and file paths, read by :func:`mask_array` (the alpha channel where there is one). Raises
    :class:`InputError` for an unreadable file, NaN, an empty mask, a mask covering the whole image (unless
    ``allow_full``), or a size different from ``shape``.
    """
    if mask is None:
        raise InputError(f"{name} is missing: draw or give a mask of the region")
    m = _binarize(mask_array(mask, name=name), name)
    if shape is not None and m.shape != tuple(shape):
        raise InputError(f"{name} is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}; "
                         "sizes must match")
    if not m.any():
        raise InputError(f"{name} is empty: mark at least one pixel")
    if m.all() and not allow_full:
        raise InputError(f"{name} covers the whole image; leave some of the image outside it")
    return m.copy()


def layers_to_mask(layers: Iterable, shape: tuple[int, int], *, name: str = "mask") -> np.ndarray:
    """The union of brush layers (paths, PIL images or arrays, e.g. an image editor's ``layers``) -> bool (H, W).

    Each layer is read by :func:`mask_array` (its alpha where it has one, else any non-zero channel) and marks the
    pixels where that is non-zero (floats: > 0.5); ``None`` entries are skipped. Every layer must have size
    ``shape = (H, W)``. The union may be empty: pass it to :func:`to_mask` to refuse that.
    """
    union = np.zeros(tuple(shape), dtype=bool)
    for i, layer in enumerate(layers):
        if layer is None:
            continue
        what = f"layer {i + 1} of {name}"
        m = _binarize(mask_array(layer, name=what), what)
        if m.shape != union.shape:
            raise InputError(f"{what} is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}; "
                             "draw the mask on the image itself")
        union |= m
    return union


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """bool (H, W) mask -> float (H', W') soft mask in [0, 1] by area averaging (``size = (H', W')``)."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=size, mode="area")[0, 0]
