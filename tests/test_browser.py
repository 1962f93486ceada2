"""A real browser on the real page: headless Chromium, driven by Playwright, paints a mask and removes an object.

Uses the system Chromium (Debian's ``chromium`` package; ``DIFFGEO_CHROMIUM`` names another binary) through
Playwright's Python package, never Playwright's own browser downloads. Skipped, with the reason, only when no browser
can be launched. Widgets are found by their labels and element ids, which the app keeps stable for this test.
A screenshot of the finished page is saved in the test's temporary folder (and copied to ``DIFFGEO_SCREENSHOT_DIR``
when that is set).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_app_e2e import serve_app

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
RESULT_TIMEOUT_MS = 300_000


def chromium_path() -> str | None:
    for candidate in (os.environ.get("DIFFGEO_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium binary (install Debian's `chromium`, or set DIFFGEO_CHROMIUM)")
    pw = sync_api.sync_playwright().start()
    try:
        try:
            b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        except Exception as err:  # noqa: BLE001 - any launch failure means: no usable browser here
            pytest.skip(f"Chromium at {exe} could not be launched: {str(err).splitlines()[0]}")
        yield b
        b.close()
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def page_url(tmp_path_factory, tiny_pixel_dir):
    with serve_app(tmp_path_factory.mktemp("browser_server"), tiny_pixel_dir) as (url, _):
        yield url


def set_number(page, label: str, value: float) -> None:
    """Type into a slider's number box (Gradio labels it "number input for <label>")."""
    box = page.get_by_label(f"number input for {label}", exact=True)
    box.fill(str(value))
    box.press("Enter")


def test_paint_mask_and_remove_object(browser, page_url, tmp_path):
    example = ROOT / "weights" / "examples" / "scene_20000003_256.png"
    if not example.is_file():  # the shipped examples are optional: draw on a procedural scene instead
        from pipeline import scenes

        example = tmp_path / "scene.png"
        Image.fromarray(scenes.make_scene(10_000_001, size=32).image).resize((256, 256), Image.NEAREST).save(example)
    original = np.asarray(Image.open(example).convert("RGB"))

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_url, timeout=60_000)
    page.get_by_text("diffgeo: inside a diffusion model").wait_for(timeout=60_000)

    # fast settings for the tiny model: 2 DDIM steps, shallow edit, one gradient step, no extra measurement
    page.get_by_text("Settings", exact=True).click()
    page.get_by_role("radio", name="torch", exact=True).check()  # "auto" would export ONNX graphs first
    set_number(page, "Steps", 2)
    page.get_by_role("tab", name="Remove object").click()
    # choosing a fill sets the depth and gradient steps it was tuned at (in the browser), the steps also while the
    # Advanced accordion is closed; then the test's settings
    depth = page.get_by_label("number input for Remove object: edit depth (t_edit)", exact=True)
    iters = page.get_by_label("number input for Remove object: gradient steps per timestep", exact=True)

    def choose(name: str, values: tuple[str, ...], boxes: tuple) -> None:
        page.locator("#remove-fill").get_by_role("radio", name=re.compile(f"^{name}:")).check()
        deadline = time.monotonic() + 10
        while tuple(b.input_value() for b in boxes) != values and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert tuple(b.input_value() for b in boxes) == values, name

    choose("Generative", ("300",), (depth,))
    choose("Smooth", ("200",), (depth,))
    choose("Generative", ("300",), (depth,))
    page.locator("#remove-advanced").get_by_text("Advanced", exact=True).click()
    iters.wait_for(timeout=30_000)
    assert iters.input_value() == "0"  # set while the accordion was closed
    choose("Smooth", ("200", "2"), (depth, iters))
    set_number(page, "Remove object: edit depth (t_edit)", 100)
    set_number(page, "Remove object: gradient steps per timestep", 1)
    page.get_by_label("Remove object: measure curves before/after").uncheck()

    # upload through the editor's own Upload button, then paint a stroke with the brush
    editor = page.locator("#remove-editor")
    editor.locator("canvas").first.wait_for(timeout=60_000)
    with page.expect_file_chooser() as chooser:
        editor.get_by_role("button", name="Upload", exact=True).click()
    chooser.value.set_files(str(example))
    # the upload goes to the server (a large photo comes back as a working copy): paint once it is back
    page.locator("#remove-editor-note").get_by_text("at its own size").wait_for(timeout=60_000)
    editor.get_by_role("button", name="Brush", exact=True).click()
    page.wait_for_timeout(500)
    box = editor.locator("canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 30, cy - 15)
    page.mouse.down()
    for i in range(1, 16):
        page.mouse.move(cx - 30 + 4 * i, cy - 15 + 2 * i)
    page.mouse.up()

    page.wait_for_timeout(800)  # the editor commits a stroke a moment after the mouse is released
    page.get_by_role("button", name="Remove object", exact=True).click()
    status = page.locator("#remove-status")
    status.get_by_text("backend:").wait_for(timeout=RESULT_TIMEOUT_MS)
    result_img = page.locator("#remove-result img")
    result_img.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    shot = tmp_path / "remove_tab.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("DIFFGEO_SCREENSHOT_DIR"):
        Path(os.environ["DIFFGEO_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["DIFFGEO_SCREENSHOT_DIR"]) / shot.name)

    # the result the page shows: the same size as the upload, untouched at the corners, changed under the stroke
    src = result_img.get_attribute("src")
    with urllib.request.urlopen(src if src.startswith("http") else page_url.rstrip("/") + src, timeout=30) as r:
        result = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))
    assert result.shape == original.shape
    corner = (slice(0, 24), slice(0, 24))
    np.testing.assert_array_equal(result[corner], original[corner])
    assert (result != original).any()
    assert "mask:" in status.inner_text()
    assert not errors, errors
    page.close()


def test_transfer_upload_fills_the_source_canvas(browser, page_url, tmp_path):
    """Uploading the transfer image offers it as the source canvas too: done in the browser (a ``js`` event), since
    the server-side helper ``transfer_copy`` was an endpoint any API client could call."""
    example = ROOT / "weights" / "examples" / "scene_20000003_256.png"
    if not example.is_file():
        from pipeline import scenes

        example = tmp_path / "scene.png"
        Image.fromarray(scenes.make_scene(10_000_001, size=32).image).resize((256, 256), Image.NEAREST).save(example)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_url, timeout=60_000)
    page.get_by_role("tab", name="Transfer").click()
    target, source = page.locator("#transfer-editor"), page.locator("#transfer-source")
    source.locator("canvas").first.wait_for(timeout=60_000)

    def canvas() -> np.ndarray:
        shot = source.locator("canvas").first.screenshot()
        return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=float)

    empty = canvas()
    with page.expect_file_chooser() as chooser:
        target.get_by_role("button", name="Upload", exact=True).click()
    chooser.value.set_files(str(example))
    change = 0.0
    for _ in range(50):
        now = canvas()
        change = float(np.abs(now - empty).mean()) if now.shape == empty.shape else 255.0
        if change > 10:
            break
        page.wait_for_timeout(200)
    assert change > 10, f"the source canvas did not receive the uploaded image (mean change {change:.1f})"
    assert not errors, errors
    page.close()


# --------------------------------------------------------------------------------------------------------------------
# Issue 19: a phone-size photo, an example's mask, Stop's final state, a phone viewport
# --------------------------------------------------------------------------------------------------------------------
BIG = (3000, 4000)  # (H, W): a 12 MP phone photo


def open_app(browser, url: str, **context) -> tuple:
    page = browser.new_page(**({"viewport": {"width": 1400, "height": 1100}} | context))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, timeout=60_000)
    page.get_by_text("diffgeo: inside a diffusion model").wait_for(timeout=60_000)
    return page, errors


def fast_settings(page, steps: int = 2) -> None:
    page.get_by_text("Settings", exact=True).click()
    page.get_by_role("radio", name="torch", exact=True).check()  # "auto" would export ONNX graphs first
    set_number(page, "Steps", steps)


def fetch_image(page_url: str, img) -> np.ndarray:
    src = img.get_attribute("src")
    with urllib.request.urlopen(src if src.startswith("http") else page_url.rstrip("/") + src, timeout=60) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


def magenta_pixels(shot: bytes) -> int:
    """Pixels of a screenshot that show the mask's magenta (alone or over the picture)."""
    rgb = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r - g > 90) & (b - g > 90)).sum())


def paint_stroke(page, editor, dx: float = 60, dy: float = 30) -> None:
    editor.get_by_role("button", name="Brush", exact=True).click()
    page.wait_for_timeout(300)
    box = editor.locator("canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - dx / 2, cy - dy / 2)
    page.mouse.down()
    for i in range(1, 16):
        page.mouse.move(cx - dx / 2 + dx * i / 15, cy - dy / 2 + dy * i / 15)
    page.mouse.up()
    page.wait_for_timeout(800)  # the editor commits a stroke a moment after the mouse is released


def picture_box(editor, size: tuple[int, int]) -> dict:
    """The page box of the picture on an editor's canvas: the editor centres it, shown at its zoom (the percentage
    in its top bar) of its ``size`` (W, H)."""
    box = editor.locator("canvas").first.bounding_box()
    zoom = int(editor.get_by_text(re.compile(r"^\s*\d+%\s*$")).first.inner_text().strip().rstrip("%")) / 100
    w, h = size[0] * zoom, size[1] * zoom
    return {"x": box["x"] + (box["width"] - w) / 2, "y": box["y"] + (box["height"] - h) / 2, "width": w, "height": h}


def painted_inside(editor, pic: dict) -> int:
    """Magenta pixels of the editor's screenshot inside the picture's box ``pic``."""
    box = editor.bounding_box()
    rgb = Image.open(io.BytesIO(editor.screenshot())).convert("RGB")
    scale = rgb.width / box["width"]
    crop = rgb.crop(tuple(round(v * scale) for v in (pic["x"] - box["x"] + 2, pic["y"] - box["y"] + 2,
                                                     pic["x"] - box["x"] + pic["width"] - 2,
                                                     pic["y"] - box["y"] + pic["height"] - 2)))
    out = io.BytesIO()
    crop.save(out, format="PNG")
    return magenta_pixels(out.getvalue())


def brush_size(editor) -> int:
    """The brush radius the editor's own size control shows (the tool bar's "Brush Size" button opens a slider)."""
    editor.get_by_role("button", name="Brush", exact=True).click()
    editor.get_by_role("button", name="Brush Size", exact=True).click()
    slider = editor.locator("input[type=range]").first
    slider.wait_for(state="visible", timeout=10_000)
    value = int(slider.input_value())
    editor.page.mouse.click(2, 2)  # a click off the editor closes the slider
    slider.wait_for(state="hidden", timeout=10_000)
    return value


def test_a_stroke_that_starts_off_the_image_paints(browser, page_url, tmp_path):
    """A mouse stroke that begins a few pixels left of the picture paints from where it crosses onto it (gradio
    alone starts strokes only on the picture: ``ui.layout.EDITOR_JS``), and the brush, sized for the picture, has
    its visible size control."""
    from pipeline import scenes
    from ui.widgets import brush_radius

    path = tmp_path / "scene.png"
    Image.fromarray(scenes.make_scene(10_000_001, size=32).image).resize((256, 256), Image.NEAREST).save(path)
    page, errors = open_app(browser, page_url)
    page.get_by_role("tab", name="Remove object").click()
    editor = page.locator("#remove-editor")
    editor.locator("canvas").first.wait_for(timeout=60_000)
    with page.expect_file_chooser() as chooser:
        editor.get_by_role("button", name="Upload", exact=True).click()
    chooser.value.set_files(str(path))
    page.locator("#remove-editor-note").get_by_text("at its own size").wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert brush_size(editor) == brush_radius((256, 256)) == 10  # sized for the picture, not gradio's fixed 25
    pic = picture_box(editor, (256, 256))
    before = painted_inside(editor, pic)
    x0, y = pic["x"] - 6, pic["y"] + pic["height"] * 0.6
    page.mouse.move(x0 - 20, y)  # the pointer hovers off the picture, then presses there
    page.mouse.move(x0, y)
    page.mouse.down()
    for i in range(1, 16):
        page.mouse.move(x0 + 6 * i, y)
    page.mouse.up()
    page.wait_for_timeout(800)
    after = painted_inside(editor, pic)
    assert after > before + 500, f"a stroke begun off the picture painted nothing ({before} -> {after} px)"
    assert not errors, errors
    page.close()


def test_a_12mp_photo_is_painted_and_comes_back_full_size(browser, page_url, tmp_path):
    """The issue's hang: a 4000x3000 photo uploaded into the editor (more than the former 10 MB limit) is shown as a
    working copy, painted, and the result comes back at 4000x3000 with the pixels away from the stroke unchanged."""
    import skimage.data

    big = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((BIG[1], BIG[0]), Image.BILINEAR))
    grain = np.random.default_rng(0).normal(0, 4, big.shape)  # a camera's noise: the PNG is as large as a photo's
    big = np.clip(big + grain, 0, 255).astype(np.uint8)
    path = tmp_path / "phone_photo.png"
    Image.fromarray(big).save(path, compress_level=1)
    assert path.stat().st_size > 10 * 2**20  # above the old limit that made the upload fail with HTTP 413
    page, errors = open_app(browser, page_url)
    fast_settings(page)
    page.get_by_role("tab", name="Remove object").click()
    set_number(page, "Remove object: edit depth (t_edit)", 100)
    page.locator("#remove-advanced").get_by_text("Advanced", exact=True).click()
    set_number(page, "Remove object: gradient steps per timestep", 1)
    page.get_by_label("Remove object: measure curves before/after").uncheck()

    editor = page.locator("#remove-editor")
    editor.locator("canvas").first.wait_for(timeout=60_000)
    with page.expect_file_chooser() as chooser:  # the page's button for large photos: the server makes the copy
        page.locator("#remove-editor-photo").click()
    chooser.value.set_files(str(path))
    note = page.locator("#remove-editor-note")
    note.get_by_text("1024x768 working copy").wait_for(timeout=120_000)
    assert "4000x3000" in note.inner_text()
    page.wait_for_timeout(1500)  # the working copy replaces the upload on the canvas
    paint_stroke(page, editor)
    t0 = time.monotonic()
    page.get_by_role("button", name="Remove object", exact=True).click()
    status = page.locator("#remove-status")
    status.get_by_text("backend:").wait_for(timeout=RESULT_TIMEOUT_MS)
    seconds = time.monotonic() - t0
    print(f"\n4000x3000 photo, click to result: {seconds:.1f} s")
    text = status.inner_text()
    assert "1024x768 working copy of your 4000x3000 photo" in text and "Changed:" in text
    result = fetch_image(page_url, page.locator("#remove-result img"))
    assert result.shape == big.shape
    for corner in ((slice(0, 300), slice(0, 300)), (slice(-300, None), slice(-300, None))):
        np.testing.assert_array_equal(result[corner], big[corner])
    assert (result != big).any()
    assert not errors, errors
    page.close()


def test_an_example_shows_its_mask_on_the_canvas(browser, page_url):
    page, errors = open_app(browser, page_url)
    page.get_by_role("tab", name="Remove object").click()
    editor = page.locator("#remove-editor")
    editor.locator("canvas").first.wait_for(timeout=60_000)
    before = magenta_pixels(editor.screenshot())
    page.locator("#remove-examples .gallery-item").first.click()  # the astronaut, shuttle masked
    painted = 0
    for _ in range(50):
        page.wait_for_timeout(200)
        painted = magenta_pixels(editor.screenshot())
        if painted > before + 500:
            break
    assert painted > before + 500, f"the example's mask is not on the canvas ({before} -> {painted} magenta px)"
    assert not errors, errors
    page.close()


def test_stop_ends_in_a_final_state(browser, page_url):
    page, errors = open_app(browser, page_url)
    fast_settings(page, steps=100)
    page.get_by_role("tab", name="Remove object").click()
    status = page.locator("#remove-status")
    page.locator("#remove-stop").click()
    status.get_by_text("Stopped: nothing was running.").wait_for(timeout=30_000)
    page.locator("#remove-examples .gallery-item").first.click()
    page.wait_for_timeout(1000)
    set_number(page, "Remove object: edit depth (t_edit)", 900)
    page.get_by_role("button", name="Remove object", exact=True).click()
    page.wait_for_timeout(4000)  # running: inverting 100 steps on the tiny model takes longer than this
    assert "backend:" not in status.inner_text()
    page.locator("#remove-stop").click()
    status.get_by_text("Stopped: the job ended").wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    assert "Stopped: the job ended" in status.inner_text()  # the final state stays
    assert not errors, errors
    page.close()


def test_phone_viewport(browser, page_url):
    """390x844: every tab can be opened from the tab bar, the editor's toolbar does not cover the picture, and the
    result's status sits just below the Run button."""
    page, errors = open_app(browser, page_url, viewport={"width": 390, "height": 844}, is_mobile=True,
                            has_touch=True)
    for name in ("Generation curves", "Remove object", "Transfer", "Saliency", "Blend", "Geodesics",
                 "Geometry lab"):
        tab = page.get_by_role("tab", name=name, exact=True)
        try:  # the tab bar may still be laying out on a loaded machine: wait for it, do not sample once
            tab.wait_for(state="visible", timeout=30_000)
        except Exception:
            pass
        assert tab.is_visible(), f"tab {name!r} is not reachable on a phone"
        box = tab.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.get_by_role("tab", name="Remove object", exact=True).click()
    page.locator("#remove-examples .gallery-item").first.click()
    page.wait_for_timeout(1500)
    editor = page.locator("#remove-editor")
    canvas_box = editor.locator("canvas").first.bounding_box()
    assert canvas_box["x"] >= 0 and canvas_box["x"] + canvas_box["width"] <= 390
    toolbar = editor.locator(".toolbar-wrap").bounding_box()  # the editor's tools sit left of the canvas
    assert toolbar["x"] + toolbar["width"] <= canvas_box["x"] + 1, (toolbar, canvas_box)
    run = page.get_by_role("button", name="Remove object", exact=True).bounding_box()
    status = page.locator("#remove-status").bounding_box()
    assert 0 <= status["y"] - (run["y"] + run["height"]) < 250, (run, status)
    # painted by touch (the browser's own touch input, no mouse): a stroke on the picture, one begun off it
    editor.get_by_role("button", name="Brush", exact=True).tap()
    editor.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    pic = picture_box(editor, (512, 512))  # the astronaut example
    cdp = page.context.new_cdp_session(page)

    def swipe(x0: float, x1: float, y: float) -> int:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y}]})
        for i in range(1, 13):
            cdp.send("Input.dispatchTouchEvent",
                     {"type": "touchMove", "touchPoints": [{"x": x0 + (x1 - x0) * i / 12, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        page.wait_for_timeout(800)
        return painted_inside(editor, pic)

    before = painted_inside(editor, pic)
    on = swipe(pic["x"] + pic["width"] * 0.3, pic["x"] + pic["width"] * 0.6, pic["y"] + pic["height"] * 0.2)
    assert on > before + 300, f"a touch stroke painted nothing ({before} -> {on} px)"
    off = swipe(pic["x"] - 6, pic["x"] + pic["width"] * 0.3, pic["y"] + pic["height"] * 0.8)
    assert off > on + 300, f"a touch stroke begun off the picture painted nothing ({on} -> {off} px)"
    toolbar = editor.locator(".toolbar-wrap").bounding_box()
    assert toolbar["x"] + toolbar["width"] <= pic["x"] + 1, (toolbar, pic)  # the tools leave the picture free
    if os.environ.get("DIFFGEO_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["DIFFGEO_SCREENSHOT_DIR"]) / "phone_remove.png"))
    assert not errors, errors
    page.close()


def test_the_lab_reruns_on_enter(browser, page_url):
    """A value typed into a lab field and confirmed with Enter recomputes at once (it used to wait for the field to
    lose focus)."""
    page, errors = open_app(browser, page_url)
    page.get_by_role("tab", name="Geometry lab", exact=True).click()
    plot = page.locator("#lab-plot")
    plot.get_by_text("sphere, score metric: λ = 200").wait_for(timeout=60_000)
    box = page.get_by_label("number input for Metric weight (λ)", exact=True)
    box.fill("600")
    box.press("Enter")
    plot.get_by_text("sphere, score metric: λ = 600").wait_for(timeout=60_000)
    assert box.evaluate("e => document.activeElement === e")  # still focused: Enter alone did it
    assert not errors, errors
    page.close()
