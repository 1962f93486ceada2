"""Images and masks in, images out: conversion between what users hand in and model-space tensors.

Accepted images: uint8 or uint16 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays, float arrays in [0, 1], PIL images
of any mode, and (3, H, W) / (1, 3, H, W) torch tensors in [-1, 1]. Grayscale is repeated to RGB, alpha is dropped,
16-bit is scaled to 8-bit. Images are resized to the model's resolution (Lanczos) and results resized back to the
input's size (bicubic), so any input size works within ``MIN_SIDE``..``MAX_SIDE``.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from .errors import InputError

MIN_SIDE = 8  # smallest accepted image side, pixels
MAX_SIDE = 4096  # largest accepted image side, pixels


def to_uint8_rgb(image, *, name: str = "image") -> np.ndarray:
    """Any accepted image -> uint8 (H, W, 3) array (a new array; the input is never modified)."""
    if image is None:
        raise InputError(f"{name} is missing: give an RGB image (array, PIL image or tensor)")
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, name=name)
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB")) if image.mode not in ("I;16", "I", "F") else np.asarray(image)
    elif isinstance(image, torch.Tensor):
        t = image.detach().to("cpu", torch.float64)
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise InputError(f"{name} tensor must have shape (3, H, W) or (1, 3, H, W) in [-1, 1], "
                             f"got {tuple(image.shape)}")
        arr = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise InputError(f"{name} must be a numpy array, a PIL image or a torch tensor, got {type(image).__name__}")
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{name} must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(f"{name} contains NaN or inf")
        if arr.min() < 0 or arr.max() > 1:
            raise InputError(f"float {name} values must lie in [0, 1]; got [{arr.min():.3g}, {arr.max():.3g}]")
        arr = np.round(arr * 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(f"integer {name} values must lie in [0, 255], got [{arr.min()}, {arr.max()}]")
        arr = arr.astype(np.uint8)
    else:
        raise InputError(f"{name} has unsupported dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise InputError(f"{name} is {w}x{h} pixels; sides must lie in [{MIN_SIDE}, {MAX_SIDE}]")
    return np.ascontiguousarray(arr)


def load_image(path: str | os.PathLike, *, name: str = "image") -> np.ndarray:
    """Read an image file as uint8 (H, W, 3). A file that is not an image raises :class:`InputError`."""
    try:
        with Image.open(path) as im:
            im.load()
            return to_uint8_rgb(im.copy(), name=name)
    except (OSError, Image.DecompressionBombError) as err:
        raise InputError(f"{name} {os.fspath(path)!r} is not a readable image file ({err})") from err


def resize_uint8(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 (H, W, 3) array to ``size = (H', W')`` (Lanczos down, bicubic up)."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr.copy()
    down = h * w < arr.shape[0] * arr.shape[1]
    return np.asarray(Image.fromarray(arr).resize((w, h), Image.LANCZOS if down else Image.BICUBIC))


def image_to_tensor(image, size: int | None = None, *, dtype=torch.float32, device=None, name="image") -> torch.Tensor:
    """Accepted image -> (1, 3, size, size) tensor in [-1, 1] (resized when ``size`` is given)."""
    arr = to_uint8_rgb(image, name=name)
    if size is not None:
        arr = resize_uint8(arr, (size, size))
    t = torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]  # (1, 3, H, W)
    return t.to(device=device, dtype=dtype)


def tensor_to_uint8(x: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor in [-1, 1] -> uint8 (H, W, 3), resized to ``size = (H', W')`` if given."""
    arr = to_uint8_rgb(x, name="tensor")
    return resize_uint8(arr, size) if size is not None else arr


def to_mask(mask, *, shape: tuple[int, int] | None = None, name: str = "mask", allow_full: bool = False) -> np.ndarray:
    """Accepted mask -> bool (H, W).

    Accepts bool or integer (H, W) arrays (nonzero = inside), (H, W, C) arrays (alpha channel if C = 4, else any
    channel nonzero), PIL images and file paths. Raises :class:`InputError` for an empty mask, a mask covering the
    whole image (unless ``allow_full``), or a size different from ``shape``.
    """
    if mask is None:
        raise InputError(f"{name} is missing: draw or give a mask of the region")
    if isinstance(mask, (str, os.PathLike)):
        with Image.open(mask) as im:
            mask = np.asarray(im)
    elif isinstance(mask, Image.Image):
        mask = np.asarray(mask)
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise InputError(f"{name} must be a (H, W) array or image, got {type(mask).__name__}")
    m = mask
    if m.ndim == 3:
        m = m[..., 3] if m.shape[2] == 4 else m.max(axis=2)
    if m.ndim != 2:
        raise InputError(f"{name} must have shape (H, W) (or (H, W, C)), got {mask.shape}")
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.number):
            raise InputError(f"{name} has unsupported dtype {m.dtype}")
        m = m > (0.5 if np.issubdtype(m.dtype, np.floating) else 0)
    if shape is not None and m.shape != tuple(shape):
        raise InputError(f"{name} is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}; "
                         "sizes must match")
    if not m.any():
        raise InputError(f"{name} is empty: mark at least one pixel")
    if m.all() and not allow_full:
        raise InputError(f"{name} covers the whole image; leave some of the image outside it")
    return m.copy()


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """bool (H, W) mask -> float (H', W') soft mask in [0, 1] by area averaging (``size = (H', W')``)."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=size, mode="area")[0, 0]
