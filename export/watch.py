"""Run a command under a resident-memory and wall-time watchdog (Linux ``/proc``; elsewhere only the time limit).

:func:`run_watched` starts the command, polls the resident set of the process and its descendants (the sum of their
``VmRSS``), kills them all when the sum passes ``max_rss_bytes`` or the wall time passes
``timeout_s``, and reports the peak it saw. ``python -m export --max-rss-gib/--graph-timeout`` exports each graph in
such a child, so a graph that would exhaust the machine is stopped, recorded as failed, and the others still export.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Watched:
    """What :func:`run_watched` saw."""

    returncode: int
    seconds: float
    peak_rss_bytes: int  # the largest sum of VmRSS over the process tree seen while polling (0 where unknown)
    killed: str | None  # why the watchdog killed it ("memory" or "time"), None if it ended by itself
    output: str  # stdout and stderr together (the last 20,000 characters)

    @property
    def ok(self) -> bool:
        return self.killed is None and self.returncode == 0


def _tree_rss(root: int) -> tuple[int, list[int]]:
    """(sum of VmRSS in bytes, pids) of process ``root`` and all its descendants (0 and [root] without /proc)."""
    parents: dict[int, int] = {}
    try:
        entries = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0, [root]
    for pid in entries:
        try:  # the fields after the command name (which may hold spaces): state ppid ...
            parents[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in tree and pid not in tree}
        tree |= new
        grew = bool(new)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total, sorted(tree)


def run_watched(cmd: Sequence[str], *, max_rss_bytes: int | None = None, timeout_s: float | None = None,
                poll_s: float = 0.25, cwd: str | os.PathLike | None = None, env: dict | None = None) -> Watched:
    """Run ``cmd``; kill its process group when its resident set passes ``max_rss_bytes`` or it runs longer than
    ``timeout_s``. Returns a :class:`Watched` with the exit code, wall seconds, peak resident set and why it was
    killed (if it was)."""
    import tempfile

    start = time.perf_counter()
    peak, killed = 0, None
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            rss, pids = _tree_rss(proc.pid)
            peak = max(peak, rss)
            elapsed = time.perf_counter() - start
            if max_rss_bytes is not None and rss > max_rss_bytes:
                killed = "memory"
            elif timeout_s is not None and elapsed > timeout_s:
                killed = "time"
            if killed:
                for pid in pids:  # the process and its descendants (a child export, a worker pool)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(poll_s)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read()[-20000:]
    return Watched(returncode=proc.returncode, seconds=round(seconds, 2), peak_rss_bytes=peak, killed=killed,
                   output=output)


def describe(w: Watched, *, max_rss_bytes: int | None = None, timeout_s: float | None = None) -> str:
    """A one-line reason for a watched run that did not succeed."""
    peak = f"peak resident memory {w.peak_rss_bytes / 2**30:.2f} GiB"
    if w.killed == "memory":
        return (f"stopped: resident memory passed the limit of {(max_rss_bytes or 0) / 2**30:.3g} GiB after "
                f"{w.seconds:.0f} s ({peak})")
    if w.killed == "time":
        return f"stopped: still running after the limit of {timeout_s or 0:.0f} s ({peak})"
    last = [ln for ln in w.output.strip().splitlines() if ln.strip()][-1:] or ["no output"]
    how = f"killed by signal {-w.returncode}" if w.returncode < 0 else f"exit {w.returncode}"
    return f"{how} after {w.seconds:.0f} s ({peak}): {last[0][:300]}"
