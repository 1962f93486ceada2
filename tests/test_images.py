"""Image and mask conversion (pipeline/images.py): every PIL mode, file, array and tensor route against a reference.

The reference for a picture is what it looks like: PIL's own conversion after ``ImageOps.exif_transpose``, alpha
composited on white (``Image.alpha_composite``), 16-bit grey scaled by 255 / 65535 and rounded. Each file is made
with PIL in ``tmp_path`` and read back through ``load_image`` (a path), ``to_uint8_rgb`` (a PIL image) and
``image_to_tensor``; property tests (hypothesis) draw sizes, modes and dtypes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from pipeline import images
from pipeline.errors import InputError
from pipeline.images import image_to_tensor, layers_to_mask, load_image, mask_array, to_mask, to_uint8_rgb

H, W = 20, 28  # not square: a transposed result has the wrong shape


def _rgb(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _alpha(h: int = H, w: int = W) -> np.ndarray:
    """Alpha 0 at the left, 255 at the right, steps in between: transparent, translucent and opaque pixels."""
    return np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))


def reference(im: Image.Image) -> np.ndarray:
    """What the picture looks like as uint8 RGB, by PIL's own conversions (independent of the library's code)."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.repeat(np.round(np.asarray(im).astype(np.float64) / 257).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        return np.repeat(np.round(np.asarray(im).astype(np.float64) * 255).astype(np.uint8)[..., None], 3, axis=2)
    if "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return np.asarray(Image.alpha_composite(Image.new("RGBA", im.size, "white"), rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def _composite_formula(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour over white by alpha, written out (a second, formula-based reference)."""
    a = alpha.astype(np.float64)[..., None] / 255
    return np.round(rgb.astype(np.float64) * a + 255 * (1 - a)).astype(np.uint8)


def _pictures() -> dict[str, tuple[str, callable]]:
    """name -> (file suffix, maker of the PIL image)."""
    rgb = _rgb()
    alpha = _alpha()

    def palette_transparent():
        im = Image.fromarray(rgb).quantize(16)
        im.info["transparency"] = 3  # palette entry 3 is transparent
        return im

    return {
        "RGB": (".png", lambda: Image.fromarray(rgb)),
        "CMYK": (".jpg", lambda: Image.fromarray(rgb).convert("CMYK")),
        "CMYK-tiff": (".tif", lambda: Image.fromarray(rgb).convert("CMYK")),
        "P": (".png", lambda: Image.fromarray(rgb).quantize(64)),
        "P-transparency": (".png", palette_transparent),
        "L": (".png", lambda: Image.fromarray(rgb[..., 0])),
        "1": (".png", lambda: Image.fromarray(rgb[..., 0] > 127)),
        "LA": (".png", lambda: Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")),
        "RGBA": (".png", lambda: Image.fromarray(np.dstack([rgb, alpha]), "RGBA")),
        "I;16": (".png", lambda: Image.fromarray((rgb[..., 1].astype(np.uint16) * 251 + 7), "I;16")),
        "I": (".tif", lambda: Image.fromarray(rgb[..., 2].astype(np.int32) * 250 + 100, "I")),
        "F": (".tif", lambda: Image.fromarray(rgb[..., 0].astype(np.float32) / 255, "F")),
        "YCbCr": (".jpg", lambda: Image.fromarray(rgb).convert("YCbCr")),
    }


PICTURES = _pictures()


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_every_mode_matches_the_reference_on_every_route(tmp_path, name):
    suffix, make = PICTURES[name]
    path = tmp_path / f"{name.replace(';', '_')}{suffix}"
    make().save(path)
    with Image.open(path) as im:
        im.load()
        ref = reference(im)
        pil = im.copy()
        pil.info = dict(im.info)
    assert ref.shape == (H, W, 3)
    for route, out in (("path", load_image(path)), ("to_uint8_rgb(path)", to_uint8_rgb(str(path))),
                       ("PIL image", to_uint8_rgb(pil))):
        assert out.dtype == np.uint8 and out.shape == (H, W, 3), route
        np.testing.assert_array_equal(out, ref, err_msg=f"{name} via {route}")
    t = image_to_tensor(path)
    assert t.shape == (1, 3, H, W)
    torch.testing.assert_close(t, torch.from_numpy(ref.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None],
                               rtol=0, atol=0)


def test_cmyk_is_not_read_as_rgb(tmp_path):
    """The CMY channels of a CMYK picture are not R, G, B: the converted colours are PIL's, far from the raw bytes."""
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(_rgb(3)).convert("CMYK").save(path, quality=95)
    with Image.open(path) as im:
        raw = np.asarray(im)[..., :3].astype(int)  # the C, M, Y bytes
        ref = np.asarray(im.convert("RGB")).astype(int)
    out = load_image(path).astype(int)
    assert np.abs(out - ref).max() == 0
    assert np.abs(raw - ref).max() > 200  # what reading C, M, Y as R, G, B would have given


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    rgb = _rgb(1)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented{orientation}.jpg"
    im.save(path, exif=exif, quality=95)
    with Image.open(path) as f:
        ref = np.asarray(ImageOps.exif_transpose(f).convert("RGB"))
        f.load()
        pil = f.copy()
    swapped = orientation in (5, 6, 7, 8)
    assert ref.shape == ((W, H, 3) if swapped else (H, W, 3))
    np.testing.assert_array_equal(load_image(path), ref)
    np.testing.assert_array_equal(to_uint8_rgb(pil), ref)
    assert image_to_tensor(path).shape == (1, 3, *ref.shape[:2])


def test_alpha_is_composited_on_white_for_arrays_too():
    rgb, alpha = _rgb(2), _alpha()
    rgba = np.dstack([rgb, alpha])
    out = to_uint8_rgb(rgba)
    assert np.abs(out.astype(int) - _composite_formula(rgb, alpha).astype(int)).max() <= 1
    np.testing.assert_array_equal(out[:, 0], 255)  # fully transparent column: white, not the stored colour
    np.testing.assert_array_equal(out[:, -1], rgb[:, -1])  # opaque column: the colour itself
    np.testing.assert_array_equal(out, to_uint8_rgb(Image.fromarray(rgba, "RGBA")))  # array and PIL agree
    la = np.dstack([rgb[..., 0], alpha])  # (H, W, 2): grey + alpha
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    assert np.abs(to_uint8_rgb(la).astype(int) - _composite_formula(grey, alpha).astype(int)).max() <= 1
    opaque = np.dstack([rgb, np.full((H, W), 255, np.uint8)])
    np.testing.assert_array_equal(to_uint8_rgb(opaque), rgb)


def test_sixteen_bit_is_scaled_and_rounded():
    v = np.arange(0, 65536, 97, dtype=np.uint16)[: H * W].reshape(H, -1)
    v = np.pad(v, ((0, 0), (0, W - v.shape[1])), constant_values=65535) if v.shape[1] < W else v
    out = to_uint8_rgb(v)[..., 0].astype(int)
    np.testing.assert_array_equal(out, np.round(v / 257).astype(int))
    np.testing.assert_array_equal(to_uint8_rgb(Image.fromarray(v, "I;16")), to_uint8_rgb(v))
    with pytest.raises(InputError, match=r"mode I.*\[0, 65535\]"):
        to_uint8_rgb(Image.fromarray(np.full((H, W), 70000, np.int32), "I"))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_arrays(dtype):
    rng = np.random.default_rng(5)
    x = rng.random((H, W, 3)).astype(dtype)
    np.testing.assert_array_equal(to_uint8_rgb(x), np.round(x.astype(np.float64) * 255).astype(np.uint8))
    x[3, 4, 1] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        to_uint8_rgb(x)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        to_uint8_rgb(np.full((H, W), 2.0, dtype))


def test_one_bit_and_bool():
    m = _rgb(4)[..., 0] > 127
    np.testing.assert_array_equal(to_uint8_rgb(m)[..., 1], m * 255)
    np.testing.assert_array_equal(to_uint8_rgb(Image.fromarray(m)), to_uint8_rgb(m))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_tensors_are_refused(bad):
    """A NaN tensor used to become an all-zero (black) image, and geodesics were computed on it."""
    t = torch.zeros(1, 3, 16, 16)
    t[0, 1, 2, 3] = bad
    for fn in (to_uint8_rgb, image_to_tensor, images.tensor_to_uint8):
        with pytest.raises(InputError, match="NaN or inf"):
            fn(t)
    ok = torch.linspace(-1, 1, 3 * 16 * 16).reshape(3, 16, 16)
    assert to_uint8_rgb(ok).shape == (16, 16, 3)


def test_oversized_file_fails_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("L", (images.MAX_SIDE + 1, 8)).save(path)

    def no_decoding(self, *args, **kwargs):  # the size is known from the header: no pixels are decoded
        raise AssertionError("decoded an oversized image")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(InputError, match=f"{images.MAX_SIDE + 1}x8 pixels"):
        load_image(path)


def test_unreadable_files_raise_input_error(tmp_path):
    text = tmp_path / "text.png"
    text.write_text("not an image")
    for fn in (load_image, to_uint8_rgb, to_mask, mask_array):
        with pytest.raises(InputError, match="not a readable image"):
            fn(text)
        with pytest.raises(InputError, match="not a readable image"):
            fn(tmp_path / "missing.png")


# --------------------------------------------------------------------------------------------------------------------
# Masks and editor layers
# --------------------------------------------------------------------------------------------------------------------
def _square(h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[4:12, 6:16] = True
    return m


def test_mask_modes(tmp_path):
    m = _square()
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[m] = (255, 0, 255, 255)
    rgba[~m, :3] = 200  # colour under transparent pixels must not count
    la = np.dstack([np.full((H, W), 90, np.uint8), m.astype(np.uint8) * 255])
    pal = Image.fromarray(m.astype(np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 255, 255])
    cases = {
        "RGBA": Image.fromarray(rgba, "RGBA"), "LA": Image.fromarray(la, "LA"),
        "L": Image.fromarray(m.astype(np.uint8) * 255), "1": Image.fromarray(m), "P": pal,
        "RGBA array": rgba, "LA array": la, "bool": m, "float": m.astype(np.float32),
    }
    for name, value in cases.items():
        np.testing.assert_array_equal(to_mask(value), m, err_msg=name)
        if isinstance(value, Image.Image):
            path = tmp_path / f"{name}.png"
            value.save(path)
            np.testing.assert_array_equal(to_mask(path), m, err_msg=f"{name} file")
    bad = m.astype(np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        to_mask(bad)


def test_layers_to_mask_is_the_union_of_alphas(tmp_path):
    a, b = np.zeros((H, W), bool), np.zeros((H, W), bool)
    a[2:6, 2:6], b[10:14, 20:26] = True, True
    layer_a = np.zeros((H, W, 4), np.uint8)
    layer_a[a] = (255, 0, 255, 153)
    layer_a[~a, :3] = 255  # white but transparent elsewhere
    path_b = tmp_path / "b.png"
    Image.fromarray(np.dstack([np.zeros((H, W), np.uint8), b.astype(np.uint8) * 255]), "LA").save(path_b)
    union = layers_to_mask([layer_a, None, str(path_b)], (H, W), name="image")
    np.testing.assert_array_equal(union, a | b)
    with pytest.raises(InputError, match=r"layer 1 of image is 5x5 but the image is 28x20"):
        layers_to_mask([np.zeros((5, 5, 4), np.uint8)], (H, W), name="image")
    assert not layers_to_mask([], (H, W)).any()


# --------------------------------------------------------------------------------------------------------------------
# Property tests: random sizes, modes and dtypes
# --------------------------------------------------------------------------------------------------------------------
MODES = ("RGB", "RGBA", "LA", "L", "1", "P", "CMYK", "I;16", "I", "F", "YCbCr", "PA")


@st.composite
def pil_images(draw):
    h, w = draw(st.integers(images.MIN_SIDE, 40)), draw(st.integers(images.MIN_SIDE, 40))
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    if mode == "RGBA":
        im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif mode == "LA":
        im = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    elif mode == "PA":
        im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA").convert("PA")
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16), "I;16")
    elif mode == "I":
        im = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.int32), "I")
    elif mode == "F":
        im = Image.fromarray(rng.random((h, w)).astype(np.float32), "F")
    elif mode == "1":
        im = Image.fromarray(rgb[..., 0] > 127)
    else:
        im = Image.fromarray(rgb).convert(mode)
    orientation = draw(st.sampled_from([1, 1, 3, 6, 8]))
    if orientation != 1:
        im.getexif()[0x0112] = orientation
        im.info["exif"] = im.getexif().tobytes()
    return im


# database=None: no .hypothesis/ example folder in the working tree
FAST = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _check_pil_image(im: Image.Image) -> None:
    ref = reference(im)
    out = to_uint8_rgb(im)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, ref)
    t = image_to_tensor(im)
    assert t.dtype == torch.float32 and t.shape == (1, 3, *ref.shape[:2])
    assert float(t.min()) >= -1 and float(t.max()) <= 1


@FAST
@given(pil_images())
def test_property_pil_images_match_the_reference(im):
    _check_pil_image(im)


@pytest.mark.slow
@THOROUGH
@given(pil_images())
def test_property_pil_images_match_the_reference_thoroughly(im):
    _check_pil_image(im)


@st.composite
def arrays(draw):
    h, w = draw(st.integers(images.MIN_SIDE, 32)), draw(st.integers(images.MIN_SIDE, 32))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4]))
    dtype = draw(st.sampled_from(["uint8", "uint16", "bool", "float32", "float64", "int64"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    shape = (h, w) if channels is None else (h, w, channels)
    if dtype == "bool":
        arr = rng.random(shape) > 0.5
    elif dtype.startswith("float"):
        arr = rng.random(shape).astype(dtype)
    else:
        hi = 65536 if dtype == "uint16" else 256
        arr = rng.integers(0, hi, shape).astype(dtype)
    return arr


def _array_reference(arr: np.ndarray) -> np.ndarray:
    """An independent conversion: scale to [0, 1], grey to RGB, alpha over white, round."""
    scale = {"uint16": 65535.0, "bool": 1.0, "float32": 1.0, "float64": 1.0}.get(arr.dtype.name, 255.0)
    x = arr.astype(np.float64) / scale
    x = x[..., None] if x.ndim == 2 else x
    if x.shape[2] in (1, 2):
        x = np.concatenate([np.repeat(x[..., :1], 3, axis=2), x[..., 1:]], axis=2)
    rgb = np.round(x[..., :3] * 255)
    if x.shape[2] == 4:
        a = np.round(x[..., 3:] * 255) / 255
        rgb = rgb * a + 255 * (1 - a)
    return np.round(rgb).astype(np.uint8)


def _check_array(arr: np.ndarray) -> None:
    before = arr.copy()
    out = to_uint8_rgb(arr)
    out[...] = 0  # a new, writeable array: writing to it leaves the input alone
    np.testing.assert_array_equal(arr, before)  # the input is never modified
    out = to_uint8_rgb(arr)
    assert out.dtype == np.uint8 and out.shape == (*arr.shape[:2], 3)
    assert np.abs(out.astype(int) - _array_reference(arr).astype(int)).max() <= 1


@FAST
@given(arrays())
def test_property_arrays_match_an_independent_conversion(arr):
    _check_array(arr)


@pytest.mark.slow
@THOROUGH
@given(arrays())
def test_property_arrays_match_an_independent_conversion_thoroughly(arr):
    _check_array(arr)


@FAST
@given(st.integers(1, 7), st.integers(1, 7))
def test_property_too_small_images_are_refused(h, w):
    for value in (np.zeros((h, w, 3), np.uint8), Image.new("RGB", (w, h)), torch.zeros(3, h, w)):
        with pytest.raises(InputError, match="pixels; sides must lie in"):
            to_uint8_rgb(value)


def test_an_opaque_mask_file_with_alpha_is_read_by_its_colour(tmp_path):
    """A black-and-white mask saved as RGBA with full opacity is read by its colour, not its (constant) alpha."""
    from pipeline.images import mask_array, to_mask

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[2:5, 3:6] = 255
    path = tmp_path / "mask_rgba.png"
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 255, np.uint8)]), "RGBA").save(path)
    expected = rgb.max(axis=2) > 0
    np.testing.assert_array_equal(to_mask(str(path)), expected)
    np.testing.assert_array_equal(mask_array(np.dstack([rgb, np.full((8, 8), 255, np.uint8)])) > 0, expected)
    painted = np.zeros((8, 8, 4), np.uint8)  # a painted layer: transparent except the stroke
    painted[2:5, 3:6] = (255, 0, 0, 255)
    np.testing.assert_array_equal(mask_array(painted) > 0, expected)
