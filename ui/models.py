"""``ModelManager``: the app's models and backends (loaded lazily, cached, one load at a time) and its running jobs.

One manager serves one demo; it replaces module-level caches and locks, so a test or a second demo gets its own.
:meth:`ModelManager.compute_with` is the single place that decides what the handlers compute with: the object the
library takes as its one ``model`` argument (``pipeline.protocols.DiffusionOps``: the accel backend the setting
picked, or the ``DiffusionModel`` itself for the eager path), and the labels the status line shows.
:meth:`ModelManager.run` wraps it with a job's cancel flag, progress bar and model slot for one handler call.

Abandoned work stops. Gradio runs a sync handler in a worker thread; when its client cancels (Stop, ``/cancel``,
``gradio_client``'s ``Job.cancel()``) gradio cancels the asyncio task awaiting that thread, which frees gradio's
concurrency slot at once, but the thread runs on; when its client disconnects gradio only marks the event dead
(``Event.alive = False``) and keeps awaiting the thread. Neither reaches the handler. So every job carries a cancel
flag (the library checks it in every loop) and a probe of its gradio event (:func:`gradio_event_probe`), and a
watcher thread sets the flag when the event is gone or dead, or when the job's time limit passes; model work holds
one of the manager's own ``concurrency`` slots until its computation has actually stopped.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import accel
from pipeline import load_model
from pipeline.errors import Cancelled, InputError, ModelLoadError
from pipeline.progress import check_cancelled
from ui.config import AppConfig
from ui.errors import TimeLimitExceeded
from ui.inputs import Settings, choice, shown
from ui.outputs import status_line

log = logging.getLogger("diffgeo.app")

Progress = Callable[[int, int, str], None]

#: How often the watcher looks at the running jobs (their clients and deadlines), seconds.
WATCH_INTERVAL_S = 0.2

#: Why a cancel flag was set (``CancelFlag.reason``).
STOP_BUTTON = "the Stop button"
TIME_LIMIT = "time limit"
CLIENT_CANCELLED = "the client cancelled"
CLIENT_GONE = "the client disconnected"

#: PyTorch's forward-mode AD levels are global to the process: work that uses them runs one call at a time.
_FORWARD_AD_LOCK = threading.Lock()


class CancelFlag(threading.Event):
    """A job's cancel flag (a ``threading.Event``, as the library takes it) that remembers why it was first set."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None

    def set(self, reason: str = "cancelled") -> None:
        if self.reason is None:
            self.reason = reason
        super().set()


@dataclass(eq=False)
class Job:
    """One running handler call: its cancel flag, session, gradio-event probe and (while it computes) deadline."""

    id: int
    name: str
    flag: CancelFlag
    session: str | None
    probe: Callable[[], str | None] | None
    deadline: float | None = None
    model_work: bool = False
    created: float = field(default_factory=time.monotonic)


def gradio_event_probe() -> Callable[[], str | None] | None:
    """For a handler running in a gradio worker thread: a probe ``() -> reason or None`` that says whether its event
    was cancelled (gradio dropped it from its queue's events) or its client disconnected (gradio set
    ``alive = False``). None outside a gradio call, or when the installed gradio keeps its events elsewhere.

    Gradio has no public hook for this: the probe reads the event id gradio puts in ``gradio.context.LocalContext``
    for the handler's thread, and the queue's ``event_ids_to_events`` (``tests/test_app_e2e.py`` checks that this
    works with the installed gradio).
    """
    try:
        from gradio.context import LocalContext

        blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        events = blocks._queue.event_ids_to_events
    except Exception:
        return None
    if not event_id or not isinstance(events, dict):
        return None
    if event_id not in events:
        log.warning("gradio event %s is not in the queue's events: its cancel and disconnect are not watched", event_id)
        return None

    def probe() -> str | None:
        event = events.get(event_id)
        if event is None:
            return CLIENT_CANCELLED
        if not getattr(event, "alive", True):
            return CLIENT_GONE
        return None

    return probe


@dataclass(frozen=True)
class Engine:
    """What a handler computes with: ``model``, the library's one model argument (an ``accel`` backend, which
    implements ``pipeline.protocols.DiffusionOps``), and the labels of backend and model."""

    model: Any
    backend_label: str
    model_label: str
    device: str


#: The library's progress descriptions -> the phase a user reads (first match wins).
PHASES = (
    ("loading model", "Preparing the backend (loading the model; a first run also builds the backend)"),
    ("waiting for a free model slot", "Queued: waiting for the job before yours to finish"),
    ("measuring", "Measuring generation curves"),
    ("inversion", "Inverting the image towards noise (DDIM)"),
    ("curve matching", "Optimising the region's generation curves"),
    ("round-trip", "Generating back (DDIM)"),
    ("generation", "Generating back (DDIM)"),
    ("rate map", "Measuring generation curves"),
    ("tangent", "Measuring generation curves"),
    ("shooting", "Extrapolating past the second image"),
    ("geodesic", "Optimising the path (geodesic solver)"),
    ("done", "Finishing"),
)


def phase_name(desc: str) -> str:
    """A library progress description in a user's words (``"curve matching (t=120)"`` -> ``"Optimising the
    region's generation curves (t=120)"``); a prefix such as ``"lerp: "`` is kept; unknown ones are shown as they
    are."""
    prefix, _, rest = desc.rpartition(": ")
    low = rest.lower()
    for key, name in PHASES:
        if key in low:
            detail = rest[rest.index("("):] if "(" in rest and key == "curve matching" else ""
            name = f"{name} {detail}".strip()
            return f"{prefix}: {name}" if prefix else name
    return desc


def progress_callback(progress: Any) -> Progress:
    """The library's ``progress(done, total, desc)`` as a Gradio progress bar (``None``: no bar) that names the
    phase in a user's words, with the fraction done and an estimate of the time left (from the pace of the current
    bar: the edits count one bar over all their phases, the geodesic tab one per path)."""
    bar = {"start": time.monotonic(), "total": None, "last": 0}

    def report(done: int, total: int, desc: str = "") -> None:
        if progress is None:
            return
        done, total = int(done), max(1, int(total))
        now = time.monotonic()
        if total != bar["total"] or done < bar["last"]:  # a new bar: restart its clock
            bar.update(start=now, total=total)
        bar["last"] = done
        text = phase_name(desc or "")
        elapsed = now - bar["start"]
        if 0 < done < total and elapsed > 1.0:
            left = elapsed / done * (total - done)
            text += f" · {done}/{total} · about {left:.0f} s left" if left >= 1 else f" · {done}/{total}"
        elif 0 < done < total:
            text += f" · {done}/{total}"
        progress((done, total), desc=text or None)

    return report


@dataclass
class Run:
    """One model-bound handler call: the engine, its progress callback, cancel flag, settings and start time."""

    engine: Engine
    progress: Progress
    cancel: threading.Event
    steps: int
    seed: int
    started: float = field(default_factory=time.perf_counter)

    @property
    def model(self) -> Any:
        """The library's ``model`` argument for this run (see :meth:`ModelManager.compute_with`)."""
        return self.engine.model

    def status(self, extra: str = "") -> str:
        """The status line under a result: which backend ran (and, for onnxruntime, on which providers)."""
        label = self.engine.backend_label
        running = getattr(self.engine.model, "info", {}).get("running_on")
        if running:
            label += f" ({', '.join(sorted(set(running.values())))})"
        return status_line(label, self.engine.model_label, self.engine.device, time.perf_counter() - self.started,
                           extra)


class ModelManager:
    """Models and backends for one app, and the cancel flags of its running jobs (all thread-safe).

    Two models and eight backends stay cached (least recently used dropped first), keyed by (source, device). At most
    ``config.concurrency`` calls do model work at once (:meth:`run`).
    """

    def __init__(self, config: AppConfig | None = None):
        self.config = config or AppConfig()
        self._load_lock = threading.Lock()  # one model or backend load at a time; others wait for it
        self._models = functools.lru_cache(maxsize=2)(self._load_model)
        self._backends = functools.lru_cache(maxsize=8)(self._build_backend)
        self._prepare_locks: dict[int, threading.Lock] = {}
        self._jobs: dict[int, Job] = {}
        self._jobs_lock = threading.Lock()
        self._jobs_changed = threading.Condition(self._jobs_lock)
        self._job_ids = itertools.count(1)
        self._watcher: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(max(1, int(self.config.concurrency)))  # model work at once

    # ---------------------------------------------------------------------------------------------------------------
    # Models and backends
    # ---------------------------------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """The configured torch device, else CUDA when available, else CPU."""
        import torch

        return self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def resolve(self, choice: str | None) -> tuple[str, str]:
        """Dropdown value -> ``(source, label shown in the status line)``. Hosted mode accepts only offered names."""
        choices = self.config.model_choices()
        choice = (choice or "").strip() or self.config.default_choice
        if choice in choices:
            return choices[choice], choice
        if self.config.hosted:
            raise InputError(f"model: this demo offers the models {', '.join(choices)}; {shown(choice)} is not one of "
                             "them")
        return choice, choice

    def _load_model(self, source: str, device: str):
        log.info("loading model %s on %s", source, device)
        try:
            return load_model(source, device=device, dtype=self.config.dtype)
        except (InputError, ModelLoadError, Cancelled, MemoryError):
            raise
        except Exception as err:  # unreadable weights (a junk safetensors file), a config the loader cannot use
            log.exception("loading model %s failed", source)
            raise ModelLoadError(f"the model {source!r} could not be loaded: its files are not readable diffusers "
                                 f"weights and configs ({type(err).__name__})") from err

    def _build_backend(self, source: str, device: str, name: str):
        return accel.get_backend(self._models(source, device), name=name)

    def model(self, source: str, device: str | None = None):
        """The model for ``source`` on ``device``, loaded once and cached."""
        with self._load_lock:
            return self._models(source, device or self.device)

    def loaded_models(self) -> int:
        """How many models are in memory."""
        return self._models.cache_info().currsize

    def backend(self, source: str, name: str, device: str | None = None) -> tuple[Any, str]:
        """``(backend, label)`` for the backend setting (the backend implements the library's model interface)."""
        choice(name, "backend", self.config.limits.backends)
        with self._load_lock:
            try:
                backend = self._backends(source, device or self.device, name)
            except (InputError, ModelLoadError, Cancelled):
                raise
            except Exception as err:  # a missing runtime (onnxruntime, tensorrt) or a failed engine build
                log.exception("backend %s unavailable", name)
                raise InputError(f"the {name} backend is not available here ({type(err).__name__}: {err}); "
                                 "choose auto or torch") from err
        with self._preparing(backend):  # wait while the warm-up exports this backend's graphs (no second export)
            pass
        label = str(getattr(backend, "name", name))
        return backend, "torch (eager)" if label == "torch" else label

    def prepare(self, source: str, name: str = "auto") -> str:
        """Build ``source``'s ``name`` backend and every graph it uses (the warm-up); returns the backend's name.

        Requests for the same backend wait meanwhile instead of exporting the same graphs a second time.
        """
        self.model(source)
        with self._load_lock:
            backend = self._backends(source, self.device, name)
        if hasattr(backend, "prepare"):
            with self._preparing(backend):
                backend.prepare()
        return str(getattr(backend, "name", name))

    def _preparing(self, backend) -> threading.Lock:
        """The lock :meth:`prepare` holds while it prepares ``backend``; users of the backend wait on it."""
        with self._load_lock:
            return self._prepare_locks.setdefault(id(backend), threading.Lock())

    def compute_with(self, settings: Settings) -> Engine:
        """What the handlers compute with for ``settings``, with its labels (loads on first use): the backend the
        setting picked (``torch``: the model's own eager maps, vmap over many JVP directions included).

        Every model-bound handler gets its ``model`` argument here and nowhere else.
        """
        source, model_label = self.resolve(settings.model)
        backend, backend_label = self.backend(source, settings.backend)
        if self.config.dtype not in (None, "float32"):  # said beside the model: results depend on it
            model_label = f"{model_label} ({self.config.dtype})"
        return Engine(backend, backend_label, model_label, self.device)

    # ---------------------------------------------------------------------------------------------------------------
    # Jobs, their cancel flags and the model slots
    # ---------------------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def job(self, session: Any) -> Iterator[CancelFlag]:
        """A cancel flag for one handler call, registered under the browser session (a ``gr.Request``) so the Stop
        button can set it, and watched: it is set when gradio drops the call's event (the client pressed Stop,
        called ``/cancel`` or ``Job.cancel()``, or disconnected). Calls without a session (scripts) still get a
        flag."""
        with self._registered(session, "job") as job:
            yield job.flag

    @contextlib.contextmanager
    def _registered(self, session: Any, name: str) -> Iterator[Job]:
        job = Job(next(self._job_ids), name, CancelFlag(), getattr(session, "session_hash", None),
                  gradio_event_probe())
        with self._jobs_lock:
            self._jobs[job.id] = job
            self._jobs_changed.notify_all()
        self._start_watcher()
        try:
            yield job
        finally:
            with self._jobs_lock:
                self._jobs.pop(job.id, None)
                left = sum(1 for j in self._jobs.values() if j.model_work)
            stopped = f" (stopped: {job.flag.reason})" if job.flag.is_set() else ""
            log.info("%s %d ended after %.1f s%s; %d model job(s) running", name, job.id,
                     time.monotonic() - job.created, stopped, left)

    def running(self, session: Any = None) -> int:
        """How many jobs of this session are running (no session: of every session)."""
        key = getattr(session, "session_hash", None)
        with self._jobs_lock:
            return sum(1 for j in self._jobs.values() if session is None or (key and j.session == key))

    def model_jobs(self) -> int:
        """How many jobs are doing model work now (holding a model slot)."""
        with self._jobs_lock:
            return sum(1 for j in self._jobs.values() if j.model_work)

    def cancel(self, session: Any) -> str:
        """Set the cancel flag of every running job of this session (the library stops at its next check)."""
        key = getattr(session, "session_hash", None)
        with self._jobs_lock:
            flags = [j.flag for j in self._jobs.values() if key and j.session == key]
        for flag in flags:
            flag.set(STOP_BUTTON)
        return f"Stopping {len(flags)} running job(s)…" if flags else "Stopped: nothing was running."

    def stop(self, session: Any, timeout: float = 30.0) -> str:
        """The Stop button: :meth:`cancel`, then wait until this session's jobs have ended (the library stops at its
        next check, within a step) and say so: the button's final state."""
        if not self.cancel(session).startswith("Stopping"):
            return "Stopped: nothing was running."
        t0 = time.monotonic()
        while self.running(session) and time.monotonic() - t0 < timeout:
            time.sleep(WATCH_INTERVAL_S / 2)
        if self.running(session):
            return (f"Stop requested {timeout:.0f} s ago; the job is finishing its current step and will end "
                    "without a result.")
        return f"Stopped: the job ended {time.monotonic() - t0:.1f} s after the request; no result was made."

    def _start_watcher(self) -> None:
        with self._jobs_lock:
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch, name="diffgeo-job-watcher", daemon=True)
                self._watcher.start()

    def _watch(self) -> None:
        """Sets the cancel flags of jobs whose client is gone or whose deadline passed (every ``WATCH_INTERVAL_S``;
        sleeps while no job runs)."""
        while True:
            with self._jobs_lock:
                while not self._jobs:
                    self._jobs_changed.wait()
                jobs = list(self._jobs.values())
            now = time.monotonic()
            for job in jobs:
                if job.flag.is_set():
                    continue
                if job.deadline is not None and now > job.deadline:
                    job.flag.set(TIME_LIMIT)
                elif job.probe is not None:
                    try:
                        gone = job.probe()
                    except Exception:  # a gradio that keeps its events otherwise: stop probing this job
                        log.exception("%s %d: its gradio event cannot be watched", job.name, job.id)
                        job.probe = gone = None
                    if gone:
                        job.flag.set(gone)
                if job.flag.is_set():
                    log.info("%s %d: cancel flag set (%s)", job.name, job.id, job.flag.reason)
            time.sleep(WATCH_INTERVAL_S)

    @contextlib.contextmanager
    def _model_slot(self, flag: CancelFlag, report: Progress, *, exclusive: bool) -> Iterator[None]:
        """One of the ``concurrency`` model slots (and, for ``exclusive`` work, the process's forward-AD lock), waited
        for while watching ``flag``: a cancelled job never starts, and a job abandoned by its client holds its slot
        until its computation has stopped (gradio frees its own slot at once on a cancel)."""
        locks = [self._slots] + ([_FORWARD_AD_LOCK] if exclusive else [])
        held: list[threading.Semaphore | threading.Lock] = []
        try:
            for lock in locks:
                while not lock.acquire(timeout=WATCH_INTERVAL_S):
                    if not held:
                        report(0, 1, "waiting for a free model slot")
                    check_cancelled(flag)
                held.append(lock)
            check_cancelled(flag)
            yield
        finally:
            for lock in reversed(held):
                lock.release()

    @contextlib.contextmanager
    def run(self, settings: Settings, progress: Any = None, session: Any = None, *,
            gradients: bool = False) -> Iterator[Run]:
        """One model-bound handler call: a registered, watched cancel flag, the progress bar, a model slot, and the
        engine to compute with. The clock of the status line and of the time limit starts once the model and backend
        are ready and the slot is held.

        ``gradients``: the call differentiates through the model (the edits), which uses PyTorch's forward-mode AD;
        so do the ``torch`` backends' JVPs. PyTorch's forward-AD levels are global to the process (two threads in
        ``torch.func.jvp`` at once fail with "Trying to access a forward AD level with an invalid index"), so such
        calls also take the process's forward-AD lock and run one at a time, whatever the concurrency.
        """
        with self._registered(session, "model job") as job:
            flag = job.flag
            report = progress_callback(progress)
            report(0, 1, "loading model")
            engine = self.compute_with(settings)
            exclusive = gradients or str(getattr(engine.model, "name", "")).startswith("torch")
            with self._model_slot(flag, report, exclusive=exclusive):
                limit = self.config.limits.time_limit_s
                with self._jobs_lock:
                    job.model_work = True
                    job.deadline = time.monotonic() + limit if limit else None
                log.info("model job %d started (%s, %s); %d model job(s) running", job.id, engine.backend_label,
                         engine.model_label, self.model_jobs())
                try:
                    yield Run(engine, report, flag, settings.steps, settings.seed)
                except Cancelled:
                    if flag.reason == TIME_LIMIT:
                        raise TimeLimitExceeded(
                            f"Time limit: this demo stops a request after {limit:g} s; try fewer steps, points or "
                            "iterations.") from None
                    raise
                finally:
                    with self._jobs_lock:
                        job.model_work = False
