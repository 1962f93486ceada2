"""benchmarks/gpu.py: the pure helpers (fast) and a CPU dry run of the whole script (slow)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import gpu


# --------------------------------------------------------------------------------------------------------------------
# Fast: helpers, no model work
# --------------------------------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_deadline_expires_after_the_limit():
    clock = FakeClock()
    d = gpu.Deadline(10, clock=clock)
    assert not d.expired() and d.left() == 10
    clock.now += 9.5
    assert not d.expired() and d.left() == pytest.approx(0.5)
    clock.now += 1
    assert d.expired() and d.left() == 0
    assert not gpu.Deadline(None, clock=clock).expired() and gpu.Deadline(None).left() == math.inf


def test_plan_rows_covers_every_backend_call_batch_and_task():
    rows = gpu.plan_rows(["default", "cifar10-32"], ["float32", "float16"], ["torch", "tensorrt"], ["torch"])
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys))
    per_group = 1 + len(gpu.CALLS) * len(gpu.BATCHES)
    assert len(rows) == 2 * (2 * 2 * per_group + len(gpu.TASKS))
    assert "cifar10-32/float16/tensorrt/eps_jvp_b8" in keys
    assert "default/float32/torch/remove_object" in keys  # tasks in the first dtype
    assert all(r.status == "pending" for r in rows)


def test_skip_pending_and_row_marks():
    rows = gpu.plan_rows(["default"], ["float32"], ["torch", "ort-cuda"], [])
    rows[1].ok(median_ms=1.0)
    n = gpu.skip_pending(rows, "not run: no CUDA", backend="ort-cuda")
    assert n == 1 + len(gpu.CALLS) * len(gpu.BATCHES)
    assert rows[1].status == "ok"  # measured rows are left alone
    assert gpu.skip_pending(rows, gpu.TIME_LIMIT_REASON) == len(rows) - n - 1
    assert {r.reason for r in rows if r.status == "not run"} == {"not run: no CUDA", gpu.TIME_LIMIT_REASON}


def _measured(arch, dt, backend, name, ms):
    return gpu.Row(arch, dt, backend, "call", name).ok(median_ms=ms, p25_ms=ms, p75_ms=ms, first_ms=ms,
                                                       rel_error=1e-6, gpu_peak_mib=None)


def test_jvp_ratios_and_goals():
    rows = [_measured("ddpm-256", "float16", "tensorrt", "eps_b8", 2.0),
            _measured("ddpm-256", "float16", "tensorrt", "eps_jvp_b8", 4.0),
            _measured("ddpm-256", "float16", "torch", "eps_jvp_b8", 8.0),
            _measured("ddpm-256", "float16", "tensorrt", "h_b1", 1.0),
            _measured("ddpm-256", "float16", "tensorrt", "h_jvp_b1", 3.0)]
    ratios = gpu.jvp_ratios(rows)
    assert ratios["ddpm-256/float16/tensorrt"] == {"eps_b8": 2.0, "h_b1": 3.0}
    goals = gpu.check_goals(rows)
    assert goals[0]["met"] is False and "3.00" in goals[0]["value"]  # worst ratio 3 > 2.5
    assert goals[1]["met"] is True and goals[1]["value"].startswith("2.00x")
    empty = gpu.check_goals([])
    assert [g["met"] for g in empty] == [None, None] and all("not measured" in g["value"] for g in empty)


def test_backend_unavailable_reasons_without_cuda():
    info = {"cuda_available": False, "onnxruntime": {"ok": True, "providers": ["CPUExecutionProvider"]},
            "tensorrt": {"ok": False, "error": "ModuleNotFoundError: No module named 'tensorrt'"}}
    for b in gpu.CUDA_ONLY:
        assert "no CUDA device" in gpu.backend_unavailable(b, "float32", info, "cpu")
    assert "float16 needs a CUDA device" in gpu.backend_unavailable("torch", "float16", info, "cpu")
    assert "float32" in gpu.backend_unavailable("ort-cpu", "float16", info, "cpu")
    assert gpu.backend_unavailable("torch", "float32", info, "cpu") is None
    assert gpu.backend_unavailable("ort-cpu", "float32", info, "cpu") is None
    cuda = {**info, "cuda_available": True, "triton": {"ok": True}}
    assert "lacks CUDAExecutionProvider" in gpu.backend_unavailable("ort-cuda", "float32", cuda, "cuda")
    assert "tensorrt does not import" in gpu.backend_unavailable("tensorrt", "float16", cuda, "cuda")
    assert gpu.needed_installs(info, gpu.GPU_BACKENDS) == []  # nothing to install without CUDA
    assert gpu.needed_installs(cuda, gpu.GPU_BACKENDS) == ["onnxruntime-gpu", "tensorrt", "polygraphy"]
    assert gpu.needed_installs({**cuda, "polygraphy": {"ok": True}}, ["tensorrt"]) == ["tensorrt"]


def test_install_respects_the_time_limit():
    clock = FakeClock()
    d = gpu.Deadline(1, clock=clock)
    clock.now += 5
    attempts = gpu.install(["tensorrt"], d)
    assert attempts == [{"package": "tensorrt", "command": "-", "ok": False, "seconds": 0,
                         "output_tail": gpu.TIME_LIMIT_REASON}]


def test_install_skips_an_unreachable_index(monkeypatch):
    monkeypatch.setattr(gpu, "index_reachable", lambda timeout=5.0: (False, "pypi.org:443 unreachable (OSError)"))
    attempts = gpu.install(["onnxruntime-gpu", "tensorrt"], gpu.Deadline(60))
    assert [a["package"] for a in attempts] == ["onnxruntime-gpu", "tensorrt"]
    assert all(not a["ok"] and "not attempted" in a["output_tail"] for a in attempts)


def test_artifacts_are_kept_apart_per_arch(tmp_path):
    assert gpu.artifacts_dir(None, "sd15") is None  # the cache: per model already
    assert gpu.artifacts_dir(str(tmp_path), "sd15") != gpu.artifacts_dir(str(tmp_path), "default")


def test_error_reason_is_one_bounded_line():
    assert gpu.error_reason(ValueError("a\n  b")) == "ValueError: a b"
    assert len(gpu.error_reason(RuntimeError("x" * 1000), limit=50)) == 50
    assert gpu.error_reason(KeyError()) == "KeyError"


def test_parse_args_defaults():
    a = gpu.parse_args([])
    assert a.archs == list(gpu.ARCHS) and a.dtypes == ["float32", "float16"] and a.backends == list(gpu.GPU_BACKENDS)
    assert a.name == "gpu" and a.task_backends == ["torch", "tensorrt"] and a.runs == 20 and not a.install
    d = gpu.parse_args(["--dry-run", "--archs", "cifar10-32", "--time-limit", "30"])
    assert d.name == "gpu_dryrun" and "ort-cpu" in d.backends and d.archs == ["cifar10-32"] and d.time_limit == 30
    with pytest.raises(SystemExit):
        gpu.parse_args(["--backends", "torch,cuda-magic"])


def test_report_formatting(tmp_path):
    rows = gpu.plan_rows(["default"], ["float32"], ["torch", "tensorrt"], ["torch"])
    for r in rows:
        if r.backend == "torch" and r.kind == "call":
            r.ok(median_ms=2.0, p25_ms=1.5, p75_ms=2.5, first_ms=10.0, rel_error=1e-7, gpu_peak_mib=None)
    rows[0].ok(setup_s=0.0, gpu_peak_mib=None)
    gpu.skip_pending(rows, "not run: no CUDA device", backend="tensorrt")
    gpu.skip_pending(rows, gpu.TIME_LIMIT_REASON)
    probe = {"python": "3.11", "cpu": "test CPU", "cuda_available": False, "torch": "2.x",
             "tensorrt": {"ok": False, "error": "ModuleNotFoundError: tensorrt"},
             "onnxruntime": {"ok": True, "version": "1.x", "providers": ["CPUExecutionProvider"]}}
    res = {"command": "python -m benchmarks.gpu --dry-run", "probe": probe, "runs": 3, "models": {}, "notes": ["n"],
           "time_limit": 60, "elapsed_s": 61}
    gpu.write(res, rows, tmp_path, "x")
    md = (tmp_path / "x.md").read_text()
    assert "## Machine" in md and "tensorrt: missing (ModuleNotFoundError: tensorrt)" in md
    assert "| default | float32 | torch | eps_jvp_b8 | 2.00 |" in md
    assert "not run: no CUDA device" in md and gpu.TIME_LIMIT_REASON in md and "## Goals" in md
    data = json.loads((tmp_path / "x.json").read_text())
    assert len(data["rows"]) == len(rows) and all(r["status"] in ("ok", "not run") for r in data["rows"])


# --------------------------------------------------------------------------------------------------------------------
# Slow: the CPU dry run of the whole script
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dry_run_reports_every_row(tmp_path):
    out = tmp_path / "out"
    # h and h_jvp only, tasks on torch only: the ONNX exports (tracing) dominate a dry run on a 2-core CPU; the full
    # dry run (every call, tasks on ort-cpu too) is benchmarks/results/gpu_dryrun.md
    rc = gpu.main(["--dry-run", "--archs", "cifar10-32", "--runs", "2", "--calls", "h,h_jvp", "--task-backends",
                   "torch", "--out", str(out), "--artifacts", str(tmp_path / "artifacts"), "--name", "dry"])
    assert rc == 0
    md = (out / "dry.md").read_text()
    data = json.loads((out / "dry.json").read_text())
    assert "## Machine" in md and "torch.cuda.is_available(): False" in md
    assert data["probe"]["cuda_available"] is False and "onnxruntime" in data["probe"]
    rows = data["rows"]
    assert rows and all(r["status"] in ("ok", "not run") for r in rows)
    for backend in ("torch", "torch-compile", "ort-cpu"):
        measured = [r for r in rows if r["backend"] == backend and r["kind"] == "call" and r["status"] == "ok"]
        assert measured, f"no measured {backend} row: {[r for r in rows if r['backend'] == backend][:2]}"
        for r in measured:
            f = r["figures"]
            assert all(math.isfinite(f[k]) and f[k] > 0 for k in ("median_ms", "first_ms")), r
            assert math.isfinite(f["rel_error"]) and f["rel_error"] < 1e-3 and f["finite"], r
    for r in rows:
        if r["backend"] in gpu.CUDA_ONLY or (r["dtype"] == "float16" and r["kind"] != "task"):
            assert r["status"] == "not run" and r["reason"].startswith("not run:"), r
    tasks = [r for r in rows if r["kind"] == "task"]
    assert {r["name"] for r in tasks if r["status"] == "ok"} == set(gpu.TASKS), [r for r in tasks if r["reason"]]
    assert [g["met"] for g in data["goals"]] == [None, None]
