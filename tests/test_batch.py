"""Batch jobs (pipeline.batch, ``python -m pipeline batch``): manifests, the in-process path, and on a local Ray
instance (one for the module, 2 CPUs): bit-for-bit equality with the library call, resume after an interrupted run,
a corrupt input as a failed row, a worker killed by itself or from outside survived."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.batch import Item, read_items, run_batch
from pipeline.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
#: Cheap generation_curves options for the tiny 16x16 model.
OPTS = {"num_timesteps": 3, "patch_size": 4, "batch_size": 4}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A folder of 5 tiny scenes (16x16), their masks, and CSV / JSONL manifests."""
    from pipeline.scenes import make_scene
    from pipeline.viz import save_png

    root = tmp_path_factory.mktemp("batch_scenes")
    (root / "img").mkdir()
    (root / "mask").mkdir()
    rows = []
    for i in range(5):
        sc = make_scene(9000 + i, size=16)
        save_png(sc.image, root / "img" / f"s{i}.png")
        save_png(np.repeat((sc.masks[0] * 255).astype(np.uint8)[..., None], 3, axis=2), root / "mask" / f"s{i}.png")
        rows.append({"id": f"s{i}", "image": f"img/s{i}.png", "mask": f"mask/s{i}.png",
                     "image_b": f"img/s{(i + 1) % 5}.png"})
    with open(root / "manifest.csv", "w") as f:
        f.write("id,image,mask,image_b,factor\n")
        f.writelines(f"{r['id']},{r['image']},{r['mask']},{r['image_b']},{1.5 + i}\n" for i, r in enumerate(rows))
    (root / "manifest.jsonl").write_text("".join(json.dumps({**r, "options": {"seed": 1}}) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module: 2 CPUs, no dashboard, worker logs not forwarded, temp dir in /tmp."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir="/tmp/ray_pipeline_tests",
             configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


def _arrays(out: Path, item_id: str, name: str = "curves.npz") -> dict[str, np.ndarray]:
    with np.load(out / "items" / item_id / name) as z:
        return {k: z[k] for k in z.files}


def _library_curves(model, path) -> dict[str, np.ndarray]:
    from pipeline.images import load_image
    from pipeline.rates import generation_curves

    res = generation_curves(model, load_image(path), **OPTS)
    return {"timesteps": res.timesteps.numpy(), "curves": res.curves.numpy(), "accumulated": res.accumulated.numpy(),
            "saliency": res.saliency.numpy(), "patch_saliency": res.patch_saliency.numpy()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), f"{k} differs"


# ---------------------------------------------------------------------------------------------------------------------
# Without Ray
# ---------------------------------------------------------------------------------------------------------------------
def test_read_items_folder_glob_manifests(scenes):
    folder = read_items(scenes / "img")
    assert [it.id for it in folder] == [f"s{i}" for i in range(5)]
    assert [it.id for it in read_items(str(scenes / "img" / "s[12].png"))] == ["s1", "s2"]
    csv_items = read_items(scenes / "manifest.csv")
    assert csv_items[2].mask == str(scenes / "mask" / "s2.png") and csv_items[2].options == {"factor": 3.5}
    assert csv_items[2].image_b == str(scenes / "img" / "s3.png")
    jl = read_items(scenes / "manifest.jsonl")
    assert jl[0].options == {"seed": 1} and jl[0].mask.endswith("mask/s0.png")
    dup = read_items([Item("a", "x.png"), Item("a", "y.png"), Item("a b", "z.png")])
    assert [it.id for it in dup] == ["a", "a-1", "a_b"]
    with pytest.raises(InputError, match="no input images"):
        read_items(scenes / "nothing-*.png")


def test_in_process_equals_library_and_resumes(scenes, tiny_pixel_dir, tiny_model, tmp_path):
    out = tmp_path / "out"
    s = run_batch("rates", scenes / "img", out=out, model=tiny_pixel_dir, options=OPTS, workers=0, progress=False)
    assert (s.done, s.failed, s.skipped, s.mode) == (5, 0, 0, "in-process")
    _assert_same(_arrays(out, "s3"), _library_curves(tiny_model, scenes / "img" / "s3.png"))
    table = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in table] == [f"s{i}" for i in range(5)] and {r["status"] for r in table} == {"ok"}
    assert set(table[0]["outputs"]) == {"curves.npz", "saliency.png"} and table[0]["figures"]["jvp_evaluations"] > 0
    again = run_batch("rates", scenes / "img", out=out, model=tiny_pixel_dir, options=OPTS, workers=0, progress=False)
    assert (again.done, again.skipped) == (0, 5)
    # a changed option is a different job: everything is recomputed
    other = run_batch("rates", scenes / "img", out=out, model=tiny_pixel_dir, options={**OPTS, "patch_size": 8},
                      workers=0, progress=False, model_instance=tiny_model)
    assert (other.done, other.skipped) == (5, 0)


def test_edit_and_geodesic_tasks_in_process(scenes, tiny_pixel_dir, tiny_model, tmp_path):
    edit_opts = {"num_steps": 4, "iterations": 1, "measure_curves": False}
    rem = run_batch("remove", scenes / "manifest.jsonl", out=tmp_path / "rem", options=edit_opts, workers=0,
                    progress=False, model_instance=tiny_model, model=tiny_pixel_dir)
    assert (rem.done, rem.failed) == (5, 0), rem.rows[0]["error"]
    from pipeline import edit
    from pipeline.images import load_image

    ref = edit.remove_object(tiny_model, load_image(scenes / "img" / "s1.png"),
                             np.asarray(__import__("PIL.Image").Image.open(scenes / "mask" / "s1.png").convert("L")),
                             **edit_opts, seed=1)
    got = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "rem" / "items" / "s1" / "image.png"))
    assert np.array_equal(got, ref.image)
    sal = run_batch("saliency", scenes / "manifest.csv", out=tmp_path / "sal", options=edit_opts, workers=0,
                    progress=False, model_instance=tiny_model)
    assert (sal.done, sal.failed) == (5, 0) and sal.rows[0]["options"]["factor"] == 1.5
    pairs = [Item(it.id, it.image, image_b=it.image_b) for it in read_items(scenes / "manifest.csv")]
    geo = run_batch("geodesic", pairs, out=tmp_path / "geo", workers=0, progress=False,
                    model_instance=tiny_model,
                    options={"n_points": 3, "t_star": 200, "num_steps": 2, "max_iter": 2})
    assert (geo.done, geo.failed) == (5, 0), geo.rows[0]["error"]
    assert _arrays(tmp_path / "geo", "s0", "path.npz")["images"].shape == (3, 16, 16, 3)
    with pytest.raises(InputError, match="needs 'mask'"):
        run_batch("remove", scenes / "img", out=tmp_path / "bad", workers=0, progress=False)


def test_without_ray_says_how_to_install(monkeypatch):
    from pipeline.batch import init_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match="requirements-batch.txt"):
        init_ray("local")


def test_cli_in_process(scenes, tiny_pixel_dir, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "pipeline", "batch", "rates", "--input", str(scenes / "img"), "--out", str(out),
           "--model", tiny_pixel_dir, "--address", "none", "--timesteps", "3", "--patch-size", "4",
           "--option", "batch_size=4", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert "5 ok, 0 failed, 0 skipped" in res.stdout
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert row["options"] == OPTS
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0 and "0 ok, 0 failed, 5 skipped" in res.stdout


# ---------------------------------------------------------------------------------------------------------------------
# On a local Ray instance
# ---------------------------------------------------------------------------------------------------------------------
def test_ray_bit_for_bit_with_library_call(ray_local, scenes, tiny_pixel_dir, tiny_model, tmp_path):
    out = tmp_path / "ray"
    s = run_batch("rates", scenes / "img", out=out, model=tiny_pixel_dir, options=OPTS, workers=2, progress=False)
    assert (s.done, s.failed, s.mode, s.workers) == (5, 0, "ray", 2)
    assert len({r["worker"] for r in s.rows}) == 2, "both workers took items"
    for i in range(5):
        _assert_same(_arrays(out, f"s{i}"), _library_curves(tiny_model, scenes / "img" / f"s{i}.png"))


def test_ray_resume_after_interrupted_run(ray_local, scenes, tiny_pixel_dir, tmp_path):
    out = tmp_path / "resume"

    def interrupt(done, failed, skipped, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch("rates", scenes / "img", out=out, model=tiny_pixel_dir, options=OPTS, workers=2, progress=interrupt)
    finished = sorted(p.parent.name for p in (out / "items").glob("*/record.json"))
    assert len(finished) == 2
    stamps = {i: {f.name: f.stat().st_mtime_ns for f in (out / "items" / i).iterdir()} for i in finished}
    s = run_batch("rates", scenes / "img", out=out, model=tiny_pixel_dir, options=OPTS, workers=2, progress=False)
    assert (s.done, s.skipped, s.failed) == (3, 2, 0)
    assert sorted(r["id"] for r in s.rows if r["status"] == "skipped") == finished
    for i in finished:  # nothing that finished was rewritten
        assert {f.name: f.stat().st_mtime_ns for f in (out / "items" / i).iterdir()} == stamps[i]
    # a damaged output fails verification: only that item is recomputed
    (out / "items" / "s4" / "saliency.png").write_bytes(b"truncated")
    s = run_batch("rates", scenes / "img", out=out, model=tiny_pixel_dir, options=OPTS, workers=1, progress=False)
    assert (s.done, s.skipped) == (1, 4) and [r["id"] for r in s.rows if r["status"] == "ok"] == ["s4"]
    assert len((out / "results.jsonl").read_text().splitlines()) == 5


def test_ray_corrupt_input_is_a_failed_row(ray_local, scenes, tiny_pixel_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"s{i}.png").write_bytes((scenes / "img" / f"s{i}.png").read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    s = run_batch("rates", folder, out=tmp_path / "out", model=tiny_pixel_dir, options=OPTS, workers=2,
                  progress=False)
    assert (s.done, s.failed) == (3, 1)
    bad = next(r for r in s.rows if r["id"] == "broken")
    assert bad["status"] == "failed" and "InputError" in bad["error"] and "not a readable image file" in bad["error"]
    assert "broken.png" in bad["error"]
    assert not (tmp_path / "out" / "items" / "broken" / "record.json").exists()


def test_ray_killed_worker_is_survived(ray_local, scenes, tiny_pixel_dir, tmp_path):
    marker = tmp_path / "killed.pid"
    out = tmp_path / "kill"
    s = run_batch("rates", scenes / "img", out=out, model=tiny_pixel_dir, options=OPTS, workers=2, progress=False,
                  _fault={"item": "s2", "marker": str(marker)})
    assert marker.exists(), "the worker was killed mid-item"
    assert (s.done, s.failed) == (5, 0)
    row = next(r for r in s.rows if r["id"] == "s2")
    assert row["worker"] != marker.read_text(), "s2 was retried on the restarted worker"


def test_ray_worker_killed_from_outside_is_survived(ray_local, scenes, tiny_pixel_dir, tmp_path):
    """Another process SIGKILLs the worker while it holds an item: only that attempt is lost, Ray restarts the
    actor, the item is retried and every item ends once in the table."""
    marker = tmp_path / "hold.pid"
    killed: list[int] = []
    killed_at: list[float] = []

    def killer() -> None:
        deadline = time.monotonic() + 300  # workers start slowly on a loaded machine
        while time.monotonic() < deadline and not marker.exists():
            time.sleep(0.02)
        time.sleep(0.1)  # the pid is written before the wait starts
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        killed_at.append(time.monotonic())

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    s = run_batch("rates", scenes / "img", out=tmp_path / "ext", model=tiny_pixel_dir, options=OPTS, workers=2,
                  progress=False, _fault={"item": "s1", "marker": str(marker), "mode": "external", "wait_s": 90})
    thread.join(timeout=5)
    assert killed, "the worker published its pid and was killed from outside"
    assert time.monotonic() - killed_at[0] < 80, "the run did not sit out the worker's wait: the kill ended the attempt"
    assert (s.done, s.failed) == (5, 0)
    row = next(r for r in s.rows if r["id"] == "s1")
    assert row["worker"] != str(killed[0]), "s1 was retried on a restarted worker"
    assert sorted(r["id"] for r in s.rows) == [f"s{i}" for i in range(5)]


def test_ray_exported_backend_built_once_and_shared(ray_local, scenes, tiny_pixel_dir, tiny_model, tmp_path):
    """--backend onnxruntime on Ray: the driver exports the graphs once under OUT/artifacts, both workers load them
    (no export of their own: the artifact files are not rewritten), and the curves match the PyTorch library call
    to float32 tolerance."""
    from pipeline.batch import ModelSpec

    out = tmp_path / "ort"
    spec = ModelSpec(tiny_pixel_dir, backend="onnxruntime")
    s = run_batch("rates", scenes / "img", out=out, model=spec, options=OPTS, workers=2, progress=False)
    assert (s.done, s.failed, s.workers) == (5, 0, 2), [r.get("error") for r in s.rows]
    assert len({r["worker"] for r in s.rows}) == 2
    graphs = sorted((out / "artifacts").rglob("*.onnx"))
    assert graphs, "the driver exported the graphs into OUT/artifacts"
    stamps = {p: p.stat().st_mtime_ns for p in graphs}
    first_done = min(r["finished"] for r in s.rows)
    assert all(p.stat().st_mtime < first_done for p in graphs), "every graph existed before the first item finished"
    s2 = run_batch("rates", scenes / "img", out=tmp_path / "ort2", model=ModelSpec(
        tiny_pixel_dir, backend="onnxruntime", artifacts=str(out / "artifacts")), options=OPTS, workers=2,
        progress=False)
    assert s2.done == 5 and {p: p.stat().st_mtime_ns for p in graphs} == stamps, "a second run reuses them"
    for i in range(5):
        got = _arrays(out, f"s{i}")
        ref = _library_curves(tiny_model, scenes / "img" / f"s{i}.png")
        for k in ref:
            if np.issubdtype(ref[k].dtype, np.floating):
                np.testing.assert_allclose(got[k], ref[k], rtol=1e-3, atol=1e-4, err_msg=k)
