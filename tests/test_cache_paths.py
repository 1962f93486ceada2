"""ui.cache_paths: the server's cache folder never reaches a client, and files still round-trip through gradio."""

from __future__ import annotations

import asyncio
import io
import json
import re

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ui.cache_paths import ALIAS, HideCachePaths, _held_tail, cache_folders, middleware

ROOT = "/srv/some user/cache"  # a space: the URL-quoted form differs from the raw one


def _app(seen: list):
    async def echo(request: Request):
        body = await request.body()
        seen.append(("body", body))
        return JSONResponse({"path": f"{ROOT}/abc/x.png", "url": f"/file={ROOT.replace(' ', '%20')}/abc/x.png",
                             "root": ROOT, "got": json.loads(body) if body else None})

    async def stream(request: Request):
        async def gen():
            # a path split across two chunks, then an event that ends the stream
            yield b'data: {"path": "' + ROOT[:7].encode()
            yield ROOT[7:].encode() + b'/y.png"}\n\n'
            yield b"data: done\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def file(request: Request):
        seen.append(("path", request.url.path))
        return Response(f"{ROOT}/binary".encode(), media_type="image/png")

    async def text(request: Request):
        return PlainTextResponse(f"error in {ROOT}/q")

    return Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/stream", stream),
                             Route("/gradio_api/file={p:path}", file), Route("/text", text)])


@pytest.fixture()
def client():
    seen: list = []
    app = HideCachePaths(_app(seen), folders=[ROOT])
    return TestClient(app), seen


def test_responses_show_the_alias_and_requests_get_the_folder_back(client):
    c, seen = client
    r = c.post("/echo", json={"path": f"{ALIAS}/abc/in.png", "text": "no path here"})
    assert ROOT not in r.text and "%20" not in r.text.split("url")[0]
    body = r.json()
    assert body["path"] == f"{ALIAS}/abc/x.png" and body["url"] == f"/file={ALIAS}/abc/x.png"
    assert body["root"] == ALIAS
    assert int(r.headers["content-length"]) == len(r.content)
    assert json.loads(seen[-1][1])["path"] == f"{ROOT}/abc/in.png", "the app received the absolute path"
    assert body["got"]["path"] == f"{ALIAS}/abc/in.png", "and the echo of it was hidden again"


def test_streams_split_paths_and_file_routes(client):
    c, seen = client
    r = c.get("/stream")
    assert r.text == f'data: {{"path": "{ALIAS}/y.png"}}\n\ndata: done\n\n'
    r = c.get(f"/gradio_api/file={ALIAS}/abc/x.png")
    assert seen[-1] == ("path", f"/gradio_api/file={ROOT}/abc/x.png")
    assert r.content == f"{ROOT}/binary".encode(), "file bodies are served untouched"
    assert c.get("/text").text == f"error in {ALIAS}/q"


def test_held_tail_only_holds_a_possible_prefix():
    assert _held_tail(b"abc /srv/so", [b"/srv/some"]) == 7
    assert _held_tail(b"data: x\n\n", [b"/srv/some"]) == 0


def test_gradio_round_trip_without_absolute_paths(tmp_path, monkeypatch):
    """A launched gradio app with the middleware: /config, an upload and a result carry no absolute path, and the
    uploaded file reaches the function and comes back."""
    gr = pytest.importorskip("gradio")
    from gradio_client import Client, handle_file
    from PIL import Image

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gcache"))
    folder = cache_folders()[0]
    assert folder == str(tmp_path / "gcache")

    def invert(img):
        return 255 - img

    with gr.Blocks() as demo:
        i, o = gr.Image(type="numpy"), gr.Image(type="numpy", format="png")
        gr.Button("go").click(invert, i, o, api_name="invert")
    demo.launch(prevent_thread_lock=True, app_kwargs={"middleware": [middleware()]}, quiet=True)
    try:
        import httpx

        base = demo.local_url.rstrip("/")
        cfg = httpx.get(f"{base}/config").text
        assert folder not in cfg and str(tmp_path) not in cfg
        src = tmp_path / "in.png"
        arr = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(src)
        with open(src, "rb") as f:
            up = httpx.post(f"{base}/gradio_api/upload", files={"files": ("in.png", f, "image/png")}).text
        assert folder not in up and ALIAS in up
        uploaded = json.loads(up)[0]
        assert not uploaded.startswith("/")
        # the raw protocol: join the queue with the aliased path, read the event stream
        join = httpx.post(f"{base}/gradio_api/call/invert",
                          json={"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}]})
        assert join.status_code == 200, join.text
        event = json.loads(join.text)["event_id"]
        stream = httpx.get(f"{base}/gradio_api/call/invert/{event}", timeout=60).text
        assert "complete" in stream and folder not in stream and str(tmp_path) not in stream
        result = json.loads(re.findall(r"^data: (.*)$", stream, re.M)[-1])[0]
        assert result["path"].startswith(ALIAS + "/")
        got = httpx.get(result["url"] if result["url"].startswith("http") else base + result["url"])
        assert got.status_code == 200
        out = np.asarray(Image.open(io.BytesIO(got.content)).convert("RGB"))
        np.testing.assert_array_equal(out, 255 - arr)
        # and gradio_client works unchanged against it
        res = Client(base, verbose=False).predict(handle_file(str(src)), api_name="/invert")
        np.testing.assert_array_equal(np.asarray(Image.open(res).convert("RGB")), 255 - arr)
    finally:
        demo.close()


def test_not_http_passes_through():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["type"])

    asyncio.run(HideCachePaths(app, folders=[ROOT])({"type": "lifespan"}, None, None))
    assert calls == ["lifespan"]


def test_a_stated_length_in_several_parts_is_rewritten_whole():
    """A response that states its length but sends its body in parts (a path split between them) is gathered,
    rewritten and sent with the new length."""
    body = f'{{"path": "{ROOT}/abc/x.png"}}'.encode()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body[:15], "more_body": True})
        await send({"type": "http.response.body", "body": body[15:], "more_body": False})

    r = TestClient(HideCachePaths(app, folders=[ROOT])).get("/")
    assert r.json() == {"path": f"{ALIAS}/abc/x.png"} and int(r.headers["content-length"]) == len(r.content)
