"""Progress reporting and cancellation for long loops. The math takes a callback; the UI turns it into a bar."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import Cancelled

#: ``progress(done, total, desc)``: called after each unit of work.
ProgressFn = Callable[[int, int, str], None]
#: A cancel flag: a ``threading.Event`` or a no-argument callable returning True to stop.
CancelFlag = threading.Event | Callable[[], bool]


def report(progress: ProgressFn | None, done: int, total: int, desc: str = "") -> None:
    """Call ``progress(done, total, desc)`` if a callback was given."""
    if progress is not None:
        progress(done, total, desc)


def check_cancelled(cancel: CancelFlag | None) -> None:
    """Raise :class:`Cancelled` if the flag is set."""
    if cancel is None:
        return
    stop = cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())
    if stop:
        raise Cancelled("cancelled by the caller")
