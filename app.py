"""Gradio app: look inside a diffusion model through its geometry.

Tabs: generation curves and saliency (``/rates``), curve-matching edits (``/remove``, ``/transfer``, ``/saliency``,
``/blend``), score-metric geodesics between images (``/geodesic``) and a geometry lab on closed-form manifolds
(``/lab``). Every handler converts UI values, calls the library's public API, and formats what comes back; the
computing happens in ``pipeline/`` and ``accel/``.

Run::

    python app.py [--host H] [--port P] [--share] [--model SRC] [--hosted] [--warmup] [--device D]
                  [--concurrency N] [--threads N]

Serves on 127.0.0.1:7860 by default (``GRADIO_SERVER_PORT`` / ``GRADIO_SERVER_NAME`` are honoured). Models load
lazily, on the first request that needs one, through a cache keyed by (source, device). Hosted mode (``--hosted`` or
``DIFFGEO_HOSTED=1``) offers only allow-listed models (``default``, the ``--model`` one, and the hub ids in
``DIFFGEO_ALLOWED_MODELS``), shows no local paths, and keeps error messages free of server details.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from pipeline.errors import Cancelled, InputError, ModelLoadError

log = logging.getLogger("diffgeo.app")
#: Default of every long handler's ``progress`` argument: Gradio sees it and passes a fresh tracker per call.
PROGRESS = gr.Progress()

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "weights" / "examples"
#: Backends the settings offer; ``accel.get_backend`` resolves them ("auto" picks the fastest available).
BACKENDS = ("auto", "torch", "torch-compile", "onnxruntime", "tensorrt")
#: Seeds of the procedural scenes used as examples when ``weights/examples/`` has none (tuning split).
FALLBACK_EXAMPLE_SEEDS = (10_000_001, 10_000_002, 10_000_003, 10_000_004)
#: Label of the settings' model dropdown (browser tests find widgets by their labels: keep them stable).
MODEL_LABEL = "Model"
#: Side, in pixels, of each picture in the geodesic strips (model outputs are small; inputs may be large).
STRIP_CELL = 96


# ====================================================================================================================
# Configuration
# ====================================================================================================================
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class AppConfig:
    """How the app serves. ``from_env`` reads the ``DIFFGEO_*`` variables; command-line flags override them."""

    model: str = "default"  # model source selected when the page opens ("default", a folder, or a hub id)
    hosted: bool = False  # hosted demo: allow-listed models only, no local paths in the page or in messages
    allowed_models: tuple[str, ...] = ()  # hosted mode: hub ids users may pick besides "default" and ``model``
    device: str | None = None  # torch device for models; None = CUDA when available, else CPU
    concurrency: int = 1  # model-bound jobs that run at once (the rest wait in the queue)
    queue_size: int = 64  # jobs that may wait in the queue before new ones are refused
    max_file_size: str = "10mb"  # largest accepted upload
    steps: int = 20  # initial value of the steps setting (DDIM steps / curve timesteps)
    max_steps: int = 100  # upper end of the steps slider (hosted demos on a CPU may lower it)

    @classmethod
    def from_env(cls, **overrides: Any) -> AppConfig:
        env = os.environ
        cfg = cls(
            model=env.get("DIFFGEO_MODEL", "default"),
            hosted=_env_flag("DIFFGEO_HOSTED"),
            allowed_models=tuple(s.strip() for s in env.get("DIFFGEO_ALLOWED_MODELS", "").split(",") if s.strip()),
            device=env.get("DIFFGEO_DEVICE") or None,
            concurrency=int(env.get("DIFFGEO_CONCURRENCY", "1")),
            max_file_size=env.get("DIFFGEO_MAX_FILE_SIZE", "10mb"),
            steps=int(env.get("DIFFGEO_STEPS", "20")),
            max_steps=int(env.get("DIFFGEO_MAX_STEPS", "100")),
        )
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    def model_choices(self) -> dict[str, str]:
        """Names shown in the model dropdown -> model sources. Hosted mode names local folders without their path."""
        choices = {"default": "default"}
        extra = [self.model] if self.model != "default" else []
        extra += [m for m in self.allowed_models if m not in extra and m != "default"]
        for i, src in enumerate(extra, 1):
            hosted_local = self.hosted and (os.sep in src or src.startswith(".")) and Path(src).expanduser().exists()
            choices[f"local model {i}" if hosted_local else src] = src
        return choices

    @property
    def default_choice(self) -> str:
        return next(name for name, src in self.model_choices().items() if src == self.model)


_CONFIG = AppConfig()


def configure(config: AppConfig) -> AppConfig:
    """Set the configuration the handlers read (``build_demo`` calls this)."""
    global _CONFIG
    _CONFIG = config
    return config


# ====================================================================================================================
# Models and backends: lazy, cached
# ====================================================================================================================
_LOAD_LOCK = threading.Lock()


def default_device() -> str:
    import torch

    return _CONFIG.device or ("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=2)
def _cached_model(source: str, device: str):
    from pipeline import load_model

    log.info("loading model %s on %s", source, device)
    return load_model(source, device=device)


def get_model(source: str, device: str | None = None):
    """The model for ``source`` on ``device``, loaded once and cached (two models at most stay in memory)."""
    with _LOAD_LOCK:  # one load at a time; concurrent requests for the same model wait for it
        return _cached_model(source, device or default_device())


@functools.lru_cache(maxsize=8)
def _cached_backend(source: str, device: str, name: str):
    from accel import get_backend

    return get_backend(_cached_model(source, device), name=name)


def get_backend(source: str, name: str, device: str | None = None):
    """``(backend, label)`` for the backend setting; ``(None, "torch (eager)")`` where ``accel`` is not built yet."""
    if name not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    try:
        from accel import get_backend as _  # noqa: F401
    except ImportError:
        if name in ("auto", "torch"):
            return None, "torch (eager)"
        raise InputError(f"the {name} backend needs the accel package, which this installation lacks") from None
    with _LOAD_LOCK:
        try:
            backend = _cached_backend(source, device or default_device(), name)
        except (InputError, ModelLoadError, Cancelled):
            raise
        except Exception as err:  # a missing runtime (onnxruntime, tensorrt) or a failed engine build
            log.exception("backend %s unavailable", name)
            raise InputError(f"the {name} backend is not available here ({type(err).__name__}: {err}); "
                             "choose auto or torch") from err
    with _preparing(backend):  # wait while the warm-up exports this backend's graphs (no second export)
        pass
    label = str(getattr(backend, "name", name))
    if label == "torch":  # the model itself: the library's fastest eager path (vmap over many JVP directions)
        return None, "torch (eager)"
    return backend, label


_PREPARE_LOCKS: dict[int, threading.Lock] = {}


def _preparing(backend) -> threading.Lock:
    """The lock the warm-up holds while it prepares ``backend``; users of the backend wait on it."""
    with _LOAD_LOCK:
        return _PREPARE_LOCKS.setdefault(id(backend), threading.Lock())


def resolve_model(choice: str | None) -> tuple[str, str]:
    """Dropdown value -> ``(source, label shown in the status line)``. Hosted mode accepts only offered names."""
    choices = _CONFIG.model_choices()
    choice = (choice or "").strip() or _CONFIG.default_choice
    if choice in choices:
        return choices[choice], choice
    if _CONFIG.hosted:
        raise InputError(f"this demo offers the models {', '.join(choices)}; {choice[:80]!r} is not one of them")
    return choice, choice


# ====================================================================================================================
# Errors, progress, cancellation
# ====================================================================================================================
_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@+~-]+){2,}[\\/]?")


def clean_message(message: str) -> str:
    """A message safe to show: absolute paths reduced to their last part (uploads keep a readable name)."""
    return _PATH_RE.sub(lambda m: Path(m.group(0).rstrip("/\\")).name or "<path>", str(message))


def ui_errors(fn: Callable) -> Callable:
    """Turn the library's exceptions into ``gr.Error`` messages; anything unexpected is logged, never shown raw."""

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
            msg = "the selected model could not be loaded" if _CONFIG.hosted else clean_message(str(err))
            raise gr.Error(f"Model: {msg}", title="Model not loaded") from None
        except MemoryError:
            raise gr.Error("Out of memory: try a smaller image, fewer steps or fewer points.") from None
        except Exception as err:
            if type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
                raise gr.Error("Out of GPU memory: try fewer steps or points.") from None
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Internal error ({type(err).__name__}); the server log has the details.") from None

    return wrapper


_JOBS: dict[str, set[threading.Event]] = {}
_JOBS_LOCK = threading.Lock()


@contextlib.contextmanager
def job(request: gr.Request | None) -> Iterator[threading.Event]:
    """A cancel flag for one handler call, registered under the browser session so the Stop button can set it."""
    flag = threading.Event()
    key = getattr(request, "session_hash", None)
    if key:
        with _JOBS_LOCK:
            _JOBS.setdefault(key, set()).add(flag)
    try:
        yield flag
    finally:
        if key:
            with _JOBS_LOCK:
                flags = _JOBS.get(key, set())
                flags.discard(flag)
                if not flags:
                    _JOBS.pop(key, None)


def cancel_jobs(request: gr.Request = None) -> str:
    """Set the cancel flag of every running job of this session (the library stops at its next check)."""
    key = getattr(request, "session_hash", None)
    with _JOBS_LOCK:
        flags = list(_JOBS.get(key, ())) if key else []
    for flag in flags:
        flag.set()
    return f"Stopping {len(flags)} running job(s)…" if flags else "Nothing is running."


def progress_callback(progress: gr.Progress | None) -> Callable[[int, int, str], None]:
    """The library's ``progress(done, total, desc)`` as a Gradio progress bar."""

    def report(done: int, total: int, desc: str = "") -> None:
        if progress is not None:
            progress((int(done), int(total)), desc=desc or None)

    return report


# ====================================================================================================================
# Input conversion
# ====================================================================================================================
def read_image(value: Any, name: str = "image") -> np.ndarray:
    """An image input's value (a file path, an array or a PIL image) -> uint8 (H, W, 3).

    Size is checked from the header before decoding, so a huge file fails fast. RGBA is flattened on white,
    grayscale repeated to RGB, 16-bit scaled to 8-bit (``pipeline.images.to_uint8_rgb``).
    """
    from pipeline import images

    if value is None or (isinstance(value, str) and not value):
        raise InputError(f"{name} is missing: upload an image")
    if isinstance(value, (str, os.PathLike)):
        try:
            with Image.open(value) as im:
                w, h = im.size
                if min(w, h) < images.MIN_SIDE or max(w, h) > images.MAX_SIDE:
                    raise InputError(f"{name} is {w}x{h} pixels; each side must lie in "
                                     f"[{images.MIN_SIDE}, {images.MAX_SIDE}]")
                if "A" in im.getbands() or "transparency" in im.info:
                    im = im.convert("RGBA")
                    value = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im).convert("RGB")
        except (OSError, Image.DecompressionBombError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"{name} is not a readable image file (PNG, JPEG, WebP, BMP, TIFF)") from None
    return images.to_uint8_rgb(value, name=name)


def read_editor(value: Any, name: str = "image", *, need_mask: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """An ImageEditor value ``{"background", "layers", "composite"}`` -> (uint8 image (H, W, 3), bool mask (H, W)).

    The mask is the union over the brush layers of ``alpha > 0`` (layers without alpha: any non-zero channel).
    """
    from pipeline import images

    if value is None:
        raise InputError(f"{name} is missing: upload an image and paint over the region")
    if not isinstance(value, dict):  # a bare image (e.g. from a script): no mask
        value = {"background": value, "layers": [], "composite": None}
    background = value.get("background")
    if background is None:
        background = value.get("composite")
    image = read_image(background, name)
    layers = [ly for ly in (value.get("layers") or []) if ly is not None]
    if not need_mask:
        return image, None
    if not layers:
        raise InputError(f"the mask on {name} is empty: paint over the region with the brush")
    union = np.zeros(image.shape[:2], dtype=bool)
    for layer in layers:
        arr = np.asarray(Image.open(layer)) if isinstance(layer, (str, os.PathLike)) else np.asarray(layer)
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[..., 3]
        elif arr.ndim == 3:
            arr = arr.max(axis=2)
        if arr.shape != union.shape:
            raise InputError(f"a mask layer on {name} is {arr.shape[1]}x{arr.shape[0]} but the image is "
                             f"{union.shape[1]}x{union.shape[0]}; draw the mask on the image itself")
        union |= arr > 0
    mask = images.to_mask(union, shape=image.shape[:2], name=f"the mask on {name}")
    return image, mask


def parse_points(text: str | None) -> list[tuple[float, float]]:
    """``"x1,y1; x2,y2"`` (pixels of the input image) -> [(x1, y1), (x2, y2)]; empty text gives []."""
    points = []
    for part in re.split(r"[;\n]+", text or ""):
        if not part.strip():
            continue
        nums = re.split(r"[,\s]+", part.strip().strip("()"))
        try:
            x, y = (float(n) for n in nums if n)
        except ValueError:
            raise InputError(f"points must look like 'x1,y1; x2,y2' (pixels); could not read {part.strip()!r}") \
                from None
        points.append((x, y))
    return points


def format_points(points: list[tuple[float, float]]) -> str:
    return "; ".join(f"{x:.0f},{y:.0f}" for x, y in points)


# ====================================================================================================================
# Outputs
# ====================================================================================================================
_OUT_ROOT = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "diffgeo-outputs"
_OUT_MAX_AGE_S = 3600.0


def output_dir() -> Path:
    """A fresh folder for one call's downloadable files; earlier calls' folders older than an hour are removed."""
    calls = _OUT_ROOT / "calls"
    calls.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in calls.iterdir():
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > _OUT_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
    out = calls / uuid.uuid4().hex[:12]
    out.mkdir()
    return out


def _save_pil_to_cache_atomically(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``processing_utils.save_pil_to_cache``, made safe for concurrent identical outputs.

    Gradio caches an output image under the hash of its encoded bytes and writes it with ``Path.write_bytes``, which
    truncates the file first. When two requests return the same image, the second write can truncate the file while
    the first request's download streams it, and the client gets "peer closed connection without sending complete
    message body". Here the bytes are written under a temporary name and renamed into place, and a file that is
    already cached (same hash, so same content) is only touched, as gradio does for cached files.
    """
    from gradio import processing_utils

    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    try:
        if path.stat().st_size == len(data):
            os.utime(path)  # delete_cache ages files by ctime
            return str(path)
    except OSError:
        pass
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def _install_atomic_image_cache() -> None:
    """Route gradio's image-output caching through :func:`_save_pil_to_cache_atomically` (idempotent)."""
    from gradio import processing_utils

    needed = ("save_pil_to_cache", "encode_pil_to_bytes", "hash_bytes")  # what the replacement relies on
    if all(hasattr(processing_utils, name) for name in needed):
        processing_utils.save_pil_to_cache = _save_pil_to_cache_atomically


_install_atomic_image_cache()


def status_line(backend_label: str, model_label: str, seconds: float, extra: str = "") -> str:
    parts = [f"**backend:** {backend_label}", f"**model:** {model_label}", f"**device:** {default_device()}",
             f"**time:** {seconds:.1f} s"]
    return " · ".join(parts) + (f"  \n{extra}" if extra else "")


@dataclass
class Context:
    """What every model-bound handler needs: the model, the backend, callbacks, and timing."""

    model: Any
    backend: Any
    backend_label: str
    model_label: str
    progress: Callable[[int, int, str], None]
    cancel: threading.Event
    steps: int
    seed: int
    started: float = field(default_factory=time.perf_counter)

    def status(self, extra: str = "") -> str:
        """The status line under a result: which backend ran (and, for onnxruntime, on which providers)."""
        label = self.backend_label
        running = getattr(self.backend, "info", {}).get("running_on") if self.backend is not None else None
        if running:
            label += f" ({', '.join(sorted(set(running.values())))})"
        return status_line(label, self.model_label, time.perf_counter() - self.started, extra)


def _int_setting(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number in [{lo}, {hi}], got {value!r}") from None
    if not lo <= v <= hi:
        raise InputError(f"{name} must lie in [{lo}, {hi}], got {v}")
    return v


def make_context(model_choice, backend_name, steps, seed, progress, cancel) -> Context:
    source, label = resolve_model(model_choice)
    steps = _int_setting(steps, "steps", 1, 1000)
    seed = _int_setting(seed if seed is not None else 0, "seed", 0, 2**31 - 1)
    report = progress_callback(progress)
    report(0, 1, "loading model")
    model = get_model(source)
    backend, backend_label = get_backend(source, backend_name or "auto")
    return Context(model, backend, backend_label, label, report, cancel, steps, seed)


def _library(module: str):
    """Import ``pipeline.<module>``; a missing module is a clear message, not a stack trace."""
    import importlib

    try:
        return importlib.import_module(f"pipeline.{module}")
    except ModuleNotFoundError as err:
        if err.name == f"pipeline.{module}":
            raise InputError(f"this tab needs pipeline.{module}, which this installation does not have yet") from None
        raise


def _np(x) -> np.ndarray:
    """A tensor or array from the library as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


# ====================================================================================================================
# Tab: generation curves
# ====================================================================================================================
def _rates_views(state: dict, timestep: float, points: list[tuple[float, float]]):
    """(saliency overlay with the points marked, rate map at the grid timestep nearest ``timestep``, curves figure)."""
    from pipeline import viz

    image, res = state["image"], state["result"]
    h, w = image.shape[:2]
    points = [(min(max(x, 0), w - 1), min(max(y, 0), h - 1)) for x, y in points[-2:]]
    names = [f"P{i + 1}" for i in range(len(points))]
    labels = [f"P{i + 1} ({x:.0f},{y:.0f})" for i, (x, y) in enumerate(points)]
    saliency = viz.mark_points(viz.overlay(image, _np(res.saliency)), points, labels=names)
    ts = _np(res.timesteps)
    k = int(np.argmin(np.abs(ts - float(timestep))))
    rate = viz.mark_points(viz.heatmap(_np(res.curves[k]), (h, w)), points, labels=names)
    cells = [res.patch_index(x, y) for x, y in points]
    fig = viz.curves_figure(
        ts, {lab: _np(res.curves[:, r, c]) for lab, (r, c) in zip(labels, cells, strict=True)},
        accumulated={lab: _np(res.accumulated[:, r, c]) for lab, (r, c) in zip(labels, cells, strict=True)},
        title="Curves of the clicked points" if points else "Click the saliency map to add points",
    )
    return saliency, rate, fig, int(ts[k])


@ui_errors
def run_rates(image, patch_size, statistic, timestep, points, model, backend, steps, seed,
              progress=PROGRESS, request: gr.Request = None):
    """Image -> saliency map, rate map at a timestep, and the curves of up to two points; plus downloads."""
    img = read_image(image)
    pts = parse_points(points)
    patch = _int_setting(patch_size, "patch size", 1, 64)
    rates = _library("rates")
    from pipeline import viz

    with job(request) as cancel:
        ctx = make_context(model, backend, steps, seed, progress, cancel)
        res = rates.generation_curves(ctx.model, img, num_timesteps=ctx.steps, patch_size=patch,
                                      statistic=statistic or rates.DEFAULT_STATISTIC, seed=ctx.seed,
                                      backend=ctx.backend, progress=ctx.progress, cancel=ctx.cancel)
    state = {"image": img, "result": res}
    saliency, rate, fig, t_shown = _rates_views(state, timestep, pts)
    out = output_dir()
    np.savez_compressed(out / "curves.npz", timesteps=_np(res.timesteps), curves=_np(res.curves),
                        accumulated=_np(res.accumulated), saliency=_np(res.saliency))
    files = [str(out / "curves.npz"), viz.save_png(saliency, out / "saliency.png")]
    grid = "x".join(str(n) for n in res.curves.shape[1:])
    status = ctx.status(f"{len(res.timesteps)} timesteps, {grid} patches ({res.pixels_per_patch} px each), "
                        f"statistic {res.statistic}, {res.jvp_evaluations} JVPs ({res.batching}); "
                        f"rate map at t = {t_shown}")
    return saliency, rate, fig, status, files, state


@ui_errors
def replot_rates(state, timestep, points):
    """Redraw the views from the last result for a new timestep or new points (no model call)."""
    if not state:
        raise InputError("compute the curves first (press Compute curves)")
    saliency, rate, fig, _ = _rates_views(state, timestep, parse_points(points))
    return saliency, rate, fig


def select_point(points: str, evt: gr.SelectData):
    """A click on the saliency map adds a point; the last two are kept."""
    pts = parse_points(points) if points else []
    try:
        x, y = evt.index
    except (TypeError, ValueError):
        return points
    return format_points((pts + [(float(x), float(y))])[-2:])


# ====================================================================================================================
# Tabs: editing by curve matching
# ====================================================================================================================
def _edit_outputs(ctx: Context, before: list[np.ndarray], result, name: str, extra: str = ""):
    """(result image, before | after strip, curves figure, loss figure, status, downloads) from an ``EditResult``."""
    from pipeline import viz

    edited = np.asarray(result.image)
    strip = viz.side_by_side([*before, edited])
    measured = lambda which: {"target region": result.mean_curve(which)} \
        if getattr(result, f"curves_{which}") is not None else {}
    curves = viz.before_after_figure(_np(result.timesteps), measured("before"), measured("after"),
                                     reference={"reference r*": result.mean_curve("reference")}, title="")
    losses = None
    if len(result.loss_history):
        losses = viz.history_figure({"curve loss": _np(result.loss_history)}, title="", ylabel="loss")
    out = output_dir()
    files = [viz.save_png(edited, out / f"{name}.png"), viz.save_png(strip, out / f"{name}_before_after.png")]
    diag = result.diagnostics or {}
    before_err, after_err = diag.get("curve_error_before"), diag.get("curve_error_after")
    loss_note = f"; curve error {before_err:.3g} → {after_err:.3g}" if None not in (before_err, after_err) else ""
    return edited, strip, curves, losses, ctx.status(f"{extra}{loss_note}"), files


def _edit_kwargs(ctx: Context, t_edit, iterations, measure) -> dict[str, Any]:
    """Keyword arguments every edit call shares (config overrides, backend, progress and cancel)."""
    t_edit = _int_setting(t_edit, "edit depth t_edit", 1, ctx.model.num_train_timesteps - 1)
    iterations = _int_setting(iterations, "gradient steps", 0, 50)
    return dict(num_steps=min(ctx.steps, t_edit), t_edit=t_edit, iterations=iterations, measure_curves=bool(measure),
                seed=ctx.seed, backend=ctx.backend, progress=ctx.progress, cancel=ctx.cancel)


@ui_errors
def run_remove(editor, t_edit, iterations, measure, model, backend, steps, seed, progress=PROGRESS,
               request: gr.Request = None):
    """Remove the painted object: its generation curves are matched to the surrounding background's."""
    image, mask = read_editor(editor, "image")
    edit = _library("edit")
    with job(request) as cancel:
        ctx = make_context(model, backend, steps, seed, progress, cancel)
        res = edit.remove_object(ctx.model, image, mask, **_edit_kwargs(ctx, t_edit, iterations, measure))
    return _edit_outputs(ctx, [image], res, "removed", f"mask: {int(mask.sum())} px")


@ui_errors
def run_transfer(target, source, t_edit, iterations, measure, model, backend, steps, seed, progress=PROGRESS,
                 request: gr.Request = None):
    """The target region takes on the content of the source region (same image, or a reference image)."""
    image, target_mask = read_editor(target, "image")
    ref, source_mask = read_editor(source, "source image")
    same = ref.shape == image.shape and np.array_equal(ref, image)
    edit = _library("edit")
    with job(request) as cancel:
        ctx = make_context(model, backend, steps, seed, progress, cancel)
        res = edit.transfer(ctx.model, image, target_mask, source_mask, reference=None if same else ref,
                            **_edit_kwargs(ctx, t_edit, iterations, measure))
    before = [image] if same else [ref, image]
    return _edit_outputs(ctx, before, res, "transferred",
                         f"source: {'same image' if same else 'reference image'}, {int(source_mask.sum())} px")


@ui_errors
def run_saliency(editor, factor, t_edit, iterations, measure, model, backend, steps, seed, progress=PROGRESS,
                 request: gr.Request = None):
    """Make the painted region more (factor > 1) or less (factor < 1) salient."""
    image, mask = read_editor(editor, "image")
    try:
        factor = float(factor)
    except (TypeError, ValueError):
        raise InputError(f"factor must be a number, got {factor!r}") from None
    edit = _library("edit")
    with job(request) as cancel:
        ctx = make_context(model, backend, steps, seed, progress, cancel)
        res = edit.adjust_saliency(ctx.model, image, mask, factor, **_edit_kwargs(ctx, t_edit, iterations, measure))
    return _edit_outputs(ctx, [image], res, "saliency", f"factor {factor:g}")


@ui_errors
def run_blend(background, foreground, t_edit, iterations, measure, model, backend, steps, seed, progress=PROGRESS,
              request: gr.Request = None):
    """Paste the painted object of the object image into the background and harmonise it through its curves."""
    bg = read_image(background, "background image")
    fg, mask = read_editor(foreground, "object image")
    edit = _library("edit")
    with job(request) as cancel:
        ctx = make_context(model, backend, steps, seed, progress, cancel)
        res = edit.blend(ctx.model, bg, fg, mask, **_edit_kwargs(ctx, t_edit, iterations, measure))
    return _edit_outputs(ctx, [bg, fg], res, "blended", f"object: {int(mask.sum())} px")


def copy_to_source(target):
    """When an image is uploaded for transfer, offer it as the source canvas too (draw the source region on it)."""
    if not isinstance(target, dict) or target.get("background") is None:
        return gr.skip()
    return {"background": target["background"], "layers": [], "composite": target["background"]}


# ====================================================================================================================
# Tab: geodesics between images
# ====================================================================================================================
@ui_errors
def run_geodesic(image_a, image_b, n_points, t_star, lam, beyond, max_iter, model, backend, steps, seed,
                 progress=PROGRESS, request: gr.Request = None):
    """Two images -> the score-metric geodesic between them (above LERP and SLERP), its extrapolation, a GIF."""
    a, b = read_image(image_a, "first image"), read_image(image_b, "second image")
    n_points = _int_setting(n_points, "path points", 3, 64)
    t_star = _int_setting(t_star, "noise level t*", 1, 999)
    max_iter = _int_setting(max_iter, "solver iterations", 1, 5000)
    try:
        lam, beyond = float(lam), float(beyond or 0.0)
    except (TypeError, ValueError):
        raise InputError(f"lambda and the extrapolation length must be numbers, got {lam!r}, {beyond!r}") from None
    interp = _library("interpolate")
    from pipeline import viz

    paths = {}
    with job(request) as cancel:
        ctx = make_context(model, backend, steps, seed, progress, cancel)
        common = dict(n_points=n_points, t_star=t_star, lam=lam, num_steps=min(ctx.steps, t_star), backend=ctx.backend,
                      cancel=ctx.cancel)
        solver = dict(max_iter=max_iter)
        for method in ("geodesic", "lerp", "slerp"):
            stage = lambda d, t, desc, m=method: ctx.progress(d, t, f"{m}: {desc}")
            if method == "geodesic" and beyond > 0:  # the BVP a -> b, then shooting past b, in one call
                paths[method] = interp.extrapolate_images(ctx.model, a, b, beyond=beyond, method=method,
                                                          progress=stage, **common, **solver)
            elif method == "geodesic":
                paths[method] = interp.interpolate_images(ctx.model, a, b, method=method, progress=stage, **common,
                                                          **solver)
            else:
                paths[method] = interp.interpolate_images(ctx.model, a, b, method=method, progress=stage, **common)
    geo = paths["geodesic"]
    rows = {m: [np.asarray(im) for im in p.images[: p.n_inner]] for m, p in paths.items()}
    strip = viz.image_strip(rows, cell=STRIP_CELL)
    out = output_dir()
    gif = viz.save_gif(rows["geodesic"], out / "geodesic.gif")
    files = [gif, viz.save_png(strip, out / "strip.png")]
    extrapolated = None
    if len(geo.images) > geo.n_inner:
        extrapolated = viz.image_strip({"inputs": [a, b],
                                        "b, beyond": [np.asarray(im) for im in geo.images[geo.n_inner - 1:]]},
                                       cell=STRIP_CELL)
        files.append(viz.save_png(extrapolated, out / "extrapolation.png"))
    fig = viz.history_figure({"geodesic": geo.energy},
                             references={f"{m} (fixed path)": p.energy[0] for m, p in paths.items() if m != "geodesic"})
    table = " · ".join(f"{m}: length {p.length:.4g}" for m, p in paths.items())
    solver = f"; solver {geo.geodesic.iterations} iterations ({geo.geodesic.reason})" if geo.geodesic else ""
    return strip, extrapolated, fig, gif, ctx.status(f"{n_points} points, t* = {t_star}, λ = {lam:g}; "
                                                     f"score-metric {table}{solver}"), files


# ====================================================================================================================
# Tab: geometry lab (closed-form manifolds, no model)
# ====================================================================================================================
@functools.lru_cache(maxsize=64)
def _true_geodesic(manifold: str, angle_1: float, angle_2: float) -> np.ndarray:
    """The closed-form (sphere) or numerical (torus) geodesic; independent of lambda and sigma, so cached."""
    m, a, b = _lab_manifold(manifold, 0.1, angle_1, angle_2)
    return _np(m.geodesic(a, b, 64))


def _lab_manifold(manifold: str, sigma: float, angle_1: float, angle_2: float):
    """(smoothed manifold, a, b): endpoint a at angles (0, 0), b at the sliders' angles (degrees)."""
    import torch

    lab = _library("synthetic")
    t1, t2 = (torch.tensor([np.deg2rad(v)], dtype=torch.float64) for v in (angle_1, angle_2))
    zero = torch.zeros(1, dtype=torch.float64)
    if manifold == "sphere":  # S^2 in R^3; angles are longitude and latitude
        m = lab.sphere(2, 3, radius=1.0, sigma=sigma, seed=None)
        point = lambda lon, lat: torch.stack((lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()), dim=-1)[0]
        return m, point(zero, zero), point(t1, t2)
    if manifold == "torus":  # angles around the centre circle and around the tube
        m = lab.torus(3, major=1.0, minor=0.4, sigma=sigma, seed=None)
        return m, m.embed(zero, zero)[0], m.embed(t1, t2)[0]
    raise InputError(f"manifold must be 'sphere' or 'torus', got {manifold!r}")


@ui_errors
def run_lab(manifold, lam, sigma, angle_1, angle_2, n_points, iterations):
    """Score-metric geodesic on a noise-smoothed sphere or torus, with the chord and the true geodesic, in 3D."""
    n_points = _int_setting(n_points, "points", 3, 128)
    iterations = _int_setting(iterations, "iterations", 1, 2000)
    try:
        lam, sigma, angle_1, angle_2 = float(lam), float(sigma), float(angle_1), float(angle_2)
    except (TypeError, ValueError):
        raise InputError("lambda, sigma and the angles must be numbers") from None
    geo = _library("geodesic")
    from pipeline import viz

    m, a, b = _lab_manifold(manifold, sigma, angle_1, angle_2)
    res = geo.geodesic_bvp(m.score, a, b, lam=lam, n_points=n_points, score_jvp=m.score_jvp, max_iter=iterations)
    path = _np(res.path)
    true_path = _true_geodesic(manifold, angle_1, angle_2)
    chord = np.stack([path[0], path[-1]])
    mesh = viz.sphere_mesh(1.0) if manifold == "sphere" else viz.torus_mesh(1.0, 0.4)
    fig = viz.surface_figure(mesh, {"score-metric geodesic": path, "true geodesic": true_path, "chord": chord},
                             points={"a": path[0], "b": path[-1]}, title=f"{manifold}: λ = {lam:g}, σ = {sigma:g}")
    energy = viz.history_figure({"energy": res.energy}) if len(res.energy) > 1 else None
    length = lambda p: float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())
    table = (f"| path | Euclidean length |\n|---|---|\n| score-metric geodesic | {length(path):.4f} |\n"
             f"| true geodesic | {length(true_path):.4f} |\n| chord | {length(chord):.4f} |\n\n"
             f"{res.iterations} iterations ({res.reason}), metric length {res.length:.4g} "
             f"(start {res.initial_length:.4g}), {res.seconds:.2f} s")
    return fig, energy, table


# ====================================================================================================================
# Layout
# ====================================================================================================================
@dataclass(frozen=True)
class Example:
    """An example input: an image file and, when the scene ships one, an object mask as an RGBA brush layer."""

    image: str
    layer: str | None = None

    def editor(self) -> dict:
        """The example as a mask-editor value (the mask pre-painted when there is one)."""
        return {"background": self.image, "layers": [self.layer] if self.layer else [], "composite": self.image}


def example_inputs(limit: int = 6) -> list[Example]:
    """Examples from ``weights/examples/index.json`` (the 256-pixel display copies, masks as brush layers), or,
    without it, a few procedural scenes written to a temporary folder."""
    from pipeline import viz

    out = _OUT_ROOT / "examples"
    index = EXAMPLES_DIR / "index.json"
    examples = []
    if index.is_file():
        import json

        for entry in json.loads(index.read_text()).get("examples", []):
            image = EXAMPLES_DIR / entry.get("image_256", entry["image"])
            mask = EXAMPLES_DIR / entry["mask_256"] if entry.get("mask_256") else None
            if not image.is_file():
                continue
            layer = None
            if mask is not None and mask.is_file():
                out.mkdir(parents=True, exist_ok=True)
                layer = out / f"layer_{mask.name}"
                if not layer.exists():
                    alpha = np.asarray(Image.open(mask).convert("L"))
                    rgba = np.zeros((*alpha.shape, 4), np.uint8)
                    rgba[alpha > 0] = (255, 0, 255, 255)
                    Image.fromarray(rgba, "RGBA").save(layer)
                layer = str(layer)
            examples.append(Example(str(image), layer))
        examples.sort(key=lambda e: e.layer is None)  # the ones with masks first
        return examples[:limit]
    from pipeline import scenes

    out.mkdir(parents=True, exist_ok=True)
    for seed in FALLBACK_EXAMPLE_SEEDS:
        p = out / f"scene_{seed}.png"
        if not p.exists():
            viz.save_png(np.asarray(Image.fromarray(scenes.make_scene(seed, size=32).image).resize((256, 256),
                                                                                              Image.NEAREST)), p)
        examples.append(Example(str(p)))
    return examples[:limit]


def guard_uploads(component: gr.components.Component) -> gr.components.Component:
    """Make ``component`` report an unreadable upload (not an image, a decompression bomb) as a clear ``gr.Error``.

    Gradio decodes uploads in the component's ``preprocess`` before any handler runs, so the guard wraps that method
    on this instance (a subclass would make Gradio write a ``.pyi`` stub beside this file).
    """
    inner = component.preprocess
    label = component.label or "image"

    @functools.wraps(inner)
    def preprocess(payload):
        try:
            return inner(payload)
        except gr.Error:
            raise
        except Exception:
            raise gr.Error(f"{label}: not a readable image file (PNG, JPEG, WebP, BMP, TIFF), or larger than "
                           f"the accepted size", title="Invalid input") from None

    component.preprocess = preprocess
    return component


def _mask_editor(label: str, elem_id: str) -> gr.ImageEditor:
    return guard_uploads(gr.ImageMask(
        label=label, type="numpy", image_mode=None, format="png", sources=("upload", "clipboard"), layers=False,
        transforms=(), brush=gr.Brush(colors=[("#ff00ff", 0.6)], color_mode="fixed"), height=360, elem_id=elem_id))


def _image_input(label: str, elem_id: str | None = None) -> gr.Image:
    return guard_uploads(gr.Image(label=label, type="filepath", image_mode=None, sources=("upload", "clipboard"),
                                  height=300, elem_id=elem_id))


def _edit_result_column(name: str, api: str):
    """Outputs shared by the editing tabs, in the order ``_edit_outputs`` returns them."""
    result = gr.Image(label=f"{name} result", format="png", interactive=False, buttons=["download", "fullscreen"],
                      elem_id=f"{api}-result")
    before_after = gr.Image(label=f"{name} before | after", format="png", interactive=False)
    with gr.Row():
        curves = gr.Plot(label=f"{name} curves before/after")
        losses = gr.Plot(label=f"{name} loss")
    status = gr.Markdown(elem_id=f"{api}-status")
    files = gr.File(label=f"{name} downloads", file_count="multiple")
    return [result, before_after, curves, losses, status, files]


def _run_stop(run_label: str):
    with gr.Row():
        run = gr.Button(run_label, variant="primary")
        stop = gr.Button("Stop", variant="stop")
    return run, stop


def build_demo(config: AppConfig | None = None) -> gr.Blocks:
    """The Blocks app. No model loads here: the first request that needs one loads it."""
    cfg = configure(config or AppConfig.from_env())
    from pipeline import images

    Image.MAX_IMAGE_PIXELS = images.MAX_SIDE**2  # refuse decompression bombs early (2x this raises)
    # Examples fill the inputs only (cache_examples=False): cached outputs would be keyed by the example image alone,
    # while results also depend on the shared settings (model, backend, steps), so a cached picture could disagree
    # with what the settings say; and caching at start would run every tab's model job before the page comes up
    # (minutes on a CPU). With "lazy" caching the first visitor would still wait, for a result with default settings.
    examples = example_inputs()
    queue_kw = dict(concurrency_id="model", concurrency_limit=cfg.concurrency)

    with gr.Blocks(title="diffgeo: inside diffusion models", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# diffgeo: inside a diffusion model, through its geometry\n"
                    "Generation rates, curve-matching edits and score-metric geodesics. Paint masks with the brush.")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                choices = list(cfg.model_choices())
                model = gr.Dropdown(choices=choices, value=cfg.default_choice, label=MODEL_LABEL,
                                    allow_custom_value=not cfg.hosted,
                                    info="default, or a local diffusers folder / hub id" if not cfg.hosted else None)
                backend = gr.Radio(list(BACKENDS), value="auto", label="Backend",
                                   info="the one that actually ran is shown under each result")
                steps = gr.Slider(2, cfg.max_steps, value=min(cfg.steps, cfg.max_steps), step=1, label="Steps",
                                  info="timesteps of the curves / DDIM steps")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
        settings = [model, backend, steps, seed]

        with gr.Tab("Generation curves", id="rates"):
            gr.Markdown("How fast each part of the image appears during generation. Click the saliency map to "
                        "plot the curves of up to two points.")
            with gr.Row():
                with gr.Column():
                    r_image = _image_input("Image", "rates-image")
                    with gr.Row():
                        r_patch = gr.Radio([1, 2, 4, 8], value=4, label="Patch size (model pixels)")
                        r_stat = gr.Dropdown(["tv", "std", "mean", "peak"], value="tv", label="Saliency statistic",
                                             info="fluctuation of the time-normalised curves: total variation (the "
                                                  "paper's) or std; or their mean or peak")
                    r_run, r_stop = _run_stop("Compute curves")
                    if examples:
                        gr.Examples([[e.image] for e in examples], inputs=[r_image], label="Example scenes",
                                    cache_examples=False)
                with gr.Column():
                    r_saliency = gr.Image(label="Saliency (click to pick points)", format="png", interactive=False,
                                          elem_id="rates-saliency")
                    r_points = gr.Textbox(label="Points (x,y; x,y)", placeholder="e.g. 10,12; 40,30")
                    r_t = gr.Slider(0, 999, value=500, step=1, label="Rate-map timestep t")
                    r_rate = gr.Image(label="Rate map", format="png", interactive=False)
            r_curves = gr.Plot(label="Curves")
            r_status = gr.Markdown(elem_id="rates-status")
            r_files = gr.File(label="Curves downloads", file_count="multiple")
            r_state = gr.State(None)
            r_ev = r_run.click(run_rates, [r_image, r_patch, r_stat, r_t, r_points, *settings],
                               [r_saliency, r_rate, r_curves, r_status, r_files, r_state], api_name="rates", **queue_kw)
            r_stop.click(cancel_jobs, None, r_status, cancels=[r_ev], api_name="cancel_rates", queue=False)
            r_views = [r_saliency, r_rate, r_curves]
            r_saliency.select(select_point, r_points, r_points, api_name="rates_select",
                              api_visibility="undocumented").then(
                replot_rates, [r_state, r_t, r_points], r_views, api_name="rates_replot")
            r_t.release(replot_rates, [r_state, r_t, r_points], r_views, api_name="rates_timestep",
                        api_visibility="undocumented")

        def edit_tab(title: str, api: str, text: str, fn: Callable, run_label: str, build_inputs: Callable,
                     config: str):
            """One editing tab: inputs built by ``build_inputs`` (returns the handler's leading inputs), then the
            edit depth, the Run/Stop buttons, and the shared outputs. The depth and gradient-step sliders start at
            the task's tuned defaults (``pipeline.edit.<config>``)."""
            defaults = getattr(_library("edit"), config)()
            with gr.Tab(title, id=api):
                gr.Markdown(text)
                with gr.Row():
                    with gr.Column():
                        inputs = build_inputs()
                        depth = gr.Slider(50, 900, value=defaults.t_edit, step=10, label=f"{title}: edit depth t_edit",
                                          info="how far the image is inverted: deeper = freer edit, less faithful")
                        with gr.Accordion("Advanced", open=False, elem_id=f"{api}-advanced"):
                            iters = gr.Slider(0, 10, value=defaults.iterations, step=1,
                                              label=f"{title}: gradient steps per timestep",
                                              info="0 switches the curve matching off (the ablation)")
                            measure = gr.Checkbox(value=True, label=f"{title}: measure curves before/after",
                                                  info="one more inversion and two rate passes")
                        run, stop = _run_stop(run_label)
                    with gr.Column():
                        outs = _edit_result_column(title, api)
                ev = run.click(fn, [*inputs, depth, iters, measure, *settings], outs, api_name=api, **queue_kw)
                stop.click(cancel_jobs, None, outs[4], cancels=[ev], api_name=f"cancel_{api}", queue=False)
            return inputs

        def editor_examples(editor):
            if examples:
                gr.Examples([[e.editor()] for e in examples], inputs=[editor], label="Example scenes (with masks)",
                            cache_examples=False)

        def remove_inputs():
            editor = _mask_editor("Remove object: image and mask", "remove-editor")
            editor_examples(editor)
            return [editor]

        def transfer_inputs():
            target = _mask_editor("Transfer: image and target mask", "transfer-editor")
            source = _mask_editor("Transfer: source image and source mask", "transfer-source")
            editor_examples(target)
            target.upload(copy_to_source, target, source, api_name="transfer_copy", api_visibility="private",
                          queue=False)
            return [target, source]

        def saliency_inputs():
            editor = _mask_editor("Saliency: image and mask", "saliency-editor")
            factor = gr.Slider(0.1, 4.0, value=2.0, step=0.1, label="Saliency factor",
                               info="above 1: more salient; below 1: less")
            editor_examples(editor)
            return [editor, factor]

        def blend_inputs():
            bg = _image_input("Blend: background image", "blend-background")
            fg = _mask_editor("Blend: object image and mask", "blend-editor")
            if len(examples) >= 2:
                gr.Examples([[examples[i + 1].image, examples[i].editor()] for i in range(0, len(examples) - 1, 2)],
                            inputs=[bg, fg], label="Example pairs", cache_examples=False)
            return [bg, fg]

        edit_tab("Remove object", "remove", "Paint over the object to remove; the background fills in.", run_remove,
                 "Remove object", remove_inputs, "RemoveConfig")
        edit_tab("Transfer", "transfer", "Paint the target region on the image, and the source region on the second "
                 "canvas (the same image by default; upload a reference image there to take content from it).",
                 run_transfer, "Transfer content", transfer_inputs, "TransferConfig")
        edit_tab("Saliency", "saliency", "Paint a region to make more (factor > 1) or less (factor < 1) salient.",
                 run_saliency, "Adjust saliency", saliency_inputs, "SaliencyConfig")
        edit_tab("Blend", "blend", "Paint the object on the object image; it is pasted into the background at the "
                 "same place and harmonised.", run_blend, "Blend images", blend_inputs, "BlendConfig")

        with gr.Tab("Geodesics", id="geodesic"):
            gr.Markdown("Shortest paths between two images under the score metric G = I + λ s sᵀ at noise level t*, "
                        "above linear (LERP) and spherical (SLERP) interpolation; then continued beyond the second "
                        "image.")
            with gr.Row():
                g_a = _image_input("First image", "geodesic-a")
                g_b = _image_input("Second image", "geodesic-b")
            with gr.Row():
                g_n = gr.Slider(3, 17, value=7, step=1, label="Path points")
                g_t = gr.Slider(50, 900, value=400, step=10, label="Noise level t*")
                g_lam = gr.Number(value=1000.0, label="Lambda (metric weight)")
                g_extra = gr.Slider(0, 1, value=0.5, step=0.05, label="Extrapolate beyond b",
                                    info="extra length past the second image, as a fraction of a → b (0: off)")
                g_iter = gr.Slider(1, 500, value=100, step=1, label="Solver iterations",
                                   info="L-BFGS iterations of the boundary value problem")
            g_run, g_stop = _run_stop("Compute geodesic")
            if examples and len(examples) >= 2:
                gr.Examples([[examples[i].image, examples[i + 1].image] for i in range(0, len(examples) - 1, 2)],
                            inputs=[g_a, g_b], label="Example pairs", cache_examples=False)
            g_strip = gr.Image(label="Geodesic / LERP / SLERP", format="png", interactive=False,
                               elem_id="geodesic-strip")
            g_ext = gr.Image(label="Extrapolation", format="png", interactive=False)
            with gr.Row():
                g_energy = gr.Plot(label="Energy")
                g_gif = gr.Image(label="Animation", type="filepath", interactive=False)
            g_status = gr.Markdown(elem_id="geodesic-status")
            g_files = gr.File(label="Geodesic downloads", file_count="multiple")
            g_ev = g_run.click(run_geodesic, [g_a, g_b, g_n, g_t, g_lam, g_extra, g_iter, *settings],
                               [g_strip, g_ext, g_energy, g_gif, g_status, g_files], api_name="geodesic", **queue_kw)
            g_stop.click(cancel_jobs, None, g_status, cancels=[g_ev], api_name="cancel_geodesic", queue=False)

        with gr.Tab("Geometry lab", id="lab") as lab_tab:
            gr.Markdown("Noise-smoothed data on a sphere or a torus, whose score is known in closed form. The "
                        "score-metric geodesic (solid) bends from the chord (dotted) towards the true geodesic "
                        "(dashed) as λ grows and σ shrinks.")
            with gr.Row():
                with gr.Column(scale=1):
                    l_kind = gr.Radio(["sphere", "torus"], value="sphere", label="Manifold")
                    l_lam = gr.Slider(0, 2000, value=200, step=10, label="Lambda")
                    l_sigma = gr.Slider(0.08, 0.5, value=0.15, step=0.01, label="Noise level sigma",
                                        info="smaller: sharper manifold, slower torus (finer quadrature)")
                    l_a1 = gr.Slider(-180, 180, value=120, step=5, label="Endpoint b: angle 1 (deg)")
                    l_a2 = gr.Slider(-90, 90, value=30, step=5, label="Endpoint b: angle 2 (deg)")
                    l_n = gr.Slider(5, 33, value=13, step=1, label="Path points (lab)")
                    l_it = gr.Slider(10, 500, value=100, step=10, label="Iterations")
                with gr.Column(scale=2):
                    l_plot = gr.Plot(label="Manifold and paths", elem_id="lab-plot")
                    with gr.Row():
                        l_energy = gr.Plot(label="Lab energy")
                        l_table = gr.Markdown()
            l_inputs = [l_kind, l_lam, l_sigma, l_a1, l_a2, l_n, l_it]
            l_outputs = [l_plot, l_energy, l_table]
            # No model: its own small queue, so it stays live while model jobs run; only the latest slider value runs.
            lab_kw = dict(concurrency_id="lab", concurrency_limit=4, trigger_mode="always_last")
            lab_tab.select(run_lab, l_inputs, l_outputs, api_name="lab", **lab_kw)
            for widget in (l_lam, l_sigma, l_a1, l_a2, l_n, l_it):
                widget.release(run_lab, l_inputs, l_outputs, api_visibility="private", **lab_kw)
            l_kind.change(run_lab, l_inputs, l_outputs, api_visibility="private", **lab_kw)

    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    return demo


# ====================================================================================================================
# Command line
# ====================================================================================================================
def warm_up(source: str) -> None:
    """Load ``source`` and build its ``auto`` backend with every graph it uses (first start of a hosted Space).

    Runs in a background thread while the page already serves. While it exports, requests for the same backend wait
    for it (instead of exporting the same graphs a second time); requests for other backends (torch) run.
    Failures are logged: the app still serves, and backends then build on first use.
    """
    try:
        get_model(source)
        with _LOAD_LOCK:
            backend = _cached_backend(source, default_device(), "auto")
        label = str(getattr(backend, "name", "auto"))
        if hasattr(backend, "prepare"):
            with _preparing(backend):
                backend.prepare()
        log.info("warm-up done: %s backend ready for %s", label, "the selected model")
    except Exception:
        log.exception("warm-up failed; backends will be built on first use")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="diffgeo Gradio app")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to bind (default 127.0.0.1; use 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   help="port (default 7860, or GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--model", default=None, help="model selected at start: default, a local folder, or a hub id")
    p.add_argument("--hosted", action="store_true", default=None,
                   help="hosted demo: allow-listed models only, no local paths (also DIFFGEO_HOSTED=1)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--concurrency", type=int, default=None, help="model jobs running at once (default 1)")
    p.add_argument("--warmup", action="store_true",
                   help="after the page is up, load the selected model and prepare the auto backend (exports ONNX "
                        "graphs / TensorRT engines into the artifact cache) in a background thread")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 avoids thrashing on a shared CPU)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = AppConfig.from_env(model=args.model, hosted=args.hosted, device=args.device, concurrency=args.concurrency)
    demo = build_demo(cfg)
    if args.warmup:
        threading.Thread(target=warm_up, args=(cfg.model,), name="diffgeo-warmup", daemon=True).start()
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=cfg.max_file_size,
                show_error=False, ssr_mode=False, footer_links=["api"])


if __name__ == "__main__":
    main()
