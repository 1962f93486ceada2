"""Batch jobs over image folders: generation curves, edits and geodesics at dataset scale, in-process or on Ray.

    summary = run_batch("rates", read_items("scenes/"), out="runs/rates", workers=2, options={"num_timesteps": 10})

Tasks (:data:`TASKS`) and what each item writes to ``OUT/items/<id>/``:

- ``rates``: :func:`pipeline.rates.generation_curves` -> ``curves.npz`` (timesteps, curves, accumulated, saliency,
  patch_saliency) and ``saliency.png`` (the heat map over the image);
- ``remove``: :func:`pipeline.edit.remove_object` (needs a mask) -> ``image.png``;
- ``saliency``: :func:`pipeline.edit.adjust_saliency` (needs a mask and the option ``factor``) -> ``image.png``;
- ``geodesic``: :func:`pipeline.interpolate.interpolate_images` (needs a second image) -> ``path.npz`` (the path's
  images, uint8 (n, H, W, 3)) and ``strip.png``.

Inputs (:func:`read_items`): a folder (its image files, recursively), a glob, or a CSV / JSONL manifest with the
columns ``image`` (required), ``mask``, ``image_b``, ``id`` and any other column as a per-row option of the library
call (CSV cells are read as JSON when they parse, else as text; a JSONL row may also hold an ``options`` object).

Nothing is lost:

- every output is written atomically (a temporary file, then ``os.replace``) by the driver, which receives the bytes
  from the workers (no shared file system needed between nodes); after an item's outputs, its record
  ``OUT/items/<id>/record.json`` (the item's key and the sha256 of each output) is written, also atomically;
- a rerun skips an item whose record matches its key (task, options, model, the sha256 of its input files) and
  whose outputs exist with the recorded sha256; everything else is computed again;
- an item that raises becomes a ``failed`` row with its error and does not stop the others;
- on Ray, each worker is an actor that loads the model once (``max_restarts``/``max_task_retries``): a killed
  worker loses only its in-flight attempts, which Ray retries on the restarted actor.

The results table ``OUT/results.jsonl`` has one JSON row per item: ``id``, ``task``, ``status`` (``ok``,
``failed``, ``skipped`` = complete from an earlier run), ``inputs``, ``options``, ``outputs`` (name -> sha256),
``figures`` (the task's numbers), ``seconds`` (the item's wall time in its worker), ``cpu_seconds`` (the worker
process's CPU time on it), ``error``, ``worker`` (pid).
Rows are appended while the run goes on and the file is rewritten at the end with one row per item (the last).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

#: Batch tasks.
TASKS = ("rates", "remove", "saliency", "geodesic")
#: Image file suffixes picked up from folders and globs.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Manifest columns that are not options of the library call.
ITEM_COLUMNS = ("id", "image", "mask", "image_b", "options")
#: How to install Ray when it is missing.
RAY_HINT = "pip install -r requirements-batch.txt  (Ray, pinned)"
#: Version of the record format; a record of another version is not trusted.
RECORD_VERSION = 1
#: What each task needs besides ``image``.
_NEEDS = {"rates": (), "remove": ("mask",), "saliency": ("mask",), "geodesic": ("image_b",)}


# --------------------------------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One unit of work: an image (and a mask or a second image, as the task needs) with per-item options."""

    id: str
    image: str
    mask: str | None = None
    image_b: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def inputs(self) -> dict[str, str]:
        """The item's input files by role (``image``, ``mask``, ``image_b``), those given."""
        return {k: v for k, v in (("image", self.image), ("mask", self.mask), ("image_b", self.image_b)) if v}


def _safe_id(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._")
    return out or "item"


def _unique_ids(items: list[Item]) -> list[Item]:
    seen: dict[str, int] = {}
    out = []
    for it in items:
        base = _safe_id(it.id)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(it if n == 0 and base == it.id else Item(base if n == 0 else f"{base}-{n}", it.image, it.mask,
                                                            it.image_b, it.options))
    return out


def _cell(value: str) -> Any:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def _row_item(row: dict[str, Any], base: Path, index: int) -> Item:
    if not row.get("image"):
        raise InputError(f"manifest row {index + 1} has no 'image'")

    def path(key: str) -> str | None:
        v = row.get(key)
        if v in (None, ""):
            return None
        p = Path(str(v)).expanduser()
        return str(p if p.is_absolute() else base / p)

    options = dict(row.get("options") or {})
    options.update({k: v for k, v in row.items() if k not in ITEM_COLUMNS and v not in (None, "")})
    image = path("image")
    return Item(str(row.get("id") or Path(image).stem), image, path("mask"), path("image_b"), options)


def read_items(source: str | os.PathLike | Sequence) -> list[Item]:
    """The items of a folder (image files, recursively, sorted), a glob, a ``.csv`` / ``.jsonl`` manifest, or a
    list of paths / :class:`Item`. Ids are the file stems (or the manifest's ``id``), made unique and file-safe.

    Manifest paths are relative to the manifest's folder. Raises :class:`InputError` when nothing is found.
    """
    if not isinstance(source, (str, os.PathLike)):
        items = [s if isinstance(s, Item) else Item(Path(s).stem, os.fspath(s)) for s in source]
        return _unique_ids(items)
    text = os.fspath(source)
    p = Path(text).expanduser()
    if p.is_file() and p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            rows = [{k: _cell(v) if k not in ITEM_COLUMNS[:4] else v for k, v in r.items() if k}
                    for r in csv.DictReader(f)]
        items = [_row_item(r, p.parent, i) for i, r in enumerate(rows)]
    elif p.is_file() and p.suffix.lower() in (".jsonl", ".ndjson"):
        items = []
        for i, line in enumerate(p.read_text().splitlines()):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"manifest {text!r} line {i + 1} is not JSON ({err})") from err
                items.append(_row_item(row, p.parent, i))
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        items = [Item(str(f.relative_to(p).with_suffix("")).replace(os.sep, "_"), str(f)) for f in files]
    elif p.is_file():
        items = [Item(p.stem, str(p))]
    else:
        files = sorted(f for f in glob.glob(text, recursive=True) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        items = [Item(Path(f).stem, f) for f in files]
    if not items:
        raise InputError(f"no input images found in {text!r} (a folder, a glob, or a .csv / .jsonl manifest)")
    return _unique_ids(items)


# --------------------------------------------------------------------------------------------------------------------
# One item: inputs, computation, outputs
# --------------------------------------------------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str | None:
    """Hex sha256 of a file's content, or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _decode_image(data: bytes, name: str, *, mask: bool = False) -> np.ndarray:
    """An image file's bytes -> uint8 (H, W, 3) (or (H, W) for a mask); unreadable -> InputError naming the file."""
    from PIL import Image

    from .images import to_uint8_rgb

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if mask:
                return np.asarray(im.convert("L") if im.mode in ("P", "RGB", "RGBA", "LA") else im).copy()
            return to_uint8_rgb(im, name=name)
    except InputError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise InputError(f"{name} is not a readable image file ({err})") from err


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def compute_item(model, task: str, data: dict[str, bytes], names: dict[str, str], options: dict[str, Any]
                 ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Run ``task`` on one item's decoded inputs with the library call; -> (outputs name -> bytes, figures).

    ``data`` holds the input files' bytes by role (``image``, ``mask``, ``image_b``), ``names`` their paths (for
    error messages); ``options`` are keywords of the library call. Errors propagate (the caller records them).
    """
    from . import viz

    opts = dict(options)
    image = _decode_image(data["image"], f"image {names['image']!r}")
    if task == "rates":
        from .rates import generation_curves

        res = generation_curves(model, image, **opts)
        outputs = {
            "curves.npz": _npz(timesteps=res.timesteps.numpy(), curves=res.curves.numpy(),
                               accumulated=res.accumulated.numpy(), saliency=res.saliency.numpy(),
                               patch_saliency=res.patch_saliency.numpy()),
            "saliency.png": _png(viz.overlay(image, res.saliency.numpy(), cmap="inferno")),
        }
        ps = res.patch_saliency
        r, c = divmod(int(ps.argmax()), ps.shape[1])
        figures = {"jvp_evaluations": res.jvp_evaluations, "saliency_max": float(ps.max()),
                   "saliency_mean": float(ps.mean()), "top_patch": [r, c], "batching": res.batching,
                   "library_seconds": res.seconds}
        return outputs, figures
    if task in ("remove", "saliency"):
        from . import edit

        if "mask" not in data:
            raise InputError(f"task {task!r} needs a mask for {names['image']!r} (a manifest 'mask' column)")
        mask = _decode_image(data["mask"], f"mask {names['mask']!r}", mask=True)
        if task == "remove":
            res = edit.remove_object(model, image, mask, **opts)
        else:
            if "factor" not in opts:
                raise InputError("task 'saliency' needs the option 'factor' (--factor or a manifest column)")
            factor = float(opts.pop("factor"))
            res = edit.adjust_saliency(model, image, mask, factor, **opts)
        figures = {k: v for k, v in res.diagnostics.items() if isinstance(v, (int, float, str, bool)) or v is None}
        figures["library_seconds"] = res.seconds
        return {"image.png": _png(res.image)}, figures
    if task == "geodesic":
        from .interpolate import interpolate_images

        if "image_b" not in data:
            raise InputError(f"task 'geodesic' needs a second image for {names['image']!r} (manifest 'image_b')")
        image_b = _decode_image(data["image_b"], f"image_b {names['image_b']!r}")
        res = interpolate_images(model, image, image_b, **opts)
        images = np.stack([np.asarray(im) for im in res.images])
        outputs = {"path.npz": _npz(images=images),
                   "strip.png": _png(viz.image_strip({opts.get("method", "geodesic"): list(images)}))}
        figures = {"energy_initial": float(res.energy[0]), "energy_final": float(res.energy[-1]),
                   "length": float(res.length), "euclidean_length": float(res.euclidean_length),
                   "points": int(len(images))}
        return outputs, figures
    raise InputError(f"unknown batch task {task!r}; accepted: {', '.join(TASKS)}")


def process_item(model, task: str, item: dict[str, Any], options: dict[str, Any], *, worker: str = "") -> dict:
    """One item end to end, never raising for the item's own errors: -> a result row with ``outputs`` as bytes.

    ``item``: ``id``, ``inputs`` (role -> path), ``data`` (role -> bytes, read by the driver), ``options``.
    """
    start, cpu = time.perf_counter(), time.process_time()
    row = {"id": item["id"], "task": task, "worker": worker or str(os.getpid())}
    try:
        names = item["inputs"]
        missing = [k for k, v in item["data"].items() if v is None]
        if missing:
            raise InputError(f"cannot read {', '.join(f'{k} {names[k]!r}' for k in missing)}")
        outputs, figures = compute_item(model, task, item["data"], names, {**options, **item["options"]})
        row.update(status="ok", outputs=outputs, figures=figures, error=None)
    except Exception as err:  # noqa: BLE001 -- an item's failure is recorded, never fatal to the batch
        row.update(status="failed", outputs={}, figures={}, error=f"{type(err).__name__}: {err}")
    row["seconds"], row["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    return row


# --------------------------------------------------------------------------------------------------------------------
# Outputs, records, resume
# --------------------------------------------------------------------------------------------------------------------
def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def item_key(task: str, item: Item, options: dict[str, Any], model_id: str, input_hashes: dict[str, str | None]
             ) -> str:
    """sha256 of what an item's outputs depend on: task, merged options, model, input file contents."""
    blob = json.dumps({"task": task, "options": {**options, **item.options}, "model": model_id,
                       "inputs": input_hashes, "version": RECORD_VERSION}, sort_keys=True, default=str)
    return sha256_bytes(blob.encode())


def verify_item(out: Path, item_id: str, key: str) -> dict | None:
    """The item's record when its outputs are complete and verified (record present, same key, every output there
    with the recorded sha256); else None."""
    folder = out / "items" / item_id
    try:
        record = json.loads((folder / "record.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("key") != key or record.get("status") != "ok" or not record.get("outputs"):
        return None
    for name, digest in record["outputs"].items():
        if sha256_file(folder / name) != digest:
            return None
    return record


def _table_line(row: dict) -> str:
    return json.dumps(row, sort_keys=True, default=str) + "\n"


def read_table(path: str | os.PathLike) -> list[dict]:
    """Rows of a results table (JSONL), the last row per id, unreadable lines skipped."""
    rows: dict[str, dict] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            rows[row["id"]] = row
    return list(rows.values())


# --------------------------------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """How a worker builds its model: ``load_model(source, device, dtype)``, then ``get_backend(name)`` unless
    ``backend`` is None or ``"torch"`` (exported backends read ``artifacts``, built once by the driver)."""

    source: str = "default"
    device: str | None = None
    dtype: str | None = None
    backend: str | None = None
    artifacts: str | None = None

    def build(self):
        """The model (or backend) this spec names."""
        from .model import load_model

        model = load_model(self.source, device=self.device, dtype=self.dtype)
        if self.backend in (None, "", "torch", "none"):
            return model
        from accel import get_backend

        return get_backend(model, self.backend, artifacts=self.artifacts)


class BatchWorker:
    """Holds one model and runs items on it. On Ray this class is the actor (one per worker process)."""

    def __init__(self, spec: ModelSpec, task: str, options: dict[str, Any], threads: int | None = 1,
                 fault: dict | None = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.task, self.options, self.fault = task, dict(options), fault
        self.model = spec.build()
        self.pid = os.getpid()

    def getpid(self) -> int:
        """The worker's process id."""
        return self.pid

    def run(self, item: dict[str, Any]) -> dict:
        """One item -> its result row (see :func:`process_item`)."""
        row = process_item(self.model, self.task, item, self.options, worker=str(self.pid))
        f = self.fault
        if f and f.get("item") == item["id"] and not os.path.exists(f["marker"]):
            # Test hook, once per run: die mid-item like a killed worker ("self"), or publish the pid and wait to be
            # killed by another process ("external"; gives up after ``wait_s`` so that a broken test cannot hang).
            Path(f["marker"]).write_text(str(self.pid))
            if f.get("mode", "self") == "self":
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + float(f.get("wait_s", 60.0))
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return row


def ray_available() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def init_ray(address: str | None = None, *, num_cpus: int | None = None, temp_dir: str | None = None):
    """Connect to Ray: ``None``/``"local"`` starts a local instance sized to the machine (``num_cpus``, default
    all cores; no dashboard; worker logs not forwarded), ``"auto"`` or ``"ray://host:port"`` joins a cluster. An
    already initialised Ray is reused. Raises :class:`InputError` (with the install command) without Ray."""
    try:
        import ray
    except ImportError:
        raise InputError(f"batch jobs on Ray need Ray installed: {RAY_HINT}; or run in-process with "
                         f"--address none") from None
    if ray.is_initialized():
        return ray
    if address in (None, "", "local"):
        import tempfile

        # Workers import this package from where the driver found it, whatever their working directory.
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 _temp_dir=temp_dir or os.path.join(tempfile.gettempdir(), "ray"), configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    else:
        ray.init(address=address, log_to_driver=False)
    return ray


# --------------------------------------------------------------------------------------------------------------------
# The batch run
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class BatchSummary:
    """What a run did: counts, the table's path and the rows (ok, failed, skipped), timing."""

    task: str
    out: str
    table: str
    total: int
    done: int
    failed: int
    skipped: int
    seconds: float
    rows: list[dict]
    mode: str  # "in-process" | "ray"
    workers: int

    @property
    def items_per_minute(self) -> float:
        """Items computed (ok or failed) per minute of wall time."""
        n = self.done + self.failed
        return 60.0 * n / self.seconds if self.seconds > 0 else 0.0


def _read(path: str | None) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (OSError, TypeError):
        return None


def run_batch(
    task: str,
    items: Iterable[Item] | str | os.PathLike,
    *,
    out: str | os.PathLike,
    model: str | ModelSpec = "default",
    options: dict[str, Any] | None = None,
    workers: int = 1,
    address: str | None = None,
    threads: int = 1,
    num_gpus_per_worker: float = 0.0,
    num_cpus: int | None = None,
    max_retries: int = 3,
    resume: bool = True,
    progress: bool | Callable[[int, int, int, int], None] = True,
    model_instance=None,
    _fault: dict | None = None,
) -> BatchSummary:
    """Run ``task`` on every item and write each item's outputs, its record and the results table under ``out``.

    Args:
        task: one of :data:`TASKS`.
        items: a list of :class:`Item`, or a folder / glob / manifest path (see :func:`read_items`).
        out: output folder (``items/<id>/``, ``results.jsonl``).
        model: model source for ``load_model`` (``"default"``, a folder, a hub id) or a :class:`ModelSpec` (device,
            dtype, accel backend).
        options: keywords of the library call for every item (a manifest row's options override them).
        workers: number of Ray workers (actors, each loading the model once); ``0`` runs in this process.
        address: ``None``/``"local"`` (a local Ray sized to the machine), ``"auto"``, ``"ray://host:port"``, or
            ``"none"`` (in-process, as ``workers=0``).
        threads: torch threads per worker (and in-process); ``0`` leaves torch's default.
        num_gpus_per_worker: GPUs reserved per Ray worker (the worker's model then goes to CUDA unless the spec
            names a device).
        num_cpus: CPUs of a local Ray instance (default: all cores).
        max_retries: Ray restarts of a dead worker and retries of its in-flight items.
        resume: skip items whose outputs are complete and verified (else recompute all).
        progress: show a tqdm bar (True), nothing (False), or call ``progress(done, failed, skipped, total)``.
        model_instance: an already loaded model (or backend) for the in-process path (else it is built from
            ``model``).

    Returns a :class:`BatchSummary`. Item errors never raise; bad arguments raise :class:`InputError`.
    """
    t_start = time.perf_counter()
    if task not in TASKS:
        raise InputError(f"unknown batch task {task!r}; accepted: {', '.join(TASKS)}")
    spec = model if isinstance(model, ModelSpec) else ModelSpec(source=os.fspath(model))
    options = dict(options or {})
    item_list = read_items(items) if isinstance(items, (str, os.PathLike)) else read_items(list(items))
    for it in item_list:
        for need in _NEEDS[task]:
            if getattr(it, need) is None:
                raise InputError(f"task {task!r} needs '{need}' for every item; item {it.id!r} has none "
                                 f"(give a CSV/JSONL manifest with a '{need}' column)")
    in_process = workers <= 0 or address == "none"
    out = Path(out)
    (out / "items").mkdir(parents=True, exist_ok=True)
    table = out / "results.jsonl"
    model_id = json.dumps([spec.source, spec.dtype, spec.backend])

    # Plan: which items are complete and verified already.
    todo, rows, keys = [], {}, {}
    for it in item_list:
        hashes = {k: sha256_file(v) for k, v in it.inputs().items()}
        keys[it.id] = item_key(task, it, options, model_id, hashes)
        record = verify_item(out, it.id, keys[it.id]) if resume else None
        if record is not None:
            rows[it.id] = {**record, "status": "skipped"}
        else:
            todo.append(it)
    total, skipped = len(item_list), len(item_list) - len(todo)
    counts = {"ok": 0, "failed": 0}
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=skipped, unit="item", desc=f"batch {task}", dynamic_ncols=True)
        bar.set_postfix(ok=0, failed=0, skipped=skipped)

    by_id = {it.id: it for it in item_list}
    table_f = open(table, "a")

    def finish(row: dict) -> None:
        it = by_id[row["id"]]
        folder = out / "items" / it.id
        digests = {}
        for name, data in row.pop("outputs").items():
            atomic_write(folder / name, data)
            digests[name] = sha256_bytes(data)
        row.update(inputs=it.inputs(), options={**options, **it.options}, outputs=digests, key=keys[it.id],
                   version=RECORD_VERSION, finished=time.time())
        if row["status"] == "ok":
            atomic_write(folder / "record.json", json.dumps(row, indent=1, sort_keys=True, default=str).encode())
        else:
            try:
                os.remove(folder / "record.json")
            except OSError:
                pass
        table_f.write(_table_line(row))
        table_f.flush()
        rows[it.id] = row
        counts[row["status"]] += 1
        if bar is not None:
            bar.set_postfix(ok=counts["ok"], failed=counts["failed"], skipped=skipped, refresh=False)
            bar.update(1)
        elif callable(progress):
            progress(counts["ok"], counts["failed"], skipped, total)

    def payload(it: Item) -> dict:
        return {"id": it.id, "inputs": it.inputs(), "options": it.options,
                "data": {k: _read(v) for k, v in it.inputs().items()}}

    n_workers = 0
    try:
        if in_process:
            import torch

            if threads:
                torch.set_num_threads(int(threads))
            model_obj = model_instance if model_instance is not None else (spec.build() if todo else None)
            for it in todo:
                finish(process_item(model_obj, task, payload(it), options))
        elif todo:
            n_workers = _run_ray(task, todo, spec, options, workers=workers, address=address, threads=threads,
                                 num_gpus=num_gpus_per_worker, num_cpus=num_cpus, max_retries=max_retries,
                                 payload=payload, finish=finish, fault=_fault, out=out)
    finally:
        table_f.close()
        if bar is not None:
            bar.close()
    ordered = [rows[it.id] for it in item_list if it.id in rows]
    atomic_write(table, "".join(_table_line(r) for r in ordered).encode())
    return BatchSummary(task=task, out=str(out), table=str(table), total=total, done=counts["ok"],
                        failed=counts["failed"], skipped=skipped, seconds=time.perf_counter() - t_start,
                        rows=ordered, mode="in-process" if in_process else "ray", workers=n_workers)


def _run_ray(task, todo, spec, options, *, workers, address, threads, num_gpus, num_cpus, max_retries, payload,
             finish, fault, out) -> int:
    """Dispatch ``todo`` to a pool of actors, at most two items in flight per actor; -> number of actors."""
    ray = init_ray(address, num_cpus=num_cpus)
    if spec.backend not in (None, "", "torch", "none"):
        # Build the backend's artifacts once (exports, engines) so that every worker only loads them.
        artifacts = spec.artifacts or str(out / "artifacts")
        spec = ModelSpec(spec.source, spec.device, spec.dtype, spec.backend, artifacts)
        spec.build()
    if num_gpus and spec.device is None:
        spec = ModelSpec(spec.source, "cuda", spec.dtype, spec.backend, spec.artifacts)
    n = max(1, min(int(workers), len(todo)))
    actor_cls = ray.remote(BatchWorker).options(
        num_cpus=max(1, int(threads or 1)), num_gpus=num_gpus or 0, max_restarts=max_retries,
        max_task_retries=max_retries)
    actors = [actor_cls.remote(spec, task, options, threads, fault) for _ in range(n)]
    queue = list(reversed(todo))
    pending: dict = {}

    def submit(actor) -> None:
        if queue:
            it = queue.pop()
            pending[actor.run.remote(payload(it))] = (actor, it)

    try:
        for actor in actors:
            submit(actor)
            submit(actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            actor, it = pending.pop(ref)
            try:
                row = ray.get(ref)
            except Exception as err:  # noqa: BLE001 -- the worker died more often than retried
                row = {"id": it.id, "task": task, "status": "failed", "outputs": {}, "figures": {}, "seconds": 0.0,
                       "worker": None, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            finish(row)
            submit(actor)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    return n
