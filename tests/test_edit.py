"""Editing by curve matching (pipeline.edit) on tiny models: contracts, determinism, errors, and gradients of rates."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from pipeline import Cancelled, InputError
from pipeline import edit as E
from pipeline import masks as M
from pipeline.rates import generation_rate, patch_directions

#: Small loop settings so every task runs in about a second on the tiny model.
FAST = dict(t_edit=100, num_steps=3, iterations=1, measure_curves=False)


@pytest.fixture(scope="module")
def scene():
    """A 20x24 (H, W) test image (not the model's size, not square) with a rectangular mask and a source region."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:20, 0:24]
    img = np.stack([xx * 10, yy * 12, 128 + 0 * xx], axis=-1).astype(np.uint8)
    img[6:13, 8:15] = rng.integers(0, 255, (7, 7, 3), dtype=np.uint8)  # the "object"
    mask = np.zeros((20, 24), bool)
    mask[6:13, 8:15] = True
    src = np.zeros((20, 24), bool)
    src[1:5, 1:6] = True
    return img, mask, src


def _outside_unchanged(result, image):
    assert result.image.dtype == np.uint8 and result.image.shape == image.shape
    assert np.array_equal(result.image[~result.changed], image[~result.changed])


def _run_task(task: str, model, scene, **kw):
    img, mask, src = scene
    kw = {**FAST, **kw}
    if task == "remove":
        return E.remove_object(model, img, mask, **kw)
    if task == "transfer":
        return E.transfer(model, img, mask, src, **kw)
    if task == "saliency":
        return E.adjust_saliency(model, img, mask, 2.0, t_b=20, **kw)
    return E.blend(model, img, img[::-1].copy(), mask, **kw)


TASKS = ("remove", "transfer", "saliency", "blend")


# ---- contracts -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_task_shapes_and_outside_unchanged(tiny_model, scene, task):
    img, mask, _ = scene
    r = _run_task(task, tiny_model, scene)
    _outside_unchanged(r, img)
    if task != "blend":
        assert np.array_equal(r.changed, mask)
    else:  # blend edits the mask plus a seam band around it
        assert r.changed[mask].all() and r.changed.sum() > mask.sum()
    S, K = FAST["num_steps"], r.patches.size
    assert K > 0 and r.reference.shape == (S, K) and r.weights.shape == (S, K)
    assert r.timesteps.tolist() == sorted(r.timesteps.tolist()) and r.timesteps[-1] == FAST["t_edit"]
    assert r.loss_history.shape == r.loss_steps.shape and r.loss_history.size > 0
    # the stages are laps of one clock: the total covers them (a total that timed one stage would fail)
    assert sum(r.timing.values()) <= r.seconds + 1e-9 and {"invert", "generate", "decode"} <= set(r.timing)
    assert r.config["num_steps"] == S and r.task in ("remove", "transfer", "saliency", "blend")


def test_curves_measured_before_and_after(tiny_model, scene):
    img, mask, _ = scene
    r = E.remove_object(tiny_model, img, mask, **{**FAST, "measure_curves": True})
    S, K = FAST["num_steps"], r.patches.size
    assert r.curves_before.shape == (S, K) and r.curves_after.shape == (S, K)
    assert np.isfinite(r.curves_before).all() and (r.curves_after > 0).all()
    assert r.mean_curve("before").shape == (S,)
    # the reported errors are the weighted RMS log-mismatch of the returned curves against the reference
    w, ref = r.weights.astype(np.float64), r.reference.astype(np.float64)
    for which, c in (("before", r.curves_before), ("after", r.curves_after)):
        rms = float(np.sqrt((w * np.log(c.astype(np.float64) / ref) ** 2).sum() / w.sum()))
        assert r.diagnostics[f"curve_error_{which}"] == pytest.approx(rms, rel=1e-4)


def test_transfer_from_reference_image_of_other_size(tiny_model, scene):
    img, mask, _ = scene
    ref = np.full((30, 30, 3), 200, np.uint8)
    ref[10:20, 10:20] = (255, 0, 0)
    src = np.zeros((30, 30), bool)
    src[10:20, 10:20] = True
    r = E.transfer(tiny_model, img, mask, src, reference=ref, **FAST)
    _outside_unchanged(r, img)
    assert r.diagnostics["reference_image"]


def test_blend_foreground_of_other_size(tiny_model, scene):
    img, _, _ = scene
    fg = np.zeros((40, 48, 3), np.uint8)
    fg[10:30, 10:30] = (0, 255, 0)
    m = np.zeros((40, 48), bool)
    m[10:30, 10:30] = True
    r = E.blend(tiny_model, img, fg, m, **FAST)
    _outside_unchanged(r, img)


def test_blend_guide_curves_are_the_reference(tiny_model, scene):
    """With a guide every edited patch follows the guide's own curves: the paste as its own guide gives the paste's
    measured curves (its inversion is the loop's start) on every active entry; a guide of another size is refused."""
    img, mask, _ = scene
    fg = np.full_like(img, 200)
    pasted = E.soft_paste(img, fg, mask, E.BlendConfig().alpha_blur)  # the loop's start
    measured = {**FAST, "measure_curves": True}
    r = E.blend(tiny_model, img, fg, mask, guide=pasted, **measured)
    _outside_unchanged(r, img)
    on = r.weights > 0
    assert on.any()
    np.testing.assert_allclose(r.reference[on], r.curves_before[on], rtol=1e-5)
    plain = E.blend(tiny_model, img, fg, mask, **measured)
    assert not np.allclose(plain.reference[on], plain.curves_before[on], rtol=1e-3)  # fg's and bg's differ
    with pytest.raises(InputError, match="guide must have the background's size"):
        E.blend(tiny_model, img, fg, mask, guide=img[:-2], **FAST)


def test_pil_input_and_uint8_mask(tiny_model, scene):
    from PIL import Image

    img, mask, _ = scene
    r = E.remove_object(tiny_model, Image.fromarray(img), mask.astype(np.uint8) * 255, **FAST)
    _outside_unchanged(r, img)


def test_latent_model_removal(tiny_latent_model):
    img = np.full((16, 16, 3), 90, np.uint8)
    img[4:10, 5:11] = (250, 20, 20)
    mask = np.zeros((16, 16), bool)
    mask[4:10, 5:11] = True
    r = E.remove_object(tiny_latent_model, img, mask, patch_size=2, **FAST)
    _outside_unchanged(r, img)


# ---- determinism, progress, cancel -----------------------------------------------------------------------------------
def test_deterministic_by_seed(tiny_model, scene):
    a = _run_task("remove", tiny_model, scene, seed=3, init_noise=1.0)
    b = _run_task("remove", tiny_model, scene, seed=3, init_noise=1.0)
    c = _run_task("remove", tiny_model, scene, seed=4, init_noise=1.0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.loss_history, b.loss_history)
    assert not np.array_equal(a.image, c.image)  # fresh noise in the mask comes from the seed


def test_removal_samples_return_the_mean_of_the_seeded_fills(tiny_model, scene):
    kw = dict(seed=3, init_noise=1.0, iterations=2, tolerance=0.0)
    fills = [_run_task("remove", tiny_model, scene, **{**kw, "seed": 3 + j}) for j in range(3)]
    calls = []
    r = _run_task("remove", tiny_model, scene, samples=3, progress=lambda d, n, desc: calls.append((d, n)), **kw)
    mean = np.mean([f.image.astype(np.float64) for f in fills], axis=0)
    # the mean is taken in model space; each fill here was clamped, resized and rounded to uint8 on its own
    err = np.abs(r.image - mean)
    assert err.max() <= 2.0 and err.mean() <= 0.5
    assert not np.array_equal(fills[0].image, fills[1].image)  # the fills differ: the mean is not one of them
    assert r.diagnostics["samples"] == 3 and r.loss_history.size == sum(f.loss_history.size for f in fills)
    assert r.diagnostics["rate_evaluations_with_grad"] == sum(f.diagnostics["rate_evaluations_with_grad"]
                                                              for f in fills)
    _outside_unchanged(r, scene[0])
    done = [c[0] for c in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1]


@pytest.mark.parametrize("bad", [dict(samples=2), dict(samples=0, init_noise=1.0), dict(samples=2.5, init_noise=1.0)])
def test_removal_samples_need_fresh_noise_and_a_count(tiny_model, scene, bad):
    with pytest.raises(InputError, match="samples"):
        _run_task("remove", tiny_model, scene, **bad)


def test_generative_removal_settings_are_valid_remove_overrides(tiny_model, scene):
    cfg = E.with_overrides(None, E.GENERATIVE_REMOVAL, E.RemoveConfig)
    assert cfg.samples > 1 and cfg.init_noise > 0
    r = _run_task("remove", tiny_model, scene, **{**E.GENERATIVE_REMOVAL, "samples": 2, "t_edit": 100, "num_steps": 3})
    _outside_unchanged(r, scene[0])


@pytest.mark.parametrize("task", TASKS)
def test_progress_reports_monotone_to_total(tiny_model, scene, task):
    calls = []
    _run_task(task, tiny_model, scene, progress=lambda d, n, desc: calls.append((d, n, desc)), measure_curves=True)
    done = [c[0] for c in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] and all(isinstance(c[2], str) for c in calls)


@pytest.mark.parametrize("after", [0, 4])
def test_cancel_raises(tiny_model, scene, after):
    img, mask, _ = scene
    n = {"calls": 0}

    def cancel() -> bool:
        n["calls"] += 1
        return n["calls"] > after

    with pytest.raises(Cancelled):
        E.remove_object(tiny_model, img, mask, cancel=cancel, **FAST)
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        E.adjust_saliency(tiny_model, img, mask, 0.5, cancel=ev, **FAST)


# ---- input errors ----------------------------------------------------------------------------------------------------
def test_bad_masks_and_images_rejected(tiny_model, scene):
    img, mask, src = scene
    with pytest.raises(InputError, match="empty"):
        E.remove_object(tiny_model, img, np.zeros_like(mask), **FAST)
    with pytest.raises(InputError, match="whole image"):
        E.remove_object(tiny_model, img, np.ones_like(mask), **FAST)
    with pytest.raises(InputError, match="sizes must match"):
        E.remove_object(tiny_model, img, mask[:-2], **FAST)
    with pytest.raises(InputError, match="looks like a mask"):
        E.remove_object(tiny_model, mask, mask, **FAST)  # a 2-D bool array passed as the image
    with pytest.raises(InputError, match="looks like a mask"):
        E.blend(tiny_model, img, mask.astype(np.uint8), mask, **FAST)
    with pytest.raises(InputError, match="looks like an RGB image"):
        E.remove_object(tiny_model, img, img, **FAST)  # an image passed as the mask
    with pytest.raises(InputError, match="source_mask"):
        E.transfer(tiny_model, img, mask, src[:5], **FAST)
    with pytest.raises(InputError, match="factor"):
        E.adjust_saliency(tiny_model, img, mask, -1.0, **FAST)
    with pytest.raises(InputError):
        E.remove_object(tiny_model, None, mask, **FAST)


def test_config_overrides_validated(tiny_model, scene):
    img, mask, _ = scene
    with pytest.raises(InputError, match="unknown RemoveConfig option.*'stepz'"):
        E.remove_object(tiny_model, img, mask, stepz=3)
    with pytest.raises(InputError, match="num_steps"):
        E.remove_object(tiny_model, img, mask, num_steps=0)
    with pytest.raises(InputError, match="grad_mode"):
        E.remove_object(tiny_model, img, mask, grad_mode="magic")
    with pytest.raises(InputError, match="inversion"):
        E.remove_object(tiny_model, img, mask, inversion="implicit")
    with pytest.raises(InputError, match="patch_size 5 does not divide"):
        E.remove_object(tiny_model, img, mask, patch_size=5, **FAST)
    with pytest.raises(InputError, match="window"):
        E.remove_object(tiny_model, img, mask, window=(50, 10))
    with pytest.raises(InputError, match="must be a RemoveConfig"):
        E.remove_object(tiny_model, img, mask, config=E.BlendConfig())
    cfg = E.with_overrides(E.RemoveConfig(), {"num_steps": 7, "window": [10, 90]}, E.RemoveConfig)
    assert cfg.num_steps == 7 and cfg.window == (10, 90)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_steps = 3


def test_config_defaults_are_valid():
    for cls in (E.RemoveConfig, E.TransferConfig, E.SaliencyConfig, E.BlendConfig):
        E.check_config(cls())


# ---- the loop's optimisation -----------------------------------------------------------------------------------------
def test_curve_loss_decreases(tiny_model):
    """One active step, many iterations: the curve loss towards a reference 1.5x the current rates decreases."""
    from pipeline.ddim import invert

    torch.manual_seed(0)
    x0 = torch.rand(1, 3, 16, 16) * 2 - 1
    traj = invert(tiny_model, x0, t_end=200, num_steps=2, return_trajectory=True)
    idx = torch.tensor([5, 6, 9, 10])
    v = patch_directions((3, 16, 16), 4, indices=idx)
    with torch.no_grad():
        r0 = E.rates(tiny_model, traj.states[-1], 200, v)
    region = torch.zeros(16, 16)
    region[4:12, 4:12] = 1
    ref = (1.5 * r0)[None].expand(3, -1)
    weights = torch.zeros(3, 4)
    weights[2] = 1  # only the first generation step (t = 200) is active
    plan = E.MatchPlan(start=traj, outside=traj, edit=region, directions=v, reference=ref, weights=weights)
    cfg = E.EditConfig(t_edit=200, num_steps=2, iterations=12, lr=0.05, grad_mode="double")
    out = E.match_curves(tiny_model, plan, cfg)
    assert out.loss.shape == (12,) and (out.loss_steps == 200).all()
    assert out.loss[-1] < 0.5 * out.loss[0]
    assert out.rate_evals == 12 * 4


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_saliency_reference_scales_the_context_fluctuation(tiny_model, scene, factor):
    """The reference's log-fluctuation about the context-normalised mean is ``factor`` times the input's.

    The sign bug this catches: the old baseline (the context curve itself, fluctuation="contrast") also scaled the
    region's mean offset from the context, which for a region less active than its context shrinks the fluctuation
    of c / g for factor > 1. Here the curve's mean offset must be kept: the reference changes only the fluctuation.
    """
    img, mask, _ = scene
    r = E.adjust_saliency(tiny_model, img, mask, factor, t_b=20, **{**FAST, "num_steps": 5, "iterations": 0,
                                                                   "measure_curves": True})
    d = r.diagnostics
    assert d["log_fluctuation_before"] > 0
    assert d["log_fluctuation_reference"] == pytest.approx(factor * d["log_fluctuation_before"], rel=1e-4)
    late = r.weights[:, 0] > 0
    log_c, log_ref = np.log(r.curves_before[late]), np.log(r.reference[late])  # (S', K)
    np.testing.assert_allclose(log_ref.mean(0), log_c.mean(0), atol=1e-5)  # mean level kept (the context cancels)


def test_saliency_factor_one_leaves_the_image(tiny_model, scene):
    """With the identity reference (factor 1) the relative loop has nothing to do: it returns what the loop without
    the curve loss returns (the input at the model's resolution, pasted back)."""
    img, mask, _ = scene
    r = E.adjust_saliency(tiny_model, img, mask, 1.0, t_b=20, **{**FAST, "iterations": 2})
    plain = E.adjust_saliency(tiny_model, img, mask, 1.0, t_b=20, **{**FAST, "curve_weight": 0.0})
    assert r.loss_history.size > 0 and float(np.abs(r.loss_history).max()) < 1e-8
    assert np.abs(r.image.astype(int) - plain.image.astype(int)).max() <= 1


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_saliency_loop_moves_toward_the_reference(tiny_model, scene, factor):
    """At one active step (t = t_edit) with several iterations, the curve loss toward the saliency reference falls."""
    img, mask, _ = scene
    r = E.adjust_saliency(tiny_model, img, mask, factor, t_b=20, grad_blur=0.0,
                          **{**FAST, "iterations": 8, "window": (100, 100), "lr": 0.05})
    assert r.loss_history.shape == (8,) and (r.loss_steps == 100).all()
    assert r.loss_history[0] > 1e-6 and r.loss_history[-1] < 0.5 * r.loss_history[0]


def test_ablation_runs_no_gradient_steps(tiny_model, scene):
    r = _run_task("remove", tiny_model, scene, curve_weight=0.0)
    assert r.loss_history.size == 0 and r.diagnostics["gradient_iterations"] == 0


# ---- rates and their gradients ---------------------------------------------------------------------------------------
def test_rates_modes_agree_with_generation_rate(tiny_model):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 16, 16)
    v = patch_directions((3, 16, 16), 4, indices=[0, 5, 15])
    ref = generation_rate(tiny_model, x.repeat(3, 1, 1, 1), 300, v)
    for mode, tol in (("forward", 1e-5), ("double", 1e-5), ("fd", 2e-3)):
        with torch.no_grad():
            r = E.rates(tiny_model, x, 300, v, grad_mode=mode)
        torch.testing.assert_close(r, ref, rtol=tol, atol=1e-7)


@pytest.mark.parametrize("mode", ["forward", "double"])
def test_rate_gradient_matches_central_differences(tiny_model64, mode):
    """d/dx sum_p log r_t(x, e_p) along a random u, against a central difference in float64."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 16, 16, generator=gen, dtype=torch.float64)
    u = torch.randn(1, 3, 16, 16, generator=gen, dtype=torch.float64)
    v = patch_directions((3, 16, 16), 4, indices=[3, 6, 12], dtype=torch.float64)

    def f(z):
        return torch.log(E.rates(tiny_model64, z, 400, v, grad_mode=mode)).sum()

    xv = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xv), xv)
    eps = 1e-5
    with torch.no_grad():
        fd = (f(x + eps * u) - f(x - eps * u)) / (2 * eps)
    torch.testing.assert_close((g * u).sum(), fd, rtol=1e-6, atol=1e-9)


# ---- helpers ---------------------------------------------------------------------------------------------------------
def test_harmonic_fill_reproduces_a_linear_ramp():
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    x = torch.stack([0.05 * xx - 0.4, 0.03 * yy, 0.02 * (xx + yy) - 0.3])[None]  # harmonic: linear
    hole = torch.zeros(16, 16)
    hole[5:11, 4:12] = 1
    filled = E.harmonic_fill(x.masked_fill(hole.bool(), 0.7), hole, iterations=2000)
    torch.testing.assert_close(filled, x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("reference", E.REMOVE_REFERENCES)
def test_remove_references_and_absolute_loop(tiny_model, scene, reference):
    img, mask, _ = scene
    for relative in (True, False):
        r = E.remove_object(tiny_model, img, mask, reference=reference, relative=relative, window=(0, 100),
                            tolerance=0.0, **FAST)
        _outside_unchanged(r, img)
        assert np.isfinite(r.reference).all() and (r.reference[r.weights > 0] > 0).all()
        assert r.loss_history.size > 0


def test_remove_guide_curves_are_the_reference(tiny_model, scene):
    """With a guide the hole's patches follow the guide's own curves: the input as its own guide (``init="invert"``)
    gives the input's measured curves as the reference on every active entry; a guide of another size is refused."""
    img, mask, _ = scene
    measured = {**FAST, "measure_curves": True}
    r = E.remove_object(tiny_model, img, mask, guide=img, init="invert", window=(0, 100), **measured)
    _outside_unchanged(r, img)
    on = r.weights > 0
    assert on.any()
    np.testing.assert_allclose(r.reference[on], r.curves_before[on], rtol=1e-5)
    plain = E.remove_object(tiny_model, img, mask, init="invert", window=(0, 100), **measured)
    assert not np.allclose(plain.reference[on], plain.curves_before[on], rtol=1e-3)  # the ring's differs
    with pytest.raises(InputError, match="guide must have the image's size"):
        E.remove_object(tiny_model, img, mask, guide=img[:-2], **FAST)


def test_keep_mean_updates_leave_the_region_mean_alone(tiny_model, scene):
    """without_mean removes exactly the component along the mask (per channel), and an edit with keep_mean runs."""
    from pipeline.edit.loop import without_mean

    gen = torch.Generator().manual_seed(0)
    d = torch.randn(1, 3, 8, 8, generator=gen, dtype=torch.float64)
    m = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    m[..., 2:6, 1:5] = 1.0
    m[..., 2:6, 5] = 0.5  # a feathered edge
    out = without_mean(d, m)
    torch.testing.assert_close((out * m).sum((-2, -1)), torch.zeros(1, 3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(without_mean(out, m), out)  # a projection
    torch.testing.assert_close(out[..., :, 7], d[..., :, 7])  # untouched off the mask
    img, tgt, src = scene
    r = E.transfer(tiny_model, img, tgt, src, keep_mean=True, **FAST)
    _outside_unchanged(r, img)
    assert r.config["keep_mean"] is True
    with pytest.raises(InputError, match="keep_mean"):
        E.transfer(tiny_model, img, tgt, src, keep_mean="yes", **FAST)


def test_harmonic_patch_fill_reproduces_a_linear_map():
    """Interior unknown patches of a linear per-patch map are recovered exactly (a linear map is harmonic)."""
    n = 8
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    f = (2.0 * xx + 3.0 * yy - 1.0).double().flatten()  # (n*n,)
    idx = torch.tensor([18, 19, 26, 27, 28])  # a blob away from the border
    nb = E.patch_neighbours(idx, n)
    assert nb.tolist() == [10, 11, 17, 20, 25, 29, 34, 35, 36]
    out = E.harmonic_patch_fill(torch.stack([f[nb], 2 * f[nb]]), nb, idx, n, iterations=500)  # (2, K)
    torch.testing.assert_close(out, torch.stack([f[idx], 2 * f[idx]]), atol=1e-8, rtol=0)


def test_curve_loss_dead_zone():
    r, ref, w = torch.tensor([1.0, 2.0, 0.5, 1.1]), torch.ones(4), torch.tensor([1.0, 1.0, 2.0, 1.0])
    d = torch.log(r)
    expected = lambda tol: (w * (d.abs() - tol).clamp_min(0) ** 2).sum() / w.sum()  # noqa: E731
    torch.testing.assert_close(E.curve_loss(r, ref, w), expected(0.0))
    torch.testing.assert_close(E.curve_loss(r, ref, w, 0.5), expected(0.5))
    assert float(E.curve_loss(r, ref, w, 1.0)) == 0.0  # every mismatch inside the dead zone


def test_mask_ops():
    m = torch.zeros(12, 12)
    m[4:8, 4:8] = 1
    f = M.feather(m, 2.0)
    assert (f[m > 0] == 1).all() and f[0, 0] < 1e-3 and 0.1 < f[3, 5] < 1
    assert M.ring(m, 1).sum() == 36 - 16 and (M.ring(m, 1) * m).sum() == 0
    assert M.seam(m, 1).sum() == 36 - 4
    assert torch.equal(M.erode(M.dilate(m, 1), 1), m)
    assert M.bbox(m) == (4, 4, 8, 8)
    mk = np.zeros((32, 32), bool)
    mk[0, 0] = True
    assert M.support(mk, (8, 8))[0, 0] == 1 and M.support(mk, (8, 8)).sum() == 1


def test_region_patches_and_correspondence():
    dst = torch.zeros(16, 16)
    dst[8:16, 0:8] = 1
    src = torch.zeros(16, 16)
    src[0:8, 8:16] = 1
    di = E.region_patches(dst, 4, min_cover=0.25)
    si = E.region_patches(src, 4, min_cover=0.25)
    assert di.tolist() == [8, 9, 12, 13] and si.tolist() == [2, 3, 6, 7]
    assert si[E.corresponding_patches(di, si, dst, src, 4)].tolist() == [2, 3, 6, 7]  # same relative position


def test_exact_loop_without_loss_returns_the_start(tiny_model):
    """With the round-trip correction and no curve loss, removal with init='invert' gives back the input exactly."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)  # the model's size: no resizing
    mask = np.zeros((16, 16), bool)
    mask[4:9, 5:12] = True
    r = E.remove_object(tiny_model, img, mask, init="invert", curve_weight=0.0, **FAST)
    assert np.array_equal(r.image, img)
    r = E.remove_object(tiny_model, img, mask, init="invert", curve_weight=0.0, exact=False, **FAST)
    assert not np.array_equal(r.image, img)  # the plain DDIM round trip is not exact


def test_default_patch_size_keeps_the_tuned_grid():
    """Patches default to an 8 x 8 grid of model space, never under 4 cells: the tuned 4 on the 32x32 default model,
    8 on SD 1.5's 64x64 latents, 32 on a 256-pixel DDPM (as many directions as on the default model)."""
    from types import SimpleNamespace

    sizes = {16: 4, 32: 4, 64: 8, 256: 32, 4: 4, 2: 2, 72: 9}
    assert {s: E.default_patch_size(SimpleNamespace(sample_size=s)) for s in sizes} == sizes


def test_the_default_patch_size_is_recorded(tiny_model):
    from pipeline import scenes

    img = scenes.make_scene(10_000_001, size=tiny_model.image_size).image
    mask = np.zeros(img.shape[:2], bool)
    mask[4:10, 4:10] = True
    r = E.remove_object(tiny_model, img, mask, **FAST)
    assert r.config["patch_size"] == E.default_patch_size(tiny_model) == 4
    with pytest.raises(InputError, match="for_model"):
        E.check_for_model(E.RemoveConfig(), tiny_model)


def test_shift_fill_continues_periodic_stripes_and_falls_back_to_harmonic():
    """The shift fill copies the hole from one period away in diagonal stripes (exact), in model space; with no
    qualifying shift (a hole over nearly everything) it is the harmonic fill; ``init="shift"`` is accepted."""
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    phase = (xx + 2 * yy) % 5
    x = torch.stack([phase / 5 - 0.5, 0.2 - phase / 10, 0.1 * phase - 0.3])[None]
    hole = torch.zeros(24, 24)
    hole[9:15, 8:14] = 1
    s = E.best_shift(x[0].permute(1, 2, 0).numpy(), hole.numpy() > 0)
    assert s is not None and (s[1] + 2 * s[0]) % 5 == 0  # a whole number of periods
    filled = E.shift_fill(x.masked_fill(hole.bool(), 0.9), hole)
    torch.testing.assert_close(filled, x)
    big = torch.ones(24, 24)
    big[0, :2] = 0
    torch.testing.assert_close(E.shift_fill(x, big), E.harmonic_fill(x, big))
    assert "shift" in E.REMOVE_INITS


def test_remove_init_shift_ablation_returns_the_exemplar_fill(tiny_model):
    """``init="shift"`` with the curve loss off returns its start content: the hole copied from one period away, so a
    hole in stripes at the model's own size comes back as the stripes (up to the uint8 round trip)."""
    s = tiny_model.image_size
    yy, xx = np.mgrid[0:s, 0:s]
    phase = (xx + 2 * yy) % 5
    truth = np.stack([phase * 50, 200 - phase * 40, 60 + 0 * phase], -1).astype(np.uint8)
    mask = np.zeros((s, s), bool)
    mask[s // 3 : s // 3 + 4, s // 3 : s // 3 + 4] = True
    img = truth.copy()
    img[mask] = (255, 0, 255)
    r = E.remove_object(tiny_model, img, mask, init="shift", curve_weight=0.0, **FAST)
    _outside_unchanged(r, img)
    assert np.abs(r.image.astype(int) - truth.astype(int)).max() <= 1


def test_soft_paste_blurs_the_alpha_and_blend_ablation_returns_it(tiny_model, scene):
    """soft_paste: a hard paste at blur 0, a mix of the two images only near the mask's edge otherwise; blend without
    the curve loss returns its start, the soft paste, inside its edit region."""
    img, mask, _ = scene
    fg = np.full_like(img, 200)
    hard = E.soft_paste(img, fg, mask, 0.0)
    assert np.array_equal(hard, np.where(mask[..., None], fg, img))
    soft = E.soft_paste(img, fg, mask, 0.5)
    differs = np.any(soft != hard, axis=-1)
    assert differs.any()
    import cv2

    edge = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~cv2.erode(
        mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert not differs[~edge].any()  # only within 2 pixels of the edge
    rng = np.random.default_rng(2)
    bg16 = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)  # the model's size: no resizing
    m16 = np.zeros((16, 16), bool)
    m16[5:11, 4:10] = True
    r = E.blend(tiny_model, bg16, np.full_like(bg16, 200), m16, curve_weight=0.0, **FAST)
    _outside_unchanged(r, bg16)
    expected = np.where(r.changed[..., None], E.soft_paste(bg16, np.full_like(bg16, 200), m16, 0.5), bg16)
    assert np.array_equal(r.image, expected)
