"""Keep the server's file-system layout out of every response: gradio's cache folder becomes a relative alias.

Gradio's file protocol hands the browser each file's absolute path (``{"path": "/tmp/gradio/<hash>/x.png", "url":
".../gradio_api/file=/tmp/gradio/<hash>/x.png"}``) in upload responses, results and ``/config``, and the browser sends
those paths back as inputs. :class:`HideCachePaths` is an ASGI middleware that rewrites the absolute cache folder to
:data:`ALIAS` (``gradio-cache``) in every JSON, event-stream and text response, and back to the absolute folder in
request bodies (all but multipart uploads) and in request paths (``/gradio_api/file=gradio-cache/...``). Gradio
itself only ever sees absolute paths, so its own checks (a file must lie in its cache or an allowed folder) are
unchanged.

Wire it with ``demo.launch(app_kwargs={"middleware": [cache_paths.middleware()]})``: middleware given to the app's
constructor sits inside gradio's compression middleware, so it sees plain bytes.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

#: What the browser sees in place of the absolute cache folder: relative, so nothing of the machine shows.
ALIAS = "gradio-cache"

#: Response types whose bodies are rewritten (files are served as they are).
_TEXT_TYPES = (b"application/json", b"text/event-stream", b"text/plain", b"text/html", b"application/javascript")


def cache_folders() -> list[str]:
    """The absolute folders hidden behind :data:`ALIAS`: gradio's upload and result cache (``GRADIO_TEMP_DIR``,
    else ``<system temp>/gradio``, as gradio resolves it), read at call time."""
    root = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return [os.path.abspath(root)]


def _pairs(folders: Iterable[str]) -> list[tuple[bytes, bytes]]:
    """(absolute form, alias) byte pairs: each folder raw and URL-quoted (as gradio quotes ``/file=`` URLs),
    longest first so that a nested folder wins."""
    out = set()
    for folder in folders:
        folder = folder.rstrip("/\\")
        for form in (folder, urllib.parse.quote(folder, safe="/")):
            out.add((form.encode(), ALIAS.encode()))
    return sorted(out, key=lambda p: -len(p[0]))


def hide(data: bytes, pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Each absolute folder (followed by ``/`` or a closing quote) replaced by the alias."""
    for absolute, alias in pairs:
        data = data.replace(absolute + b"/", alias + b"/").replace(absolute + b'"', alias + b'"')
    return data


def reveal(data: bytes, absolute: bytes) -> bytes:
    """The alias (followed by ``/``) replaced by ``absolute``: what gradio expects back."""
    return data.replace(ALIAS.encode() + b"/", absolute + b"/")


def _held_tail(data: bytes, needles: list[bytes]) -> int:
    """How many trailing bytes of ``data`` could start a needle that the next chunk completes (kept back)."""
    keep = 0
    for needle in needles:
        for n in range(min(len(needle), len(data)), 0, -1):
            if needle.startswith(data[-n:]):
                keep = max(keep, n)
                break
    return keep


class HideCachePaths:
    """ASGI middleware: the cache folder as :data:`ALIAS` in responses, and back to absolute in requests.

    With several folders only the first is revealed in requests (the browser cannot tell them apart); the others are
    hidden from responses only."""

    def __init__(self, app, folders: list[str] | None = None):
        self.app = app
        self.folders = folders

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        folders = [f.rstrip("/\\") for f in (self.folders if self.folders is not None else cache_folders())]
        pairs = _pairs(folders)
        first = folders[0].encode()
        scope = dict(scope)
        if f"/{ALIAS}/" in scope.get("path", "") or f"={ALIAS}/" in scope.get("path", ""):
            scope["path"] = reveal(scope["path"].encode(), first).decode()
            scope["raw_path"] = reveal(scope.get("raw_path") or b"",
                                       urllib.parse.quote(folders[0], safe="/").encode())
        if not dict(scope.get("headers") or []).get(b"content-type", b"").startswith(b"multipart/"):
            receive = _revealing_receive(receive, first)  # JSON bodies, whatever they are labelled; not uploads
        state: dict = {"text": False, "tail": b"", "start": None, "parts": []}
        needles = [p[0] for p in pairs]

        async def send_hidden(message):
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                ctype = dict(headers).get(b"content-type", b"")
                state["text"] = any(t in ctype for t in _TEXT_TYPES)
                if state["text"] and any(k.lower() == b"content-length" for k, _ in headers):
                    # A stated length changes with the rewrite: hold the start until the whole body is in.
                    state["start"] = {**message, "headers": [(k, v) for k, v in headers
                                                             if k.lower() != b"content-length"]}
                    return
                await send(message)  # files untouched; streams (no length) start at once
                return
            if message["type"] != "http.response.body" or not state["text"]:
                await send(message)
                return
            more = message.get("more_body", False)
            if state["start"] is not None:  # a held response: gather, rewrite, send with its new length
                state["parts"].append(message.get("body", b""))
                if more:
                    return
                body = hide(b"".join(state["parts"]), pairs)
                start, state["start"], state["parts"] = state["start"], None, []
                start["headers"] = [*start["headers"], (b"content-length", str(len(body)).encode())]
                await send(start)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            data = state["tail"] + message.get("body", b"")  # a stream: rewrite chunk by chunk
            keep = _held_tail(data, needles) if more else 0
            state["tail"] = data[len(data) - keep:] if keep else b""
            await send({"type": "http.response.body", "body": hide(data[:len(data) - keep], pairs),
                        "more_body": more})

        await self.app(scope, receive, send_hidden)


def _revealing_receive(receive, absolute: bytes):
    """A ``receive`` that delivers the whole request body at once, with the alias made absolute (uploads, the only
    large bodies, are multipart and never pass here)."""
    done = {"sent": False}

    async def receive_revealed():
        if done["sent"]:
            return await receive()
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        done["sent"] = True
        return {"type": "http.request", "body": reveal(b"".join(chunks), absolute), "more_body": False}

    return receive_revealed


def middleware(folders: list[str] | None = None):
    """The Starlette ``Middleware`` entry for ``FastAPI(middleware=[...])`` / gradio's ``launch(app_kwargs=...)``."""
    from starlette.middleware import Middleware

    return Middleware(HideCachePaths, folders=folders)
