"""Images and masks given to the editing tasks: their checks, and an image in model space (accepted forms and
sizes: see :mod:`pipeline.edit`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..images import image_to_tensor, to_mask, to_uint8_rgb


def _looks_like_mask(image: Any) -> bool:
    """True for 2-D boolean or {0, 1}-valued integer arrays and PIL mode '1' images: masks passed as images."""
    if isinstance(image, Image.Image):
        return image.mode == "1"
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        return False
    if image.dtype == np.bool_:
        return True
    return bool(np.issubdtype(image.dtype, np.integer) and image.size and image.min() >= 0 and image.max() <= 1)


def check_image(image: Any, *, name: str = "image") -> np.ndarray:
    """An accepted image -> a new uint8 (H, W, 3) array; a mask passed as an image raises :class:`InputError`."""
    if _looks_like_mask(image):
        raise InputError(f"{name} looks like a mask (a 2-D boolean or 0/1 array); give an RGB image: an (H, W, 3) "
                         "uint8 array, a PIL image, or a grayscale (H, W) array with values in 0..255")
    return to_uint8_rgb(image, name=name)


def check_mask(mask: Any, shape: tuple[int, int], *, name: str = "mask") -> np.ndarray:
    """An accepted mask for an image of ``shape = (H, W)`` -> bool (H, W). An RGB image given as a mask is refused."""
    arr = np.asarray(mask) if isinstance(mask, Image.Image) and mask.mode in ("RGB", "RGBA") else mask
    if isinstance(arr, np.ndarray) and arr.ndim == 3 and arr.shape[2] == 3 and np.unique(arr).size > 2:
        raise InputError(f"{name} looks like an RGB image (shape {arr.shape}, many values); "
                         "give a (H, W) bool array or a black/white image")
    return to_mask(mask, shape=shape, name=name)


def to_model(model, image_u8: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> model-space x_0 (1, C, h, w): resized to the model's image size, then encoded."""
    x = image_to_tensor(image_u8, model.image_size, dtype=model.dtype, device=model.device)
    with torch.no_grad():
        return model.encode(x)
