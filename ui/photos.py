"""Large photos: the painting tabs edit a working copy and composite the result on the full-size original.

A phone photo (4000 x 3000, 12 MP) painted in the browser at full size is slow everywhere: the canvas exports three
12 MP PNGs per request, the brush is a hairline at the zoom that fits the page, and every resize and PNG on the server
is 12 MP. The model works at its own resolution anyway (32 x 32 for the embedded model), so the editors hold a
**working copy** whose longer side is at most :data:`WORKING_SIDE`:

1. When a photo is uploaded into an editor, :func:`prepare_upload` keeps the full-size original on the server (an
   ``.npy`` file in the session's output folder, named by an :class:`Original` in the tab's ``gr.State``) and puts
   the working copy on the canvas; the page states both sizes.
2. The edit runs on the working copy (:class:`Photo`); :func:`full_size` then composites it on the original: inside
   the mask (upscaled from the working copy, nearest neighbour) the edit, upscaled bicubically; outside it the
   original's pixels, bit for bit.

An API client that sends a full-size editor value gets the same treatment without the upload step (its mask is
shrunk conservatively for the working copy, and the composite keeps exactly its full-size mask).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from pipeline.images import resize_uint8
from ui.inputs import read_editor, read_image
from ui.outputs import image_file, output_dir

log = logging.getLogger("diffgeo.app")

#: Longer side, in pixels, of the working copy an editor holds (larger photos are shrunk to it, smaller ones kept).
WORKING_SIDE = 1024
#: Side of the thumbnail that ties a working copy on the canvas to its kept original.
_THUMB = 16
#: Largest difference (0-255) between the thumbnails of the canvas image and the kept working copy that still counts
#: as the same picture (the browser's PNG round trip of the canvas is exact in practice; this leaves room for
#: colour management).
_THUMB_TOLERANCE = 6


def working_size(shape: tuple[int, ...], side: int = WORKING_SIDE) -> tuple[int, int]:
    """(h, w) of the working copy of an image of ``shape``: the aspect kept, the longer side at most ``side``."""
    h, w = int(shape[0]), int(shape[1])
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def working_copy(image: np.ndarray, side: int = WORKING_SIDE) -> np.ndarray:
    """``image`` (uint8 (H, W, 3)) shrunk so its longer side is at most ``side`` (Lanczos); small images unchanged."""
    size = working_size(image.shape, side)
    return image if size == image.shape[:2] else resize_uint8(image, size)


def shrink_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (H, W) bool mask at ``size = (h, w)``: a working pixel is set when any full-size pixel under it is (so a
    thin stroke survives, and the mask upscaled again covers the full-size one)."""
    if mask.shape == tuple(size):
        return mask.copy()
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.BOX)
    return np.asarray(small) > 0


def grow_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) bool mask upscaled to ``size = (H, W)`` by nearest neighbour (each full-size pixel takes the value of
    the working pixel it lies in)."""
    if mask.shape == tuple(size):
        return mask.copy()
    big = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(big) > 127


def _thumb(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((_THUMB, _THUMB), Image.BOX), dtype=np.int16)


@dataclass(frozen=True)
class Original:
    """A kept full-size original (the tab's ``gr.State``): its ``.npy`` file, its size, and the working copy's size
    and thumbnail (to recognise the working copy on the canvas)."""

    path: str
    full_shape: tuple[int, int]
    working_shape: tuple[int, int]
    thumb: tuple[tuple[int, ...], ...]

    @classmethod
    def keep(cls, image: np.ndarray, working: np.ndarray, folder: Path) -> Original:
        """Save ``image`` (full size) in ``folder`` and describe it with its ``working`` copy."""
        path = folder / "original.npy"
        np.save(path, image)
        return cls(str(path), tuple(image.shape[:2]), tuple(working.shape[:2]), tuple(map(tuple, _thumb(working))))

    def matches(self, working: np.ndarray) -> bool:
        """Whether ``working`` (the canvas image) is this original's working copy."""
        if tuple(working.shape[:2]) != self.working_shape:
            return False
        return int(np.abs(_thumb(working) - np.asarray(self.thumb, np.int16)).max()) <= _THUMB_TOLERANCE

    def load(self) -> np.ndarray | None:
        """The full-size original, or None when its file is gone (output folders expire after an hour)."""
        try:
            image = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return image if image.shape[:2] == self.full_shape else None


@dataclass(frozen=True, eq=False)
class Photo:
    """An input at two sizes: ``full`` (the original) and ``work`` (what the edit computes on), with the mask at both
    sizes (None for inputs without one). ``exact_mask``: the full-size mask came from the user (an API client sent a
    full-size mask), so the composite keeps exactly it."""

    full: np.ndarray
    work: np.ndarray
    full_mask: np.ndarray | None = None
    work_mask: np.ndarray | None = None
    exact_mask: bool = False

    @property
    def resized(self) -> bool:
        return self.full.shape != self.work.shape

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray | None = None) -> Photo:
        """A full-size image (and mask) with its working copy."""
        work = working_copy(image)
        work_mask = None if mask is None else shrink_mask(mask, work.shape[:2])
        return cls(image, work, mask, work_mask, exact_mask=mask is not None and work.shape != image.shape)

    def size_note(self) -> str:
        """Plain words on the sizes, for the result's status."""
        h, w = self.full.shape[:2]
        if not self.resized:
            return f"your {w}x{h} image"
        wh, ww = self.work.shape[:2]
        return f"a {ww}x{wh} working copy of your {w}x{h} photo (result composited at full size)"


def editor_photo(value: Any, original: Original | None, name: str = "image", *, need_mask: bool = True) -> Photo:
    """An editor value -> :class:`Photo`. When the canvas holds the working copy of a kept ``original``, the full size
    is the original and the full-size mask the painted one upscaled; otherwise the canvas image is the full size (an
    API client's full-size value, or a photo small enough to edit as it is)."""
    image, mask = read_editor(value, name, need_mask=need_mask)
    if isinstance(original, Original) and original.matches(image):
        full = original.load()
        if full is not None:
            full_mask = None if mask is None else grow_mask(mask, full.shape[:2])
            return Photo(full, image, full_mask, mask)
        log.info("the kept original is gone; editing the canvas image at its own size")
    return Photo.of(image, mask)


def full_size(photo: Photo, image: np.ndarray, changed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An edit of ``photo.work`` (uint8 (h, w, 3), with its (h, w) ``changed`` pixels) composited on ``photo.full``:
    -> (uint8 (H, W, 3), changed (H, W)). Pixels outside the returned ``changed`` are the original's, bit for bit."""
    if not photo.resized:
        return image, changed
    size = photo.full.shape[:2]
    grown = grow_mask(changed, size)
    if photo.exact_mask and photo.full_mask is not None and changed.shape == photo.work_mask.shape \
            and np.array_equal(changed, photo.work_mask):
        grown = photo.full_mask  # the edit changed exactly the (shrunk) mask: keep the user's full-size mask
    rows, cols = np.nonzero(grown)
    if rows.size == 0:
        return photo.full.copy(), grown
    # upscale only the changed region's bounding box (with a margin for the bicubic kernel)
    h, w = image.shape[:2]
    sy, sx = size[0] / h, size[1] / w
    r0, r1 = max(0, int(rows.min() / sy) - 2), min(h, int(rows.max() / sy) + 3)
    c0, c1 = max(0, int(cols.min() / sx) - 2), min(w, int(cols.max() / sx) + 3)
    R0, R1, C0, C1 = round(r0 * sy), round(r1 * sy), round(c0 * sx), round(c1 * sx)
    patch = resize_uint8(np.ascontiguousarray(image[r0:r1, c0:c1]), (R1 - R0, C1 - C0))
    out = photo.full.copy()
    box = grown[R0:R1, C0:C1]
    out[R0:R1, C0:C1][box] = patch[box]
    return out, grown


def size_note(full_shape: tuple[int, ...], work_shape: tuple[int, ...]) -> str:
    """The line under an editor after an upload: which size is on the canvas and which one the result will have."""
    h, w = full_shape[:2]
    wh, ww = work_shape[:2]
    if (h, w) == (wh, ww):
        return f"Editing your {w}x{h} image at its own size."
    return (f"Your photo is {w}x{h}: you paint on a {ww}x{wh} working copy; the result is composited on the "
            f"{w}x{h} original (pixels outside the mask stay exactly as they are).")


def prepare_upload(value: Any, session: Any = None, *, keep: bool = True, name: str = "image",
                   original: Original | None = None):
    """An editor's upload -> (editor value with the working copy, :class:`Original` or None, note).

    The original is kept only when it is larger than the working copy and ``keep`` (the canvases whose pixels end up
    in the result: not a transfer source or a blend object, which enter the result through the model only). The
    editor also reports an upload when the server has put a working copy on it: when the canvas shows the working
    copy of the kept ``original``, nothing changes. Raises ``InputError`` for an unreadable or out-of-range upload
    (the page shows it).
    """
    image, _ = read_editor(value, name, need_mask=False)
    if isinstance(original, Original) and original.matches(image):
        return gr.skip(), gr.skip(), gr.skip()
    return prepare_image(image, session, keep=keep, canvas_has_it=True)


def prepare_file(path: Any, session: Any = None, *, keep: bool = True, name: str = "image"):
    """A photo uploaded with the "Upload a photo" button (a file path) -> (editor value, :class:`Original` or None,
    note). The browser never draws the full-size photo: the canvas gets the working copy only."""
    return prepare_image(read_image(path, name), session, keep=keep, canvas_has_it=False)


def prepare_image(image: np.ndarray, session: Any = None, *, keep: bool = True, canvas_has_it: bool = False):
    """-> (editor value with ``image``'s working copy, or ``gr.skip()`` when the canvas already shows ``image`` at
    its own size; the kept :class:`Original` or None; the note on the sizes)."""
    work = working_copy(image)
    note = size_note(image.shape, work.shape)
    if work.shape == image.shape and canvas_has_it:
        return gr.skip(), None, note
    out = output_dir(session)
    original = Original.keep(image, work, out) if keep and work.shape != image.shape else None
    path = image_file(work, out, "working_copy")
    return {"background": path, "layers": [], "composite": path}, original, note
