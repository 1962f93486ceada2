"""Mask operations for editing: model-space masks, dilation, rings, feathering, seams.

Masks come in as user data (bool or integer (H, W) arrays, PIL images) and are checked by
:func:`pipeline.images.to_mask`. Here they become float tensors in model space, where the editing loop uses them:

- ``support(mask, size)``: the (h, w) model-space cells the pixel mask touches at all (so a thin object edge is never
  left outside the edit region), as a {0, 1} float tensor;
- ``dilate`` / ``erode`` (max-pooling with a square window), ``ring`` (dilated minus the mask), ``seam`` (a band on
  both sides of the boundary);
- ``feather``: a soft mask equal to 1 on the mask and falling to 0 outside it over ``radius`` cells (a Gaussian blur of
  the dilated mask, maxed with the mask), the ``m`` of ``x_t <- m x_t + (1 - m) x_t^orig``.

All functions are pure: tensors in, new tensors out; shapes are (H, W) float unless stated.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .images import resize_mask


def support(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Bool pixel mask (H, W) -> {0, 1} float (h, w): cells of the model-space grid that the mask touches at all.

    ``support = 1[area_resize(mask) > 0]``. Coarser than the mask when the image is larger than model space.
    """
    soft = resize_mask(mask, size)  # (h, w) in [0, 1], area-averaged
    return (soft > 1e-6).float()


def dilate(m: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey dilation by a (2r+1)^2 square: ``max`` over the window.  (H, W) -> (H, W). ``radius = 0`` copies."""
    r = int(radius)
    if r < 0:
        raise InputError(f"dilation radius must be >= 0, got {radius}")
    if r == 0:
        return m.clone()
    return F.max_pool2d(m[None, None], kernel_size=2 * r + 1, stride=1, padding=r)[0, 0]


def erode(m: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey erosion by a (2r+1)^2 square (the dual of :func:`dilate`; outside the image counts as inside).  (H, W)."""
    return 1.0 - dilate(1.0 - m, radius)


def ring(m: torch.Tensor, width: int) -> torch.Tensor:
    """The band ``dilate(m, width) - m`` around a {0, 1} mask: the surroundings of a region.  (H, W) {0, 1}."""
    return (dilate(m, width) - m).clamp(0, 1)


def seam(m: torch.Tensor, width: int) -> torch.Tensor:
    """The band ``dilate(m, w) - erode(m, w)`` straddling the boundary of a {0, 1} mask.  (H, W) {0, 1}."""
    return (dilate(m, width) - erode(m, width)).clamp(0, 1)


def gaussian_blur(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of the last two axes, replicate padding (``sigma`` in cells; 0 copies).  (..., H, W)."""
    if sigma <= 0:
        return m.clone()
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=m.dtype, device=m.device) / sigma) ** 2)
    k = k / k.sum()  # (2r+1,)
    x = F.pad(m.reshape(-1, 1, *m.shape[-2:]), (r, r, r, r), mode="replicate")  # (N, 1, H+2r, W+2r)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.reshape(m.shape)


def feather(m: torch.Tensor, radius: float) -> torch.Tensor:
    """Soft edit mask: 1 on ``m``, falling smoothly to 0 within about ``radius`` cells outside it.

    ``m_f = max(m, blur_{sigma = radius / 2}(dilate(m, ceil(radius / 2))))``, so the whole region stays fully editable
    and the blend with the original trajectory fades out over the ring around it.  (H, W) -> (H, W) in [0, 1].
    """
    if radius <= 0:
        return m.clone()
    grown = dilate(m, int(math.ceil(radius / 2)))
    return torch.maximum(m, gaussian_blur(grown, radius / 2)).clamp(0, 1)


def as_model_mask(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(h, w) mask -> (1, 1, h, w) in ``like``'s dtype and device, broadcastable against model-space batches."""
    return m.to(device=like.device, dtype=like.dtype)[None, None]


def bbox(m: np.ndarray | torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box ``(top, left, bottom, right)`` (exclusive ends) of the nonzero cells of a 2-D mask."""
    a = (m.detach().cpu() > 0).numpy() if isinstance(m, torch.Tensor) else np.asarray(m) > 0
    rows, cols = np.nonzero(a)
    if rows.size == 0:
        raise InputError("the mask is empty")
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1
