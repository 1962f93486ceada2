"""Export graphs into an artifact directory: ONNX files (+ TensorRT engines), parity checks, the manifest.

Every artifact is keyed by ``sha256(weights hash, spec digest, code version[, engine settings])``. An artifact whose
manifest entry has that key and whose files match their recorded sha256 is reused; anything else (missing, stale,
truncated, a garbled manifest) is rebuilt, with a warning when something was there before.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from pipeline.errors import InputError
from pipeline.progress import ProgressFn, report
from pipeline.validate import check_int

from .errors import ExportError, ManifestError
from .fingerprint import artifact_key, code_digest, code_version, file_sha256, weights_hash
from .manifest import Artifact, Manifest, directory_lock
from .specs import (
    DEFAULT_GRAPHS,
    STATIC_GRAPHS,
    GraphSpec,
    check_batch_sizes,
    check_graphs,
    check_precision,
    graph_spec,
)

log = logging.getLogger(__name__)


def check_exportable(model) -> None:
    """Raise :class:`InputError` unless ``model`` can be exported (a float32 :class:`DiffusionModel`)."""
    if not hasattr(model, "h_raw") or not hasattr(model, "unet"):
        raise InputError(f"expected a pipeline.model.DiffusionModel (see load_model), got {type(model).__name__}")
    if model.dtype != torch.float32:
        raise InputError(f"exported graphs are float32; this model is {model.dtype}. Load it with dtype='float32'")


def model_specs(
    model,
    *,
    graphs: Sequence[str] = DEFAULT_GRAPHS,
    batch_sizes: Sequence[int] = (1, 8),
    size: tuple[int, int] | None = None,
) -> list[GraphSpec]:
    """The specs of ``graphs`` for ``model`` at model-space ``size`` (default: the model's sample size): one per
    batch size for static graphs, one (dynamic batch) for ``h`` and ``eps``."""
    graphs = check_graphs(graphs)
    sizes = check_batch_sizes(batch_sizes)
    H, W = size if size is not None else (model.sample_size, model.sample_size)
    model.check_x(torch.zeros(1, model.channels, H, W, device=model.device, dtype=model.dtype))
    with torch.no_grad():  # h-space shape: one batch-1 forward of the encoder
        h_shape = tuple(model.h_raw(torch.zeros(1, model.channels, H, W, device=model.device, dtype=model.dtype),
                                    torch.zeros(1, dtype=torch.long, device=model.device)).shape[1:])
    specs = []
    for g in graphs:
        kw = dict(channels=model.channels, size=(H, W), h_shape=h_shape)
        if g in STATIC_GRAPHS:
            specs += [graph_spec(g, batch=b, **kw) for b in sizes]
        else:
            specs.append(graph_spec(g, **kw))
    return specs


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _open_manifest(directory: Path, model, weights: str, code: dict) -> Manifest:
    try:
        return Manifest.load(directory)
    except ManifestError as err:
        if (directory / "manifest.json").exists():
            log.warning("ignoring the manifest in %s (%s): every artifact there will be rebuilt", directory, err)
        return Manifest(model_source=str(model.source), weights_hash=weights, code_version=code)


def onnx_name(spec: GraphSpec) -> str:
    return f"{spec.name}.onnx"


def onnx_key(spec: GraphSpec, weights: str, code: str | None = None) -> str:
    return artifact_key(weights, spec.digest(), code or code_digest())


def engine_key(spec: GraphSpec, weights: str, precision: str, trt_version: str, code: str | None = None) -> str:
    extra = json.dumps({"precision": precision, "tensorrt": trt_version}, sort_keys=True)
    return artifact_key(weights, spec.digest(), code or code_digest(), extra)


#: Relative export cost of each graph (longest first when exporting in parallel).
_COST = {"eps_jvp": 6.0, "h_jvp_point": 3.0, "h_jvp": 2.0, "eps": 1.5, "h": 1.0}


def export_specs(
    model,
    out_dir: str | os.PathLike,
    specs: Sequence[GraphSpec],
    *,
    precision: str = "fp32",
    tensorrt: bool = False,
    check: bool = True,
    force: bool = False,
    jobs: int = 1,
    weights: str | None = None,
    progress: ProgressFn | None = None,
    keep_going: bool = False,
) -> Manifest:
    """Make sure every spec has a valid ONNX artifact (and TensorRT engine if ``tensorrt``) in ``out_dir``.

    Valid artifacts are reused (unless ``force``); the rest are exported, checked against PyTorch (unless
    ``check=False``; a failed check raises :class:`~export.errors.ParityError` and records nothing) and recorded.
    ``jobs > 1`` exports ONNX graphs in that many worker processes (tracing and export are single-threaded Python;
    engines are built one at a time). ``weights`` is the model's :func:`weights_hash`, if the caller already has it.
    ``keep_going=True``: a graph that fails (export error, parity, ``MemoryError``) is recorded in the manifest's
    ``failures`` with its reason and the others are still exported (its engine is not built); backends run a failed
    graph in PyTorch. Otherwise the first failure raises. Returns the updated manifest.
    """
    check_exportable(model)
    precision = check_precision(precision)
    jobs = check_int("jobs", jobs, 1)
    out_dir = Path(out_dir)
    weights = weights or weights_hash(model)
    code = code_version()
    cdig = code_digest(code)
    trt_version = None
    if tensorrt:
        from .trt import tensorrt_version

        trt_version = tensorrt_version()
    total = len(specs) * (2 if tensorrt else 1)
    done = 0

    def stale(manifest: Manifest, name: str, key: str) -> bool:
        nonlocal done
        failure = manifest.failure(name, key)
        if failure is not None and not force:  # failed before with these weights, spec and code: do not retry
            done += 1
            log.warning("[%d/%d] %s: not exported (recorded failure: %s); force=True / --force retries", done, total,
                        name, failure["reason"])
            report(progress, done, total, f"{name} failed before")
            return False
        problem = manifest.problem(name, out_dir, key)
        if problem is None and not force:
            done += 1
            log.info("[%d/%d] %s: up to date", done, total, name)
            report(progress, done, total, f"{name} up to date")
            return False
        if problem not in (None, "not in the manifest"):
            log.warning("rebuilding %s in %s: %s", name, out_dir, problem)
        return True

    def record(manifest: Manifest, art: Artifact) -> Manifest:
        nonlocal done
        manifest = manifest.with_artifact(art, model_source=str(model.source), weights_hash=weights,
                                          code_version=code)
        manifest.save(out_dir)
        done += 1
        log.info("[%d/%d] %s done in %.1f s%s", done, total, art.name, art.seconds,
                 "" if art.checks else " (parity check skipped)")
        report(progress, done, total, f"{art.name} done")
        return manifest

    def artifact(spec, kind, name, key, files, checks, seconds, art_precision, extra) -> Artifact:
        return Artifact(name=name, kind=kind, spec=spec, key=key, weights_hash=weights, spec_digest=spec.digest(),
                        code_digest=cdig, precision=art_precision, files={f.name: file_sha256(f) for f in files},
                        checks=checks, seconds=seconds, created=_now(), extra=extra)

    with directory_lock(out_dir):
        manifest = _open_manifest(out_dir, model, weights, code)
        todo = [s for s in specs if stale(manifest, onnx_name(s), onnx_key(s, weights, cdig))]
        failed: set[str] = set()
        for spec, result, seconds in _produce_onnx(model, todo, out_dir, check, jobs, keep_going):
            name, key = onnx_name(spec), onnx_key(spec, weights, cdig)
            if isinstance(result, BaseException):
                reason = f"{type(result).__name__}: {result}"
                log.warning("%s could not be exported (%s); recorded in the manifest, the backends run it in "
                            "PyTorch", name, reason)
                manifest = manifest.with_failure(name, reason, key=key, seconds=seconds)
                manifest.save(out_dir)
                failed.add(name)
                done += 1
                report(progress, done, total, f"{name} failed")
                continue
            files, checks = result
            manifest = record(manifest, artifact(spec, "onnx", name, key, files, checks, seconds, "fp32", {}))
        if tensorrt:
            from .trt import engine_name

            for spec in specs:
                if onnx_name(spec) in failed:
                    continue
                name, key = engine_name(spec, precision), engine_key(spec, weights, precision, trt_version, cdig)
                if not stale(manifest, name, key):
                    continue
                log.info("building %s ...", name)
                start = time.perf_counter()
                files, checks = _build_one(model, spec, out_dir, manifest, precision, check, weights, cdig)
                art = artifact(spec, "engine", name, key, files, checks, round(time.perf_counter() - start, 3),
                               precision, {"tensorrt": trt_version})
                manifest = record(manifest, art)
    return manifest


#: What a failed graph raises that ``keep_going`` records (anything else is a bug and propagates).
_GRAPH_FAILURES = (ExportError, MemoryError, RuntimeError)


def _export_and_check(model, spec: GraphSpec, out_dir: Path, check: bool, keep_going: bool = False) -> tuple:
    """Export one spec and check it: (spec, (files, checks) or the exception when ``keep_going``, seconds)."""
    from .onnx_export import export_onnx

    log.info("exporting %s ...", onnx_name(spec))
    start = time.perf_counter()
    try:
        files = export_onnx(model, spec, out_dir / onnx_name(spec))
        checks = ()
        if check:
            from .check import check_onnx

            checks = (check_onnx(model, spec, files[0]),)
    except _GRAPH_FAILURES as err:
        if not keep_going:
            raise
        for stale in (out_dir / onnx_name(spec), out_dir / (onnx_name(spec) + ".data")):
            stale.unlink(missing_ok=True)  # a file that failed its check must not be picked up
        return spec, err, round(time.perf_counter() - start, 3)
    return spec, (files, checks), round(time.perf_counter() - start, 3)


_WORKER_MODEL = None


def _worker_init(model) -> None:
    global _WORKER_MODEL
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    _WORKER_MODEL = model


def _worker_export(spec: GraphSpec, out_dir: Path, check: bool, keep_going: bool) -> tuple:
    return _export_and_check(_WORKER_MODEL, spec, out_dir, check, keep_going)


def _produce_onnx(model, specs: list[GraphSpec], out_dir: Path, check: bool, jobs: int, keep_going: bool = False):
    """Yield (spec, (files, checks) or exception, seconds) for each spec, exporting in ``jobs`` processes when > 1."""
    if jobs == 1 or len(specs) < 2:
        for spec in specs:
            yield _export_and_check(model, spec, out_dir, check, keep_going)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    order = sorted(specs, key=lambda s: -_COST.get(s.graph, 1.0) * (s.batch or 1) ** 0.25)
    log.info("exporting %d graphs in %d processes", len(order), min(jobs, len(order)))
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe with torch's thread pools
    with ProcessPoolExecutor(max_workers=min(jobs, len(order)), mp_context=ctx, initializer=_worker_init,
                             initargs=(model,)) as pool:
        futures = {pool.submit(_worker_export, s, out_dir, check, keep_going): s for s in order}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as err:  # a worker that died (killed for memory: BrokenProcessPool)
                if not keep_going:
                    raise
                yield futures[fut], err, 0.0


def _build_one(model, spec, out_dir: Path, manifest: Manifest, precision: str, check: bool, weights: str,
               cdig: str) -> tuple[list[Path], tuple]:
    from .trt import TIMING_CACHE, build_engine, engine_name

    onnx_art = manifest.artifacts.get(onnx_name(spec))
    if onnx_art is None or manifest.problem(onnx_art.name, out_dir, onnx_key(spec, weights, cdig)) is not None:
        raise ExportError(f"no valid ONNX file for {spec.name} to build an engine from")
    path = build_engine(spec, out_dir / onnx_art.name, out_dir / engine_name(spec, precision), precision=precision,
                        timing_cache=out_dir / TIMING_CACHE)
    checks = ()
    if check:
        from .check import check_engine

        checks = (check_engine(model, spec, path, precision=precision),)
    return [path], checks


def export_graphs(
    model,
    out_dir: str | os.PathLike,
    *,
    batch_sizes: Sequence[int] = (1, 8),
    graphs: Sequence[str] = DEFAULT_GRAPHS,
    precision: str = "fp32",
    tensorrt: bool = False,
    check: bool = True,
    force: bool = False,
    jobs: int = 1,
    size: tuple[int, int] | None = None,
    progress: ProgressFn | None = None,
    keep_going: bool = False,
) -> Manifest:
    """Export ``graphs`` of ``model`` into ``out_dir`` (see :mod:`export.specs` for the graphs and their contracts).

    Static-batch graphs (the JVPs) get one file per entry of ``batch_sizes``; ``h`` and ``eps`` one file with a
    dynamic batch. Each export is checked against PyTorch (polygraphy's ONNX Runtime runner and Comparator) and
    recorded in ``out_dir/manifest.json``; with ``tensorrt=True`` engines are built at ``precision`` and checked the
    same way. Up-to-date artifacts are reused; ``jobs > 1`` exports in parallel processes; ``keep_going``: see
    :func:`export_specs`. Returns the manifest.
    """
    specs = model_specs(model, graphs=graphs, batch_sizes=batch_sizes, size=size)
    return export_specs(model, out_dir, specs, precision=precision, tensorrt=tensorrt, check=check, force=force,
                        jobs=jobs, progress=progress, keep_going=keep_going)


def check_recorded(
    model,
    out_dir: str | os.PathLike,
    specs: Sequence[GraphSpec],
    *,
    force: bool = False,
    weights: str | None = None,
) -> Manifest:
    """Run the parity check of ONNX artifacts already recorded in ``out_dir`` (exported with ``check=False``) and
    record its result: a passed check is added to the artifact; a failed one (or an error while running it) turns the
    artifact into a recorded failure and removes its files, so no backend ever uses it. Artifacts that already have a
    check are left alone unless ``force``. A spec with no valid artifact is skipped with a warning.

    ``python -m export --max-rss-gib/--graph-timeout`` runs this in a child process of its own after the export child,
    so the exporter's memory is gone before the check loads ONNX Runtime and runs the eager JVP beside it; it passes a
    :class:`~export.check.LazyModel` (with ``weights``), so the PyTorch model is loaded only after ONNX Runtime has run
    the graph and freed its session.
    """
    from .check import LazyModel, check_onnx

    if not isinstance(model, LazyModel):
        check_exportable(model)
    elif weights is None:
        raise InputError("check_recorded with a LazyModel needs the model's weights hash (weights=)")
    out_dir = Path(out_dir)
    weights = weights or weights_hash(model)
    cdig = code_digest(code_version())
    with directory_lock(out_dir):
        manifest = Manifest.load(out_dir)
        for spec in specs:
            name = onnx_name(spec)
            problem = manifest.problem(name, out_dir, onnx_key(spec, weights, cdig))
            if problem is not None:
                log.warning("%s: nothing to check (%s)", name, problem)
                continue
            art = manifest.artifacts[name]
            if art.checks and not force:
                log.info("%s: already checked", name)
                continue
            log.info("checking %s against PyTorch ...", name)
            start = time.perf_counter()
            try:
                result = check_onnx(model, spec, out_dir / name, raise_on_failure=False)
            except _GRAPH_FAILURES as err:
                reason = f"parity check could not run ({type(err).__name__}: {err})"
            else:
                reason = None if result.passed else (
                    f"parity check failed: max rel error {result.max_rel} (accepted <= {result.tolerance.max_rel})")
            seconds = round(time.perf_counter() - start, 3)
            if reason is None:
                manifest = manifest.with_artifact(replace(art, checks=(result,)))
                log.info("%s: parity passed in %.1f s", name, seconds)
            else:
                for fname in art.files:
                    (out_dir / fname).unlink(missing_ok=True)
                manifest = manifest.with_failure(name, reason, key=art.key, seconds=seconds)
                log.warning("%s not usable: %s (files removed)", name, reason)
            manifest.save(out_dir)
    return manifest
