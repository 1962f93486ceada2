"""The app with large photos, and what its results and progress say (issue 19), on the tiny model.

A 4000 x 3000 photo goes through the painting tabs as the page sends it: the upload puts a working copy on the canvas
and keeps the original; the edit computes on the working copy and comes back at full size with every pixel outside
the mask the original's. An API client's full-size value works too. The result's words (resolution, region, curve
loss), the progress phases and the Stop button's final state are checked here as well.
"""

from __future__ import annotations

import time

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from test_app import EDIT_FAST, FAST, Events, editor, picture

from ui import describe, edit_tab, geodesic_tab, photos, widgets
from ui.config import AppConfig
from ui.models import ModelManager, phase_name, progress_callback

BIG = (3000, 4000)  # a 12 MP phone photo, (H, W)


def photo(shape: tuple[int, int] = BIG) -> np.ndarray:
    """scikit-image's astronaut enlarged to ``shape`` (a real photograph, at a phone's size)."""
    import skimage.data

    return np.asarray(Image.fromarray(skimage.data.astronaut()).resize((shape[1], shape[0]), Image.BILINEAR))


def box_mask(shape: tuple[int, int], top: float = 0.35, left: float = 0.4, h: float = 0.2, w: float = 0.15):
    m = np.zeros(shape, bool)
    H, W = shape
    m[int(top * H) : int((top + h) * H), int(left * W) : int((left + w) * W)] = True
    return m


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ev() -> Events:
    return Events(ModelManager(AppConfig()))


@pytest.fixture(scope="module")
def big():
    return photo()


def test_working_copy_sizes_and_masks():
    assert photos.working_size((3000, 4000)) == (768, 1024)
    assert photos.working_size((300, 451)) == (300, 451)  # small images are edited as they are
    thin = np.zeros((3000, 4000), bool)
    thin[1500, 100:3900] = True  # a one-pixel stroke survives the shrink
    small = photos.shrink_mask(thin, (768, 1024))
    assert small.any() and photos.grow_mask(small, (3000, 4000))[thin].all()


def test_large_photo_upload_edit_and_full_size_composite(ev, big, tiny_pixel_dir):
    """The page's way: upload -> working copy + kept original; paint on the working copy; full-size result."""
    canvas, original, note = edit_tab.upload_event(True)(editor(big))
    assert "4000x3000" in note and "1024x768" in note
    assert canvas["brush"].default_size == 41  # the brush sized for the 1024 px working copy
    work = picture(canvas["value"]["background"])
    assert work.shape == (768, 1024, 3) and original.matches(work)
    mask = box_mask(work.shape[:2])
    small = photo((300, 400))
    small_mask = box_mask(small.shape[:2])
    t0 = time.perf_counter()
    ev.remove(editor(small, small_mask), "smooth", *EDIT_FAST, tiny_pixel_dir, *FAST)
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = ev.remove(editor(work, mask), "smooth", *EDIT_FAST, tiny_pixel_dir, *FAST, original)
    t_big = time.perf_counter() - t0
    print(f"\nremove, tiny model: 4000x3000 photo {t_big:.1f} s, 400x300 photo {t_small:.1f} s")
    assert t_big < t_small + 15, (t_big, t_small)
    result = picture(out[0])
    assert result.shape == big.shape
    full_mask = photos.grow_mask(mask, BIG)
    np.testing.assert_array_equal(result[~full_mask], big[~full_mask])  # full size, bit for bit
    assert (result[full_mask] != big[full_mask]).any()
    assert "a 1024x768 working copy of your 4000x3000 photo" in out[4]
    assert f"**Changed:** {int(full_mask.sum()):,} px" in out[4]
    # "Edit this result further": the result's working copy on the canvas, its full size kept
    value, kept, note2 = edit_tab.send_back(out[-1])
    again = picture(value["value"]["background"])
    assert again.shape == work.shape and kept.matches(again) and "4000x3000" in note2
    out2 = ev.saliency(editor(again, mask), 2.0, *EDIT_FAST, tiny_pixel_dir, *FAST, kept)
    second = picture(out2[0])
    assert second.shape == big.shape
    np.testing.assert_array_equal(second[~full_mask], result[~full_mask])


def test_large_photo_from_an_api_client_keeps_its_exact_mask(ev, big, tiny_pixel_dir):
    """A full-size editor value (no upload step): the composite keeps exactly the client's full-size mask."""
    mask = np.zeros(BIG, bool)
    yy, xx = np.ogrid[: BIG[0], : BIG[1]]
    mask[(yy - 1200) ** 2 + (xx - 2100) ** 2 < 400**2] = True  # a disk, not aligned with the working grid
    out = ev.remove(editor(big, mask), "smooth", *EDIT_FAST, tiny_pixel_dir, *FAST)
    result = picture(out[0])
    assert result.shape == big.shape
    np.testing.assert_array_equal(result[~mask], big[~mask])
    assert (result[mask] != big[mask]).any()


def test_large_photo_in_transfer_and_blend(ev, big, tiny_pixel_dir, tmp_path):
    canvas, original, _ = edit_tab.upload_event(True)(editor(big))
    work = picture(canvas["value"]["background"])
    target, source = box_mask(work.shape[:2], 0.1, 0.1, 0.2, 0.2), box_mask(work.shape[:2], 0.6, 0.6, 0.2, 0.2)
    out = ev.transfer(editor(work, target), editor(work, source), *EDIT_FAST, tiny_pixel_dir, *FAST, original)
    result = picture(out[0])
    full_target = photos.grow_mask(target, BIG)
    assert result.shape == big.shape and "same image" in out[4]
    np.testing.assert_array_equal(result[~full_target], big[~full_target])
    # blend: a full-size background file, an object painted on a small image
    bg = tmp_path / "bg.png"
    Image.fromarray(big).save(bg, compress_level=1)
    fg = photo((384, 512))[::-1].copy()
    out = ev.blend(str(bg), editor(fg, box_mask(fg.shape[:2])), *EDIT_FAST, tiny_pixel_dir, *FAST)
    blended = picture(out[0])
    assert blended.shape == big.shape
    # beyond the seam band (the tiny model's cells are 64 working pixels wide): the background, bit for bit
    np.testing.assert_array_equal(blended[:250], big[:250])
    np.testing.assert_array_equal(blended[:, :800], big[:, :800])
    assert (blended != big).any()


def test_a_stale_or_lost_original_is_not_used(big, tmp_path):
    work = photos.working_copy(big)
    kept = photos.Original.keep(big, work, tmp_path)
    other = photo((768, 1024))[::-1].copy()  # same size, another picture
    assert not kept.matches(other)
    p = photos.editor_photo(editor(other, box_mask(other.shape[:2])), kept)
    assert p.full.shape == other.shape and not p.resized
    (tmp_path / "original.npy").unlink()  # output folders expire
    p = photos.editor_photo(editor(work, box_mask(work.shape[:2])), kept)
    assert p.full.shape == work.shape


def test_the_photo_button_sends_only_the_working_copy_to_the_canvas(big, tmp_path):
    path = tmp_path / "phone.jpg"
    Image.fromarray(big).save(path, quality=90)
    canvas, original, note = edit_tab.upload_file_event(True)(str(path))
    assert picture(canvas["value"]["background"]).shape == (768, 1024, 3) and original.full_shape == BIG
    assert canvas["brush"].default_size == 41
    assert "4000x3000" in note
    with pytest.raises(gr.Error, match="not a readable image"):
        edit_tab.upload_file_event(True)(__file__)


def test_upload_errors_are_messages(tmp_path):
    huge = np.zeros((20, 5000, 3), np.uint8)
    with pytest.raises(gr.Error, match="5000x20 pixels"):
        edit_tab.upload_event(True)(editor(huge))
    small = photo((300, 400))
    canvas, original, note = edit_tab.upload_event(True)(editor(small))
    assert original is None and "400x300 image at its own size" in note
    assert "value" not in canvas and canvas["brush"].default_size == 16  # the picture stays; the brush fits it


def test_the_brush_is_sized_for_the_image():
    """The brush's default radius follows the image on the canvas (gradio's "auto" is a fixed 25 px): the same
    size on the screen for a 256 px scene, a 512 px photo and a 1024 px working copy, within the slider's 1-100."""
    assert [widgets.brush_radius(s) for s in ((256, 256), (512, 384), (768, 1024), (16, 16), (9000, 9000))] == \
        [10, 20, 41, 2, 100]
    brush = widgets.mask_brush((300, 451))
    assert brush.default_size == 18 and brush.colors == [widgets.MASK_COLOR] and brush.color_mode == "fixed"


def test_loss_words_explain_flat_rising_and_missing_losses():
    flat, show = describe.loss_words(np.zeros(6), np.repeat([3, 2, 1], 2), 2)
    assert not show and "stayed at 0" in flat and "start content" in flat
    none, show = describe.loss_words(np.zeros(0), np.zeros(0), 0)
    assert not show and "not optimised" in none
    mixed, show = describe.loss_words(np.array([1.0, 0.5, 2.0, 1.5]), np.array([9, 9, 5, 5]), 2)
    assert show and "fell within 2 of the 2 timesteps" in mixed and "timestep" in mixed
    assert "farther from" in describe.mismatch_words(0.2, 0.3)
    assert "closer to" in describe.mismatch_words(0.54, 0.05)
    assert describe.mismatch_words(None, 0.1) == ""


def test_progress_names_the_phase_with_fraction_and_time_left():
    assert phase_name("loading model").startswith("Preparing the backend")
    assert phase_name("DDIM inversion") == "Inverting the image towards noise (DDIM)"
    assert phase_name("curve matching (t=120)") == "Optimising the region's generation curves (t=120)"
    assert phase_name("measuring the result's curves") == "Measuring generation curves"
    assert phase_name("lerp: DDIM generation") == "lerp: Generating back (DDIM)"
    seen = []
    report = progress_callback(lambda frac, desc=None: seen.append((frac, desc)))
    report(0, 10, "DDIM inversion")
    time.sleep(1.1)
    report(5, 10, "curve matching (t=50)")
    assert seen[0] == ((0, 10), "Inverting the image towards noise (DDIM)")
    frac, desc = seen[1]
    assert frac == (5, 10) and "5/10" in desc and "s left" in desc and desc.startswith("Optimising")


def test_geodesic_crops_non_square_inputs_and_says_so(ev, tiny_pixel_dir, tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(photo((300, 450))).save(wide)
    sq = tmp_path / "square.png"
    Image.fromarray(photo((200, 200))).save(sq)
    out = ev.geodesic(str(wide), str(sq), 3, 100, 100.0, 0, 3, tiny_pixel_dir, *FAST)
    assert "450x300 → its central 300x300 square" in out[4] and "cropped (not squashed)" in out[4]
    assert picture(out[0]).shape[0] >= 3 * geodesic_tab.STRIP_CELL  # three rows of readable tiles
    with Image.open(out[3]) as gif:
        assert min(gif.size) >= geodesic_tab.GIF_SIDE
    assert geodesic_tab.DEFAULT_BEYOND == 0.0
    square = geodesic_tab.central_square(np.zeros((300, 450, 3), np.uint8))
    assert square.shape == (300, 300, 3)
