"""End to end: the app as a server process on a free port, driven through ``gradio_client`` like a remote user.

One server (``python app.py --port P --model <tiny model folder>``) serves the module. Every ``api_name`` is called;
masks travel as ImageEditor values whose brush layer is an RGBA PNG (``handle_file``). Then 8 requests arrive at once
(32 and a 100-request soak under ``-m slow``): all complete (their identical output images download whole), and the
server's resident memory stays bounded. A client that cancels or is killed mid-job stops its computation (the server
log says the job's cancel flag was set; its CPU time goes back to idle) and the next request runs at once. A second,
hosted server shows no server path but gradio's own file cache in any response.

The helpers here (``serve_app``, ``call_raw``, ``upload``) are shared with ``tests/test_fuzz.py`` and
``tests/test_browser.py``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

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
def serve_app(tmp: Path, model_dir: str, *args: str, timeout: float = STARTUP_TIMEOUT_S,
              env: dict[str, str] | None = None):
    """Run ``python app.py`` on a free port with ``model_dir`` selected; yields ``(url, process)``, then stops it by
    its pid. Extra ``args`` go to app.py, extra ``env`` to its environment. The server log is ``tmp / "server.log"``,
    its gradio files are under ``tmp / "gradio"``."""
    port = free_port()
    log = tmp / "server.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False",
           "DIFFGEO_HOSTED": "", "DIFFGEO_TIME_LIMIT": "", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
           **(env or {})}
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
def server_dir(tmp_path_factory) -> Path:
    """The server's folder: its log (``server.log``) and its gradio files (``gradio/``)."""
    return tmp_path_factory.mktemp("e2e_server")


@pytest.fixture(scope="module")
def server(server_dir, tiny_pixel_dir):
    """``(url, process)`` of the app serving the tiny model."""
    with serve_app(server_dir, tiny_pixel_dir) as running:
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


def cpu_seconds(pid: int, window: float) -> float:
    """CPU time (user + system) the server process spends over the next ``window`` seconds."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(window)
    after = proc.cpu_times()
    return (after.user - before.user) + (after.system - before.system)


def wait_for_log(log: Path, pattern: str, timeout: float, start: int = 0) -> re.Match:
    """The first match of ``pattern`` in the server log after byte ``start``, waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_bytes()[start:].decode("utf-8", "replace")
        m = re.search(pattern, text)
        if m:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the server log within {timeout} s:\n{text[-3000:]}")
        time.sleep(0.2)


# Raw HTTP, as any client may send it: gradio_client's httpx refuses NaN and infinity in JSON, a raw client does not.
def upload(url: str, path: str) -> dict:
    """Upload ``path`` through ``/gradio_api/upload``; its FileData as an API value."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{Path(path).name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + Path(path).read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return {"path": json.loads(r.read())[0], "meta": {"_type": "gradio.FileData"}}


def call_raw(url: str, api: str, data: list, timeout: float = 300) -> tuple[str, Any]:
    """``POST /gradio_api/call/<api>`` with ``data`` as JSON (NaN and Infinity allowed), then read its event stream:
    ``("complete", outputs)`` or ``("error", payload)`` (gradio's error payload: ``{"error": message, ...}``)."""
    body = json.dumps({"data": data}, allow_nan=True).encode()
    req = urllib.request.Request(url + f"gradio_api/call/{api}", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        event_id = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(url + f"gradio_api/call/{api}/{event_id}", timeout=timeout) as r:
        text = r.read().decode("utf-8", "replace")
    for event, payload in reversed(re.findall(r"event: (\w+)\ndata: (.*)", text)):
        if event in ("complete", "error"):
            return event, json.loads(payload)
    raise AssertionError(f"no result in the event stream of /{api}: {text[-2000:]}")


def error_text(payload: Any) -> str:
    """The message of a raw call's error payload ("" when gradio hid it: ``{"error": null}``)."""
    if isinstance(payload, dict):
        return str(payload.get("error") or "")
    return str(payload or "")


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
        assert client.predict(api_name=f"/cancel_{api}") == "Stopped: nothing was running."


def test_remove_changes_only_the_mask(client, files, tiny_pixel_dir):
    result, strip, curves, losses, status, downloads, details = client.predict(
        editor_value(files["a"], files["mask"]), "smooth", *EDIT_FAST, tiny_pixel_dir, *FAST, api_name="/remove")
    before = np.asarray(Image.open(files["a"]).convert("RGB"))
    after = np.asarray(Image.open(result).convert("RGB"))
    mask = np.asarray(Image.open(files["mask"]))[..., 3] > 0
    assert Path(result).suffix == ".png"  # lossless: the outside comparison below is exact
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert (after[mask] != before[mask]).any()
    assert "mask: 100 px" in status and "Diagnostics" in details


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
        client.predict(editor_value(files["a"], None), "smooth", *EDIT_FAST, tiny_pixel_dir, *FAST, api_name="/remove")


def test_upload_size_limit(client, tmp_path, tiny_pixel_dir):
    """Uploads above the server's max_file_size (80 MB by default: every PNG of an accepted image fits) are refused
    before any handler runs."""
    from ui.config import MAX_FILE_SIZE

    assert MAX_FILE_SIZE == "80mb"
    big = tmp_path / "big.png"
    with open(big, "wb") as f:  # the size is checked before the content is read
        f.truncate(81 * 2**20)
    with pytest.raises(Exception, match="(?i)too large|413|maximum|size"):
        client.predict(handle_file(str(big)), 4, "mean", 500, "", tiny_pixel_dir, *FAST, api_name="/rates")


def _concurrent_requests(server, client, files, model: str, n: int, max_growth_mb: float) -> None:
    """``n`` requests at once queue behind the concurrency limit; all finish, and memory does not grow with them."""
    args = (handle_file(files["a"]), 4, "mean", 500, "", model, *FAST)
    client.predict(*args, api_name="/rates")  # warm: the model is loaded and the code paths are hot
    rss_before = tree_rss(server[1].pid)
    jobs = [client.submit(*args, api_name="/rates") for _ in range(n)]
    results = [job.result(timeout=900) for job in jobs]
    assert len(results) == n and all("backend:** torch" in r[3] for r in results)
    # the identical pictures share one cached file in the server; every download of it is complete
    assert len({Path(r[0]).read_bytes() for r in results}) == 1
    assert all(np.asarray(Image.open(r[0]).convert("RGB")).shape == (SIZE, SIZE, 3) for r in results)
    rss_after = tree_rss(server[1].pid)
    growth_mb = (rss_after - rss_before) / 2**20
    assert growth_mb < max_growth_mb, f"server RSS grew by {growth_mb:.0f} MB over {n} requests"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # independent clients (sessions) too
        outs = list(pool.map(lambda _: Client(server[0], verbose=False).predict(
            "sphere", 100, 0.2, 60, 10, 5, 10, api_name="/lab")[2], range(4)))
    assert all("true geodesic" in t for t in outs)


def test_concurrent_requests_complete_with_bounded_memory(server, client, files, tiny_pixel_dir):
    """8 requests at once queue behind the concurrency limit; all finish, and memory does not grow with them."""
    _concurrent_requests(server, client, files, tiny_pixel_dir, 8, 300)


@pytest.mark.slow
def test_load_32_concurrent_requests(server, client, files, tiny_pixel_dir):
    """The load test: 32 requests at once (half the queue), all complete, memory bounded."""
    _concurrent_requests(server, client, files, tiny_pixel_dir, 32, 400)


@pytest.mark.slow
def test_soak_100_requests(server, files, tiny_pixel_dir):
    """The soak test: 100 requests from 4 clients (rates, remove, lab, and a bad input every tenth), in a row; every
    one completes or fails with its named error, and the server's memory stays bounded."""
    clients = [Client(server[0], verbose=False) for _ in range(4)]
    clients[0].predict(handle_file(files["a"]), 4, "mean", 500, "", tiny_pixel_dir, *FAST, api_name="/rates")
    rss_before = tree_rss(server[1].pid)

    def one(i: int) -> str:
        c = clients[i % 4]
        if i % 10 == 9:
            try:
                c.predict(handle_file(files["text"]), 4, "mean", 500, "", tiny_pixel_dir, *FAST, api_name="/rates")
            except Exception as err:  # noqa: BLE001 - the named error is what is checked
                return "named" if "not a readable image file" in str(err) else f"unnamed: {err}"
            return "no error"
        if i % 3 == 0:
            out = c.predict(editor_value(files["a"], files["mask"]), "smooth", *EDIT_FAST, tiny_pixel_dir, *FAST,
                            api_name="/remove")
            return "ok" if "mask: 100 px" in out[4] else f"bad: {out[4]}"
        if i % 3 == 1:
            out = c.predict(handle_file(files["b"]), 4, "mean", 500, "", tiny_pixel_dir, *FAST, api_name="/rates")
            return "ok" if "backend:** torch" in out[3] else f"bad: {out[3]}"
        return "ok" if "true geodesic" in c.predict("torus", 100, 0.2, 60, 10, 5, 10, api_name="/lab")[2] else "bad"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, range(100)))
    growth_mb = (tree_rss(server[1].pid) - rss_before) / 2**20
    print(f"soak: {outcomes.count('ok')} results, {outcomes.count('named')} named errors, RSS +{growth_mb:.0f} MB")
    assert outcomes.count("ok") == 90 and outcomes.count("named") == 10, [o for o in outcomes if o not in
                                                                          ("ok", "named")]
    assert growth_mb < 400, f"server RSS grew by {growth_mb:.0f} MB over 100 requests"


# --------------------------------------------------------------------------------------------------------------------
# Abandoned work stops (issue 16): Job.cancel() and a killed client
# --------------------------------------------------------------------------------------------------------------------
#: A rates job of minutes on the tiny model (100 timesteps, one direction per model pixel).
def long_job(files, model: str) -> tuple:
    return (handle_file(files["a"]), 32, "mean", 500, "", model, "torch", 100, 0)


def _wait_until_busy(pid: int, timeout: float = 120) -> float:
    """Wait until the server computes (over 0.2 CPU-seconds in a second); that CPU time."""
    deadline = time.monotonic() + timeout
    while (busy := cpu_seconds(pid, 1.0)) < 0.2:
        assert time.monotonic() < deadline, "the long job did not start"
    return busy


def _assert_stopped(server, server_dir: Path, client, files, model: str, reason: str, start: int,
                    timeout: float) -> None:
    """Within ``timeout`` s the server's CPU is back to idle (the computation stopped; it used to run on for
    minutes), the server log says the job's cancel flag was set for ``reason`` and the job ended, and the next
    request runs at once."""
    deadline = time.monotonic() + timeout
    while (used := cpu_seconds(server[1].pid, 2.0)) > 0.25:
        assert time.monotonic() < deadline, \
            f"the server still computes ({used:.2f} CPU-seconds per 2 s) {timeout} s after the job was abandoned"
    log = server_dir / "server.log"
    job_id = wait_for_log(log, rf"model job (\d+): cancel flag set \({reason}\)", 10, start).group(1)
    wait_for_log(log, rf"model job {job_id} ended after [\d.]+ s \(stopped: {reason}\); 0 model job", 10, start)
    t0 = time.monotonic()
    out = client.predict(handle_file(files["a"]), 4, "mean", 500, "", model, *FAST, api_name="/rates")
    assert "backend:** torch" in out[3]
    assert time.monotonic() - t0 < 60


def test_cancelled_job_stops_its_computation(server, server_dir, client, files, tiny_pixel_dir):
    """``Job.cancel()`` (gradio's /cancel) frees gradio's slot at once; the handler's thread used to compute on (the
    next request then ran beside it, and PyTorch's forward AD failed in both). Now its cancel flag is set, it stops
    within a step, and it holds the app's model slot until then."""
    client.predict(handle_file(files["a"]), 4, "mean", 500, "", tiny_pixel_dir, *FAST, api_name="/rates")
    start = (server_dir / "server.log").stat().st_size
    job = client.submit(*long_job(files, tiny_pixel_dir), api_name="/rates")
    _wait_until_busy(server[1].pid)
    job.cancel()
    _assert_stopped(server, server_dir, client, files, tiny_pixel_dir, "the client cancelled", start, 20)


def test_killed_client_stops_its_computation(server, server_dir, client, files, tiny_pixel_dir):
    """A client process killed mid-job (its event stream closes): gradio marks the event dead; the handler's cancel
    flag is set and it stops (it used to compute on for minutes)."""
    start = (server_dir / "server.log").stat().st_size
    code = (f"import time\nfrom gradio_client import Client, handle_file\n"
            f"c = Client({server[0]!r}, verbose=False)\n"
            f"job = c.submit(handle_file({files['a']!r}), 32, 'mean', 500, '', {tiny_pixel_dir!r}, 'torch', 100, 0, "
            f"api_name='/rates')\nprint('submitted', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_until_busy(server[1].pid)
    finally:
        proc.kill()
        proc.wait(timeout=20)
    _assert_stopped(server, server_dir, client, files, tiny_pixel_dir, "the client disconnected", start, 40)


def test_nan_over_raw_http_is_a_named_error(server, files, tiny_pixel_dir):
    """JSON NaN (which a raw client may send; gradio_client cannot) reaches the checks: a named error, no job."""
    url = server[0]
    image = upload(url, files["a"])
    for index, value, field in [(3, float("nan"), "rate-map timestep t"), (8, float("nan"), "seed"),
                                (7, "ten", "steps"), (7, None, "steps"), (1, float("inf"), "patch grid")]:
        data = [image, 4, "mean", 500, "", tiny_pixel_dir, *FAST]
        data[index] = value
        event, payload = call_raw(url, "rates", data)
        assert event == "error" and error_text(payload).startswith(field), (value, payload)


# --------------------------------------------------------------------------------------------------------------------
# Hosted mode: no server path in any response but gradio's own file cache
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hosted_server(tmp_path_factory, tiny_pixel_dir):
    """``(url, process, folder)`` of the app in hosted mode serving the tiny model as "local model 1"."""
    folder = tmp_path_factory.mktemp("e2e_hosted")
    with serve_app(folder, tiny_pixel_dir, "--hosted") as (url, proc):
        yield url, proc, folder


#: An absolute path in a JSON text (not the inside of a URL's host, or of base64 data: "…AAA/9j/…", ",/9j/…").
ABS_PATH = re.compile(r"""(?<![\w.:/+=,])(?:/[\w.@~-]+){2,}""")


def test_hosted_responses_show_no_server_path(hosted_server, files, tiny_pixel_dir):
    """Everything a hosted client sees: the page config, the API info, an upload's response, a result, an error.
    No absolute path at all: gradio's file cache (``GRADIO_TEMP_DIR``), which gradio's file protocol puts in every
    file value and URL, reaches the client as the relative alias ``gradio-cache`` (``ui/cache_paths.py``), and the
    upload's aliased path works as the next request's input. Never the model folder, the code's folder or the home
    directory. The app's own output folders have 128-bit random names; ``transfer_copy`` is no endpoint."""
    url, proc, folder = hosted_server
    cache = str(folder / "gradio")
    texts = {}
    for route in ("config", "gradio_api/info"):
        with urllib.request.urlopen(url + route, timeout=30) as r:
            texts[route] = r.read().decode()
    image = upload(url, files["a"])
    texts["upload"] = json.dumps(image)
    event, out = call_raw(url, "rates", [image, 4, "mean", 500, "", "local model 1", *FAST])
    assert event == "complete", out
    texts["result"] = json.dumps(out)
    event, err = call_raw(url, "rates", [image, 4, "mean", 500, "", tiny_pixel_dir, *FAST])
    assert event == "error" and "this demo offers the models" in error_text(err)
    texts["error"] = json.dumps(err)
    assert image["path"].startswith("gradio-cache/") and "gradio-cache/" in texts["result"]
    for name, text in texts.items():
        for secret in (cache, tiny_pixel_dir, str(ROOT), os.path.expanduser("~")):
            assert secret not in text, (name, secret)
        outside = {p for p in ABS_PATH.findall(text)
                   if not p.startswith("/gradio_api") and p != "/path/to/your/file"}  # gradio's API docs
        assert not outside, (name, sorted(outside)[:5])
    config = json.loads(texts["config"])
    assert "transfer_copy" not in {d.get("api_name") for d in config["dependencies"]}
    # private server events: the lab's sliders (checked as /lab), the editors' uploads (their value is checked like
    # an edit's image) and "Edit this result further" (its only input is the session's own gr.State)
    assert not [d for d in config["dependencies"] if d.get("backend_fn") and d.get("api_visibility") == "private"
                and not re.match(r"(lab|upload|upload_file|send_back|send_back_file)(_\d+)?$",
                                 str(d.get("api_name", "")))]
    calls = list((folder / "gradio" / "diffgeo-outputs" / "sessions").glob("*/*"))
    assert calls and all(re.fullmatch(r"[0-9a-f]{32}", p.name) and re.fullmatch(r"[0-9a-f]{32}", p.parent.name)
                         for p in calls)
