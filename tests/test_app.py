"""The app's handlers on a tiny model: every tab, and bad input turned into clear ``gr.Error`` messages.

Handlers are called directly with the values Gradio would pass (file paths for ``gr.Image(type="filepath")``,
``{"background", "layers", "composite"}`` dicts of RGBA arrays for the mask editors). The tiny model folder from
``conftest`` is the model source, so nothing here needs the embedded default model.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from pipeline.errors import Cancelled, InputError, ModelLoadError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32  # test images are 32 x 32 (the tiny model works at 16 x 16: the app resizes)

# Fast settings for every model-bound call: (backend, steps, seed).
FAST = ("torch", 2, 0)
# Edits: t_edit, gradient steps per timestep, measure curves.
EDIT_FAST = (100, 1, False)


def has(module: str, name: str) -> bool:
    """Whether ``pipeline.<module>`` exists and defines ``name`` (tabs whose library has not landed are skipped)."""
    if importlib.util.find_spec(f"pipeline.{module}") is None:
        return False
    return hasattr(importlib.import_module(f"pipeline.{module}"), name)


# --------------------------------------------------------------------------------------------------------------------
# Fixtures: images, masks, editor values
# --------------------------------------------------------------------------------------------------------------------
def scene(seed: int = 10_000_001) -> np.ndarray:
    from pipeline import scenes

    return scenes.make_scene(seed, size=SIZE).image  # (32, 32, 3) uint8


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """Paths of good and bad image files."""
    d = tmp_path_factory.mktemp("app_images")
    img = scene()
    paths = {}

    def save(name: str, im: Image.Image) -> None:
        paths[name] = str(d / name)
        im.save(paths[name])

    save("rgb.png", Image.fromarray(img))
    save("other.png", Image.fromarray(scene(10_000_002)))
    rgba = np.dstack([img, np.full(img.shape[:2], 128, np.uint8)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("gray.png", Image.fromarray(img[..., 0], "L"))
    save("gray16.png", Image.fromarray((img[..., 1].astype(np.uint16) * 257), "I;16"))
    save("tiny.png", Image.fromarray(img[:4, :4]))
    save("huge.png", Image.new("L", (5000, 20)))
    paths["text.png"] = str(d / "text.png")  # a text file with an image's name
    Path(paths["text.png"]).write_text("this is not an image\n")
    save("photo.jpg", Image.fromarray(img))
    return paths


def square_mask(top: int = 8, left: int = 8, size: int = 12) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), bool)
    m[top : top + size, left : left + size] = True
    return m


def editor(image: np.ndarray | None, *masks: np.ndarray) -> dict:
    """An ImageMask value as Gradio hands it over with type="numpy": RGBA background and one RGBA layer per mask."""
    layers = []
    for m in masks:
        layer = np.zeros((*m.shape, 4), np.uint8)
        layer[m] = (255, 0, 255, 255)
        layers.append(layer)
    bg = None if image is None else np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    return {"background": bg, "layers": layers, "composite": bg}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Model calls run on one torch thread, as in a one-job CPU server: on a busy 2-core machine two OpenMP threads
    spin against each other (measured: 3.6 s instead of 0.05 s per call of the tiny U-Net under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def local_config():
    """Every test starts from the local (not hosted) configuration."""
    app.configure(app.AppConfig())
    yield
    app.configure(app.AppConfig())


def error_message(excinfo) -> str:
    """The message of a ``gr.Error`` (from ``pytest.raises``' ExceptionInfo or the exception itself)."""
    err = getattr(excinfo, "value", excinfo)
    return str(getattr(err, "message", err))


# --------------------------------------------------------------------------------------------------------------------
# Structure: import, build, API names
# --------------------------------------------------------------------------------------------------------------------
EXPECTED_APIS = {"rates", "remove", "transfer", "saliency", "blend", "geodesic", "lab"}


def test_import_is_cheap_and_loads_nothing():
    """Importing app.py and building the demo loads no model and does not import onnxruntime or tensorrt."""
    code = (
        "import sys, app; d = app.build_demo(app.AppConfig()); "
        "assert app._cached_model.cache_info().currsize == 0; "
        "bad = [m for m in ('onnxruntime', 'tensorrt') if m in sys.modules]; "
        "assert not bad, bad; print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout
    assert not (ROOT / "app.pyi").exists(), "building the demo must not write a .pyi stub"


def test_build_demo_has_every_api_name():
    demo = app.build_demo(app.AppConfig())
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert EXPECTED_APIS <= public
    for api in EXPECTED_APIS - {"lab"}:
        assert f"cancel_{api}" in public  # each long tab has a Stop button
    # every output image is lossless
    for block in demo.blocks.values():
        if isinstance(block, gr.Image) and not block.interactive and block.type != "filepath":
            assert block.format == "png", block.label


def test_edit_tabs_start_at_the_tuned_task_defaults():
    """The depth and gradient-step sliders of each editing tab start where the task's config does, so the app runs
    the configuration the benchmark measured, not one setting for every task."""
    from pipeline import edit

    demo = app.build_demo(app.AppConfig())
    sliders = {b.label: b.value for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    for title, cfg in [("Remove object", edit.RemoveConfig()), ("Transfer", edit.TransferConfig()),
                       ("Saliency", edit.SaliencyConfig()), ("Blend", edit.BlendConfig())]:
        assert sliders[f"{title}: edit depth t_edit"] == cfg.t_edit
        assert sliders[f"{title}: gradient steps per timestep"] == cfg.iterations
    assert sliders["Remove object: edit depth t_edit"] == 200 and sliders["Blend: edit depth t_edit"] == 250


def test_cli_defaults(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert app.parse_args([]).port == 7999
    assert app.parse_args(["--port", "1234", "--host", "0.0.0.0"]).port == 1234


# --------------------------------------------------------------------------------------------------------------------
# Input conversion and bad input
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["rgb.png", "rgba.png", "gray.png", "gray16.png", "photo.jpg"])
def test_read_image_accepts_common_formats(images, name):
    """RGBA is flattened on white, grayscale repeated, 16-bit scaled: all become uint8 RGB of the same size."""
    arr = app.read_image(images[name])
    assert arr.dtype == np.uint8 and arr.shape == (SIZE, SIZE, 3)
    if name == "gray16.png":  # 16-bit scaled to 8-bit, not clipped to white
        np.testing.assert_array_equal(arr[..., 0], scene()[..., 1])
    if name == "rgba.png":  # half-transparent over white: brighter than the opaque image
        assert arr.astype(int).mean() > scene().astype(int).mean()


@pytest.mark.parametrize(
    "name, words",
    [("tiny.png", "4x4 pixels"), ("huge.png", "5000x20 pixels"), ("text.png", "not a readable image"),
     (None, "missing")],
)
def test_bad_images_give_clear_errors(images, name, words):
    value = images[name] if name else None
    with pytest.raises(gr.Error) as excinfo:
        app.run_rates(value, 4, "mean", 500, "", "unused-model", *FAST)
    msg = error_message(excinfo)
    assert words in msg
    assert "Traceback" not in msg and (name is None or images[name] not in msg)  # no stack trace, no server path


def test_guarded_upload_component_reports_non_images(images):
    """A non-image upload fails in Gradio's preprocessing; the guard turns it into a gr.Error naming the input."""
    from gradio.data_classes import FileData

    comp = app._image_input("Some image")
    with pytest.raises(gr.Error) as excinfo:
        comp.preprocess(FileData(path=images["text.png"], orig_name="text.png"))
    assert "Some image: not a readable image file" in error_message(excinfo)
    assert comp.preprocess(FileData(path=images["rgb.png"], orig_name="rgb.png")) == images["rgb.png"]


def test_editor_mask_is_union_of_layers():
    img = scene()
    a, b = square_mask(0, 0, 4), square_mask(20, 20, 4)
    image, mask = app.read_editor(editor(img, a, b))
    np.testing.assert_array_equal(image, img)
    np.testing.assert_array_equal(mask, a | b)


@pytest.mark.parametrize(
    "value, words",
    [(None, "missing"), ("no-layers", "empty"), ("blank-layer", "empty"), ("no-background", "missing"),
     ("full", "whole image"), ("wrong-size", "draw the mask on the image")],
)
def test_bad_masks_give_clear_errors(value, words):
    img = scene()
    values = {
        None: None,
        "no-layers": editor(img),
        "blank-layer": editor(img, np.zeros((SIZE, SIZE), bool)),
        "no-background": editor(None, square_mask()),
        "full": editor(img, np.ones((SIZE, SIZE), bool)),
        "wrong-size": {**editor(img), "layers": [np.zeros((8, 8, 4), np.uint8) + 255]},
    }
    with pytest.raises(gr.Error) as excinfo:
        app.run_remove(values[value], *EDIT_FAST, "unused-model", *FAST)
    assert words in error_message(excinfo)


def test_bad_settings_give_clear_errors(images, tiny_pixel_dir):
    with pytest.raises(gr.Error, match="steps must lie in"):
        app.run_rates(images["rgb.png"], 4, "mean", 500, "", tiny_pixel_dir, "torch", 0, 0)
    with pytest.raises(gr.Error, match="points must look like"):
        app.run_rates(images["rgb.png"], 4, "mean", 500, "a,b", tiny_pixel_dir, *FAST)
    with pytest.raises(gr.Error, match="backend must be one of"):
        app.run_rates(images["rgb.png"], 4, "mean", 500, "", tiny_pixel_dir, "cuda-magic", 2, 0)


def test_missing_model_is_a_clear_error(images, tmp_path):
    with pytest.raises(gr.Error) as excinfo:
        app.run_rates(images["rgb.png"], 4, "mean", 500, "", str(tmp_path), *FAST)
    msg = error_message(excinfo)
    assert "not a diffusers model folder" in msg
    assert str(tmp_path) not in msg  # paths shortened to their last part


def test_parse_points():
    assert app.parse_points("1,2; 3.5, 4") == [(1.0, 2.0), (3.5, 4.0)]
    assert app.parse_points("(1 2)\n") == [(1.0, 2.0)]
    assert app.parse_points("") == []
    with pytest.raises(InputError):
        app.parse_points("1,2,3")


# --------------------------------------------------------------------------------------------------------------------
# Hosted mode and error hygiene
# --------------------------------------------------------------------------------------------------------------------
def test_hosted_mode_allow_list_and_no_paths(tiny_pixel_dir, images):
    cfg = app.configure(app.AppConfig(model=tiny_pixel_dir, hosted=True, allowed_models=("owner/name",)))
    choices = cfg.model_choices()
    assert list(choices) == ["default", "local model 1", "owner/name"]  # the local folder is offered without its path
    assert app.resolve_model("local model 1") == (tiny_pixel_dir, "local model 1")
    with pytest.raises(gr.Error, match="offers the models"):
        app.run_rates(images["rgb.png"], 4, "mean", 500, "", "/etc", *FAST)
    demo = app.build_demo(cfg)
    config_text = str(demo.get_config_file())
    assert tiny_pixel_dir not in config_text  # the page never shows the folder


def test_hosted_mode_hides_model_load_details(monkeypatch):
    app.configure(app.AppConfig(hosted=True))

    @app.ui_errors
    def fails():
        raise ModelLoadError("/secret/place/model has no unet/config.json")

    with pytest.raises(gr.Error) as excinfo:
        fails()
    assert "secret" not in error_message(excinfo) and "could not be loaded" in error_message(excinfo)


def test_unexpected_errors_are_not_shown_raw():
    @app.ui_errors
    def boom():
        raise RuntimeError("/home/user/.cache/x: internal detail")

    with pytest.raises(gr.Error) as excinfo:
        boom()
    msg = error_message(excinfo)
    assert "RuntimeError" in msg and "internal detail" not in msg


def test_clean_message_shortens_paths():
    assert app.clean_message("image '/tmp/gradio/abc/photo.png' is bad") == "image 'photo.png' is bad"
    assert app.clean_message("sizes 16x16 and 3/4") == "sizes 16x16 and 3/4"


# --------------------------------------------------------------------------------------------------------------------
# Cancellation
# --------------------------------------------------------------------------------------------------------------------
def test_cancel_sets_the_sessions_flags():
    class Req:
        session_hash = "s1"

    with app.job(Req()) as flag, app.job(Req()) as flag2:
        assert "Stopping 2" in app.cancel_jobs(Req())
        assert flag.is_set() and flag2.is_set()
    assert app.cancel_jobs(Req()) == "Nothing is running."
    with app.job(None) as lone:  # scripts without a session still get a flag
        assert isinstance(lone, threading.Event)

    @app.ui_errors
    def stopped():
        raise Cancelled("cancelled by the caller")

    with pytest.raises(gr.Error, match="Cancelled"):
        stopped()


def test_cancel_stops_a_running_handler(images, tiny_pixel_dir):
    """The Stop button's flag reaches the library: a running computation ends with 'Cancelled'."""

    class Req:
        session_hash = "cancel-test"

    errors = []

    def run():
        try:
            app.run_rates(images["rgb.png"], 1, "mean", 500, "", tiny_pixel_dir, "torch", 50, 0, request=Req())
        except gr.Error as err:
            errors.append(error_message(err))

    app.get_model(tiny_pixel_dir)  # load first so the cancel lands in the computation
    th = threading.Thread(target=run)
    th.start()
    for _ in range(200):
        if app._JOBS.get("cancel-test"):
            break
        th.join(0.05)
    app.cancel_jobs(Req())
    th.join(120)
    assert not th.is_alive()
    assert errors and "Cancelled" in errors[0]


# --------------------------------------------------------------------------------------------------------------------
# Every tab on the tiny model
# --------------------------------------------------------------------------------------------------------------------
def test_model_cache_is_shared(tiny_pixel_dir):
    m1 = app.get_model(tiny_pixel_dir, "cpu")
    assert app.get_model(tiny_pixel_dir, "cpu") is m1
    info = app._cached_model.cache_info()
    assert info.hits >= 1


@pytest.mark.skipif(not has("rates", "generation_curves"), reason="pipeline.rates.generation_curves not available")
def test_rates_tab(images, tiny_pixel_dir):
    saliency, rate, fig, status, files, state = app.run_rates(
        images["rgb.png"], 4, "mean", 500, "3,4; 20,20", tiny_pixel_dir, *FAST)
    assert saliency.shape == rate.shape == (SIZE, SIZE, 3)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2  # two points, rates and accumulated side by side
    assert "backend:** torch" in status and "2 timesteps" in status
    assert {Path(f).name for f in files} == {"curves.npz", "saliency.png"}
    with np.load(files[0]) as z:
        assert z["curves"].shape[0] == 2 and z["saliency"].shape == (SIZE, SIZE)
    # replot without the model: new timestep and a clicked point
    points = app.select_point("3,4; 20,20", gr.SelectData(None, {"index": [30, 1], "value": None}))
    assert points == "20,20; 30,1"
    s2, r2, fig2 = app.replot_rates(state, 100, points)
    assert s2.shape == (SIZE, SIZE, 3) and len(fig2.axes[0].lines) == 2
    with pytest.raises(gr.Error, match="compute the curves first"):
        app.replot_rates(None, 100, "")


def check_edit(out, image: np.ndarray, mask: np.ndarray, name: str):
    result, strip, curves, losses, status, files = out
    assert result.shape == image.shape and result.dtype == np.uint8
    assert strip.shape[0] == image.shape[0]
    assert "backend:** torch" in status
    assert Path(files[0]).name == f"{name}.png" and all(Path(f).is_file() for f in files)
    assert curves is not None
    return result


@pytest.mark.skipif(not has("edit", "remove_object"), reason="pipeline.edit.remove_object not available")
def test_remove_tab(tiny_pixel_dir):
    img, mask = scene(), square_mask()
    out = app.run_remove(editor(img, mask), *EDIT_FAST, tiny_pixel_dir, *FAST)
    result = check_edit(out, img, mask, "removed")
    np.testing.assert_array_equal(result[~mask], img[~mask])  # untouched outside the mask
    assert (result[mask] != img[mask]).any()  # changed inside
    assert out[3] is not None  # loss history plotted


@pytest.mark.skipif(not has("edit", "transfer"), reason="pipeline.edit.transfer not available")
def test_transfer_tab(tiny_pixel_dir):
    img = scene()
    target, source = square_mask(4, 4, 8), square_mask(20, 20, 8)
    out = app.run_transfer(editor(img, target), editor(img, source), *EDIT_FAST, tiny_pixel_dir, *FAST)
    result = check_edit(out, img, target, "transferred")
    assert "same image" in out[4]
    # a reference image as the source canvas
    ref = scene(10_000_002)
    out = app.run_transfer(editor(img, target), editor(ref, source), *EDIT_FAST, tiny_pixel_dir, *FAST)
    assert "reference image" in out[4] and out[1].shape[1] > 2 * SIZE
    assert result.shape == img.shape


@pytest.mark.skipif(not has("edit", "adjust_saliency"), reason="pipeline.edit.adjust_saliency not available")
def test_saliency_tab(tiny_pixel_dir):
    img, mask = scene(), square_mask()
    out = app.run_saliency(editor(img, mask), 2.0, 100, 1, True, tiny_pixel_dir, *FAST)
    check_edit(out, img, mask, "saliency")
    assert len(out[2].axes[0].lines) == 3  # before, after, reference
    with pytest.raises(gr.Error, match="factor must be a number"):
        app.run_saliency(editor(img, mask), "lots", *EDIT_FAST, tiny_pixel_dir, *FAST)


@pytest.mark.skipif(not has("edit", "blend"), reason="pipeline.edit.blend not available")
def test_blend_tab(images, tiny_pixel_dir):
    fg, mask = scene(10_000_002), square_mask()
    out = app.run_blend(images["rgb.png"], editor(fg, mask), *EDIT_FAST, tiny_pixel_dir, *FAST)
    check_edit(out, scene(), mask, "blended")


@pytest.mark.skipif(not has("interpolate", "extrapolate_images"), reason="pipeline.interpolate not available")
def test_geodesic_tab(images, tiny_pixel_dir):
    strip, extra, energy, gif, status, files = app.run_geodesic(
        images["rgb.png"], images["other.png"], 3, 100, 100.0, 0.5, 3, tiny_pixel_dir, *FAST)
    assert strip.ndim == 3 and extra is not None
    assert Path(gif).suffix == ".gif" and Image.open(gif).n_frames >= 3
    assert any(Path(f).name == "strip.png" for f in files)
    with pytest.raises(gr.Error, match="second image is missing"):
        app.run_geodesic(images["rgb.png"], None, 3, 100, 100.0, 0, 3, tiny_pixel_dir, *FAST)


@pytest.mark.skipif(not has("geodesic", "geodesic_bvp"), reason="pipeline.geodesic.geodesic_bvp not available")
def test_geometry_lab_sphere():
    fig, energy, table = app.run_lab("sphere", 200, 0.15, 90, 0, 7, 30)
    names = [trace.name for trace in fig.data] if hasattr(fig, "data") else []
    if names:  # plotly
        assert {"score-metric geodesic", "true geodesic", "chord"} <= set(names)
    assert "true geodesic" in table and energy is not None
    with pytest.raises(gr.Error, match="manifold must be"):
        app.run_lab("klein bottle", 200, 0.15, 90, 0, 7, 30)


# --------------------------------------------------------------------------------------------------------------------
# Pictures (pipeline.viz)
# --------------------------------------------------------------------------------------------------------------------
def test_viz_pictures_and_files(tmp_path):
    from pipeline import viz

    img = scene()
    assert viz.overlay(img, np.ones((4, 4))).shape == img.shape  # constant map: no division by zero
    assert viz.heatmap(np.arange(16.0).reshape(4, 4), (SIZE, SIZE)).shape == (SIZE, SIZE, 3)
    strip = viz.image_strip({"a": [img, img], "b": [img]})
    assert strip.shape == (2 * 96 + 3 * 2, 64 + 2 * 96 + 3 * 2, 3)
    assert viz.side_by_side([img, img[:16]]).shape == (SIZE, 2 * SIZE + 4, 3)
    gif = viz.save_gif([img, img[::-1], img[:, ::-1]], tmp_path / "a.gif")
    with Image.open(gif) as im:
        assert im.n_frames == 4 and min(im.size) >= 128  # forth and back, enlarged
    png = viz.save_png(img, tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(Image.open(png)), img)  # lossless
    fig = viz.history_figure({"geodesic": [3.0, 2.0, 1.5]}, references={"lerp": 4.0})
    assert fig.axes[0].get_yscale() == "log"
    marked = viz.mark_points(img, [(3, 4)])
    assert marked.shape == img.shape and (marked != img).any()



def _hammer_image_cache(save, cache_dir: Path, *, uncached: bool, writers: int = 3, rounds: int = 150) -> list[int]:
    """Save the same image from several threads while a reader reads the cached file; returns the sizes the reader
    saw that differ from the full file's. ``uncached``: each write first deletes the cached copy (the write path)."""
    from gradio import processing_utils

    img = Image.fromarray(scene()).resize((128, 128))
    full = len(processing_utils.encode_pil_to_bytes(img, "png"))
    path = Path(save(img, str(cache_dir), format="png"))
    stop, bad = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                n = len(path.read_bytes())
            except FileNotFoundError:
                continue
            if n != full:
                bad.append(n)

    def write() -> None:
        for _ in range(rounds):
            if uncached:
                path.unlink(missing_ok=True)
            save(img, str(cache_dir), format="png")

    reader = threading.Thread(target=read)
    reader.start()
    pool = [threading.Thread(target=write) for _ in range(writers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    stop.set()
    reader.join()
    return bad


@pytest.mark.parametrize("uncached", [False, True])
def test_identical_image_outputs_never_expose_a_partial_cached_file(tmp_path, uncached):
    """Gradio caches an output image under its content hash; concurrent requests returning the same image must not
    leave the cached file truncated while another download streams it (the client sees a dropped connection)."""
    from gradio import image_utils, processing_utils

    assert processing_utils.save_pil_to_cache is app._save_pil_to_cache_atomically  # what gr.Image outputs call
    assert _hammer_image_cache(app._save_pil_to_cache_atomically, tmp_path, uncached=uncached) == []
    arr = np.asarray(Image.fromarray(scene()).resize((128, 128)))
    path = Path(image_utils.save_image(arr, str(tmp_path), "png"))
    assert np.array_equal(np.asarray(Image.open(path)), arr) and not list(path.parent.glob(".*"))  # no staging left
