"""What handlers hand back: per-call output folders (old ones cleaned up), images saved as files, the status line.

Output images are written here as PNG files and returned as paths, not arrays. Gradio then copies a returned path
into its cache with ``processing_utils.save_file_to_cache``, which writes under a temporary name and renames into
place; an array would go through ``save_pil_to_cache``, which rewrites the cached file in place (truncating it first)
on every call, so two requests returning the same picture could cut off a download of it in flight.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from pipeline import viz

#: Per-call output folders older than this are removed when a new one is made.
OUTPUT_MAX_AGE_S = 3600.0


def output_root() -> Path:
    """The app's folder for files it writes: under ``GRADIO_TEMP_DIR`` (read at call time) or the system temp dir."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "diffgeo-outputs"


def output_dir() -> Path:
    """A fresh folder for one call's images and downloads; earlier calls' folders older than an hour are removed."""
    calls = output_root() / "calls"
    calls.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in calls.iterdir():
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
    out = calls / uuid.uuid4().hex[:12]
    out.mkdir()
    return out


def image_file(image: np.ndarray | None, folder: Path, name: str) -> str | None:
    """``image`` (uint8 (H, W, 3)) saved losslessly as ``folder/name.png``; its path (None for no image)."""
    if image is None:
        return None
    return viz.save_png(np.asarray(image), folder / f"{name}.png")


def as_array(x) -> np.ndarray:
    """A tensor or array from the library as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def status_line(backend_label: str, model_label: str, device: str, seconds: float, extra: str = "") -> str:
    """The Markdown line under a result: backend, model, device and time, then ``extra`` on a second line."""
    parts = [f"**backend:** {backend_label}", f"**model:** {model_label}", f"**device:** {device}",
             f"**time:** {seconds:.1f} s"]
    return " · ".join(parts) + (f"  \n{extra}" if extra else "")
