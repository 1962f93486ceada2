"""What a user sees when a handler fails: the library's exceptions as short ``gr.Error`` messages, no server details."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from pipeline.errors import Cancelled, InputError, ModelLoadError

log = logging.getLogger("diffgeo.app")

_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@+~-]+){2,}[\\/]?")


def clean_message(message: str) -> str:
    """A message safe to show: absolute paths reduced to their last part (uploads keep a readable name)."""
    return _PATH_RE.sub(lambda m: Path(m.group(0).rstrip("/\\")).name or "<path>", str(message))


def ui_errors(fn: Callable | None = None, *, hosted: bool = False) -> Callable:
    """Turn the library's exceptions into ``gr.Error`` messages; anything unexpected is logged, never shown raw.

    Use as ``@ui_errors`` or ``ui_errors(fn, hosted=True)``: in hosted mode a failed model load says only that it
    failed (its message may name server folders).
    """
    if fn is None:
        return functools.partial(ui_errors, hosted=hosted)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Cancelled:
            raise gr.Error("Cancelled: the computation was stopped.", title="Cancelled") from None
        except InputError as err:
            raise gr.Error(clean_message(str(err)), title="Invalid input") from None
        except ModelLoadError as err:
            log.warning("model load failed: %s", err)
            msg = "the selected model could not be loaded" if hosted else clean_message(str(err))
            raise gr.Error(f"Model: {msg}", title="Model not loaded") from None
        except MemoryError:
            raise gr.Error("Out of memory: try a smaller image, fewer steps or fewer points.") from None
        except Exception as err:
            if type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
                raise gr.Error("Out of GPU memory: try fewer steps or points.") from None
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Internal error ({type(err).__name__}); the server log has the details.") from None

    return wrapper
