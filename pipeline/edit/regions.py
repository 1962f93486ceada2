"""Regions in model space and their patches: masks to model space, patch selection and correspondence, and the fills
that give a region its start content or a patch its reference (harmonic, mean and shift fills, warped source
regions).

Patches are the cells of the ``n x n`` grid of side ``patch_size`` over model space, indexed row-major.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import masks as M


# --------------------------------------------------------------------------------------------------------------------
# Masks and patches
# --------------------------------------------------------------------------------------------------------------------
def model_mask(mask: np.ndarray, model) -> torch.Tensor:
    """Bool pixel mask -> {0, 1} model-space (h, w): the cells the mask touches."""
    return M.support(mask, (model.sample_size, model.sample_size)).to(model.dtype)


def pixel_dilate(mask: np.ndarray, cells: int, model) -> np.ndarray:
    """Dilate a pixel mask by ``cells`` model-space cells (converted to input pixels).  (H, W) bool -> (H, W) bool."""
    if cells <= 0:
        return mask.copy()
    import cv2

    r = max(1, int(round(cells * max(mask.shape) / model.sample_size)))  # input pixels per model cell
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


def patch_coverage(region: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Fraction of each patch inside ``region``.  (h, w) in [0, 1] -> (h * w / patch_size^2,) row-major."""
    return F.avg_pool2d(region[None, None].float(), patch_size)[0, 0].flatten()


def region_patches(region: torch.Tensor, patch_size: int, *, min_cover: float, exclude: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Row-major indices of the patches covering more than ``min_cover`` of ``region`` (and none of ``exclude``).

    Falls back to the best-covered patch when none passes, so a small region always has a target.  -> (K,) long.
    """
    cov = patch_coverage(region, patch_size)
    ok = cov > min_cover
    if exclude is not None:
        ok &= patch_coverage(exclude, patch_size) == 0
    idx = ok.nonzero().flatten()
    if idx.numel() == 0 and float(cov.max()) > 0 and exclude is None:
        idx = cov.argmax().reshape(1)
    return idx


def patch_neighbours(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Row-major indices of the patches 4-adjacent to ``idx`` on the n x n patch grid, not in ``idx``.  -> (J,)"""
    g = torch.zeros(n * n, dtype=torch.bool)
    g[idx.cpu()] = True
    g = g.view(n, n)
    nb = torch.zeros_like(g)
    nb[1:] |= g[:-1]
    nb[:-1] |= g[1:]
    nb[:, 1:] |= g[:, :-1]
    nb[:, :-1] |= g[:, 1:]
    return (nb & ~g).flatten().nonzero().flatten().to(idx.device)


def seeded_subset(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of a seeded random subset of size min(n, k), sorted (all of them, in order, when n <= k)."""
    if n <= k:
        return torch.arange(n)
    return torch.randperm(n, generator=gen)[:k].sort().values


def corresponding_patches(dst_idx: torch.Tensor, src_idx: torch.Tensor, dst: torch.Tensor, src: torch.Tensor,
                   n: int) -> torch.Tensor:
    """For each target patch, the source patch at the same relative position of the regions' bounding boxes.

    Patch grids are n x n; dst/src are the (h, w) region masks. -> (K_dst,) indices into ``src_idx``.
    """
    h = dst.shape[0]
    cell = h / n
    t1, l1, b1, r1 = M.bbox(dst)
    t0, l0, b0, r0 = M.bbox(src)
    dy, dx = (dst_idx // n).double() * cell + cell / 2, (dst_idx % n).double() * cell + cell / 2  # centres (cells)
    u, v = (dy - t1) / max(b1 - t1, 1), (dx - l1) / max(r1 - l1, 1)  # relative position in the target box
    sy, sx = t0 + u * (b0 - t0), l0 + v * (r0 - l0)  # the same position in the source box
    cy, cx = (src_idx // n).double() * cell + cell / 2, (src_idx % n).double() * cell + cell / 2
    d2 = (sy[:, None] - cy[None]) ** 2 + (sx[:, None] - cx[None]) ** 2  # (K_dst, K_src)
    return d2.argmin(dim=1)


# --------------------------------------------------------------------------------------------------------------------
# Fills
# --------------------------------------------------------------------------------------------------------------------
def harmonic_fill(x: torch.Tensor, hole: torch.Tensor, *, iterations: int = 300) -> torch.Tensor:
    """Fill ``hole`` with the harmonic (Laplace) interpolation of its surroundings (Jacobi iterations).

    Solves ``Laplacian u = 0`` in the hole with ``u = x`` outside (replicate padding at the border), starting from the
    mean of the hole's one-cell ring.  x: (1, C, h, w), hole: (h, w) {0, 1} -> (1, C, h, w).
    """
    u = mean_fill(x, hole)
    m = M.as_model_mask(hole, x)
    c = x.shape[1]
    k = x.new_tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    for _ in range(iterations):
        nb = F.conv2d(F.pad(u, (1, 1, 1, 1), mode="replicate"), k, groups=c)  # mean of the 4 neighbours
        u = m * nb + (1 - m) * x
    return u


def mean_fill(x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Fill ``hole`` with the mean of its one-cell ring.  x: (1, C, h, w), hole: (h, w) -> (1, C, h, w)."""
    m = M.as_model_mask(hole, x)
    ring = M.as_model_mask(M.ring(hole, 1), x)
    mean = (x * ring).sum(dim=(2, 3), keepdim=True) / ring.sum().clamp_min(1)  # (1, C, 1, 1)
    return m * mean + (1 - m) * x


def best_shift(img: np.ndarray, hole: np.ndarray, *, ring: int = 3) -> tuple[int, int] | None:
    """The translation ``s`` whose copy ``img[x + s]`` best continues the surroundings of ``hole``: the least mean
    squared difference over the known pixels within ``ring`` of the hole that land on known pixels (at least half of
    them), among the shifts that land the whole hole on known pixels. A periodic texture gives its own period; of
    equally good shifts the first in row-major order of (dy, dx) wins. Every shift is scored at once by FFT
    cross-correlations, O(H W log(H W)).
    img: (H, W, C), hole: (H, W) bool -> (dy, dx), or None when no shift qualifies."""
    import cv2
    from scipy.signal import fftconvolve

    hole = np.asarray(hole, bool)
    h, w = hole.shape
    known = (~hole).astype(np.float64)
    k = np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)
    band = (cv2.dilate(hole.astype(np.uint8), k).astype(bool) & ~hole).astype(np.float64)
    n_hole, n_band = int(hole.sum()), int(band.sum())
    if n_hole == 0 or n_band == 0:
        return None
    f = np.asarray(img, np.float64).reshape(h, w, -1)

    def corr(a, b):  # out[dy + h - 1, dx + w - 1] = sum_p a(p) b(p + (dy, dx)), zero outside the image
        return fftconvolve(b, a[::-1, ::-1], mode="full")

    landed = np.rint(corr(hole.astype(np.float64), known))  # hole pixels that land on known ones
    n = np.rint(corr(band, known))  # ring pixels that land on known ones
    ssd = sum(corr(band * f[..., c] ** 2, known) - 2 * corr(band * f[..., c], known * f[..., c])
              + corr(band, known * f[..., c] ** 2) for c in range(f.shape[2]))
    ok = (landed == n_hole) & (n >= max(1, n_band // 2))
    ok[h - 1, w - 1] = False  # the zero shift
    if not ok.any():
        return None
    err = np.where(ok, ssd / np.maximum(n, 1), np.inf)
    tol = 1e-9 * (1.0 + float((f**2).sum(-1).max()))  # FFT round-off, far below a real difference
    i = int(np.flatnonzero(err.ravel() <= err.min() + tol)[0])
    return i // (2 * w - 1) - (h - 1), i % (2 * w - 1) - (w - 1)


def shift_fill(x: torch.Tensor, hole: torch.Tensor, *, ring: int = 3) -> torch.Tensor:
    """Fill ``hole`` with a translated copy of the image (:func:`best_shift`): an exemplar fill that continues a
    periodic texture at its phase; the harmonic fill when no shift lands the hole on known cells.
    x: (1, C, h, w), hole: (h, w) {0, 1} -> (1, C, h, w)."""
    hole_b = hole.detach().cpu().numpy() > 0.5
    s = best_shift(x[0].detach().cpu().double().permute(1, 2, 0).numpy(), hole_b, ring=ring)
    if s is None:
        return harmonic_fill(x, hole)
    moved = torch.roll(x, shifts=(-s[0], -s[1]), dims=(2, 3))  # moved[y, x] = x[y + dy, x + dx]
    m = M.as_model_mask(hole, x)
    return m * moved + (1 - m) * x


def harmonic_patch_fill(known: torch.Tensor, known_idx: torch.Tensor, unknown_idx: torch.Tensor, n: int, *,
                        iterations: int = 200) -> torch.Tensor:
    """Harmonic interpolation on the n x n patch grid: each unknown patch becomes the mean of its 4-neighbours.

    The patch-grid analogue of :func:`harmonic_fill` (the removal's start content), applied to per-patch values such
    as log-rates: Jacobi iterations of ``u_p = mean_{q ~ p} u_q`` over the unknown patches with the known ones held
    fixed; neighbours off the grid are skipped (a zero-flux border). Every 4-neighbour of an unknown patch must be
    known or unknown. known: (S, J) values of ``known_idx`` (J,); unknown_idx: (K,) -> (S, K). NaN rows stay NaN.
    """
    s = known.shape[0]
    u = known.new_zeros(s, n * n)  # (S, n*n)
    u[:, known_idx] = known
    u[:, unknown_idx] = known.mean(dim=1, keepdim=True)  # start: the mean of the known values
    is_unknown = torch.zeros(n * n, dtype=torch.bool, device=known.device)
    is_unknown[unknown_idx] = True
    ones = known.new_ones(1, 1, n, n)
    k = known.new_tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    count = F.conv2d(F.pad(ones, (1, 1, 1, 1)), k).flatten()  # (n*n,) neighbours on the grid
    for _ in range(iterations):
        nb_sum = F.conv2d(F.pad(u.view(s, 1, n, n), (1, 1, 1, 1)), k).view(s, n * n)  # (S, n*n)
        u = torch.where(is_unknown[None], nb_sum / count, u)
    return u[:, unknown_idx]


def warp_region(src_img: np.ndarray, src_mask: np.ndarray, dst_mask: np.ndarray) -> np.ndarray:
    """The source region's bounding box resized onto the target's bounding box (bicubic), pasted under ``dst_mask``.

    src_img (H_s, W_s, 3) uint8, src_mask (H_s, W_s), dst_mask (H, W) -> (H, W, 3) uint8; zero outside ``dst_mask``.
    """
    t0, l0, b0, r0 = M.bbox(src_mask)
    t1, l1, b1, r1 = M.bbox(dst_mask)
    crop = np.ascontiguousarray(src_img[t0:b0, l0:r0])
    out = np.zeros((*dst_mask.shape, 3), np.uint8)
    out[t1:b1, l1:r1] = np.asarray(Image.fromarray(crop).resize((r1 - l1, b1 - t1), Image.BICUBIC))
    return np.where(dst_mask[..., None], out, 0).astype(np.uint8)
