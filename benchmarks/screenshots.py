"""Reproduce the README's app screenshots (``weights/screenshots/*.png``) from the running app.

Starts ``app.py`` as a subprocess on a free port (``--model <MODEL> --device cpu --threads 1 --warmup``, through
``serve_app`` of ``tests/test_app_e2e.py``), waits until the warm-up has loaded the model and prepared its ``auto``
backend, then drives the page with headless Chromium through Playwright, one fresh page per screenshot. Each tab is
opened, an example scene is loaded, the mask is painted with the brush over a real object of that scene (its position
comes from :func:`pipeline.scenes.make_scene`, which generated the example), the run button is pressed, and once the
result and its status line are there the whole page is saved with ``page.screenshot(full_page=True)`` at a 1400 px
wide viewport. The app's settings keep their defaults (backend ``auto``, 20 steps, seed 0, default edit depth and
slider values); besides the painted masks, the only input set by hand is the two points of the generation-curves
tab, without which its curves plot would be empty.

========== =====================================================================================================
file       what it shows
========== =====================================================================================================
rates      Generation curves of scene 20000003: saliency map, rate map, curves of a point on the square and one on
           the background
remove     Remove object on a 4000x3000 photo (scikit-image's astronaut enlarged, with camera-like grain) sent with
           the editor's *Upload a photo* button: the working copy's size stated, the shuttle model painted over,
           the result composited at 4000x3000 and described in words
transfer   Transfer: the ring of scene 20000028 (target, its prepared mask) takes on the content of its disk
           (source, painted)
saliency   Saliency: the chelsea photograph example with its prepared mask over the eye (shown on the canvas when
           the example loads), made more salient (factor 2)
blend      Blend: the example pair coffee (background) and astronaut (object image, the shuttle's prepared mask)
geodesic   Geodesics: the example pair astronaut -> coffee (the coffee photo cropped to its central square, as the
           status says; 160 px tiles, 256 px animation)
lab_sphere Geometry lab, sphere (default sliders)
lab_torus  Geometry lab, torus (default sliders)
phone      The remove tab on a 390x844 phone viewport (all tabs in the bar, the canvas right of the editor's tools)
           with the astronaut example's mask, after Run: the status right under the Run button
========== =====================================================================================================

Requirements: the ``playwright`` Python package (in ``requirements.txt``) and a system Chromium: ``$DIFFGEO_CHROMIUM``,
else ``/usr/bin/chromium`` (Debian's ``chromium`` package), else ``chromium`` / ``chromium-browser`` /
``google-chrome`` on the PATH. Playwright's own browser downloads are never used. On an otherwise idle 2-core CPU
with the default model the eight screenshots take about 4 minutes (15-20 s per edit) once the ``auto`` backend's
ONNX graphs are cached (``~/.cache/diffgeo``); the first start exports them (a few minutes more). Run nothing else
heavy meanwhile: the status lines in the screenshots show the times (under a load of 4, one edit took 100 s).

Usage::

    python benchmarks/screenshots.py                          # all eight, default model, into weights/screenshots
    python benchmarks/screenshots.py --tabs remove,lab_torus  # a subset
    python benchmarks/screenshots.py --model PATH --out /tmp/shots --timeout 600
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from ui.widgets import brush_radius  # noqa: E402 - after the path set-up above

DEFAULT_OUT = "weights/screenshots"
VIEWPORT = {"width": 1400, "height": 1100}
WARMUP_TIMEOUT_S = 1800.0  # first start: model load plus the ONNX export of every graph the auto backend uses
UI_TIMEOUT_MS = 60_000  # page loads, example loads, clicks
SETTLE_MS = 1500  # after the result: let plots and images finish drawing

# Example scenes (seeds of the shipped ``weights/examples/scene_<seed>_256.png``) and the objects used on them.
RATES_SCENE, RATES_OBJECT = 20000003, "square"
TRANSFER_SCENE, TRANSFER_TARGET, TRANSFER_SOURCE = 20000028, "ring", "disk"
SALIENCY_PHOTO = "photo_chelsea"
BLEND_PAIR = ("photo_coffee", "photo_astronaut")  # (background, object image with its prepared mask)
GEODESIC_PAIR = ("photo_astronaut", "photo_coffee")
BIG_PHOTO = (3000, 4000)  # (H, W) of the phone-size photo of the remove screenshot
#: The shuttle model in the astronaut photo, as a fraction of the photo (x0, y0, x1, y1): painted on the working copy.
SHUTTLE_BOX = (0.72, 0.05, 0.88, 0.52)
PHONE_VIEWPORT = {"width": 390, "height": 844}
SCENE_SIZE = 32  # the examples are make_scene(seed, size=32), shown as 8x nearest-neighbour upscales

# The editor's brush is sized for the picture (``ui.widgets.brush_radius``): 10 pixels radius on the 256-pixel
# examples, 1.25 scene pixels. Strokes are planned with that radius, at most 2 scene pixels apart.
EXAMPLE_SIDE = 256
BRUSH_RADIUS = brush_radius((EXAMPLE_SIDE, EXAMPLE_SIDE)) / (EXAMPLE_SIDE / SCENE_SIZE)
STROKE_SPACING = 2.0
PAINT_STEP_PX = 12  # mouse moves along a stroke, in screen pixels (each move redraws the canvas: slow)


# ====================================================================================================================
# Browser
# ====================================================================================================================
@contextlib.contextmanager
def launch_browser() -> Iterator[Browser]:
    """Headless system Chromium through Playwright; a clear ``SystemExit`` when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("the playwright Python package is missing: pip install playwright "
                         "(no browser download is needed: the system Chromium is used)") from None
    from test_browser import CHROMIUM_ARGS, chromium_path  # the browser test's lookup and launch arguments

    exe = chromium_path()
    if exe is None:
        raise SystemExit("no Chromium found: install Debian's `chromium` package (/usr/bin/chromium), or set "
                         "DIFFGEO_CHROMIUM to a Chromium/Chrome binary")
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        except Exception as err:  # noqa: BLE001 - any launch failure: say which binary and why
            raise SystemExit(f"Chromium at {exe} could not be launched: {str(err).splitlines()[0]}") from None
        try:
            yield browser
        finally:
            browser.close()


# ====================================================================================================================
# App server
# ====================================================================================================================
@contextlib.contextmanager
def running_app(model: str, tmp: Path) -> Iterator[str]:
    """``app.py --model MODEL --device cpu --threads 1 --warmup`` on a free port; yields its URL once warmed up."""
    from test_app_e2e import serve_app

    with serve_app(tmp, model, "--warmup") as (url, proc):
        wait_for_warmup(tmp / "server.log", proc, WARMUP_TIMEOUT_S)
        yield url


def wait_for_warmup(log: Path, proc: subprocess.Popen, timeout: float) -> None:
    """Wait for the app's warm-up thread to report (model loaded, backend graphs exported), so no screenshot's time
    includes them. A failed warm-up is only reported: backends then build on first use."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "warm-up done" in text:
            return
        if "warm-up failed" in text:
            print("  warning: the app's warm-up failed (see below); the first tab builds the backend", flush=True)
            print(tail(log), flush=True)
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{tail(log)}")
        time.sleep(2)
    raise TimeoutError(f"the app's warm-up did not finish within {timeout:.0f} s:\n{tail(log)}")


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no server log)"


# ====================================================================================================================
# Scenes: where the objects of an example are
# ====================================================================================================================
@functools.lru_cache(maxsize=8)
def scene(seed: int) -> Any:
    """``make_scene(seed)``, checked against the shipped example so painted masks land on the objects shown."""
    from pipeline import scenes

    sc = scenes.make_scene(seed, size=SCENE_SIZE)
    shipped = ROOT / "weights" / "examples" / f"scene_{seed}.png"
    if shipped.is_file() and not np.array_equal(np.asarray(Image.open(shipped).convert("RGB")), sc.image):
        raise RuntimeError(f"{shipped.name} differs from make_scene({seed}): object positions would be wrong")
    return sc


def object_mask(seed: int, kind: str) -> np.ndarray:
    """The visible support (bool, scene pixels) of the first object of ``kind`` in scene ``seed``."""
    sc = scene(seed)
    for mask, params in zip(sc.masks, sc.params, strict=True):
        if params["kind"] == kind:
            return mask
    raise RuntimeError(f"scene {seed} has no {kind} (objects: {[p['kind'] for p in sc.params]})")


def object_point(seed: int, kind: str) -> tuple[float, float]:
    """The object's visible pixel nearest to its centroid, as (x, y) in scene pixels (pixel centre)."""
    ys, xs = np.nonzero(object_mask(seed, kind))
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return xs[k] + 0.5, ys[k] + 0.5


def background_point(seed: int, margin: int = 3) -> tuple[float, float]:
    """The background pixel farthest from every object (at least ``margin`` pixels from the border), (x, y)."""
    occupied = np.any(scene(seed).masks, axis=0)
    oy, ox = np.nonzero(occupied)
    yy, xx = np.mgrid[margin : SCENE_SIZE - margin, margin : SCENE_SIZE - margin]
    dist = ((yy[..., None] - oy) ** 2 + (xx[..., None] - ox) ** 2).min(axis=-1)
    k = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return xx[k] + 0.5, yy[k] + 0.5


def strokes(mask: np.ndarray, radius: float = BRUSH_RADIUS, margin: float = 0.5,
            ) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Horizontal brush strokes ``((x0, y), (x1, y))`` in scene pixels that cover ``mask`` (about ``margin`` pixels
    beyond it) with a round brush of ``radius`` pixels, and little more.

    The rows are split into bands at most ``STROKE_SPACING`` high, one stroke per band, no closer to the object's top
    and bottom edges than the brush radius allows. Each stroke's ends are pulled in as far as the brush still covers
    every row of its band: where a row lies ``d`` above or below the stroke, the brush reaches ``sqrt(r^2 - d^2)``
    beyond the ends.
    """
    ys, _ = np.nonzero(mask)
    top, bottom = int(ys.min()), int(ys.max()) + 1  # pixel edges
    n = max(1, int(np.ceil((bottom - top) / STROKE_SPACING)))
    edges = np.linspace(top, bottom, n + 1)
    lo_c, hi_c = top + radius - margin - 0.5, bottom - radius + margin + 0.5
    out = []
    for k in range(n):
        c = float(np.clip((edges[k] + edges[k + 1]) / 2, min(lo_c, hi_c), max(lo_c, hi_c)))
        a, b = np.inf, -np.inf
        for row in range(int(np.floor(edges[k])), int(np.ceil(edges[k + 1]))):
            cols = np.nonzero(mask[row])[0]
            if not len(cols):
                continue
            d = max(abs(row - c), abs(row + 1 - c))
            w = float(np.sqrt(max(radius**2 - d**2, 0.0)))
            a, b = min(a, cols.min() - margin + w), max(b, cols.max() + 1 + margin - w)
        if a > b:
            a = b = (a + b) / 2
        out.append(((float(a), c), (float(b), c)))
    return out


# ====================================================================================================================
# Page helpers
# ====================================================================================================================
def wait_until(page: Page, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``ready`` every second; an error toast on the page fails at once, with its message."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        error = error_toast(page)
        if error:
            raise RuntimeError(f"the app reported an error while waiting for {what}: {error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        page.wait_for_timeout(1000)


def visible(locator: Locator) -> bool:
    return locator.count() > 0 and locator.first.is_visible()


def error_toast(page: Page) -> str | None:
    """The text of a visible error toast, or None."""
    toast = page.locator(".toast-body.error")
    return " ".join(toast.first.inner_text().split()) if visible(toast) else None


def open_page(browser: Browser, url: str) -> tuple[Page, list[str]]:
    """A fresh page (its own Gradio session) with the app loaded; also the list its JavaScript errors go to."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, timeout=UI_TIMEOUT_MS)
    page.get_by_text("diffgeo: inside a diffusion model").wait_for()
    return page, errors


def open_tab(page: Page, name: str) -> Locator:
    """Click the tab ``name``; returns its (only visible) tab panel."""
    page.get_by_role("tab", name=name, exact=True).click()
    panel = page.locator("[role=tabpanel]:visible").first
    panel.wait_for()
    return panel


def example_seeds(item: Locator) -> tuple[int | str, ...]:
    """What an example row / gallery item shows, from its image file names: scene seeds (ints) and photo names
    (``"photo_astronaut"``)."""
    srcs = item.locator("img").evaluate_all("els => els.map(e => e.src)")
    keys: list[int | str] = []
    for src in srcs:
        if m := re.search(r"scene_(\d+)(?:_256)?\.png", src):
            keys.append(int(m.group(1)))
        elif m := re.search(r"(photo_[a-z]+)\.png", src):
            keys.append(m.group(1))
    return tuple(keys)


def click_example(panel: Locator, seeds: tuple[int | str, ...]) -> Locator:
    """Load the example (a gallery item, or a row of an examples table) that shows exactly these scenes/photos."""
    items = panel.locator(".gallery-item, tr.tr-body")
    items.first.wait_for()
    for i in range(items.count()):
        item = items.nth(i)
        if example_seeds(item) == seeds:
            (item.locator("td").first if item.locator("td").count() else item).click()
            return item
    shown = [example_seeds(items.nth(i)) for i in range(items.count())]
    raise RuntimeError(f"no example with scenes {seeds} in this tab (it offers {shown})")


def longest_run(flags: np.ndarray) -> tuple[int, int] | None:
    """(first, last) index of the longest run of True, or None."""
    best, start = None, None
    for i, f in enumerate([*flags.tolist(), False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if best is None or i - 1 - start > best[1] - best[0]:
                best = (start, i - 1)
            start = None
    return best


def canvas_image_box(editor: Locator, aspect: float = 1.0) -> dict[str, float] | None:
    """Where the image editor draws its (square) image, in page coordinates; None while it shows none.

    Found on a screenshot of the canvas: the longest run of columns mostly not white, then, within them, the longest
    run of rows almost all not white (the editor's toolbar and label overlay only parts of those); its width / height
    must be ``aspect``."""
    canvas = editor.locator("canvas").first
    box = canvas.bounding_box()
    shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=np.int16)
    filled = np.abs(shot - 255).max(axis=2) > 12
    counts = filled.sum(axis=0)
    cols = longest_run(counts > 0.5 * max(int(counts.max()), 1))
    if box is None or cols is None:
        return None
    rows = longest_run(filled[:, cols[0] : cols[1] + 1].mean(axis=1) > 0.9)
    if rows is None:
        return None
    sx, sy = box["width"] / shot.shape[1], box["height"] / shot.shape[0]
    w, h = (cols[1] - cols[0] + 1) * sx, (rows[1] - rows[0] + 1) * sy
    if min(w, h) < 50 or abs(w - aspect * h) > 0.04 * max(w, h):
        return None
    return {"x": box["x"] + cols[0] * sx, "y": box["y"] + rows[0] * sy, "width": w, "height": h}


def wait_for_canvas_image(page: Page, editor: Locator, aspect: float = 1.0) -> dict[str, float]:
    box: dict[str, float] | None = None

    def ready() -> bool:
        nonlocal box
        box = canvas_image_box(editor, aspect)
        return box is not None

    wait_until(page, ready, UI_TIMEOUT_MS / 1000, "image on the editor's canvas")
    page.wait_for_timeout(500)
    return canvas_image_box(editor, aspect) or box  # again, after the editor has settled


def paint_fraction(page: Page, editor: Locator, frac: tuple[float, float, float, float], size: tuple[int, int]) -> None:
    """Paint the box ``frac = (x0, y0, x1, y1)`` (fractions of the picture) with horizontal brush strokes. The
    picture, ``size = (w, h)`` pixels, sits centred on the canvas at the zoom the editor shows."""
    canvas = editor.locator("canvas").first
    wait_until(page, lambda: "%" in editor.locator(".zoom-number").inner_text(), UI_TIMEOUT_MS / 1000, "the zoom")
    page.wait_for_timeout(1000)
    zoom = float(editor.locator(".zoom-number").inner_text().strip().rstrip("%")) / 100
    c = canvas.bounding_box()
    w, h = size[0] * zoom, size[1] * zoom
    box = {"x": c["x"] + (c["width"] - w) / 2, "y": c["y"] + (c["height"] - h) / 2, "width": w, "height": h}
    editor.get_by_role("button", name="Brush", exact=True).click()
    page.wait_for_timeout(300)
    x0, x1 = box["x"] + frac[0] * box["width"], box["x"] + frac[2] * box["width"]
    for y in np.arange(box["y"] + frac[1] * box["height"], box["y"] + frac[3] * box["height"], 6.0):
        page.mouse.move(x0, y)
        page.mouse.down()
        for x in np.linspace(x0, x1, max(2, int((x1 - x0) / PAINT_STEP_PX))):
            page.mouse.move(float(x), float(y))
        page.mouse.up()
    page.mouse.move(1, 1)
    page.wait_for_timeout(800)


def paint(page: Page, editor: Locator, mask: np.ndarray) -> None:
    """Paint ``mask`` (bool, scene pixels) on the editor's image with its brush, stroke by stroke."""
    box = wait_for_canvas_image(page, editor)
    editor.get_by_role("button", name="Brush", exact=True).click()
    page.wait_for_timeout(300)
    sx, sy = box["width"] / mask.shape[1], box["height"] / mask.shape[0]
    for (xa, ya), (xb, yb) in strokes(mask):
        ax, ay, bx, by = box["x"] + xa * sx, box["y"] + ya * sy, box["x"] + xb * sx, box["y"] + yb * sy
        page.mouse.move(ax, ay)
        page.mouse.down()
        n = max(2, int(abs(bx - ax) / PAINT_STEP_PX))
        for i in range(1, n + 1):
            page.mouse.move(ax + (bx - ax) * i / n, ay + (by - ay) * i / n)
        page.mouse.up()
    page.mouse.move(1, 1)  # no brush cursor left over the canvas
    page.wait_for_timeout(500)


def wait_for_status(page: Page, elem_id: str, timeout_s: float) -> str:
    """Wait for the status line under a result (it ends a model job: ``... · time: N s``); returns its text."""
    status = page.locator(f"#{elem_id}")
    wait_until(page, lambda: visible(status.get_by_text("time:")), timeout_s, f"result in #{elem_id}")
    return status.inner_text()


def settle(page: Page) -> None:
    """Let the images of the page finish loading and the plots drawing."""
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=UI_TIMEOUT_MS)
    page.wait_for_timeout(SETTLE_MS)


def mask_check(status: str, pattern: str, seed: int, kind: str, image_side: int) -> str:
    """``"painted 9757 px over the disk's 6656 px"``: the mask the app used (``pattern`` finds its size in the status
    line) against the object's own size, both in pixels of the input image."""
    m = re.search(pattern, status)
    obj = int(object_mask(seed, kind).sum()) * (image_side // SCENE_SIZE) ** 2
    return f"painted {m.group(1) if m else '?'} px over the {kind}'s {obj} px"


def natural_side(img: Locator) -> int:
    return int(img.evaluate("e => e.naturalWidth"))


# ====================================================================================================================
# The screenshots
# ====================================================================================================================
def shot_rates(page: Page, timeout_s: float) -> str:
    """Generation curves: an example, the points typed (an object and the background), Compute curves."""
    open_tab(page, "Generation curves")
    item = click_example(page.locator("[role=tabpanel]:visible").first, (RATES_SCENE,))
    page.locator("#rates-image img").wait_for()
    scale = natural_side(item.locator("img").first) / SCENE_SIZE
    points = [object_point(RATES_SCENE, RATES_OBJECT), background_point(RATES_SCENE)]
    page.get_by_label("Points (x,y; x,y)").fill("; ".join(f"{x * scale:.0f},{y * scale:.0f}" for x, y in points))
    page.get_by_role("button", name="Compute curves", exact=True).click()
    status = wait_for_status(page, "rates-status", timeout_s)
    page.locator("#rates-saliency img").wait_for()
    return status


def big_photo(folder: Path) -> Path:
    """scikit-image's astronaut enlarged to a phone's 4000x3000, with camera-like grain, as a PNG."""
    import skimage.data

    path = folder / "phone_photo_4000x3000.png"
    if not path.is_file():
        big = np.asarray(Image.fromarray(skimage.data.astronaut()).resize(BIG_PHOTO[::-1], Image.BILINEAR))
        big = np.clip(big + np.random.default_rng(0).normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(big).save(path, compress_level=1)
    return path


def shot_remove(page: Page, timeout_s: float) -> str:
    """Remove object on a 4000x3000 photo: the Upload-a-photo button, the shuttle painted on the working copy."""
    open_tab(page, "Remove object")
    editor = page.locator("#remove-editor")
    with page.expect_file_chooser() as chooser:
        page.locator("#remove-editor-photo").click()
    chooser.value.set_files(str(big_photo(Path(tempfile.gettempdir()))))
    page.locator("#remove-editor-note").get_by_text("working copy").wait_for(timeout=UI_TIMEOUT_MS * 3)
    paint_fraction(page, editor, SHUTTLE_BOX, (1024, 768))  # the working copy of the 4000x3000 photo
    page.get_by_role("button", name="Remove object", exact=True).click()
    status = wait_for_status(page, "remove-status", timeout_s)
    page.locator("#remove-result img").wait_for()
    return status


def photo_example_shot(page: Page, timeout_s: float, *, tab: str, api: str, run_label: str,
                       keys: tuple[str, ...]) -> str:
    """An editing tab run on a photograph example with its prepared mask (shown on the canvas when it loads)."""
    panel = open_tab(page, tab)
    click_example(panel, keys)
    page.wait_for_timeout(3000)  # the example's image, then its mask, on the canvas
    page.get_by_role("button", name=run_label, exact=True).click()
    status = wait_for_status(page, f"{api}-status", timeout_s)
    page.locator(f"#{api}-result img").wait_for()
    return status


def shot_saliency(page: Page, timeout_s: float) -> str:
    return photo_example_shot(page, timeout_s, tab="Saliency", api="saliency", run_label="Adjust saliency",
                              keys=(SALIENCY_PHOTO,))


def shot_phone(page: Page, timeout_s: float) -> str:
    """The remove tab at 390x844 with the astronaut example, after Run (the view around the Run button)."""
    page.set_viewport_size(PHONE_VIEWPORT)
    status = photo_example_shot(page, timeout_s, tab="Remove object", api="remove", run_label="Remove object",
                                keys=("photo_astronaut",))
    page.locator("#remove-run").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, -250)")
    return status


def shot_transfer(page: Page, timeout_s: float) -> str:
    """Transfer: the target painted on the image, the source on the second canvas (the app copies the image there)."""
    panel = open_tab(page, "Transfer")
    item = click_example(panel, (TRANSFER_SCENE,))
    paint(page, page.locator("#transfer-editor"), object_mask(TRANSFER_SCENE, TRANSFER_TARGET))
    paint(page, page.locator("#transfer-source"), object_mask(TRANSFER_SCENE, TRANSFER_SOURCE))
    page.get_by_role("button", name="Transfer content", exact=True).click()
    status = wait_for_status(page, "transfer-status", timeout_s)
    page.locator("#transfer-result img").wait_for()
    side = natural_side(item.locator("img").first)
    check = mask_check(status, r"image, (\d+) px", TRANSFER_SCENE, TRANSFER_SOURCE, side)
    return f"{status}\n{check} (source)"


def shot_blend(page: Page, timeout_s: float) -> str:
    """Blend: the example pair (coffee background, astronaut object image with the shuttle's prepared mask)."""
    panel = open_tab(page, "Blend")
    click_example(panel, BLEND_PAIR)
    page.locator("#blend-background img").wait_for()
    page.wait_for_timeout(3000)
    page.get_by_role("button", name="Blend images", exact=True).click()
    status = wait_for_status(page, "blend-status", timeout_s)
    page.locator("#blend-result img").wait_for()
    return status


def shot_geodesic(page: Page, timeout_s: float) -> str:
    """Geodesics: the photo pair astronaut -> coffee, default path settings."""
    panel = open_tab(page, "Geodesics")
    click_example(panel, GEODESIC_PAIR)
    page.locator("#geodesic-a img").wait_for()
    page.locator("#geodesic-b img").wait_for()
    page.get_by_role("button", name="Compute geodesic", exact=True).click()
    status = wait_for_status(page, "geodesic-status", timeout_s)
    page.locator("#geodesic-strip img").wait_for()
    return status


def shot_lab(page: Page, timeout_s: float, manifold: str) -> str:
    """Geometry lab: the tab computes the sphere when it opens; another manifold is picked with its radio button."""
    panel = open_tab(page, "Geometry lab")
    summary = panel.get_by_text(re.compile(r"\d+ iterations \("))
    title = page.locator("#lab-plot").get_by_text(re.compile(rf"^{manifold}: λ"))
    wait_until(page, lambda: visible(summary), timeout_s, "the lab's first result")
    if manifold != "sphere":
        first = summary.first.inner_text()
        panel.get_by_role("radio", name=manifold, exact=True).check()
        wait_until(page, lambda: visible(summary) and summary.first.inner_text() != first, timeout_s,
                   f"the lab's {manifold} result")
    wait_until(page, lambda: visible(title), timeout_s, f"the {manifold} plot")
    return summary.first.inner_text()


@dataclass(frozen=True)
class Shot:
    """One screenshot: its file name (also its ``--tabs`` name) and the function that drives the page to it."""

    name: str
    drive: Callable[[Page, float], str]


SHOTS = (
    Shot("rates", shot_rates),
    Shot("remove", shot_remove),
    Shot("transfer", shot_transfer),
    Shot("saliency", shot_saliency),
    Shot("blend", shot_blend),
    Shot("geodesic", shot_geodesic),
    Shot("lab_sphere", lambda page, t: shot_lab(page, t, "sphere")),
    Shot("lab_torus", lambda page, t: shot_lab(page, t, "torus")),
    Shot("phone", shot_phone),
)
NAMES = tuple(s.name for s in SHOTS)


def take(browser: Browser, url: str, shot: Shot, out: Path, timeout_s: float) -> str:
    """Drive a fresh page to ``shot``'s finished result and save the full page as ``out/<name>.png``."""
    page, errors = open_page(browser, url)
    try:
        try:
            summary = shot.drive(page, timeout_s)
            settle(page)
            error = error_toast(page)
            if error:
                raise RuntimeError(f"an error toast is showing: {error}")
        except Exception:
            failed = Path(tempfile.gettempdir()) / "diffgeo-screenshots-failed" / f"{shot.name}.png"
            failed.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                page.screenshot(path=str(failed), full_page=True)
                print(f"  the page at the failure: {failed}", flush=True)
            raise
        page.screenshot(path=str(out / f"{shot.name}.png"), full_page=shot.name != "phone")
        if errors:
            print(f"  warning: JavaScript errors on the page: {errors}", flush=True)
        return summary
    finally:
        page.close()


# ====================================================================================================================
# Command line
# ====================================================================================================================
def parse_tabs(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown screenshot(s) {unknown}; choose from {', '.join(NAMES)}")
    return [n for n in NAMES if n in names]  # README order


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Regenerate the app screenshots of the README (full page, one tab "
                                "open after its computation finished) with headless system Chromium.")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"folder for the PNGs, created if missing; relative to the repository root when relative "
                        f"(default {DEFAULT_OUT})")
    p.add_argument("--tabs", type=parse_tabs, default=list(NAMES),
                   help=f"comma-separated subset of the screenshots to take (default: all of {','.join(NAMES)})")
    p.add_argument("--model", default="default",
                   help="model the app serves (its --model): 'default' for the embedded model, or a local diffusers "
                        "folder (default: default)")
    p.add_argument("--timeout", type=float, default=1200.0,
                   help="seconds to wait for one tab's computation before giving up on it (default 1200; a CPU "
                        "edit takes one to three minutes)")
    return p.parse_args(argv)


def reproduce_command(args: argparse.Namespace) -> str:
    cmd = ["python", "benchmarks/screenshots.py", "--model", args.model, "--out", args.out]
    if list(args.tabs) != list(NAMES):
        cmd += ["--tabs", ",".join(args.tabs)]
    if args.timeout != 1200.0:
        cmd += ["--timeout", f"{args.timeout:g}"]
    return shlex.join(cmd)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    shots = [s for s in SHOTS if s.name in args.tabs]
    times: dict[str, float] = {}
    failed: dict[str, str] = {}
    with launch_browser() as browser, tempfile.TemporaryDirectory(prefix="diffgeo-shots-") as tmp:
        print(f"starting the app (model {args.model}, CPU, 1 thread) and waiting for its warm-up ...", flush=True)
        t0 = time.perf_counter()
        with running_app(model, Path(tmp)) as url:
            print(f"app ready at {url} after {time.perf_counter() - t0:.0f} s", flush=True)
            for i, shot in enumerate(shots, 1):
                print(f"[{i}/{len(shots)}] {shot.name} ...", flush=True)
                t = time.perf_counter()
                try:
                    summary = take(browser, url, shot, out, args.timeout)
                except Exception as err:  # noqa: BLE001 - report, go on with the other tabs
                    failed[shot.name] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
                    print(f"  FAILED after {time.perf_counter() - t:.0f} s: {err}\n  server log:\n"
                          f"{tail(Path(tmp) / 'server.log', 1500)}", flush=True)
                    continue
                times[shot.name] = time.perf_counter() - t
                note = " | ".join(line.strip() for line in summary.splitlines() if line.strip())
                print(f"  {times[shot.name]:.0f} s -> {out / (shot.name + '.png')}\n  {note}", flush=True)
    print("\nscreenshot  seconds")
    for name, seconds in times.items():
        print(f"{name:<11} {seconds:7.0f}")
    for name, why in failed.items():
        print(f"{name:<11}  FAILED ({why})")
    print(f"\nreproduce: {reproduce_command(args)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
