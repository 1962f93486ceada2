"""Smoke runs of the benchmark scripts on the tiny model: they run end to end and write complete, finite results.

Slow (exports and many model calls): ``pytest -m slow tests/test_benchmarks.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path = ROOT) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_accel_benchmark_smoke(tiny_pixel_dir, tmp_path):
    out = _run(["benchmarks/accel.py", "--model", tiny_pixel_dir, "--runs", "4", "--threads", "1", "--skip-compile",
                "--skip-options", "--artifacts", str(tmp_path / "art"), "--patch-size", "4", "--out",
                str(tmp_path)])
    r = json.loads((tmp_path / "accel.json").read_text())
    assert set(r["backends"]) == {"torch", "onnxruntime"}
    for timings in r["backends"].values():
        # every map timed --runs times, with consistent order statistics (positive times could not fail)
        assert len(timings) == 8 and all(v["runs"] == 4 and v["min_ms"] <= v["median_ms"] for v in timings.values())
    assert r["rate_map"]["max_rel_error_ort_vs_torch"] < 1e-3
    assert r["ort_profile"]["eps_jvp_b8.onnx"]["ops"]["Conv"][1] == 2 * r["ort_profile"]["eps.onnx"]["ops"]["Conv"][1]
    md = (tmp_path / "accel.md").read_text()
    assert "## Targets" in md and "reproduce:" in out


def test_default_model_benchmark_smoke(tiny_pixel_dir, tmp_path):
    _run(["-m", "benchmarks.default_model", "--model", tiny_pixel_dir, "--out", str(tmp_path), "--n-recon", "3",
          "--n-samples", "4", "--steps", "3", "--batch-size", "4", "--inversions", "corrected,explicit,explicit+0",
          "--threads", "1"])
    r = json.loads((tmp_path / "default_model.json").read_text())
    assert r["recon"]["n"] == 3 and r["recon"]["inversion"] == "corrected" and math.isfinite(r["recon"]["psnr_mean"])
    methods = r["recon_methods"]
    assert set(methods) == {"corrected", "explicit", "explicit+0"}
    assert [methods[k]["inversion_calls"] for k in ("corrected", "explicit")] == [4, 3]
    # zero fixed-point iterations is plain DDIM inversion: the same reconstruction
    assert methods["explicit+0"]["psnr_mean"] == pytest.approx(methods["explicit"]["psnr_mean"], abs=1e-9)
    assert all(math.isfinite(v) for v in (r["sfd"]["samples_vs_heldout"], r["sfd"]["floor_heldout_vs_heldout"]))
    assert "| `explicit` | 3 + 3 |" in (tmp_path / "default_model.md").read_text()
    assert (tmp_path / "default_model.samples.png").is_file()
    assert set(r["denoising_error"]) == {"50", "200", "500", "800"} and r["family"] == "smooth"
    # another family under another name: its own files, the family in the command and the title
    _run(["-m", "benchmarks.default_model", "--model", tiny_pixel_dir, "--out", str(tmp_path), "--n-recon", "2",
          "--n-samples", "2", "--steps", "2", "--batch-size", "2", "--inversions", "explicit", "--threads", "1",
          "--family", "textured", "--name", "tex"])
    r = json.loads((tmp_path / "tex.json").read_text())
    assert r["family"] == "textured" and "--family textured --name tex" in r["command"]
    assert "textured scene family" in (tmp_path / "tex.md").read_text() and (tmp_path / "tex.recon.png").is_file()


def test_geodesic_metrics_benchmark_smoke(tiny_pixel_dir, tmp_path):
    _run(["benchmarks/geodesic_metrics.py", "--parts", "digits,scenes,energy", "--pairs", "1", "--t-stars", "200",
          "--variants", "lerp,denoiser lam=10", "--n-points", "4", "--max-iter", "2", "--num-steps", "2",
          "--scenes-model", tiny_pixel_dir, "--digits-model", tiny_pixel_dir, "--out", str(tmp_path)])
    r = json.loads((tmp_path / "geodesic_metrics.json").read_text())
    for part in ("digits", "scenes"):
        rows = {x["variant"]: x for x in r[part]["rows"]}
        assert set(rows) == {"gt frames", "lerp", "denoiser lam=10"} and all(x["pairs"] == 1 for x in rows.values())
        assert rows["gt frames"]["nearest_rmse"] == 0 and rows["lerp"]["nearest_rmse"] > 0
        assert all(math.isfinite(x[k]) for x in rows.values() for k in ("sfd", "kid", "kid_truth", "denoise_err"))
        # the true frames are closer to themselves than the tiny (untrained) model's decoded frames
        assert rows["gt frames"]["kid_truth"] < rows["lerp"]["kid_truth"]
    assert r["digits"]["rows"][0]["angle_err"] < 2.0 and r["digits"]["rows"][0]["monotonic"] == 1.0
    assert {x["t_star"] for x in r["energy"]["digits"]["rows"]} == {200}
    md = (tmp_path / "geodesic_metrics.md").read_text()
    assert "## 3. Held-out rotated digits" in md and "## 4. What each metric charges" in md
