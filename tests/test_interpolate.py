"""Image interpolation/extrapolation on the tiny model from conftest, and the ``geodesic`` CLI in-process."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import ddim
from pipeline.errors import Cancelled, InputError
from pipeline.images import image_to_tensor, tensor_to_uint8
from pipeline.interpolate import extrapolate_images, interpolate_images, score_functions

FAST = dict(n_points=4, t_star=200, num_steps=3, max_iter=3)  # a few UNet calls per phase


def _images(size=16):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size] / size
    a = np.stack([x, y, 0.5 * np.ones_like(x)], -1)
    b = np.stack([1 - y, x, 0.3 + 0.4 * x * y], -1)
    noise = rng.uniform(-0.05, 0.05, size=(size, size, 3))
    return [(np.clip(im + noise, 0, 1) * 255).astype(np.uint8) for im in (a, b)]


@pytest.fixture(scope="module")
def pair():
    return _images()


def _round_trip(model, image, t_star, num_steps, inversion="corrected"):
    x0 = model.encode(image_to_tensor(image, model.image_size))
    xt = ddim.invert(model, x0, t_end=t_star, num_steps=num_steps, method=inversion)
    return tensor_to_uint8(model.decode(ddim.sample(model, xt, t_start=t_star, num_steps=num_steps)))


def test_interpolate_images_inverts_with_the_chosen_method(tiny_model, pair):
    res = interpolate_images(tiny_model, *pair, method="lerp", inversion="explicit", **FAST)
    for im, src in ((res.images[0], pair[0]), (res.images[-1], pair[1])):
        ref = _round_trip(tiny_model, src, 200, 3, inversion="explicit")
        assert np.abs(im.astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(InputError, match="inversion must be one of"):
        interpolate_images(tiny_model, *pair, method="lerp", inversion="implicit", **FAST)


@pytest.mark.parametrize("method", ["geodesic", "lerp", "slerp"])
def test_interpolate_images_shapes_and_endpoints(tiny_model, pair, method):
    res = interpolate_images(tiny_model, *pair, method=method, **FAST)
    size = tiny_model.image_size
    assert len(res.images) == 4 and res.n_inner == 4
    assert all(im.shape == (size, size, 3) and im.dtype == np.uint8 for im in res.images)
    assert res.path.shape == (4, 3, 16, 16) and res.x0.shape == (4, 3, 16, 16)
    # the metric I + lam s s^T dominates the identity segment by segment: metric length >= Euclidean length >= chord
    # (equal for lerp up to float32 rounding of the norms, ~1e-7 relative: slack 1e-5)
    chord = float((res.path[-1] - res.path[0]).norm())
    assert res.method == method and res.length > res.euclidean_length >= chord * (1 - 1e-5)
    score, _ = score_functions(tiny_model, 200)
    with torch.no_grad():
        s = score(res.path[[0, -1]]).flatten(1).double()  # the score at the inverted ends
    assert res.lam_relative == pytest.approx(1000.0 * float((s**2).sum(1).mean()), rel=1e-5)
    # the ends are the DDIM round trips of the inputs
    for im, src in ((res.images[0], pair[0]), (res.images[-1], pair[1])):
        ref = _round_trip(tiny_model, src, 200, 3)
        assert np.abs(im.astype(int) - ref.astype(int)).max() <= 1
    if method == "geodesic":
        assert torch.equal(res.path, res.geodesic.path) and res.energy[-1] <= res.energy[0]
        assert res.geodesic.gradient == "autograd"  # the exact gradient without a backend
    else:
        assert res.geodesic is None and len(res.energy) == 1


def test_geodesic_energy_below_lerp(tiny_model, pair):
    geo = interpolate_images(tiny_model, *pair, method="geodesic", **FAST)
    lin = interpolate_images(tiny_model, *pair, method="lerp", **FAST)
    assert geo.energy[0] == pytest.approx(lin.energy[0], rel=1e-4)  # the solver starts from the LERP path
    assert geo.energy[-1] < lin.energy[0]


def test_backend_drives_jvp_gradient(tiny_model, pair):
    from accel.base import Backend

    class Counting(Backend):  # an exported-graph stand-in: the model's eps and eps_jvp, counted, no autograd
        calls = {"eps": 0, "eps_jvp": 0}

        def _eps(self, x, tt):
            self.calls["eps"] += 1
            return self.model._eps(x, tt)

        def _eps_jvp(self, x, tt, v):
            self.calls["eps_jvp"] += 1
            return self.model._eps_jvp(x, tt, v)

    backend = Counting(tiny_model)
    res = interpolate_images(backend, *pair, **FAST)
    assert res.geodesic.gradient == "jvp" and backend.calls["eps_jvp"] == res.geodesic.evaluations.jvp_calls > 0
    assert backend.calls["eps"] >= 2 * 3  # DDIM inversion and generation went through the backend too


def test_score_functions_match_model(tiny_model):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    v = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    score, jvp = score_functions(tiny_model, 300)
    torch.testing.assert_close(score(x), tiny_model.score(x, 300))
    s, ds = jvp(x, v)
    s_ref, ds_ref = tiny_model.score_jvp(x, 300, v)
    torch.testing.assert_close(s, s_ref), torch.testing.assert_close(ds, ds_ref)


@pytest.mark.parametrize("method", ["geodesic", "lerp"])
def test_extrapolate_images(tiny_model, pair, method):
    res = extrapolate_images(tiny_model, *pair, beyond=0.5, method=method, substeps=1, **FAST)
    assert res.n_inner == 4 and len(res.images) == 4 + 2 and res.path.shape[0] == 6  # round(0.5 * 3) = 2 extra
    if method == "geodesic":
        assert torch.equal(res.path[3], res.geodesic.path[-1]) and torch.equal(res.path[4:], res.shoot.path[1:])
    else:
        # t = 1 + 0.25, 1 + 0.5 after ... 2/3, 1: steps of 1/4 against the path's 1/3
        torch.testing.assert_close(res.path[4] - res.path[3], 0.75 * (res.path[3] - res.path[2]), rtol=0, atol=1e-5)


def test_latent_model_runs(tiny_latent_model, pair):
    res = interpolate_images(tiny_latent_model, *pair, method="slerp", n_points=3, t_star=200, num_steps=2)
    assert len(res.images) == 3 and res.images[0].shape == (16, 16, 3)


def test_progress_cancel_and_bad_input(tiny_model, pair):
    seen = []
    interpolate_images(tiny_model, *pair, progress=lambda d, t, desc: seen.append(desc), **FAST)
    assert {"DDIM inversion", "geodesic", "DDIM generation"} <= set(seen)
    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled):
        interpolate_images(tiny_model, *pair, cancel=flag, **FAST)
    bad = [(dict(method="cubic"), "method"), (dict(t_star=0), "t_star"), (dict(t_star=1000), "t_star"),
           (dict(num_steps=500, t_star=200), "num_steps"), (dict(n_points=2, method="lerp"), "n_points"),
           (dict(gradient="finite-differences"), "gradient")]
    for kw, msg in bad:
        with pytest.raises(InputError, match=msg):
            interpolate_images(tiny_model, *pair, **{**FAST, **kw})
    with pytest.raises(InputError, match="beyond"):
        extrapolate_images(tiny_model, *pair, beyond=0.0, **FAST)
    with pytest.raises(InputError, match="image_b"):
        interpolate_images(tiny_model, pair[0], None, **FAST)


def test_cli_geodesic(tiny_pixel_dir, pair, tmp_path):
    from pipeline.cli import main

    pa, pb, out = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "out"
    Image.fromarray(pair[0]).save(pa)
    Image.fromarray(pair[1]).save(pb)
    rc = main(["geodesic", "--a", str(pa), "--b", str(pb), "--n", "3", "--out", str(out), "--model", tiny_pixel_dir,
               "--t-star", "200", "--steps", "2", "--max-iter", "2", "--extrapolate", "0.5", "--device", "cpu",
               "--cell", "32", "--inversion", "explicit"])
    assert rc == 0
    for name in ("strip.png", "geodesic.gif", "summary.json", "extrapolation.png"):
        assert (out / name).is_file(), name
    strip = np.asarray(Image.open(out / "strip.png"))
    assert strip.shape[0] >= 3 * 32  # three rows: geodesic, lerp, slerp
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"geodesic", "lerp", "slerp"}
    assert summary["extrapolation"]["extra_points"] == 1 and summary["inversion"] == "explicit"
    assert main(["geodesic", "--a", str(pa), "--b", str(tmp_path / "missing.png"), "--out", str(out),
                 "--model", tiny_pixel_dir]) == 2


def test_denoiser_metric_on_images(tiny_model, pair):
    from pipeline.geodesic import curve_energy

    geo = interpolate_images(tiny_model, *pair, method="geodesic", metric="denoiser", lam=100.0, **FAST)
    lin = interpolate_images(tiny_model, *pair, method="lerp", metric="denoiser", lam=100.0, **FAST)
    sigma = float(tiny_model.sigma(200)[0])
    assert geo.metric == lin.metric == "denoiser" and geo.sigma == pytest.approx(sigma)
    assert geo.energy[0] == pytest.approx(lin.energy[0], rel=1e-4) and geo.energy[-1] < lin.energy[0]
    # LERP's energy is reported in the denoiser metric: recomputed from the path
    score, _ = score_functions(tiny_model, 200)
    e = float(curve_energy(score, lin.path, lam=100.0, metric="denoiser", sigma=sigma))
    assert lin.energy[0] == pytest.approx(e, rel=1e-5)
    score_lin = interpolate_images(tiny_model, *pair, method="lerp", lam=100.0, **FAST)
    assert score_lin.energy[0] != pytest.approx(lin.energy[0], rel=1e-3)
    with pytest.raises(InputError, match="no geodesic equation"):
        extrapolate_images(tiny_model, *pair, metric="denoiser", **FAST)
    ext = extrapolate_images(tiny_model, *pair, method="lerp", metric="denoiser", **FAST)
    assert ext.metric == "denoiser"
    with pytest.raises(InputError, match="metric"):
        interpolate_images(tiny_model, *pair, metric="fisher", **FAST)


def test_cli_geodesic_metric(tiny_pixel_dir, pair, tmp_path):
    from pipeline.cli import main

    pa, pb, out = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "out"
    Image.fromarray(pair[0]).save(pa)
    Image.fromarray(pair[1]).save(pb)
    args = ["geodesic", "--a", str(pa), "--b", str(pb), "--n", "3", "--out", str(out), "--model", tiny_pixel_dir,
            "--t-star", "200", "--steps", "2", "--max-iter", "2", "--device", "cpu", "--metric", "denoiser"]
    assert main([*args, "--methods", "geodesic"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "denoiser" and summary["lam"] == 100.0
    assert main([*args, "--extrapolate", "0.5"]) == 2


def test_clip_x0_option(tiny_model, pair):
    clipped = interpolate_images(tiny_model, *pair, method="lerp", clip_x0=True, **FAST)
    assert len(clipped.images) == 4
    # the last step is sqrt(ab_0) clip(x0_hat) + sqrt(1 - ab_0) eps with 1 - ab_0 ~ 1e-4
    assert float(clipped.x0.abs().max()) <= 1.1
