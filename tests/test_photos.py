"""The image-size policy on real photographs (scikit-image's astronaut 512x512, coffee 400x600, chelsea 300x451).

The model works at its own resolution R (``model.image_size``): the whole photo is resized to R x R (Lanczos down,
bicubic up), so every pixel is seen and any aspect is accepted; an edit is resized back to the photo's size and
pasted inside the mask only, so the pixels outside the mask are the photo's, bit for bit, at full resolution; a
saliency map is upsampled to the photo's size. Checked on the embedded default model (pixel, 32 x 32) and on the
small variant of the Stable Diffusion 1.5 layout (latent: a VAE around a cross-attention U-Net).
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from benchmarks.reference import SMALL_DIVISOR, build_reference, small_sample_size
from pipeline import load_model
from pipeline.edit import remove_object
from pipeline.rates import generation_curves

PHOTOS = ("astronaut", "coffee", "chelsea")
#: Fast editing settings: the policy is about sizes and pixels, not about the edit's quality.
FAST_EDIT = dict(t_edit=100, num_steps=2, iterations=1, measure_curves=False)


def photo(name: str) -> np.ndarray:
    """A photograph that ships with scikit-image, uint8 (H, W, 3)."""
    return getattr(skimage.data, name)()


def centre_mask(shape: tuple[int, int]) -> np.ndarray:
    """A rectangle over the middle third of a photo (not aligned with the model's grid)."""
    h, w = shape
    m = np.zeros((h, w), bool)
    m[h // 3 : 2 * h // 3 + 1, w // 3 + 1 : 2 * w // 3] = True
    return m


@pytest.fixture(scope="module")
def default_model():
    return load_model("default", device="cpu")


@pytest.fixture(scope="module")
def latent_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd15_small") / "model"
    build_reference("sd15", folder, seed=0, divisor=SMALL_DIVISOR, sample_size=small_sample_size("sd15"))
    return load_model(folder, device="cpu")


@pytest.mark.parametrize("name", PHOTOS)
def test_removal_on_a_photo_keeps_its_size_and_every_pixel_outside_the_mask(default_model, name):
    img = photo(name)
    mask = centre_mask(img.shape[:2])
    res = remove_object(default_model, img, mask, **FAST_EDIT)
    assert res.image.shape == img.shape and res.image.dtype == np.uint8
    np.testing.assert_array_equal(res.image[~mask], img[~mask])  # full resolution, bit for bit
    assert (res.image[mask] != img[mask]).any()
    assert res.diagnostics["model_image_size"] == default_model.image_size == 32
    assert res.diagnostics["resized"] is True


@pytest.mark.parametrize("name", PHOTOS)
def test_saliency_of_a_photo_comes_back_at_its_size(default_model, name):
    img = photo(name)
    res = generation_curves(default_model, img, num_timesteps=2, patch_size=8)
    assert tuple(res.saliency.shape) == img.shape[:2]
    assert bool(np.isfinite(res.saliency.numpy()).all())
    assert res.curves.shape == (2, 4, 4)  # the model's 32 x 32 grid of 8-pixel patches, whatever the photo's aspect


def test_a_latent_model_edits_a_photo_at_its_own_resolution(latent_model):
    img = photo("coffee")
    mask = centre_mask(img.shape[:2])
    assert latent_model.kind == "latent" and latent_model.image_size == 8 * latent_model.sample_size
    res = remove_object(latent_model, img, mask, patch_size=2, **FAST_EDIT)
    assert res.image.shape == img.shape
    np.testing.assert_array_equal(res.image[~mask], img[~mask])
    assert res.diagnostics["model_image_size"] == latent_model.image_size
    sal = generation_curves(latent_model, img, num_timesteps=2, patch_size=2)
    assert tuple(sal.saliency.shape) == img.shape[:2] and sal.pixels_per_patch == 16
