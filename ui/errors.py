"""What a user sees when a handler fails: the library's exceptions as short ``gr.Error`` messages, no server details."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable

import gradio as gr

from pipeline.errors import Cancelled, InputError, ModelLoadError, NumericalError

log = logging.getLogger("diffgeo.app")

#: An absolute path not inside quotes: ``/a``, ``/a/b.png``, ``C:\Users``, ``\\server\share`` (not ``3/4`` or
#: ``owner/name``: the first separator must not follow a word character, a dot, a colon or another separator).
_PATH_RE = re.compile(r"(?<![\w.~:/\\-])(?:[A-Za-z]:)?(?:[\\/]+[\w.@+~-]+)+[\\/]?")
#: A quoted absolute path (may hold spaces): ``'/home/me/My Models/x'``.
_QUOTED_PATH_RE = re.compile(r"""(?P<q>['"])(?P<path>(?:[A-Za-z]:)?[\\/][^'"\n]*)(?P=q)""")


class TimeLimitExceeded(Cancelled):
    """A request ran past the app's per-request time limit (its cancel flag was set by the timer)."""


def _redact(path: str) -> str:
    """A path's last part (an upload keeps a readable name); a one-part path (``/root``, ``C:\\Users``) says nothing."""
    parts = [p for p in re.split(r"[\\/]+", path) if p and not re.fullmatch(r"[A-Za-z]:", p)]
    return parts[-1] if len(parts) > 1 else "<path>"


def clean_message(message: str) -> str:
    """A message safe to show: every absolute path (one-part ones included) reduced to its last part, or to
    ``<path>`` when that part would be the whole path."""
    text = _QUOTED_PATH_RE.sub(lambda m: m["q"] + _redact(m["path"]) + m["q"], str(message))
    return _PATH_RE.sub(lambda m: _redact(m.group(0)), text)


def ui_errors(fn: Callable | None = None, *, hosted: bool = False) -> Callable:
    """Turn the library's exceptions into ``gr.Error`` messages; anything unexpected is logged, never shown raw.

    Use as ``@ui_errors`` or ``ui_errors(fn, hosted=True)``: in hosted mode a failed model load says only that it
    failed, the same for every cause (its message may name server folders, or tell which exist).
    """
    if fn is None:
        return functools.partial(ui_errors, hosted=hosted)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except TimeLimitExceeded as err:
            raise gr.Error(clean_message(str(err)), title="Time limit") from None
        except Cancelled:
            raise gr.Error("Cancelled: the computation was stopped.", title="Cancelled") from None
        except InputError as err:
            raise gr.Error(clean_message(str(err)), title="Invalid input") from None
        except NumericalError as err:  # valid input, a computation blew up: the message says where and what to change
            log.warning("handler %s: numerical problem: %s", fn.__name__, err)
            raise gr.Error(f"Numerical problem: {clean_message(str(err))}", title="Numerical problem") from None
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
