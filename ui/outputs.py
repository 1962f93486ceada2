"""What handlers hand back: per-session, per-call output folders with unguessable names (old ones cleaned up), images
saved as files, the status line.

Output images are written here as PNG files and returned as paths, not arrays. Gradio then copies a returned path
into its cache with ``processing_utils.save_file_to_cache``, which writes under a temporary name and renames into
place; an array would go through ``save_pil_to_cache``, which rewrites the cached file in place (truncating it first)
on every call, so two requests returning the same picture could cut off a download of it in flight.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from pipeline import viz

#: Output folders older than this are removed when a new one is made (their files are then gone for good: gradio
#: serves the copies it made in its own cache, which ``Blocks(delete_cache=...)`` ages out).
OUTPUT_MAX_AGE_S = 3600.0

#: Random bytes of each folder name: 16 bytes = 128 bits, so a folder's name cannot be guessed.
TOKEN_BYTES = 16

_sessions: dict[str, tuple[str, float]] = {}  # gradio session hash -> (its folder's random name, last use)
_sessions_lock = threading.Lock()


def output_root() -> Path:
    """The app's folder for files it writes: under ``GRADIO_TEMP_DIR`` (read at call time) or the system temp dir."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "diffgeo-outputs"


def _session_token(session: Any, now: float) -> str:
    """The random folder name of ``session`` (a ``gr.Request``; a fresh one for calls without a session)."""
    key = getattr(session, "session_hash", None)
    with _sessions_lock:
        for k, (_, used) in list(_sessions.items()):
            if now - used > OUTPUT_MAX_AGE_S:
                del _sessions[k]
        if not key:
            return secrets.token_hex(TOKEN_BYTES)
        token = _sessions[key][0] if key in _sessions else secrets.token_hex(TOKEN_BYTES)
        _sessions[key] = (token, now)
        return token


def _remove_expired(folder: Path, now: float) -> None:
    """Remove the subfolders of ``folder`` not modified for ``OUTPUT_MAX_AGE_S``."""
    with contextlib.suppress(OSError):
        for old in folder.iterdir():
            with contextlib.suppress(OSError):
                if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                    shutil.rmtree(old, ignore_errors=True)


def output_dir(session: Any = None) -> Path:
    """A fresh folder for one call's images and downloads, ``sessions/<session>/<call>`` under :func:`output_root`:
    one folder per browser session (``session``: the call's ``gr.Request``), one per call inside it, both named by
    128 random bits. Folders unused for ``OUTPUT_MAX_AGE_S`` are removed when a new one is made."""
    now = time.time()
    sessions = output_root() / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    _remove_expired(sessions, now)
    session_dir = sessions / _session_token(session, now)
    session_dir.mkdir(exist_ok=True)
    _remove_expired(session_dir, now)
    out = session_dir / secrets.token_hex(TOKEN_BYTES)
    out.mkdir()
    os.utime(session_dir)  # in use: not expired while its calls are younger than the age limit
    return out


#: Images with more pixels than this are written with fast PNG compression (measured on a 12 MP photo: 0.7 s instead
#: of 2.6 s, for a file 25 % larger; still lossless).
FAST_PNG_PIXELS = 2_000_000


def image_file(image: np.ndarray | None, folder: Path, name: str) -> str | None:
    """``image`` (uint8 (H, W, 3)) saved losslessly as ``folder/name.png``; its path (None for no image)."""
    if image is None:
        return None
    image = np.asarray(image)
    if image.shape[0] * image.shape[1] <= FAST_PNG_PIXELS:
        return viz.save_png(image, folder / f"{name}.png")
    path = folder / f"{name}.png"
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG", compress_level=1)
    return str(path)


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


def plot_or_hidden(figure: Any) -> dict:
    """A plot output's update: ``figure`` shown, or (None) the panel hidden, never an empty plot frame; the result's
    text says why there is no plot (e.g. a curve loss that stayed flat, ``ui.describe.loss_words``)."""
    return gr.update(value=figure, visible=figure is not None)
