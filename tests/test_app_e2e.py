"""End to end: the app as a server process on a free port, driven through ``gradio_client`` like a remote user.

One server (``python app.py --port P --model <tiny model folder>``) serves the module. Every ``api_name`` is called;
masks travel as ImageEditor values whose brush layer is an RGBA PNG (``handle_file``). Then 8 requests arrive at once:
all complete (their identical output images download whole), and the server's resident memory stays bounded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil  # installed with accelerate
import pytest
from gradio_client import Client, handle_file
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
STARTUP_TIMEOUT_S = 180
FAST = ("torch", 2, 0)  # backend, steps, seed
EDIT_FAST = (100, 1, False)  # t_edit, gradient steps per timestep, measure curves


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no HTTP 200 from {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve_app(tmp: Path, model_dir: str, *args: str, timeout: float = STARTUP_TIMEOUT_S):
    """Run ``python app.py`` on a free port with ``model_dir`` selected; yields ``(url, process)``, then stops it by
    its pid. Extra ``args`` go to app.py. The server log is ``tmp / "server.log"``."""
    port = free_port()
    log = tmp / "server.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False",
           "DIFFGEO_HOSTED": "", "PYTHONUNBUFFERED": "1"}
    env.pop("GRADIO_SERVER_PORT", None)
    cmd = [sys.executable, "app.py", "--port", str(port), "--model", model_dir, "--device", "cpu", "--threads", "1",
           *args]  # one torch thread: two spin against each other on a busy 2-core machine
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url, proc, log, timeout)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pixel_dir):
    """``(url, process)`` of the app serving the tiny model."""
    with serve_app(tmp_path_factory.mktemp("e2e_server"), tiny_pixel_dir) as running:
        yield running


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return Client(server[0], verbose=False, download_files=str(tmp_path_factory.mktemp("e2e_downloads")))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Scene images, an RGBA brush layer (a 12 x 12 square) and a non-image file, on disk for ``handle_file``."""
    from pipeline import scenes

    d = tmp_path_factory.mktemp("e2e_files")
    out = {}
    for name, seed in (("a", 10_000_001), ("b", 10_000_002)):
        out[name] = str(d / f"{name}.png")
        Image.fromarray(scenes.make_scene(seed, size=SIZE).image).save(out[name])
    for name, (top, left) in (("mask", (8, 8)), ("source", (20, 20))):
        layer = np.zeros((SIZE, SIZE, 4), np.uint8)
        layer[top : top + 10, left : left + 10] = (255, 0, 255, 255)
        out[name] = str(d / f"{name}.png")
        Image.fromarray(layer, "RGBA").save(out[name])
    out["text"] = str(d / "notes.png")
    Path(out["text"]).write_text("not an image")
    return out


def editor_value(background: str, layer: str | None) -> dict:
    return {"background": handle_file(background), "layers": [handle_file(layer)] if layer else [],
            "composite": handle_file(background), "id": None}


def endpoints(client) -> set[str]:
    return set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


def tree_rss(pid: int) -> int:
    """Resident memory of the server process and its children, bytes."""
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


# --------------------------------------------------------------------------------------------------------------------
def test_page_and_api_names(server, client):
    with urllib.request.urlopen(server[0], timeout=10) as r:
        assert r.status == 200
        assert "diffgeo" in r.read().decode("utf-8", "replace")
    assert {"/rates", "/remove", "/transfer", "/saliency", "/blend", "/geodesic", "/lab"} <= endpoints(client)


def test_rates(client, files, tiny_pixel_dir):
    saliency, rate, plot, status, downloads = client.predict(
        handle_file(files["a"]), 4, "mean", 500, "3,4; 20,20", tiny_pixel_dir, *FAST, api_name="/rates")
    assert np.asarray(Image.open(saliency)).shape == (SIZE, SIZE, 3)
    assert Path(rate).suffix == ".png"
    assert "backend:** torch" in status
    assert sorted(Path(d).name for d in downloads) == ["curves.npz", "saliency.png"]
    # the session keeps the result: new points and timestep redraw without the model
    saliency2, rate2, plot2 = client.predict(100, "5,5; 30,30", api_name="/rates_replot")
    assert np.asarray(Image.open(saliency2)).shape == (SIZE, SIZE, 3)
    for api in ("rates", "remove", "transfer", "saliency", "blend", "geodesic"):
        assert client.predict(api_name=f"/cancel_{api}") == "Nothing is running."


def test_remove_changes_only_the_mask(client, files, tiny_pixel_dir):
    result, strip, curves, losses, status, downloads = client.predict(
        editor_value(files["a"], files["mask"]), *EDIT_FAST, tiny_pixel_dir, *FAST, api_name="/remove")
    before = np.asarray(Image.open(files["a"]).convert("RGB"))
    after = np.asarray(Image.open(result).convert("RGB"))
    mask = np.asarray(Image.open(files["mask"]))[..., 3] > 0
    assert Path(result).suffix == ".png"  # lossless: the outside comparison below is exact
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert (after[mask] != before[mask]).any()
    assert "mask: 100 px" in status


def test_transfer_saliency_blend(client, files, tiny_pixel_dir):
    out = client.predict(editor_value(files["a"], files["mask"]), editor_value(files["a"], files["source"]),
                         *EDIT_FAST, tiny_pixel_dir, *FAST, api_name="/transfer")
    assert "same image" in out[4]
    out = client.predict(editor_value(files["a"], files["mask"]), 0.5, *EDIT_FAST, tiny_pixel_dir, *FAST,
                         api_name="/saliency")
    assert np.asarray(Image.open(out[0])).shape == (SIZE, SIZE, 3)
    out = client.predict(handle_file(files["b"]), editor_value(files["a"], files["mask"]), *EDIT_FAST,
                         tiny_pixel_dir, *FAST, api_name="/blend")
    assert np.asarray(Image.open(out[0])).shape == (SIZE, SIZE, 3)


def test_geodesic(client, files, tiny_pixel_dir):
    strip, extra, energy, gif, status, downloads = client.predict(
        handle_file(files["a"]), handle_file(files["b"]), 3, 100, 100.0, 0.5, 3, tiny_pixel_dir, *FAST,
        api_name="/geodesic")
    assert Path(gif).suffix == ".gif"
    assert any(Path(d).name == "strip.png" for d in downloads)


def test_lab(client):
    plot, energy, table = client.predict("sphere", 200, 0.15, 90, 0, 7, 30, api_name="/lab")
    assert "true geodesic" in table and plot is not None


def test_bad_input_is_a_clear_error(client, files, tiny_pixel_dir):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="not a readable image file"):
        client.predict(handle_file(files["text"]), 4, "mean", 500, "", tiny_pixel_dir, *FAST, api_name="/rates")
    with pytest.raises(AppError, match="empty"):
        client.predict(editor_value(files["a"], None), *EDIT_FAST, tiny_pixel_dir, *FAST, api_name="/remove")


def test_upload_size_limit(client, tmp_path, tiny_pixel_dir):
    """Uploads above the server's max_file_size (10 MB by default) are refused before any handler runs."""
    big = tmp_path / "big.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8)).save(big)  # ~12 MB, incompressible
    assert big.stat().st_size > 10 * 2**20
    with pytest.raises(Exception, match="(?i)too large|413|maximum|size"):
        client.predict(handle_file(str(big)), 4, "mean", 500, "", tiny_pixel_dir, *FAST, api_name="/rates")


def test_concurrent_requests_complete_with_bounded_memory(server, client, files, tiny_pixel_dir):
    """8 requests at once queue behind the concurrency limit; all finish, and memory does not grow with them."""
    args = (handle_file(files["a"]), 4, "mean", 500, "", tiny_pixel_dir, *FAST)
    client.predict(*args, api_name="/rates")  # warm: the model is loaded and the code paths are hot
    rss_before = tree_rss(server[1].pid)
    jobs = [client.submit(*args, api_name="/rates") for _ in range(8)]
    results = [job.result(timeout=600) for job in jobs]
    assert len(results) == 8 and all("backend:** torch" in r[3] for r in results)
    # the 8 identical pictures share one cached file in the server; every download of it is complete
    assert len({Path(r[0]).read_bytes() for r in results}) == 1
    assert all(np.asarray(Image.open(r[0]).convert("RGB")).shape == (SIZE, SIZE, 3) for r in results)
    rss_after = tree_rss(server[1].pid)
    growth_mb = (rss_after - rss_before) / 2**20
    assert growth_mb < 300, f"server RSS grew by {growth_mb:.0f} MB over 8 requests"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # independent clients (sessions) too
        outs = list(pool.map(lambda _: Client(server[0], verbose=False).predict(
            "sphere", 100, 0.2, 60, 10, 5, 10, api_name="/lab")[2], range(4)))
    assert all("true geodesic" in t for t in outs)
