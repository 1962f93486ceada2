"""``ModelManager``: the app's models and backends (loaded lazily, cached, one load at a time) and its running jobs.

One manager serves one demo; it replaces module-level caches and locks, so a test or a second demo gets its own.
:meth:`ModelManager.compute_with` is the single place that decides what the handlers compute with: the object the
library takes as its one ``model`` argument (``pipeline.protocols.DiffusionOps``: the accel backend the setting
picked, or the ``DiffusionModel`` itself for the eager path), and the labels the status line shows.
:meth:`ModelManager.run` wraps it with a job's cancel flag and progress bar for one handler call.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import accel
from pipeline import load_model
from pipeline.errors import Cancelled, InputError, ModelLoadError
from ui.config import BACKENDS, AppConfig
from ui.inputs import Settings
from ui.outputs import status_line

log = logging.getLogger("diffgeo.app")

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Engine:
    """What a handler computes with: ``model``, the library's one model argument (an ``accel`` backend, which
    implements ``pipeline.protocols.DiffusionOps``), and the labels of backend and model."""

    model: Any
    backend_label: str
    model_label: str
    device: str


def progress_callback(progress: Any) -> Progress:
    """The library's ``progress(done, total, desc)`` as a Gradio progress bar (``None``: no bar)."""

    def report(done: int, total: int, desc: str = "") -> None:
        if progress is not None:
            progress((int(done), int(total)), desc=desc or None)

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

    Two models and eight backends stay cached (least recently used dropped first), keyed by (source, device).
    """

    def __init__(self, config: AppConfig | None = None):
        self.config = config or AppConfig()
        self._load_lock = threading.Lock()  # one model or backend load at a time; others wait for it
        self._models = functools.lru_cache(maxsize=2)(self._load_model)
        self._backends = functools.lru_cache(maxsize=8)(self._build_backend)
        self._prepare_locks: dict[int, threading.Lock] = {}
        self._jobs: dict[str, set[threading.Event]] = {}
        self._jobs_lock = threading.Lock()

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
            raise InputError(f"this demo offers the models {', '.join(choices)}; {choice[:80]!r} is not one of them")
        return choice, choice

    def _load_model(self, source: str, device: str):
        log.info("loading model %s on %s", source, device)
        return load_model(source, device=device)

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
        if name not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
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
        return Engine(backend, backend_label, model_label, self.device)

    # ---------------------------------------------------------------------------------------------------------------
    # Jobs and cancellation
    # ---------------------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def job(self, session: Any) -> Iterator[threading.Event]:
        """A cancel flag for one handler call, registered under the browser session (a ``gr.Request``) so the Stop
        button can set it. Calls without a session (scripts) still get a flag."""
        flag = threading.Event()
        key = getattr(session, "session_hash", None)
        if key:
            with self._jobs_lock:
                self._jobs.setdefault(key, set()).add(flag)
        try:
            yield flag
        finally:
            if key:
                with self._jobs_lock:
                    flags = self._jobs.get(key, set())
                    flags.discard(flag)
                    if not flags:
                        self._jobs.pop(key, None)

    def running(self, session: Any) -> int:
        """How many jobs of this session are running."""
        key = getattr(session, "session_hash", None)
        with self._jobs_lock:
            return len(self._jobs.get(key, ())) if key else 0

    def cancel(self, session: Any) -> str:
        """Set the cancel flag of every running job of this session (the library stops at its next check)."""
        key = getattr(session, "session_hash", None)
        with self._jobs_lock:
            flags = list(self._jobs.get(key, ())) if key else []
        for flag in flags:
            flag.set()
        return f"Stopping {len(flags)} running job(s)…" if flags else "Nothing is running."

    @contextlib.contextmanager
    def run(self, settings: Settings, progress: Any = None, session: Any = None) -> Iterator[Run]:
        """One model-bound handler call: a registered cancel flag, the progress bar, and the engine to compute with.
        The clock of the status line starts once the model and backend are ready."""
        with self.job(session) as cancel:
            report = progress_callback(progress)
            report(0, 1, "loading model")
            engine = self.compute_with(settings)
            yield Run(engine, report, cancel, settings.steps, settings.seed)
