"""Fuzz: a corpus of bad inputs, generated here, sent to a launched server in hosted and in normal mode.

Every case must end in a named error (the message names the field it is about) or in a correct result; after all of
them the server is healthy (a final good request succeeds) and its resident memory is bounded.

The corpus: image files in many formats (CMYK JPEG, palette, 1-bit, 16- and 32-bit, float TIFF, LAB, WebP, BMP, GIF,
truncated files, empty files, text and SVG under image names, too small, too large, a decompression bomb's header),
masks (none, blank, full, wrong size, not an image), numbers (NaN, infinity, huge, negative, fractional, text, None,
bools, lists, objects) in every numeric and choice field of every endpoint, points texts, and model sources (server
paths, the home directory, ``~``, a junk-weights folder, 5,000 characters, control characters, non-text).

Values JSON can carry go through ``gradio_client`` (files as ``handle_file``); NaN and infinity, which
``gradio_client``'s httpx refuses to encode, go as raw HTTP (``/gradio_api/call/<api>``, ``test_app_e2e.call_raw``),
as any other client may send them. A fast subset (hosted mode, one server) runs by default; the full corpus, in both
modes, runs with ``-m slow``. Each run prints its counts: cases run, errors named, results correct.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from test_app_e2e import call_raw, error_text, serve_app, tree_rss, upload

SIZE = 32
FAST = ("torch", 2, 0)  # backend, steps, seed
EDIT = (100, 1, False)  # t_edit, gradient steps, measure curves
RSS_GROWTH_MB = 500


# --------------------------------------------------------------------------------------------------------------------
# Values: files and editor values stand for what the two transports upload
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class File:
    path: str


@dataclass(frozen=True)
class Editor:
    background: str | None
    layers: tuple[str, ...] = ()


@dataclass
class Case:
    """One request: ``api`` with ``data``. ``field``: a named error must contain it (lower case); ``check``: a result
    must pass it. With both, either outcome is correct; with neither, the case only has to finish."""

    name: str
    api: str
    data: list
    field: str | None = None
    check: Callable[[list], bool] | None = None
    fast: bool = False


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def _for_client(value: Any) -> Any:
    if isinstance(value, File):
        return handle_file(value.path)
    if isinstance(value, Editor):
        bg = handle_file(value.background) if value.background else None
        return {"background": bg, "layers": [handle_file(p) for p in value.layers], "composite": bg, "id": None}
    return value


def _for_raw(url: str, value: Any) -> Any:
    if isinstance(value, File):
        return upload(url, value.path)
    if isinstance(value, Editor):
        bg = upload(url, value.background) if value.background else None
        return {"background": bg, "layers": [upload(url, p) for p in value.layers], "composite": bg, "id": None}
    return value


def send(url: str, client: Client, case: Case) -> tuple[str, Any]:
    """``("complete", outputs)`` or ``("error", message)``: raw HTTP when the data holds NaN or infinity."""
    if _non_finite(case.data):
        event, payload = call_raw(url, case.api, [_for_raw(url, v) for v in case.data])
        return event, payload if event == "complete" else error_text(payload)
    try:
        return "complete", client.predict(*[_for_client(v) for v in case.data], api_name=f"/{case.api}")
    except AppError as err:
        return "error", str(err)


def picture_shape(value: Any) -> tuple[int, ...]:
    path = value["path"] if isinstance(value, dict) else value
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).shape


def image_of_size(h: int, w: int, index: int = 0) -> Callable[[list], bool]:
    """A result whose picture ``index`` has the input's size."""
    return lambda out: picture_shape(out[index]) == (h, w, 3)


def status_has(index: int, words: str) -> Callable[[list], bool]:
    return lambda out: words in str(out[index])


# --------------------------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------------------------
def scene(seed: int = 10_000_001) -> np.ndarray:
    from pipeline import scenes

    return scenes.make_scene(seed, size=SIZE).image


def make_files(d: Path) -> dict[str, str]:
    """Image files of every kind (good and bad), brush layers, and non-images, written to ``d``."""
    img = scene()
    rgb = Image.fromarray(img)
    out: dict[str, str] = {}

    def save(name: str, im: Image.Image, **kw) -> None:
        out[name] = str(d / name)
        im.save(out[name], **kw)

    def raw(name: str, data: bytes) -> None:
        out[name] = str(d / name)
        Path(out[name]).write_bytes(data)

    save("rgb.png", rgb)
    save("other.png", Image.fromarray(scene(10_000_002)))
    save("cmyk.jpg", rgb.convert("CMYK"))
    save("ycbcr.jpg", rgb, quality=90)
    save("progressive.jpg", rgb, progressive=True)
    save("gray.jpg", rgb.convert("L"))
    save("palette.png", rgb.convert("P"))
    pal = rgb.convert("P")
    pal.info["transparency"] = 0
    save("palette_transparent.png", pal)
    save("bilevel.png", rgb.convert("1"))
    save("gray_alpha.png", rgb.convert("LA"))
    save("rgba.png", Image.fromarray(np.dstack([img, np.full(img.shape[:2], 100, np.uint8)]), "RGBA"))
    save("gray16.png", Image.fromarray(img[..., 1].astype(np.uint16) * 257, "I;16"))
    save("int32.tiff", Image.fromarray(img[..., 0].astype(np.int32), "I"))
    save("float.tiff", Image.fromarray(img[..., 0].astype(np.float32), "F"))
    save("float_unit.tiff", Image.fromarray(img[..., 0].astype(np.float32) / 255, "F"))
    save("lab.tiff", rgb.convert("LAB"))
    save("cmyk.tiff", rgb.convert("CMYK"))
    save("image.webp", rgb, lossless=True)
    save("image.bmp", rgb)
    frames = [rgb, Image.fromarray(scene(10_000_002))]
    out["animated.gif"] = str(d / "animated.gif")
    frames[0].save(out["animated.gif"], save_all=True, append_images=frames[1:])
    save("wide_ok.png", rgb.resize((300, 40)))
    save("tiny.png", Image.fromarray(img[:4, :4]))
    save("too_wide.png", Image.new("RGB", (5000, 20)))
    full = Path(out["rgb.png"]).read_bytes()
    raw("truncated.png", full[: len(full) // 2])
    jpg = Path(out["ycbcr.jpg"]).read_bytes()
    raw("truncated.jpg", jpg[: len(jpg) // 3])
    raw("header_only.png", full[:33])
    raw("empty.png", b"")
    raw("text.png", b"this is not an image\n" * 20)
    raw("vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><rect width="9"/></svg>')
    raw("zeros.jpg", bytes(4096))
    # a PNG header claiming 60000 x 60000 pixels (a decompression bomb), no data
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw("bomb.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b""))
    # brush layers: RGBA magenta squares, and bad ones
    for name, (top, left, size) in {"mask": (8, 8, 10), "source": (20, 20, 8)}.items():
        layer = np.zeros((SIZE, SIZE, 4), np.uint8)
        layer[top : top + size, left : left + size] = (255, 0, 255, 255)
        save(f"{name}.png", Image.fromarray(layer, "RGBA"))
    save("blank_layer.png", Image.fromarray(np.zeros((SIZE, SIZE, 4), np.uint8), "RGBA"))
    save("full_layer.png", Image.fromarray(np.full((SIZE, SIZE, 4), 255, np.uint8), "RGBA"))
    save("small_layer.png", Image.fromarray(np.full((8, 8, 4), 255, np.uint8), "RGBA"))
    gray_layer = np.zeros((SIZE, SIZE), np.uint8)
    gray_layer[8:18, 8:18] = 255
    save("gray_layer.png", Image.fromarray(gray_layer, "L"))
    save("layer16.png", Image.fromarray(gray_layer.astype(np.uint16) * 257, "I;16"))
    return out


#: Image files and what they give: None = a result of the image's size (h, w); "image" = a named error.
IMAGES: dict[str, tuple[int, int] | str | None] = {
    "rgb.png": None, "cmyk.jpg": None, "ycbcr.jpg": None, "progressive.jpg": None, "gray.jpg": None,
    "palette.png": None, "palette_transparent.png": None, "bilevel.png": None, "gray_alpha.png": None,
    "rgba.png": None, "gray16.png": None, "int32.tiff": "either", "float.tiff": "either", "float_unit.tiff": "either",
    "lab.tiff": "either", "cmyk.tiff": None, "image.webp": None, "image.bmp": None, "animated.gif": None,
    "wide_ok.png": (40, 300), "tiny.png": "image", "too_wide.png": "image", "truncated.png": "image",
    "truncated.jpg": "either", "header_only.png": "image", "empty.png": "image", "text.png": "image",
    "vector.svg": "image", "zeros.jpg": "image", "bomb.png": "image",
}
FAST_IMAGES = ("cmyk.jpg", "palette.png", "gray16.png", "truncated.png", "text.png", "tiny.png", "bomb.png")

#: Brush layers on rgb.png (editor background) and the field a named error must contain (None: a result).
MASKS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "no layer": ((), "mask"), "blank": (("blank_layer.png",), "mask"), "full": (("full_layer.png",), "mask"),
    "wrong size": (("small_layer.png",), "mask"), "not an image": (("text.png",), "image"),
    "gray layer": (("gray_layer.png",), None), "16-bit layer": (("layer16.png",), None),
    "two layers": (("mask.png", "source.png"), None),
}
FAST_MASKS = ("no layer", "full", "wrong size", "not an image")

#: Numbers and other values sent to numeric and choice fields (JSON numbers, text, null, bools, lists, objects).
BAD_VALUES: list[Any] = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 10**20, "abc", "", None, True,
                         [1], {"a": 1}, "1e999", "nan"]
FAST_VALUES: list[Any] = [float("nan"), "abc", None]
#: Values that may be valid in some fields (a named error or a result): negative, fractional, numeric text.
MAYBE_VALUES: list[Any] = [-1, 0, 1.5, "3"]

#: Points texts for /rates: a named error (``"points"``) or, for the ones that only need clamping, a result.
POINTS: dict[str, str | None] = {
    "nan,nan": "points", "1,inf": "points", "1e999,2": "points", "a,b": "points", "1,2,3": "points",
    "9" * 5000: "points", "-1e300,1e300": None, "(3 4)\n(5, 6)": None, " ; ;": None,
}


def _same(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same value (NaN is NaN; ``True`` is not ``1``)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def base_data(api: str, model: str) -> list:
    """A valid request of ``api`` (fast settings)."""
    a, b = File("rgb.png"), File("other.png")
    editor = Editor("rgb.png", ("mask.png",))
    return {
        "rates": [a, 4, "mean", 500, "", model, *FAST],
        "rates_replot": [100, "3,4"],
        "remove": [editor, "smooth", *EDIT, model, *FAST],
        "transfer": [editor, Editor("rgb.png", ("source.png",)), *EDIT, model, *FAST],
        "saliency": [editor, 2.0, *EDIT, model, *FAST],
        "blend": [b, editor, *EDIT, model, *FAST],
        "geodesic": [a, b, 3, 100, 100.0, 0.5, 3, model, *FAST, "score"],
        "lab": ["sphere", 200, 0.15, 90, 0, 7, 30, "score"],
    }[api]


#: (api, argument index, the field's name in messages, what None means: "error" or "default").
FIELDS = [
    ("rates", 1, "patch grid", "error"), ("rates", 2, "statistic", "default"),
    ("rates", 3, "rate-map timestep t", "error"), ("rates", 6, "backend", "default"), ("rates", 7, "steps", "error"),
    ("rates", 8, "seed", "default"), ("rates_replot", 0, "rate-map timestep t", "error"),
    ("remove", 1, "fill", "error"), ("remove", 2, "edit depth t_edit", "error"),
    ("remove", 3, "gradient steps per timestep", "error"), ("remove", 4, "measure curves", "error"),
    ("transfer", 2, "edit depth t_edit", "error"),
    ("blend", 3, "gradient steps per timestep", "error"), ("saliency", 1, "saliency factor", "error"),
    ("geodesic", 2, "path points", "error"), ("geodesic", 3, "noise level t*", "error"),
    ("geodesic", 4, "lambda", "error"), ("geodesic", 5, "extrapolation beyond b", "error"),
    ("geodesic", 6, "solver iterations", "error"), ("geodesic", 10, "seed", "default"),
    ("geodesic", 11, "metric", "error"),
    ("lab", 0, "manifold", "error"), ("lab", 1, "lambda", "error"), ("lab", 2, "noise level sigma", "error"),
    ("lab", 3, "angle 1", "error"), ("lab", 4, "angle 2", "error"), ("lab", 5, "points", "error"),
    ("lab", 6, "iterations", "error"), ("lab", 7, "metric", "error"),
]
#: The status (or table) output of each api, for checking a result.
STATUS = {"rates": 3, "remove": 4, "transfer": 4, "saliency": 4, "blend": 4, "geodesic": 4, "lab": 2}


def ok_result(api: str) -> Callable[[list], bool]:
    if api == "lab":
        return status_has(2, "true geodesic")
    if api == "rates_replot":
        return image_of_size(SIZE, SIZE)
    return status_has(STATUS[api], "backend:**")


def corpus(model: str, hosted: bool) -> list[Case]:
    cases: list[Case] = []
    # numbers and choices in every field
    for api, index, field, none in FIELDS:
        fast_field = api in ("rates", "geodesic", "lab", "remove")
        for value in BAD_VALUES + MAYBE_VALUES:
            data = base_data(api, model)
            data[index] = value
            maybe = value in MAYBE_VALUES and not isinstance(value, bool)
            if field == "measure curves" and isinstance(value, bool):
                maybe = True  # a checkbox's own values
            if value is None and none == "default":
                maybe = True
            if field in ("statistic", "backend", "manifold") and value in ("", None):
                maybe = maybe or value is None
            cases.append(Case(f"{api}.{field}={value!r:.30}", api, data, field, ok_result(api) if maybe else None,
                              fast=fast_field and any(_same(value, v) for v in FAST_VALUES)
                              and not (value is None and field == "backend")))  # None: auto, which may export
    # backends this mode does not offer
    for backend in ("torch-compile", "cuda-magic") if hosted else ("cuda-magic",):
        data = base_data("rates", model)
        data[6] = backend
        cases.append(Case(f"rates.backend={backend}", "rates", data, "backend", fast=True))
    # points
    for text, field in POINTS.items():
        data = base_data("rates", model)
        data[4] = text
        cases.append(Case(f"rates.points={text[:20]!r}", "rates", data, field, None if field else ok_result("rates"),
                          fast=field is not None and len(text) > 100 or text == "nan,nan"))
    # images: the rates image, a geodesic endpoint, the blend background, an editor background
    for name, expected in IMAGES.items():
        if expected == "image":
            field, check = "image", None
        elif expected == "either":
            field, check = "image", ok_result("rates")
        else:
            h, w = expected or (SIZE, SIZE)
            field, check = None, image_of_size(h, w)
        data = base_data("rates", model)
        data[0] = File(name)
        cases.append(Case(f"rates.image={name}", "rates", data, field, check, fast=name in FAST_IMAGES))
        if expected in ("image", "either"):  # bad files in other image inputs: a named error (or a result)
            for api, index, value in (("geodesic", 1, File(name)), ("blend", 0, File(name)),
                                      ("remove", 0, Editor(name, ("mask.png",)))):
                data = base_data(api, model)
                data[index] = value
                cases.append(Case(f"{api}.image={name}", api, data, "image",
                                  ok_result(api) if expected == "either" else None))
    # masks
    for label, (layers, field) in MASKS.items():
        data = base_data("remove", model)
        data[0] = Editor("rgb.png", layers)
        cases.append(Case(f"remove.mask={label}", "remove", data, field, None if field else ok_result("remove"),
                          fast=label in FAST_MASKS))
    data = base_data("remove", model)
    data[0] = Editor(None, ("mask.png",))
    cases.append(Case("remove.mask=no background", "remove", data, "image", fast=True))
    data = base_data("transfer", model)
    data[1] = Editor("rgb.png", ("small_layer.png",))
    cases.append(Case("transfer.source mask=wrong size", "transfer", data, "mask"))
    # model sources
    home = str(Path.home())
    sources: dict[Any, str | None] = {"/etc/shadow": "model", home: "model", "~": "model", "/": "model",
                                      "x" * 5000: "model", "a\x00b": "model", "../..": "model", 123: "model",
                                      "junk-weights": "model", "owner/name-that-does-not-exist": "model"}
    for source, field in sources.items():
        data = base_data("rates", model)
        data[5] = source
        cases.append(Case(f"rates.model={str(source)[:30]!r}", "rates", data, field,
                          fast=source in ("/etc/shadow", "x" * 5000, "~", "junk-weights", 123)))
    return cases


# --------------------------------------------------------------------------------------------------------------------
# Running the corpus
# --------------------------------------------------------------------------------------------------------------------
def run_corpus(url: str, pid: int, cases: list[Case], files: dict[str, str], label: str, forbidden: list[str],
               good: Case) -> None:
    """Send every case, check its outcome; then a good request, and the server's memory."""
    client = Client(url, verbose=False)

    def resolve(value: Any) -> Any:
        if isinstance(value, File):
            return File(files.get(value.path, value.path))
        if isinstance(value, Editor):
            return Editor(files.get(value.background, value.background) if value.background else None,
                          tuple(files.get(p, p) for p in value.layers))
        if value == "junk-weights":
            return files["junk-weights"]
        return value

    first = send(url, client, Case(good.name, good.api, [resolve(v) for v in good.data]))
    assert first[0] == "complete", first
    rss_before = tree_rss(pid)
    failures, named, correct = [], 0, 0
    for case in cases:
        data = [resolve(v) for v in case.data]
        event, out = send(url, client, Case(case.name, case.api, data))
        if event == "error":
            msg = str(out)
            ok = case.field is not None and case.field in msg.lower() and "internal error" not in msg.lower()
            leaks = [s for s in forbidden if s and s in msg]
            if ok and not leaks and len(msg) < 600:
                named += 1
            else:
                failures.append(f"{case.name}: error {msg[:300]!r}" + (f" (shows {leaks})" if leaks else ""))
        else:
            try:
                ok = case.check is not None and case.check(out)
            except Exception as err:  # noqa: BLE001 - a malformed result is a failure of the case
                ok = False
                out = f"{type(err).__name__}: {err}"
            if ok:
                correct += 1
            else:
                failures.append(f"{case.name}: result {str(out)[:300]!r}")
    last = send(url, client, Case(good.name, good.api, [resolve(v) for v in good.data]))
    growth_mb = (tree_rss(pid) - rss_before) / 2**20
    print(f"\nfuzz ({label}): {len(cases)} cases run, {named} errors named, {correct} results correct, "
          f"{len(failures)} failed; server RSS +{growth_mb:.0f} MB")
    assert not failures, "\n".join(failures)
    assert last[0] == "complete" and good.check(last[1]), last
    assert growth_mb < RSS_GROWTH_MB, f"server RSS grew by {growth_mb:.0f} MB over the corpus"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_pixel_dir) -> dict[str, str]:
    d = tmp_path_factory.mktemp("fuzz_files")
    out = make_files(d)
    junk = d / "junk-weights"
    shutil.copytree(tiny_pixel_dir, junk)
    for f in junk.rglob("*.safetensors"):
        f.write_bytes(b"\x00junk" * 64)
    out["junk-weights"] = str(junk)
    return out


def _check(cases: list[Case]) -> list[Case]:
    assert cases and all(c.field or c.check for c in cases)
    return cases


def test_fuzz_fast_subset_hosted(tmp_path_factory, tiny_pixel_dir, files):
    """The fast subset, in hosted mode (the stricter one)."""
    folder = tmp_path_factory.mktemp("fuzz_hosted")
    cases = _check([c for c in corpus("local model 1", hosted=True) if c.fast])
    good = Case("good", "rates", base_data("rates", "local model 1"), check=image_of_size(SIZE, SIZE))
    with serve_app(folder, tiny_pixel_dir, "--hosted") as (url, proc):
        run_corpus(url, proc.pid, cases, files, "hosted, fast subset",
                   [tiny_pixel_dir, str(Path.home()), str(folder)], good)


@pytest.mark.slow
@pytest.mark.parametrize("hosted", [True, False], ids=["hosted", "normal"])
def test_fuzz_full_corpus(tmp_path_factory, tiny_pixel_dir, files, hosted):
    """The full corpus, in hosted and in normal mode."""
    folder = tmp_path_factory.mktemp("fuzz_full")
    model = "local model 1" if hosted else tiny_pixel_dir
    cases = _check(corpus(model, hosted=hosted))
    good = Case("good", "rates", base_data("rates", model), check=image_of_size(SIZE, SIZE))
    args = ("--hosted",) if hosted else ()
    forbidden = [str(Path.home()), str(folder)] + ([tiny_pixel_dir] if hosted else [])
    with serve_app(folder, tiny_pixel_dir, *args) as (url, proc):
        run_corpus(url, proc.pid, cases, files, f"{'hosted' if hosted else 'normal'}, full corpus", forbidden, good)
