"""The app's handlers on a tiny model: every tab, and bad input turned into clear ``gr.Error`` messages.

Each tab's event function (what Gradio calls) is called directly with the values Gradio would pass (file paths for
``gr.Image(type="filepath")``, ``{"background", "layers", "composite"}`` dicts of RGBA arrays for the mask editors):
that covers the conversion into the tab's request and its checks, the handler, and the error translation. The tiny
model folder from ``conftest`` is the model source, so nothing here needs the embedded default model.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from pipeline.errors import Cancelled, InputError, ModelLoadError
from pipeline.model import embedded_models
from ui import edit_tab, geodesic_tab, lab_tab, outputs, rates_tab, widgets
from ui.config import AppConfig
from ui.errors import clean_message, ui_errors
from ui.inputs import Settings, parse_points, read_editor, read_image
from ui.models import ModelManager

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32  # test images are 32 x 32 (the tiny model works at 16 x 16: the app resizes)

# Fast settings for every model-bound call: (backend, steps, seed).
FAST = ("torch", 2, 0)
# Edits: t_edit, gradient steps per timestep, measure curves.
EDIT_FAST = (100, 1, False)
#: The models the app lists first: "default", then the other embedded models present (pipeline.model.embedded_models).
EMBEDDED = ["default", *(n for n in embedded_models() if n != "default")]


# --------------------------------------------------------------------------------------------------------------------
# Fixtures: images, masks, editor values, the model manager and the tabs' event functions
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


def picture(path) -> np.ndarray:
    """An output image: handlers return PNG file paths (see ``ui.outputs``), read back as uint8 RGB."""
    assert isinstance(path, str) and Path(path).suffix == ".png" and Path(path).is_file(), path
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Model calls run on one torch thread, as in a one-job CPU server: on a busy 2-core machine two OpenMP threads
    spin against each other (measured: 3.6 s instead of 0.05 s per call of the tiny U-Net under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models() -> ModelManager:
    """One manager for the module (local, not hosted), so the tiny model loads once."""
    return ModelManager(AppConfig())


class Events:
    """The event functions of every tab, bound to one model manager, as the page wires them."""

    def __init__(self, models: ModelManager):
        self.rates = rates_tab.rates_event(models)
        self.remove = edit_tab.remove_event(models)
        self.transfer = edit_tab.transfer_event(models)
        self.saliency = edit_tab.saliency_event(models)
        self.blend = edit_tab.blend_event(models)
        self.geodesic = geodesic_tab.geodesic_event(models)
        self.stop = widgets.stop_event(models)


@pytest.fixture(scope="module")
def ev(models) -> Events:
    return Events(models)


def error_message(excinfo) -> str:
    """The message of a ``gr.Error`` (from ``pytest.raises``' ExceptionInfo or the exception itself)."""
    err = getattr(excinfo, "value", excinfo)
    return str(getattr(err, "message", err))


# --------------------------------------------------------------------------------------------------------------------
# Structure: import, build, API names
# --------------------------------------------------------------------------------------------------------------------
EXPECTED_APIS = {"rates", "remove", "transfer", "saliency", "blend", "geodesic", "lab"}


def test_import_is_cheap_and_loads_nothing():
    """Importing app.py and building the demo loads no model, does not import onnxruntime or tensorrt, and patches
    nothing in gradio (no monkey-patch at import or build)."""
    code = (
        "import sys, app; from gradio import processing_utils as pu; "
        "m = app.ModelManager(app.AppConfig()); d = app.build_demo(models=m); "
        "assert m.loaded_models() == 0; "
        "bad = [m for m in ('onnxruntime', 'tensorrt') if m in sys.modules]; assert not bad, bad; "
        "patched = [n for n in ('save_pil_to_cache', 'save_img_array_to_cache', 'save_file_to_cache') "
        "if getattr(pu, n).__module__ != 'gradio.processing_utils']; assert not patched, patched; print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout
    assert not (ROOT / "app.pyi").exists() and not list((ROOT / "ui").glob("*.pyi")), \
        "building the demo must not write a .pyi stub"


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


def test_api_parameters_keep_their_names():
    """API clients may pass values by name: the endpoints' parameter names are those of the event functions."""
    info = app.build_demo(app.AppConfig()).get_api_info()["named_endpoints"]
    names = lambda api: [p["parameter_name"] for p in info[api]["parameters"]]
    settings = ["model", "backend", "steps", "seed"]
    edit = ["t_edit", "iterations", "measure", *settings]
    assert names("/rates") == ["image", "grid", "statistic", "timestep", "points", *settings]
    assert names("/remove") == ["editor", "fill", *edit]
    assert names("/transfer") == ["target", "source", *edit]
    assert names("/saliency") == ["editor", "factor", *edit]
    assert names("/blend") == ["background", "foreground", *edit]
    assert names("/geodesic") == ["image_a", "image_b", "n_points", "t_star", "lam", "beyond", "max_iter", *settings,
                                  "metric"]
    assert names("/lab") == ["manifold", "lam", "sigma", "angle_1", "angle_2", "n_points", "iterations", "metric"]
    assert info["/rates"]["description"].startswith("Image -> saliency map")


def test_edit_tabs_start_at_the_tuned_task_defaults():
    """The depth and gradient-step sliders of each editing tab start where the task's config does, so the app runs
    the configuration the benchmark measured, not one setting for every task."""
    from pipeline import edit

    demo = app.build_demo(app.AppConfig())
    sliders = {b.label: b.value for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    for title, cfg in [("Remove object", edit.RemoveConfig()), ("Transfer", edit.TransferConfig()),
                       ("Saliency", edit.SaliencyConfig()), ("Blend", edit.BlendConfig())]:
        assert sliders[f"{title}: edit depth (t_edit)"] == cfg.t_edit
        assert sliders[f"{title}: gradient steps per timestep"] == cfg.iterations
    assert sliders["Remove object: edit depth (t_edit)"] == 200 and sliders["Blend: edit depth (t_edit)"] == 250


def test_cli_defaults(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert app.parse_args([]).port == 7999
    assert app.parse_args(["--port", "1234", "--host", "0.0.0.0"]).port == 1234


def test_warm_up_prepares_or_logs(models, tiny_pixel_dir, tmp_path, caplog):
    """The warm-up (``--warmup``) builds a backend through the manager; a failure is logged, never raised."""
    assert models.prepare(tiny_pixel_dir, "torch") == "torch"
    with caplog.at_level("INFO", logger="diffgeo.app"):
        app.warm_up(models, str(tmp_path / "missing"))
    assert "warm-up failed" in caplog.text  # benchmarks/screenshots.py waits for "warm-up done" / "warm-up failed"


def test_build_demo_refuses_a_manager_with_another_config():
    with pytest.raises(ValueError, match="config differs"):
        app.build_demo(AppConfig(hosted=True), ModelManager(AppConfig()))


# --------------------------------------------------------------------------------------------------------------------
# Input conversion, requests and bad input
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["rgb.png", "rgba.png", "gray.png", "gray16.png", "photo.jpg"])
def test_read_image_accepts_common_formats(images, name):
    """RGBA is flattened on white, grayscale repeated, 16-bit scaled: all become uint8 RGB of the same size."""
    arr = read_image(images[name])
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
def test_bad_images_give_clear_errors(ev, images, name, words):
    value = images[name] if name else None
    with pytest.raises(gr.Error) as excinfo:
        ev.rates(value, 4, "mean", 500, "", "unused-model", *FAST)
    msg = error_message(excinfo)
    assert words in msg
    assert "Traceback" not in msg and (name is None or images[name] not in msg)  # no stack trace, no server path


def test_guarded_upload_component_reports_non_images(images):
    """A non-image upload fails in Gradio's preprocessing; the guard turns it into a gr.Error naming the input."""
    from gradio.data_classes import FileData

    comp = widgets.image_input("Some image")
    with pytest.raises(gr.Error) as excinfo:
        comp.preprocess(FileData(path=images["text.png"], orig_name="text.png"))
    assert "Some image: not a readable image file" in error_message(excinfo)
    assert comp.preprocess(FileData(path=images["rgb.png"], orig_name="rgb.png")) == images["rgb.png"]


def test_editor_mask_is_union_of_layers():
    img = scene()
    a, b = square_mask(0, 0, 4), square_mask(20, 20, 4)
    image, mask = read_editor(editor(img, a, b))
    np.testing.assert_array_equal(image, img)
    np.testing.assert_array_equal(mask, a | b)


@pytest.mark.parametrize(
    "value, words",
    [(None, "missing"), ("no-layers", "empty"), ("blank-layer", "empty"), ("no-background", "missing"),
     ("full", "whole image"), ("wrong-size", "draw the mask on the image")],
)
def test_bad_masks_give_clear_errors(ev, value, words):
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
        ev.remove(values[value], "smooth", *EDIT_FAST, "unused-model", *FAST)
    assert words in error_message(excinfo)


def test_bad_settings_give_clear_errors(ev, images, tiny_pixel_dir):
    with pytest.raises(gr.Error, match=r"steps must be a whole number in \[2, 100\], got 0"):
        ev.rates(images["rgb.png"], 4, "mean", 500, "", tiny_pixel_dir, "torch", 0, 0)
    with pytest.raises(gr.Error, match="points must look like"):
        ev.rates(images["rgb.png"], 4, "mean", 500, "a,b", tiny_pixel_dir, *FAST)
    with pytest.raises(gr.Error, match="backend must be one of"):
        ev.rates(images["rgb.png"], 4, "mean", 500, "", tiny_pixel_dir, "cuda-magic", 2, 0)
    with pytest.raises(gr.Error, match="statistic must be one of"):
        ev.rates(images["rgb.png"], 4, "median", 500, "", tiny_pixel_dir, *FAST)
    with pytest.raises(gr.Error, match=r"edit depth t_edit must be a whole number in \[50, 900\]"):
        ev.remove(editor(scene(), square_mask()), "smooth", 0, 1, False, tiny_pixel_dir, *FAST)


def test_requests_are_built_and_checked_in_one_place(images):
    """Each tab's request converts Gradio's values once: checked, typed, frozen."""
    req = rates_tab.RatesRequest.from_gradio(images["rgb.png"], "4", None, 250.0, "1,2; 3,4", "m", None, 2.0, None)
    assert (req.grid, req.statistic, req.view.timestep) == (4, "tv", 250.0)
    assert req.view.points == ((1.0, 2.0), (3.0, 4.0)) and req.image.shape == (SIZE, SIZE, 3)
    assert req.settings == Settings("m", "auto", 2, 0)
    with pytest.raises(AttributeError):
        req.grid = 8
    img = scene()
    same = edit_tab.TransferRequest.from_gradio(editor(img, square_mask()), editor(img, square_mask(20, 20, 4)),
                                                *EDIT_FAST, "m", *FAST)
    assert same.reference is None and same.options == edit_tab.EditOptions(100, 1, False)
    lab = lab_tab.LabRequest.from_gradio("torus", "10", 0.2, 30, 10, 5.0, 10)
    assert lab == lab_tab.LabRequest("torus", 10.0, 0.2, 30.0, 10.0, 5, 10)
    with pytest.raises(InputError, match="manifold must be"):
        lab_tab.LabRequest.from_gradio("klein bottle", 200, 0.15, 90, 0, 7, 30)
    with pytest.raises(InputError, match=r"lambda must be a finite number in \[0, 100000\], got 'x'"):
        geodesic_tab.GeodesicRequest.from_gradio(images["rgb.png"], images["other.png"], 3, 100, "x", 0, 3, "m",
                                                 *FAST)


def test_missing_model_is_a_clear_error(ev, images, tmp_path):
    with pytest.raises(gr.Error) as excinfo:
        ev.rates(images["rgb.png"], 4, "mean", 500, "", str(tmp_path), *FAST)
    msg = error_message(excinfo)
    assert "not a diffusers model folder" in msg
    assert str(tmp_path) not in msg  # paths shortened to their last part


def test_parse_points():
    assert parse_points("1,2; 3.5, 4") == [(1.0, 2.0), (3.5, 4.0)]
    assert parse_points("(1 2)\n") == [(1.0, 2.0)]
    assert parse_points("") == []
    with pytest.raises(InputError):
        parse_points("1,2,3")


# --------------------------------------------------------------------------------------------------------------------
# Hosted mode and error hygiene
# --------------------------------------------------------------------------------------------------------------------
def test_hosted_mode_allow_list_and_no_paths(tiny_pixel_dir, images):
    cfg = AppConfig(model=tiny_pixel_dir, hosted=True, allowed_models=("owner/name",))
    hosted = ModelManager(cfg)
    choices = cfg.model_choices()
    assert list(choices) == [*EMBEDDED, "local model 1", "owner/name"]  # the local folder is offered without its path
    assert hosted.resolve("local model 1") == (tiny_pixel_dir, "local model 1")
    with pytest.raises(gr.Error, match="offers the models"):
        rates_tab.rates_event(hosted)(images["rgb.png"], 4, "mean", 500, "", "/etc", *FAST)
    demo = app.build_demo(cfg)
    config_text = str(demo.get_config_file())
    assert tiny_pixel_dir not in config_text  # the page never shows the folder


def test_hosted_mode_hides_model_load_details():
    @ui_errors(hosted=True)
    def fails():
        raise ModelLoadError("/secret/place/model has no unet/config.json")

    with pytest.raises(gr.Error) as excinfo:
        fails()
    assert "secret" not in error_message(excinfo) and "could not be loaded" in error_message(excinfo)


def test_numerical_errors_say_what_to_change():
    from pipeline.errors import NumericalError

    @ui_errors(hosted=True)
    def blows_up():
        raise NumericalError("shooting blew up at step 3 in /secret/place/x.py; use more points")

    with pytest.raises(gr.Error) as excinfo:
        blows_up()
    msg = error_message(excinfo)
    assert msg.startswith("Numerical problem: shooting blew up") and "secret" not in msg and "Internal" not in msg


def test_unexpected_errors_are_not_shown_raw():
    @ui_errors
    def boom():
        raise RuntimeError("/home/user/.cache/x: internal detail")

    with pytest.raises(gr.Error) as excinfo:
        boom()
    msg = error_message(excinfo)
    assert "RuntimeError" in msg and "internal detail" not in msg


def test_clean_message_shortens_paths():
    assert clean_message("image '/tmp/gradio/abc/photo.png' is bad") == "image 'photo.png' is bad"
    assert clean_message("sizes 16x16 and 3/4") == "sizes 16x16 and 3/4"


# --------------------------------------------------------------------------------------------------------------------
# Cancellation
# --------------------------------------------------------------------------------------------------------------------
def test_cancel_sets_the_sessions_flags(ev, models):
    class Req:
        session_hash = "s1"

    with models.job(Req()) as flag, models.job(Req()) as flag2:
        assert models.running(Req()) == 2
        assert "Stopping 2" in models.cancel(Req())
        assert flag.is_set() and flag2.is_set()
    assert ev.stop(Req()) == "Stopped: nothing was running."  # the Stop button's final state
    with models.job(None) as lone:  # scripts without a session still get a flag
        assert isinstance(lone, threading.Event)

    @ui_errors
    def stopped():
        raise Cancelled("cancelled by the caller")

    with pytest.raises(gr.Error, match="Cancelled"):
        stopped()


def test_cancel_stops_a_running_handler(ev, models, images, tiny_pixel_dir):
    """The Stop button's flag reaches the library: a running computation ends with 'Cancelled'."""

    class Req:
        session_hash = "cancel-test"

    errors = []

    def run():
        try:
            ev.rates(images["rgb.png"], 32, "mean", 500, "", tiny_pixel_dir, "torch", 50, 0, request=Req())
        except gr.Error as err:
            errors.append(error_message(err))

    models.model(tiny_pixel_dir)  # load first so the cancel lands in the computation
    th = threading.Thread(target=run)
    th.start()
    for _ in range(200):
        if models.running(Req()):
            break
        th.join(0.05)
    final = ev.stop(Req())  # returns once the job has ended: the button's final state
    assert final.startswith("Stopped: the job ended"), final
    assert models.running(Req()) == 0
    th.join(120)
    assert not th.is_alive()
    assert errors and "Cancelled" in errors[0]


# --------------------------------------------------------------------------------------------------------------------
# Every tab on the tiny model
# --------------------------------------------------------------------------------------------------------------------
def test_model_cache_is_shared(models, tiny_pixel_dir):
    m1 = models.model(tiny_pixel_dir, "cpu")
    assert models.model(tiny_pixel_dir, "cpu") is m1
    engine = models.compute_with(Settings(tiny_pixel_dir, "torch", 2, 0))
    assert engine.model.torch_model is m1 and engine.backend_label == "torch (eager)"  # the torch backend of m1
    assert engine.model.point_batching() == "vmap"  # its point JVP is the model's own (primal once)
    assert ModelManager(AppConfig()).loaded_models() == 0  # each manager has its own cache


def test_rates_tab(ev, images, tiny_pixel_dir):
    saliency, rate, fig, status, files, state = ev.rates(
        images["rgb.png"], 4, "mean", 500, "3,4; 20,20", tiny_pixel_dir, *FAST)
    assert picture(saliency).shape == picture(rate).shape == (SIZE, SIZE, 3)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2  # two points, rates and accumulated side by side
    assert "backend:** torch" in status and "2 timesteps" in status
    assert "a 4x4 grid of patches (4 pixels of the model's image each)" in status  # grid 4 on the 16-pixel model
    assert {Path(f).name for f in files} == {"curves.npz", "saliency.png"}
    with np.load(files[0]) as z:
        assert z["curves"].shape == (2, 4, 4) and z["saliency"].shape == (SIZE, SIZE)
    # the grid is patches per side of model space on any model: 32 on a 16-pixel model is 1-pixel patches
    *_, fine, files_fine, _ = ev.rates(images["rgb.png"], 32, "mean", 500, "", tiny_pixel_dir, *FAST)
    assert "a 16x16 grid of patches (1 pixels of the model's image each)" in fine
    # replot without the model: new timestep and a clicked point
    points = rates_tab.select_point("3,4; 20,20", gr.SelectData(None, {"index": [30, 1], "value": None}))
    assert points == "20,20; 30,1"
    s2, r2, fig2 = rates_tab.replot_event(state, 100, points)
    assert picture(s2).shape == (SIZE, SIZE, 3) and len(fig2.axes[0].lines) == 2
    assert Path(s2).parent != Path(saliency).parent  # each call writes its own folder
    with pytest.raises(gr.Error, match="compute the curves first"):
        rates_tab.replot_event(None, 100, "")


def check_edit(out, image: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    result, strip, curves, losses, status, files, details, kept = out
    edited = picture(result)
    assert edited.shape == image.shape
    assert picture(strip).shape[0] == image.shape[0]
    assert "backend:** torch" in status
    assert Path(files[0]).name == f"{name}.png" and all(Path(f).is_file() for f in files)
    assert result == files[0]  # the shown picture is the download
    assert curves is not None
    # the result in a user's words: the model's resolution, the changed region, the curve loss; internals apart
    assert "**Worked at:** the model's 16x16 pixels" in status and "**Changed:**" in status
    assert "**Curve loss:**" in status and "JVP" not in status
    assert losses["__type__"] == "update"
    if not losses["visible"]:  # no plot (not an empty panel): the status says why
        assert losses["value"] is None and ("not optimised" in status or "stayed at" in status)
    else:
        assert losses["value"] is not None and "no loss plot" not in status
    assert "| rate_evaluations_with_grad |" in details and "Time per stage" in details
    return edited


def test_a_loss_that_says_nothing_hides_its_plot(ev, tiny_pixel_dir):
    """No gradient steps (or a loss that stays flat): the loss plot is hidden and the status says why, instead of
    an empty or flat panel beside a result that changed."""
    img, mask = scene(), square_mask()
    out = ev.remove(editor(img, mask), "smooth", 100, 0, False, tiny_pixel_dir, *FAST)
    check_edit(out, img, mask, "removed")
    assert out[3] == {"__type__": "update", "value": None, "visible": False}
    assert "not optimised (gradient steps per timestep is 0)" in out[4]
    shown = outputs.plot_or_hidden("figure")
    assert shown["visible"] and shown["value"] == "figure"


def test_remove_tab(ev, tiny_pixel_dir):
    img, mask = scene(), square_mask()
    out = ev.remove(editor(img, mask), "smooth", *EDIT_FAST, tiny_pixel_dir, *FAST)
    result = check_edit(out, img, mask, "removed")
    np.testing.assert_array_equal(result[~mask], img[~mask])  # untouched outside the mask
    assert (result[mask] != img[mask]).any()  # changed inside
    assert f"{int(mask.sum())} px" in out[4]


def test_remove_tab_generative_fill(ev, tiny_pixel_dir):
    """The generative fill: the library's removal with GENERATIVE_REMOVAL's fresh noise and number of fills, at the
    slider's depth and the DDIM steps of its tuned step size; the status says how many fills were averaged."""
    from pipeline import edit, load_model

    img, mask = scene(), square_mask()
    opts, settings = (300, 1, False), ("torch", 4, 0)  # where the two fills' tuned step sizes give different steps
    out = ev.remove(editor(img, mask), "generative", *opts, tiny_pixel_dir, *settings)
    result = check_edit(out, img, mask, "removed")
    samples = edit.GENERATIVE_REMOVAL["samples"]
    assert f"{samples} generative fills averaged" in out[4]
    tuned = edit.RemoveConfig(**edit.GENERATIVE_REMOVAL)
    steps = edit_tab.edit_steps(tuned, 300, 4)
    assert steps != edit_tab.edit_steps(edit.RemoveConfig(), 300, 4)
    lib = edit.remove_object(load_model(tiny_pixel_dir), img, mask, t_edit=300, iterations=1, measure_curves=False,
                             num_steps=steps, seed=0, init_noise=1.0, samples=samples)
    assert lib.diagnostics["samples"] == samples
    assert np.abs(result.astype(int) - lib.image.astype(int)).max() <= 1
    smooth = check_edit(ev.remove(editor(img, mask), "smooth", *opts, tiny_pixel_dir, *settings), img, mask,
                        "removed")
    assert (smooth != result).any()
    assert edit_tab.remove_fill_defaults("generative") == (edit.GENERATIVE_REMOVAL["t_edit"], 0)
    assert edit_tab.remove_fill_defaults("smooth") == (edit.RemoveConfig().t_edit, edit.RemoveConfig().iterations)
    with pytest.raises(gr.Error, match="fill must be one of smooth, generative"):
        ev.remove(editor(img, mask), "noisy", *EDIT_FAST, tiny_pixel_dir, *FAST)


def test_transfer_tab(ev, tiny_pixel_dir):
    img = scene()
    target, source = square_mask(4, 4, 8), square_mask(20, 20, 8)
    out = ev.transfer(editor(img, target), editor(img, source), *EDIT_FAST, tiny_pixel_dir, *FAST)
    result = check_edit(out, img, target, "transferred")
    assert "same image" in out[4]
    np.testing.assert_array_equal(result[~target], img[~target])  # only the target region may change
    assert (result[target] != img[target]).any()
    # a reference image as the source canvas
    ref = scene(10_000_002)
    out = ev.transfer(editor(img, target), editor(ref, source), *EDIT_FAST, tiny_pixel_dir, *FAST)
    assert "reference image" in out[4] and picture(out[1]).shape[1] > 2 * SIZE
    from_ref = picture(out[0])
    np.testing.assert_array_equal(from_ref[~target], img[~target])
    assert (from_ref[target] != result[target]).any()  # another source image gives another content


def test_saliency_tab(ev, tiny_pixel_dir):
    img, mask = scene(), square_mask()
    out = ev.saliency(editor(img, mask), 2.0, 100, 1, True, tiny_pixel_dir, *FAST)
    result = check_edit(out, img, mask, "saliency")
    np.testing.assert_array_equal(result[~mask], img[~mask])  # only the painted region may change
    assert len(out[2].axes[0].lines) == 3  # before, after, reference
    with pytest.raises(gr.Error, match="saliency factor must be a finite number"):
        ev.saliency(editor(img, mask), "lots", *EDIT_FAST, tiny_pixel_dir, *FAST)


def test_blend_tab(ev, images, tiny_pixel_dir):
    bg, fg, mask = scene(), scene(10_000_002), square_mask()
    out = ev.blend(images["rgb.png"], editor(fg, mask), *EDIT_FAST, tiny_pixel_dir, *FAST)
    result = check_edit(out, bg, mask, "blended").astype(int)
    far = ~square_mask(0, 0, 28)  # beyond the seam band (a few model cells around the 12 px square at 8..20)
    np.testing.assert_array_equal(result[far], bg[far])  # the background is untouched away from the object
    # the object came over from the foreground: inside the mask the result is nearer to it than to the background
    assert np.abs(result[mask] - fg[mask]).mean() < np.abs(result[mask] - bg[mask]).mean()


def test_geodesic_tab(ev, images, tiny_pixel_dir):
    strip, extra, energy, gif, status, files = ev.geodesic(
        images["rgb.png"], images["other.png"], 3, 100, 100.0, 0.5, 3, tiny_pixel_dir, *FAST)
    assert picture(strip).ndim == 3 and extra is not None and picture(extra).ndim == 3
    assert Path(gif).suffix == ".gif" and Image.open(gif).n_frames >= 3
    assert any(Path(f).name == "strip.png" for f in files)
    with pytest.raises(gr.Error, match="second image is missing"):
        ev.geodesic(images["rgb.png"], None, 3, 100, 100.0, 0, 3, tiny_pixel_dir, *FAST)


def test_geodesic_tab_metric_choice(ev, images, tiny_pixel_dir):
    """The denoiser metric runs and is named in the result; extrapolation with it is refused before any work."""
    strip, extra, energy, gif, status, files = ev.geodesic(
        images["rgb.png"], images["other.png"], 3, 100, 100.0, 0, 3, tiny_pixel_dir, *FAST, "denoiser")
    assert extra is None and "Length under the denoiser metric" in status and "metric denoiser" in status
    with pytest.raises(gr.Error, match="extrapolation beyond b needs the score metric"):
        ev.geodesic(images["rgb.png"], images["other.png"], 3, 100, 100.0, 0.5, 3, tiny_pixel_dir, *FAST, "denoiser")
    with pytest.raises(gr.Error, match="metric"):
        ev.geodesic(images["rgb.png"], images["other.png"], 3, 100, 100.0, 0, 3, tiny_pixel_dir, *FAST, "fisher")


def test_geometry_lab_denoiser_metric_stays_closer_to_the_sphere():
    """The lab draws the chosen metric's geodesic; on the sphere the denoiser metric's path lies nearer the surface
    than the score metric's at the same settings (max |r - 1| measured 0.0058 against 0.029)."""
    radial = {}
    for metric, lam in (("score", 1000), ("denoiser", 1000)):
        fig, energy, table = lab_tab.lab_event("sphere", lam, 0.15, 120, 30, 9, 100, metric)
        assert f"{metric}-metric geodesic" in table
        if hasattr(fig, "data"):  # plotly
            path = next(t for t in fig.data if t.name == f"{metric}-metric geodesic")
            radial[metric] = float(np.abs(np.sqrt(np.asarray(path.x) ** 2 + np.asarray(path.y) ** 2
                                                  + np.asarray(path.z) ** 2) - 1).max())
    if radial:
        assert radial["denoiser"] < radial["score"], radial


def test_geometry_lab_sphere():
    fig, energy, table = lab_tab.lab_event("sphere", 200, 0.15, 90, 0, 7, 30)
    names = [trace.name for trace in fig.data] if hasattr(fig, "data") else []
    if names:  # plotly
        assert {"score-metric geodesic", "true geodesic", "chord"} <= set(names)
    assert "true geodesic" in table and energy is not None
    with pytest.raises(gr.Error, match="manifold must be"):
        lab_tab.lab_event("klein bottle", 200, 0.15, 90, 0, 7, 30)
    with pytest.raises(gr.Error, match="angle 1 and angle 2 must not both be 0"):  # b would be a
        lab_tab.lab_event("torus", 200, 0.15, 0, 0, 7, 30)


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


# --------------------------------------------------------------------------------------------------------------------
# Identical outputs of concurrent requests
# --------------------------------------------------------------------------------------------------------------------
def _hammer_file_cache(source: Path, cache_dir: Path, *, uncached: bool, writers: int = 3,
                       rounds: int = 150) -> list[int]:
    """Cache ``source`` from several threads as gradio caches a returned output file
    (``processing_utils.save_file_to_cache``) while a reader reads the cached copy; returns the sizes the reader saw
    that differ from the full file's. ``uncached``: each write first deletes the cached copy (the write path)."""
    from gradio import processing_utils

    full = source.stat().st_size
    path = Path(processing_utils.save_file_to_cache(source, str(cache_dir)))
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
            assert Path(processing_utils.save_file_to_cache(source, str(cache_dir))) == path

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


def test_output_images_reach_gradio_as_files(tmp_path):
    """Handlers return output images as PNG paths (``ui.outputs.image_file``): gr.Image passes a path through
    unchanged (no ``save_pil_to_cache``, which rewrites its cached file in place) and gradio copies it into its cache
    with ``save_file_to_cache``, as an identical, complete file."""
    from gradio import processing_utils

    from ui.outputs import image_file

    arr = np.asarray(Image.fromarray(scene()).resize((128, 128)))
    path = image_file(arr, tmp_path, "out")
    comp = gr.Image(format="png", interactive=False)
    data = comp.postprocess(path)
    assert data.path == path
    cached = processing_utils.move_files_to_cache(data, comp, postprocess=True)["path"]
    assert Path(cached).read_bytes() == Path(path).read_bytes() and cached != path


@pytest.mark.parametrize("uncached", [False, True])
def test_identical_image_outputs_never_expose_a_partial_cached_file(tmp_path, uncached):
    """Gradio caches an output file under its content hash; concurrent requests returning the same image must not
    leave the cached file truncated while another download streams it (the client sees a dropped connection). The
    installed gradio's ``save_file_to_cache`` writes a staging file and renames it into place; this guards that."""
    from ui.outputs import image_file

    source = Path(image_file(np.asarray(Image.fromarray(scene()).resize((128, 128))), tmp_path, "same"))
    cache = tmp_path / "cache"
    assert _hammer_file_cache(source, cache, uncached=uncached) == []
    assert not list(cache.glob("*/.*"))  # no staging file left behind


# --------------------------------------------------------------------------------------------------------------------
# Every number is checked where it enters (issue 16): NaN, infinity, out of range, wrong type -> a named error
# --------------------------------------------------------------------------------------------------------------------
BAD_NUMBERS = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, "abc", None, True, [1]]


def _valid_args(images) -> dict[str, tuple]:
    """Valid values of each event, model "unused-model" (never loaded: a check that lets a bad value through fails
    later with a model error, which the tests below do not accept)."""
    model = ("unused-model", *FAST)
    return {
        "rates": (images["rgb.png"], 4, "mean", 500, "", *model),
        "remove": (editor(scene(), square_mask()), "smooth", *EDIT_FAST, *model),
        "saliency": (editor(scene(), square_mask()), 2.0, *EDIT_FAST, *model),
        "geodesic": (images["rgb.png"], images["other.png"], 3, 100, 100.0, 0.5, 3, *model),
        "lab": ("sphere", 200, 0.15, 90, 0, 7, 30),
    }


#: (event, argument index, the name the message must contain); None values are allowed where they mean a default.
NUMBER_FIELDS = [
    ("rates", 1, "patch grid"), ("rates", 3, "rate-map timestep t"), ("rates", 7, "steps"), ("rates", 8, "seed"),
    ("remove", 2, "edit depth t_edit"), ("remove", 3, "gradient steps per timestep"),
    ("saliency", 1, "saliency factor"),
    ("geodesic", 2, "path points"), ("geodesic", 3, "noise level t*"), ("geodesic", 4, "lambda"),
    ("geodesic", 5, "extrapolation beyond b"), ("geodesic", 6, "solver iterations"),
    ("lab", 1, "lambda"), ("lab", 2, "noise level sigma"), ("lab", 3, "angle 1"), ("lab", 4, "angle 2"),
    ("lab", 5, "points"), ("lab", 6, "iterations"),
]


def _event(ev, name: str):
    return lab_tab.lab_event if name == "lab" else getattr(ev, name)


@pytest.mark.parametrize("api, index, field", NUMBER_FIELDS, ids=[f"{a}-{f}" for a, _, f in NUMBER_FIELDS])
def test_bad_numbers_are_refused_with_the_field_and_its_range(ev, images, api, index, field):
    """NaN, infinity, huge, text, None, a bool or a list in any numeric field: a gr.Error naming the field and its
    range, before any work (today NaN timesteps were taken as t = 999, a NaN lambda failed late, text failed in
    gradio's preprocessing)."""
    for bad in BAD_NUMBERS:
        if bad is None and field == "seed":
            continue  # an empty seed box means seed 0
        args = list(_valid_args(images)[api])
        args[index] = bad
        with pytest.raises(gr.Error) as excinfo:
            _event(ev, api)(*args)
        msg = error_message(excinfo)
        assert msg.startswith(field) or f" {field} " in msg, (bad, msg)
        assert re.search(r"in \[|one of", msg), (bad, msg)
        assert "Internal error" not in msg and "Model" not in msg, (bad, msg)


@pytest.mark.parametrize("value, words", [
    ("nan,nan", "finite"), ("1,inf", "finite"), ("1e999, 2", "finite"), ("a,b", "could not read"),
    ("1,2,3", "could not read"), ("9" * 5000, "at most 200 characters"), (5, "must be text"),
])
def test_bad_points_are_refused_before_the_job(ev, images, value, words):
    """Points "nan,nan" ran the whole job, then failed as "Internal error (ValueError)"."""
    args = list(_valid_args(images)["rates"])
    args[4] = value
    with pytest.raises(gr.Error) as excinfo:
        ev.rates(*args)
    msg = error_message(excinfo)
    assert "points" in msg and words in msg and len(msg) < 300


@pytest.mark.parametrize("index, value, words", [
    (2, "median", "statistic must be one of"), (6, "cuda-magic", "backend must be one of"),
    (5, "x" * 5000, "model source must be at most 256 characters"), (5, "a\x00b", "printable"),
    (5, 42, "model must be a model name"),
])
def test_bad_choices_and_sources_are_named(ev, images, index, value, words):
    args = list(_valid_args(images)["rates"])
    args[index] = value
    with pytest.raises(gr.Error) as excinfo:
        ev.rates(*args)
    assert words in error_message(excinfo) and len(error_message(excinfo)) < 300


def test_edit_checkbox_and_numeric_text():
    """Numeric text is read as its number; a checkbox takes only true or false."""
    assert edit_tab.EditOptions.from_gradio("100", 2.0, False) == edit_tab.EditOptions(100, 2, False)
    with pytest.raises(InputError, match="measure curves must be true or false"):
        edit_tab.EditOptions.from_gradio(100, 1, "yes")
    with pytest.raises(InputError, match=r"gradient steps per timestep must be a whole number in \[0, 10\], got 1.5"):
        edit_tab.EditOptions.from_gradio(100, 1.5, True)


def test_gradio_preprocessing_hands_raw_values_to_the_checks():
    """Numbers and choices reach the handler as they arrived: gradio's preprocess of a Slider fails on text with a
    generic error and lets NaN through; the page's components pass them on for the named checks."""
    demo = app.build_demo(app.AppConfig())
    values = [b for b in demo.blocks.values() if isinstance(b, widgets.VALUE_COMPONENTS)]
    assert len(values) >= 20
    for block in values:
        for raw in ("abc", None, float("nan"), 1e30):
            assert block.preprocess(raw) is raw or (raw != raw and block.preprocess(raw) != block.preprocess(raw))
    with pytest.raises(TypeError):
        gr.Slider(0, 10).preprocess("abc")  # what gradio itself does


# --------------------------------------------------------------------------------------------------------------------
# Hosted mode policy: limits in one place, shown on the page; a per-request time limit
# --------------------------------------------------------------------------------------------------------------------
def test_hosted_limits_are_enforced_and_shown(tiny_pixel_dir, images):
    from ui.config import HOSTED_LIMITS, LOCAL_LIMITS

    cfg = AppConfig(model=tiny_pixel_dir, hosted=True)
    limits = cfg.limits
    assert limits.backends == ("auto", "torch") and "torch-compile" in LOCAL_LIMITS.backends
    assert limits.time_limit_s == HOSTED_LIMITS.time_limit_s and AppConfig().limits.time_limit_s is None
    assert AppConfig(hosted=True, time_limit_s=0).limits.time_limit_s is None
    assert AppConfig(hosted=True, max_steps=30).limits.steps == (2, 30)
    assert AppConfig(max_steps=300).limits.steps == (2, 300)
    hosted = ModelManager(cfg)
    rates = rates_tab.rates_event(hosted)
    good = (images["rgb.png"], 4, "mean", 500, "", "local model 1", "torch", 2, 0)
    for index, value, words in [(6, "torch-compile", "backend must be one of auto, torch"),
                                (6, "onnxruntime", "backend must be one of auto, torch"),
                                (7, limits.steps[1] + 1, f"steps must be a whole number in [2, {limits.steps[1]}]"),
                                (1, 1, "patch grid must be one of 16, 8, 4")]:
        args = list(good)
        args[index] = value
        with pytest.raises(gr.Error) as excinfo:
            rates(*args)
        assert words in error_message(excinfo)
    geodesic = geodesic_tab.geodesic_event(hosted)
    with pytest.raises(gr.Error, match=r"solver iterations must be a whole number in \[1, 200\]"):
        geodesic(images["rgb.png"], images["other.png"], 3, 100, 100.0, 0.5, 500, "local model 1", *FAST)
    with pytest.raises(gr.Error, match=r"path points must be a whole number in \[3, 11\]"):
        geodesic(images["rgb.png"], images["other.png"], 17, 100, 100.0, 0.5, 3, "local model 1", *FAST)
    with pytest.raises(gr.Error, match=r"gradient steps per timestep must be a whole number in \[0, 5\]"):
        edit_tab.remove_event(hosted)(editor(scene(), square_mask()), "smooth", 100, 10, False, "local model 1", *FAST)
    # the page shows the limits: the sliders' ranges, the backend choices and an info line
    demo = app.build_demo(cfg)
    by_label = {b.label: b for b in demo.blocks.values() if getattr(b, "label", None)}
    assert [c[1] for c in by_label["Backend"].choices] == ["auto", "torch"]
    assert by_label["Steps"].maximum == limits.steps[1]
    assert by_label["Solver iterations"].maximum == 200 and by_label["Path points"].maximum == 11
    assert [c[1] for c in by_label["Patch grid"].choices] == [16, 8, 4]
    assert "limits" in str(demo.get_config_file()) and f"{limits.time_limit_s:g} s" in limits.describe()
    local = {b.label: b for b in app.build_demo(AppConfig()).blocks.values() if getattr(b, "label", None)}
    assert len(local["Backend"].choices) == 5 and local["Solver iterations"].maximum == 500


def test_time_limit_stops_a_request_with_a_clear_message(tiny_pixel_dir, images):
    """A per-request time limit: the watcher sets the cancel flag, the user reads why."""
    models = ModelManager(AppConfig(model=tiny_pixel_dir, hosted=True, time_limit_s=0.5))
    models.model(tiny_pixel_dir)
    start = time.monotonic()
    with pytest.raises(gr.Error) as excinfo:
        rates_tab.rates_event(models)(images["rgb.png"], 8, "mean", 500, "", "local model 1", "torch", 50, 0)
    assert "Time limit" in error_message(excinfo) and "0.5 s" in error_message(excinfo)
    assert time.monotonic() - start < 30
    assert models.running() == 0 and models.model_jobs() == 0


# --------------------------------------------------------------------------------------------------------------------
# Model work at once: the manager's slots, and PyTorch's process-wide forward-AD levels
# --------------------------------------------------------------------------------------------------------------------
def test_concurrent_torch_jobs_do_not_break_each_other(tiny_pixel_dir, images):
    """With concurrency 2, two torch-backend jobs at once: torch.func.jvp's forward-AD levels are global to the
    process, so two threads in it fail ("Trying to access a forward AD level with an invalid index"); the manager
    runs such work one at a time (and never more model jobs than its concurrency)."""
    models = ModelManager(AppConfig(concurrency=2))
    models.model(tiny_pixel_dir)
    rates = rates_tab.rates_event(models)
    results, errors, peak = [], [], [0]
    stop = threading.Event()

    def call():
        try:
            results.append(rates(images["rgb.png"], 8, "mean", 500, "", tiny_pixel_dir, "torch", 8, 0))
        except gr.Error as err:
            errors.append(error_message(err))

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], models.model_jobs())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    stop.set()
    sampler.join()
    assert not errors, errors
    assert len(results) == 3 and peak[0] <= 2


def test_a_cancelled_job_waiting_for_a_slot_never_starts(tiny_pixel_dir, images):
    """While the only slot is held, a second job waits; its Stop ends the wait before it computes."""
    models = ModelManager(AppConfig(concurrency=1))
    models.model(tiny_pixel_dir)

    class Req:
        session_hash = "waiting"

    errors = []

    def call():
        try:
            rates_tab.rates_event(models)(images["rgb.png"], 4, "mean", 500, "", tiny_pixel_dir, *FAST, request=Req())
        except gr.Error as err:
            errors.append(error_message(err))

    with models._model_slot(threading.Event(), lambda *a: None, exclusive=False):  # the only slot is taken
        th = threading.Thread(target=call)
        th.start()
        for _ in range(200):
            if models.running(Req()):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        assert models.running(Req()) == 1 and models.model_jobs() == 0  # waiting, not computing
        models.cancel(Req())
        th.join(30)
    assert not th.is_alive() and errors and "Cancelled" in errors[0]


# --------------------------------------------------------------------------------------------------------------------
# Information: paths, model sources, loader failures
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("/root is not a diffusers model folder", "<path> is not a diffusers model folder"),
    ("C:\\Users is not a folder", "<path> is not a folder"),
    ("model '/home/me/My Models/x' has no unet", "model 'x' has no unet"),
    ("x=/etc/shadow, y", "x=shadow, y"),
    ("hub id owner/name, sizes 3/4, https://huggingface.co/a/b", "hub id owner/name, sizes 3/4, https://huggingface.co/a/b"),
])
def test_clean_message_redacts_every_absolute_path(text, expected):
    assert clean_message(text) == expected


def test_model_source_errors(ev, images, tmp_path, tiny_pixel_dir):
    """Normal mode: a home directory is not shown, a folder with junk weights is a model error (not "Internal
    error (OSError)"). Hosted mode: every source that is not offered gets the same message, and no path."""
    junk = tmp_path / "junk"
    shutil.copytree(tiny_pixel_dir, junk)
    for f in junk.rglob("*.safetensors"):
        f.write_bytes(b"not safetensors at all" * 10)
    for source, words in [(str(junk), r"Model: .*could not (be )?load"), (os.path.expanduser("~"), "Model:"),
                          ("~", "Model:"), ("/", "Model:")]:  # the library's ModelLoadError, or the app's mapping
        with pytest.raises(gr.Error) as excinfo:
            ev.rates(images["rgb.png"], 4, "mean", 500, "", source, *FAST)
        msg = error_message(excinfo)
        assert re.search(words, msg) and "Internal error" not in msg, (source, msg)
        assert os.path.expanduser("~") not in msg and str(tmp_path) not in msg, (source, msg)
    hosted = rates_tab.rates_event(ModelManager(AppConfig(model=tiny_pixel_dir, hosted=True)))
    messages = set()
    for source in ["/etc/shadow", "/nonexistent/x", "~", str(junk), "owner/name", "../.."]:
        with pytest.raises(gr.Error) as excinfo:
            hosted(images["rgb.png"], 4, "mean", 500, "", source, *FAST)
        msg = error_message(excinfo)
        offered = ", ".join([*EMBEDDED, "local model 1"])
        assert f"this demo offers the models {offered}" in msg, msg
        messages.add(msg.split(";")[0])
        assert tiny_pixel_dir not in msg
    assert len(messages) == 1


# --------------------------------------------------------------------------------------------------------------------
# Output folders; private helpers
# --------------------------------------------------------------------------------------------------------------------
def test_output_folders_are_per_session_unguessable_and_expire(tmp_path, monkeypatch):
    from ui import outputs

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))

    class Req:
        def __init__(self, key):
            self.session_hash = key

    a1, a2, b = outputs.output_dir(Req("a")), outputs.output_dir(Req("a")), outputs.output_dir(Req("b"))
    assert a1.parent == a2.parent != b.parent and a1 != a2
    for folder in (a1, b, outputs.output_dir()):
        for name in (folder.name, folder.parent.name):
            assert re.fullmatch(r"[0-9a-f]{32}", name)  # 128 random bits each
        assert folder.parent.parent == outputs.output_root() / "sessions"
    old = time.time() - outputs.OUTPUT_MAX_AGE_S - 10
    os.utime(a1, (old, old))
    outputs.output_dir(Req("a"))
    assert not a1.exists() and a2.exists()
    os.utime(b, (old, old))
    os.utime(b.parent, (old, old))
    outputs.output_dir(Req("c"))
    assert not b.parent.exists()  # a session unused for the age limit is removed whole


def test_no_private_helper_is_a_server_endpoint():
    """The transfer tab's copy of the uploaded image to the source canvas runs in the browser: no endpoint an API
    client could call (before: ``transfer_copy``, callable by its fn_index with any value)."""
    demo = app.build_demo(app.AppConfig())
    assert "transfer_copy" not in {fn.api_name for fn in demo.fns.values()}
    for fn in demo.fns.values():
        if fn.fn is not None and fn.api_visibility == "private":
            # the lab's slider events (checked as /lab); an editor's upload (its value is checked like an edit's
            # image: read_editor); "Edit this result further" (its only input is the session's own gr.State)
            assert getattr(fn.fn, "__name__", "") in ("lab", "upload", "upload_file", "send_back",
                                                           "send_back_file"), fn.api_name
    copy = [fn for fn in demo.fns.values() if fn.js and "background" in fn.js]
    assert len(copy) == 1 and copy[0].fn is None


def test_loader_failures_are_model_errors(monkeypatch, images):
    """Whatever the loader raises for unreadable files (OSError, a safetensors error...) is a model error naming no
    path, in both modes (the library raises ModelLoadError itself for junk weights; both are handled)."""
    from ui import models as models_module

    def broken(source, device=None):
        raise OSError(f"/secret/place/{source}/unet/diffusion_pytorch_model.safetensors: header too large")

    monkeypatch.setattr(models_module, "load_model", broken)
    for hosted, words in [(False, "could not be loaded: its files are not readable"), (True, "could not be loaded")]:
        event = rates_tab.rates_event(ModelManager(AppConfig(hosted=hosted)))
        with pytest.raises(gr.Error) as excinfo:
            event(images["rgb.png"], 4, "mean", 500, "", "default", *FAST)
        msg = error_message(excinfo)
        assert msg.startswith("Model:") and words in msg and "secret" not in msg and "Internal" not in msg, msg


def test_bfloat16_models(tiny_pixel_dir, images, monkeypatch):
    """``--dtype bfloat16`` (or DIFFGEO_DTYPE): models load in bfloat16, an edit runs, and the status says so; a
    dtype the app does not offer is refused when the app starts."""
    import torch

    models = ModelManager(AppConfig(dtype="bfloat16"))
    img, mask = scene(), square_mask()
    out = edit_tab.remove_event(models)(editor(img, mask), "smooth", *EDIT_FAST, tiny_pixel_dir, *FAST)
    check_edit(out, img, mask, "removed")
    assert "(bfloat16)" in out[4]
    assert models.model(tiny_pixel_dir).dtype == torch.bfloat16
    bf = Events(models)
    saliency, rate, *_ = bf.rates(images["rgb.png"], 4, "mean", 500, "3,4", tiny_pixel_dir, *FAST)
    assert picture(saliency).shape == (SIZE, SIZE, 3)
    strip, *_ = bf.geodesic(images["rgb.png"], images["other.png"], 3, 100, 100.0, 0.2, 3, tiny_pixel_dir, *FAST)
    assert picture(strip).ndim == 3
    for call in (lambda: bf.transfer(editor(img, mask), editor(img, square_mask(16, 16, 8)), *EDIT_FAST,
                                     tiny_pixel_dir, *FAST),
                 lambda: bf.saliency(editor(img, mask), 2.0, *EDIT_FAST, tiny_pixel_dir, *FAST),
                 lambda: bf.blend(img, editor(scene(10_000_002), mask), *EDIT_FAST, tiny_pixel_dir, *FAST)):
        assert "(bfloat16)" in call()[4]
    monkeypatch.setenv("DIFFGEO_DTYPE", "float64")
    with pytest.raises(ValueError, match="dtype"):
        AppConfig.from_env()
    assert app.parse_args(["--dtype", "bfloat16"]).dtype == "bfloat16"
