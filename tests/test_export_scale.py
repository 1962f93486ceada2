"""Export at scale, on the tiny model: the external-data path (forced by lowering its threshold) end to end, the
per-graph fallback (a graph that fails is recorded in the manifest, the others export, the ONNX Runtime backend runs
the failed one in PyTorch with a logged reason), and the memory/time watchdog of ``python -m export``."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from export import ExportError, Manifest, export_specs, model_specs
from export.fingerprint import file_sha256
from export.watch import describe, run_watched
from pipeline.errors import InputError


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())


def test_external_data_end_to_end(tiny_model, tmp_path, monkeypatch, caplog):
    """Weights over the threshold go to NAME.onnx.data: exported, checked, both files hashed in the manifest, reused
    from the cache, loaded and run by the ONNX Runtime backend; a corrupt .data file is noticed."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    import export.onnx_export as onnx_export
    from accel.ort_backend import OnnxRuntimeBackend

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)  # every model "passes 1 GiB"
    specs = model_specs(tiny_model, graphs=("h",))
    man = export_specs(tiny_model, tmp_path, specs)
    art = man.artifacts["h.onnx"]
    assert set(art.files) == {"h.onnx", "h.onnx.data"}, art.files
    assert art.checked and max(art.checks[0].max_rel.values()) <= 1e-4
    proto = onnx.load(str(tmp_path / "h.onnx"), load_external_data=False)
    external = [t.name for t in proto.graph.initializer if uses_external_data(t)]
    assert external and all(e.value == "h.onnx.data" for t in proto.graph.initializer if uses_external_data(t)
                            for e in t.external_data if e.key == "location")
    assert file_sha256(tmp_path / "h.onnx.data") == art.files["h.onnx.data"]
    assert Manifest.load(tmp_path).artifacts.keys() == {"h.onnx"}

    with caplog.at_level(logging.INFO, logger="export"):  # the cache: a valid artifact is reused
        export_specs(tiny_model, tmp_path, specs)
    assert "exporting" not in caplog.text and "up to date" in caplog.text

    backend = OnnxRuntimeBackend(tiny_model, artifacts=tmp_path, batch_sizes=(1,), threads=1)
    x = torch.randn(3, tiny_model.channels, tiny_model.sample_size, tiny_model.sample_size,
                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _rel(backend.h(x, 500), tiny_model.h(x, 500)) <= 1e-4
    assert backend.fallbacks == {} and backend.running_on == {"h": "CPUExecutionProvider"}

    data = tmp_path / "h.onnx.data"
    data.write_bytes(data.read_bytes()[:-16] + b"\0" * 16)
    assert "corrupt" in Manifest.load(tmp_path).problem("h.onnx", tmp_path, art.key)


def test_failed_graph_is_recorded_and_the_backend_falls_back(tiny_model, tmp_path, monkeypatch, caplog):
    import export.onnx_export as onnx_export
    from accel.ort_backend import OnnxRuntimeBackend

    real, calls = onnx_export.export_onnx, []

    def flaky(model, spec, path):
        calls.append(spec.name)
        if spec.graph == "h_jvp":
            raise ExportError(f"exporting {spec.name} to ONNX failed (MemoryError: simulated)")
        return real(model, spec, path)

    monkeypatch.setattr(onnx_export, "export_onnx", flaky)
    specs = model_specs(tiny_model, graphs=("h", "h_jvp"), batch_sizes=(1,))
    with pytest.raises(ExportError, match="simulated"):  # the default: the first failure raises
        export_specs(tiny_model, tmp_path / "strict", specs[::-1])

    with caplog.at_level(logging.WARNING, logger="export"):
        man = export_specs(tiny_model, tmp_path, specs, keep_going=True)
    assert "h_jvp_b1.onnx could not be exported" in caplog.text
    assert man.artifacts.keys() == {"h.onnx"} and man.artifacts["h.onnx"].checked
    rec = Manifest.load(tmp_path).failures["h_jvp_b1.onnx"]
    assert "simulated" in rec["reason"] and rec["key"] and rec["created"]
    assert not (tmp_path / "h_jvp_b1.onnx").exists()

    calls.clear()  # a recorded failure is not retried on every start (same weights, spec and code) ...
    again = export_specs(tiny_model, tmp_path, specs, keep_going=True)
    assert calls == [] and "h_jvp_b1.onnx" in again.failures

    caplog.clear()
    backend = OnnxRuntimeBackend(tiny_model, artifacts=tmp_path, batch_sizes=(1,), threads=1)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, tiny_model.channels, tiny_model.sample_size, tiny_model.sample_size, generator=gen)
    v = torch.randn(x.shape, generator=gen)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        h, jh = backend.h_jvp(x, 300, v)
        assert _rel(backend.h(x, 300), tiny_model.h(x, 300)) <= 1e-4
        h_ref, jh_ref = tiny_model.h_jvp(x, 300, v)
    assert _rel(h, h_ref) <= 1e-6 and _rel(jh, jh_ref) <= 1e-6  # PyTorch itself
    assert "running h_jvp_b1 in PyTorch instead" in caplog.text and "simulated" in caplog.text
    assert list(backend.fallbacks) == ["h_jvp_b1"] and backend.running_on == {"h": "CPUExecutionProvider"}

    calls.clear()  # ... force retries it
    retried = export_specs(tiny_model, tmp_path, specs[1:], keep_going=True, force=True)
    assert calls == ["h_jvp_b1"] and retried.failures["h_jvp_b1.onnx"]["created"] >= rec["created"]


def test_watchdog_stops_on_memory_and_time():
    grow = [sys.executable, "-c", "import time; b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "time.sleep(60)"]
    w = run_watched(grow, max_rss_bytes=200 * 2**20, timeout_s=50, poll_s=0.05)
    assert w.killed == "memory" and w.peak_rss_bytes > 200 * 2**20 and w.seconds < 40
    assert "resident memory passed the limit of 0.195 GiB" in describe(w, max_rss_bytes=200 * 2**20)
    w = run_watched([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=1.0, poll_s=0.05)
    assert w.killed == "time" and 1.0 <= w.seconds < 30 and "after the limit of 1 s" in describe(w, timeout_s=1)
    w = run_watched([sys.executable, "-c", "print('fine')"], max_rss_bytes=2**30, timeout_s=30)
    assert w.ok and "fine" in w.output


def test_cli_records_a_graph_stopped_by_the_watchdog(tiny_pixel_dir, tmp_path, capsys):
    """``--max-rss-gib``: each graph in a watched child; one stopped is a failure with its measured peak, exit 2."""
    from export.__main__ import main

    rc = main(["--model", tiny_pixel_dir, "--out", str(tmp_path), "--graphs", "h", "--device", "cpu",
               "--max-rss-gib", "0.05", "--graph-timeout", "120"])
    assert rc == 2
    rec = Manifest.load(tmp_path).failures["h.onnx"]
    assert rec["reason"].startswith("stopped: resident memory passed the limit of 0.05 GiB")
    assert rec["peak_rss_bytes"] > 0.05 * 2**30 and rec["seconds"] > 0
    assert "h.onnx" in capsys.readouterr().out


def test_scale_benchmark_renders_export_and_ort_rows():
    """benchmarks/scale.py's export and ONNX Runtime rows: each says its command; a graph that did not export says why
    with its measured peak and time, and its ratio is not claimed."""
    from benchmarks.scale import _markdown

    cmd = "python -m benchmarks.scale --folders DIR --archs a --parts export,ort"
    sec = {"command": cmd, "machine": "m", "load": [1, 1, 1], "load_end": [2, 2, 2],
           "limits": {"max_rss_gib": 16, "graph_timeout_s": 600, "export_limit_s": 900}}
    export = {**sec, "reports": [{"arch": "a", "seconds": 700.0, "peak_rss_gib": 15.0, "command": f"`{cmd}`",
                                  "graphs": [
        {"graph": "eps.onnx", "seconds": 200.0, "peak_rss_gib": 14.9,
         "files": {"eps.onnx": 4e6, "eps.onnx.data": 3.4e9},
         "parity": {"passed": True, "max_rel": {"eps": 1.6e-6}, "batches": [1, 8], "seconds": 120}},
        {"graph": "eps_jvp_b1.onnx", "failed": "stopped: still running after the limit of 600 s", "seconds": 600.6,
         "peak_rss_gib": 14.3}]}]}
    ort = {**sec, "reports": [{"arch": "a", "graphs": {"h": {"ort": 0.1, "eager": 0.4},
                                                       "h_jvp": {"ort": 0.25, "eager": 1.5},
                                                       "eps": {"ort": 0.2, "eager": 1.0},
                                                       "eps_jvp": {"ort": None, "eager": None}},
                               "fallback": {"eps_jvp": "stopped"}, "rounds": 1, "warmup_rounds": 0,
                               "ratio_h_ort": 2.5, "ratio_eps_ort": None, "ratio_h_eager": 3.75,
                               "ratio_eps_eager": None, "peak_rss_gib": 3.0, "command": cmd}]}
    md = _markdown({"command": "c", "machine": "m", "load": [1], "load_end": [1], "export": export, "ort": ort}, [])
    assert ("| a | eps.onnx | 200 | eps.onnx 4 MiB, eps.onnx.data 3.17 GiB | 14.90 | passed (max rel eps 1.6e-06) |"
            in md)
    assert "**not exported**: stopped: still running after the limit of 600 s." in md and "| 601 |" in md
    assert f"reproduce: `{cmd}`" in md
    assert "| a | ONNX Runtime | 0.100 | 0.250 | 2.50 | 0.200 | not exported: runs in PyTorch | n/a |" in md


def test_check_recorded_adds_the_check_or_removes_the_graph(tiny_model, tmp_path, monkeypatch):
    """``check_recorded`` (``python -m export --check-only``): an artifact exported unchecked gets its parity check; one
    whose check fails becomes a recorded failure and its files are removed, so no backend ever uses it."""
    import export.check as check_mod
    from export.build import check_recorded

    specs = model_specs(tiny_model, graphs=("h", "eps"))
    man = export_specs(tiny_model, tmp_path, specs, check=False)
    assert all(not a.checks for a in man.artifacts.values())
    real = check_mod.check_onnx

    def half_broken(model, spec, path, **kw):  # eps "disagrees with PyTorch"
        res = real(model, spec, path, **kw)
        if spec.graph == "eps":
            from dataclasses import replace

            return replace(res, passed=False, max_rel={"eps": 0.5})
        return res

    monkeypatch.setattr(check_mod, "check_onnx", half_broken)
    man = check_recorded(tiny_model, tmp_path, specs)
    assert man.artifacts["h.onnx"].checked and max(man.artifacts["h.onnx"].checks[0].max_rel.values()) <= 1e-4
    assert "eps.onnx" not in man.artifacts and not (tmp_path / "eps.onnx").exists()
    assert man.failures["eps.onnx"]["reason"].startswith("parity check failed: max rel error {'eps': 0.5}")
    assert Manifest.load(tmp_path).failures.keys() == {"eps.onnx"}
    before = Manifest.load(tmp_path).artifacts["h.onnx"].checks
    assert check_recorded(tiny_model, tmp_path, specs[:1]).artifacts["h.onnx"].checks == before  # not re-run


def test_cli_checks_in_a_child_of_its_own(tiny_pixel_dir, tmp_path, capsys):
    """``--max-rss-gib``/``--graph-timeout``: the export child, then the parity check in a second child; the artifact
    is checked and records both phases' seconds and peaks."""
    from export.__main__ import main

    rc = main(["--model", tiny_pixel_dir, "--out", str(tmp_path), "--graphs", "h", "--device", "cpu",
               "--max-rss-gib", "8", "--graph-timeout", "300"])
    assert rc == 0, capsys.readouterr()
    art = Manifest.load(tmp_path).artifacts["h.onnx"]
    assert art.checked, art.checks
    for key in ("export_seconds", "export_peak_rss_gib", "check_seconds", "check_peak_rss_gib"):
        assert float(art.extra[key]) > 0, art.extra
    assert float(art.extra["wall_seconds"]) >= float(art.extra["check_seconds"])
    assert main(["--model", tiny_pixel_dir, "--out", str(tmp_path), "--graphs", "h", "--check-only",
                 "--skip-check"]) == 1


def test_scale_benchmark_renders_compile_rows():
    """The torch.compile rows: each graph's first call (the compile) in the notes; a graph not compiled in the time
    limit says so and its ratio is not claimed."""
    from benchmarks.scale import _markdown

    cmd = "python -m benchmarks.scale --folders DIR --archs a --parts compile"
    sec = {"command": cmd, "machine": "m", "load": [1, 1, 1], "load_end": [2, 2, 2]}
    rep = {"arch": "a", "graphs": {"h": {"compile": 0.1, "eager": 0.2}, "h_jvp": {"compile": 0.2, "eager": 0.9},
                                   "eps": {"compile": 0.3, "eager": 0.5}, "eps_jvp": {"compile": None, "eager": None}},
           "fallback": {"eps_jvp": "not compiled: the time limit of 600 s was spent on the others"},
           "first_call_s": {"h": 40.0, "h_jvp": 61.0, "eps": 50.0}, "rounds": 2, "warmup_rounds": 1,
           "ratio_h_compile": 2.0, "ratio_eps_compile": None, "ratio_h_eager": 4.5, "ratio_eps_eager": None,
           "peak_rss_gib": 3.0, "command": cmd}
    md = _markdown({"command": "c", "machine": "m", "load": [1], "load_end": [1],
                    "compile": {**sec, "reports": [rep]}}, [])
    assert "## JVP/forward ratio on torch.compile beside eager PyTorch (batch 1)" in md
    assert "| a | torch.compile | 0.100 | 0.200 | 2.00 | 0.300 | not compiled | n/a |" in md
    assert "first calls (compile) h 40 s, h_jvp 61 s, eps 50 s" in md and "eps_jvp: not compiled: the time" in md
    assert "| a | torch eager | 0.200 | 0.900 | 4.50 | 0.500 | not timed | n/a |" in md
    md = _markdown({"command": "c", "machine": "m", "load": [1], "load_end": [1],
                    "compile": {**sec, "reports": [{**rep, "cold_cache": True}]}}, [])
    assert "first calls (compile, empty inductor cache) h 40 s, h_jvp 61 s" in md



def test_scale_benchmark_compile_stopped_keeps_the_compiles_done():
    """A compile worker stopped at its time or memory limit reports the first calls it had finished, and the
    command, instead of only the reason."""
    from benchmarks.scale import _stopped_compile

    out = ("      sd15 compile h: first call 300 s\n      sd15 compile h_jvp: first call 900 s\nnoise\n"
           "      sd15 compile round 0: 50 s\n")
    err = _stopped_compile(out, "stopped after 3300 s (time limit)", "python -m benchmarks.scale --parts compile")
    assert err == ("stopped after 3300 s (time limit); compiled before it stopped: h: first call 300 s, "
                   "h_jvp: first call 900 s; reproduce: `python -m benchmarks.scale --parts compile`")
    assert _stopped_compile("", "killed", "c") == "killed; reproduce: `c`"

JVP_SECTION = {"command": "j", "machine": "m", "load": [1], "load_end": [1], "reports": []}


def test_scale_benchmark_keeps_parts_written_meanwhile(tmp_path):
    """A run writes only its own parts, into the report as it is at the end of the run: a shorter run of another part
    that ended meanwhile keeps its rows."""
    import json

    from benchmarks.scale import _write

    out = tmp_path / "scale"
    out.with_suffix(".json").write_text(json.dumps({"command": "c", "machine": "m", "load": [1], "load_end": [1],
                                                    "reports": [], "jvp": JVP_SECTION}))
    _write(out, {"compile": {}, "jvp": {"stale": 1}, "reports": [{"stale": 1}]}, ["compile"])  # {}: no rows to render
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["jvp"] == JVP_SECTION and data["compile"] == {} and data["reports"] == []
    assert out.with_suffix(".md").is_file()


def test_large_graphs_share_one_cpu_arena_and_the_check_uses_none(tiny_model, tmp_path, monkeypatch):
    """A session's own CPU arena grows in powers of two and holds its peak: graphs over ``LEAN_SESSION_BYTES``
    (weights included) share the process's arena instead (grown by what is asked, no memory pattern), and the parity
    check, which frees its session before PyTorch runs, gets none; an explicit ``cpu_arena`` wins."""
    import export.check as check_mod
    from accel.ort_backend import OnnxRuntimeBackend, shared_cpu_arena

    man = export_specs(tiny_model, tmp_path, model_specs(tiny_model, graphs=("h",)))
    path = tmp_path / "h.onnx"
    assert check_mod.graph_bytes(path) == path.stat().st_size > 0
    assert check_mod.cpu_arena_for(10 << 20) and not check_mod.cpu_arena_for(1 << 30)
    backend = OnnxRuntimeBackend(tiny_model, artifacts=tmp_path, batch_sizes=(1,), threads=1)
    small = backend.session_options(path)
    assert backend.arena_for(path) is True and small.enable_cpu_mem_arena and small.enable_mem_pattern
    with pytest.raises(RuntimeError, match="use_env_allocators"):  # not set
        small.get_session_config_entry("session.use_env_allocators")
    monkeypatch.setattr(check_mod, "LEAN_SESSION_BYTES", 0)  # every graph is "large"
    large = backend.session_options(path)
    assert backend.arena_for(path) == "shared" and large.enable_cpu_mem_arena and not large.enable_mem_pattern
    assert large.get_session_config_entry("session.use_env_allocators") == "1"
    assert shared_cpu_arena()  # registered once; a second call returns the same answer
    assert shared_cpu_arena()
    assert not OnnxRuntimeBackend(tiny_model, artifacts=tmp_path, cpu_arena=False).session_options(
        path).enable_cpu_mem_arena
    with pytest.raises(InputError, match="cpu_arena"):
        OnnxRuntimeBackend(tiny_model, artifacts=tmp_path, cpu_arena="big")
    x = torch.randn(2, tiny_model.channels, tiny_model.sample_size, tiny_model.sample_size)
    with torch.no_grad():
        assert _rel(backend.h(x, 300), tiny_model.h(x, 300)) <= 1e-4  # runs the same on the shared arena
        assert _rel(backend.h(x, 300), tiny_model.h(x, 300)) <= 1e-4  # and again, on the arena's kept memory
    assert check_mod.check_onnx(tiny_model, man.artifacts["h.onnx"].spec, path).passed


def test_scale_ort_worker_one_session_at_a_time(tiny_model, tiny_pixel_dir, tmp_path):
    """The ort part's worker times each exported graph on ONNX Runtime beside eager PyTorch, one session at a time;
    a graph that did not export is reported as a fallback with no ratio."""
    from benchmarks.scale import ort_worker

    export_specs(tiny_model, tmp_path, model_specs(tiny_model, graphs=("h", "h_jvp"), batch_sizes=(1,)))
    rep = ort_worker("tiny", tiny_pixel_dir, str(tmp_path), reps=2, time_limit=300)
    assert rep["sessions"] == "one at a time" and rep["rounds"] == 2 and rep["warmup_rounds"] == 1
    assert all(rep["graphs"][g][e] > 0 for g in ("h", "h_jvp") for e in ("ort", "eager")), rep
    assert rep["ratio_h_ort"] > 0 and rep["ratio_eps_ort"] is None and set(rep["fallback"]) == {"eps", "eps_jvp"}


def test_parity_check_with_a_lazy_model_loads_it_after_the_graph(tiny_model, tiny_pixel_dir, tmp_path):
    """``LazyModel``: the PyTorch model is loaded for the check only after ONNX Runtime ran the graph (the largest
    graphs and their model do not fit in memory together), and the result equals the eager check's."""
    from export.build import check_recorded
    from export.check import LazyModel, check_onnx
    from export.fingerprint import weights_hash
    from pipeline import load_model

    specs = model_specs(tiny_model, graphs=("h_jvp",), batch_sizes=(1,))
    export_specs(tiny_model, tmp_path, specs, check=False)
    events = []
    lazy = LazyModel(lambda: events.append("load") or load_model(tiny_pixel_dir, device="cpu"),
                     tiny_model.num_train_timesteps)
    res = check_onnx(lazy, specs[0], tmp_path / "h_jvp_b1.onnx")
    assert events == ["load"] and res.passed
    assert res.max_rel == check_onnx(tiny_model, specs[0], tmp_path / "h_jvp_b1.onnx").max_rel
    with pytest.raises(Exception, match="weights hash"):
        check_recorded(lazy, tmp_path, specs)
    man = check_recorded(lazy, tmp_path, specs, weights=weights_hash(tiny_model))
    assert man.artifacts["h_jvp_b1.onnx"].checked and events == ["load", "load"]


def test_scale_batch_part_times_each_call_at_batch_1_and_8_in_parts_of_the_limit(tiny_pixel_dir, monkeypatch):
    """The batch worker times the four calls at batch 1 and 8 on a real (tiny) model; with a batch limit of 3 the
    batch of 8 runs in 3 parts, and the table says so; a call past the time limit is reported as not run."""
    from benchmarks.scale import _batch_markdown, batch_worker

    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "3")
    rep = batch_worker("tiny", tiny_pixel_dir, "float32", time_limit=600)
    assert rep["limit"] == 3
    rows = {(r["call"], r["batch"]): r for r in rep["rows"]}
    assert set(rows) == {(g, b) for g in ("h", "eps", "h_jvp", "eps_jvp") for b in (1, 8)}
    for (_, b), r in rows.items():
        assert r["parts"] == (3 if b == 8 else 1) and r["seconds"] > 0 and r["peak_rss_gib"] > 0
        assert r["per_sample_s"] == pytest.approx(r["seconds"] / b)
    cmd = "python -m benchmarks.scale --folders DIR --parts batch"
    sec = {"command": cmd, "machine": "m", "load": [1], "load_end": [1], "reports": [{**rep, "command": cmd}]}
    md = "\n".join(_batch_markdown(sec))
    assert "## Model calls at batch 1 and 8 (eager PyTorch)" in md
    r = rows[("eps_jvp", 8)]
    assert (f"| tiny | float32 | eps_jvp | 8 | {r['seconds']:.2f} | {r['per_sample_s']:.2f} | "
            f"{r['peak_rss_gib']:.2f} | 3 parts of 3 (the batch limit) |") in md
    r = rep["rows"][0]
    assert f"| tiny | float32 | h | 1 | {r['seconds']:.2f} | {r['per_sample_s']:.2f} | {r['peak_rss_gib']:.2f} | " \
        f"reproduce: `{cmd}` |" in md and md.count("reproduce:") == 1
    late = batch_worker("tiny", tiny_pixel_dir, "float32", time_limit=0)
    assert all("skipped" in r for r in late["rows"] if r["batch"] == 8)
    assert "| tiny | float32 | h | 8 | not run |" in "\n".join(
        _batch_markdown({**sec, "reports": [{**late, "command": cmd}]}))


def test_scale_run_worker_reads_the_report_or_says_why_not():
    """The watched worker run every part shares: the last REPORT line as a dict; a worker that exits badly gives
    no report (unless ``require_ok=False``) and the watchdog's reason."""
    import sys

    from benchmarks.scale import _run_worker

    ok = [sys.executable, "-c", "print('REPORT {\"a\": 1}'); print('REPORT {\"a\": 2}')"]
    rep, w, why = _run_worker(ok, max_rss_gib=4, timeout_s=60, echo=False)
    assert rep == {"a": 2} and w.ok and why == ""
    bad = [sys.executable, "-c", "print('REPORT {\"a\": 3}'); raise SystemExit(3)"]
    rep, w, why = _run_worker(bad, max_rss_gib=4, timeout_s=60, echo=False)
    assert rep is None and not w.ok and why
    assert _run_worker(bad, max_rss_gib=4, timeout_s=60, echo=False, require_ok=False)[0] == {"a": 3}
