"""The model wrapper: loading (folders, default, hub), dtypes, h-space, JVPs against autograd, score, input checks.

JVPs are checked against ``torch.autograd.functional.jvp`` in float64 (rtol 1e-9); h against a forward hook on
``unet.mid_block`` (exact up to float32 rounding of identical operations: atol 0). Half precision: bfloat16 on the CPU
(float16 is refused there), both on CUDA; bfloat16 results are compared with float64 under measured bars.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

import pipeline.model as model_mod
from pipeline import DiffusionModel, InputError, ModelLoadError, load_model


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(scope="module")
def latent64(tiny_latent_dir):
    return load_model(tiny_latent_dir, device="cpu", dtype="float64")


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------
def test_load_pixel_pipeline_folder(tiny_model):
    m = tiny_model
    assert isinstance(m, DiffusionModel) and m.kind == "pixel" and m.vae is None and m.cond is None
    assert (m.channels, m.sample_size, m.image_size, m.vae_scale, m.downsample_factor) == (3, 16, 16, 1, 2)
    assert m.num_train_timesteps == 1000 and m.alphas_cumprod.dtype == torch.float64
    assert m.dtype == torch.float32 and m.device == torch.device("cpu") and m.prediction_type == "epsilon"
    assert m.info["attention_modules"] >= 2 and m.info["unet_class"] == "UNet2DModel"
    assert not m.unet.training and not any(p.requires_grad for p in m.unet.parameters())


def test_load_latent_pipeline_folder(tiny_latent_model):
    m = tiny_latent_model
    assert m.kind == "latent" and m.vae is not None and m.cond.shape == (1, 8, 16)
    assert (m.channels, m.sample_size, m.vae_scale, m.image_size) == (4, 8, 2, 16)
    assert m.info["unet_class"] == "UNet2DConditionModel"
    images = _randn(2, 3, 16, 16).clamp(-1, 1)
    with torch.no_grad():
        z = m.encode(images)
        assert z.shape == (2, 4, 8, 8)
        out = m.decode(z)
    assert out.shape == (2, 3, 16, 16) and float(out.abs().max()) <= 1


def test_load_bare_unet_folder_with_scheduler_config(tiny_pixel_dir, tiny_model, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(Path(tiny_pixel_dir) / "unet", bare)
    shutil.copy(Path(tiny_pixel_dir) / "scheduler" / "scheduler_config.json", bare / "scheduler_config.json")
    m = load_model(bare, device="cpu")
    x = _randn(1, 3, 16, 16)
    torch.testing.assert_close(m.eps(x, 10), tiny_model.eps(x, 10), rtol=0, atol=0)
    torch.testing.assert_close(m.alphas_cumprod, tiny_model.alphas_cumprod)


def test_default_model_missing_and_present(monkeypatch, tmp_path, tiny_pixel_dir):
    monkeypatch.setattr(model_mod, "DEFAULT_MODEL_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match="default model is missing"):
        load_model("default", device="cpu")
    monkeypatch.setattr(model_mod, "DEFAULT_MODEL_DIR", Path(tiny_pixel_dir))
    m = load_model("default", device="cpu")
    assert m.source == "default" and m.kind == "pixel"


def test_embedded_textured_model_by_name(monkeypatch, tmp_path, tiny_pixel_dir):
    monkeypatch.setattr(model_mod, "DEFAULT_MODEL_DIR", tmp_path)
    assert model_mod.embedded_models() == []
    with pytest.raises(ModelLoadError, match="embedded textured model is missing from .*/textured/"):
        load_model("textured", device="cpu")
    shutil.copytree(tiny_pixel_dir, tmp_path / "textured")
    assert model_mod.embedded_models() == ["textured"]
    m = load_model("textured", device="cpu")
    assert m.source == "textured" and m.kind == "pixel"
    with pytest.raises(InputError, match="embedded models are default, textured"):
        model_mod.embedded_model_dir("other")


def test_hub_id_offline_gives_advice(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read at import time: patch the constant as well
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(ModelLoadError, match=r"could not fetch 'nobody/no-such-model'.*huggingface-cli download"):
        load_model("nobody/no-such-model", device="cpu")


def test_folders_that_are_not_models_are_rejected(tiny_pixel_dir, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(Path(tiny_pixel_dir) / "unet" / "config.json", pickled / "config.json")
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="no .safetensors"):
        load_model(pickled, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="not a diffusers model folder"):
        load_model(empty, device="cpu")
    with pytest.raises(ModelLoadError, match="neither an embedded model .default, textured., an existing folder"):
        load_model("./no/such/folder", device="cpu")
    with pytest.raises(InputError, match="dtype must be one of"):
        load_model(tiny_pixel_dir, dtype="half")


# --------------------------------------------------------------------------------------------------------------------
# h-space, eps, score and their JVPs
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["pixel", "latent"])
def test_h_equals_mid_block_hook(which, tiny_model, tiny_latent_model):
    m = tiny_model if which == "pixel" else tiny_latent_model
    x = _randn(2, m.channels, m.sample_size, m.sample_size, seed=1)
    t = torch.tensor([3, 700])
    seen = []
    handle = m.unet.mid_block.register_forward_hook(lambda mod, inp, out: seen.append(out))
    try:
        with torch.no_grad():
            m.eps(x, t)
            h = m.h(x, t)
    finally:
        handle.remove()
    assert h.shape == seen[0].shape and h.shape[0] == 2
    torch.testing.assert_close(h, seen[0], rtol=0, atol=0)


@pytest.mark.parametrize("which", ["pixel", "latent"])
def test_jvps_match_autograd_float64(which, tiny_model64, latent64):
    m = tiny_model64 if which == "pixel" else latent64
    x = _randn(2, m.channels, 4, 4, seed=2, dtype=torch.float64)  # small: float64 convolutions are slow on CPU
    v = _randn(2, m.channels, 4, 4, seed=3, dtype=torch.float64)
    t = torch.tensor([50, 850])
    for fn, raw in ((m.h_jvp, m.h_raw), (m.eps_jvp, m.eps_raw)):
        val, jv = fn(x, t, v)
        ref_val, ref_jv = torch.autograd.functional.jvp(lambda xx, raw=raw: raw(xx, t), x, v)
        assert jv.dtype == torch.float64 and jv.shape == ref_jv.shape
        torch.testing.assert_close(val, ref_val, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(jv, ref_jv, rtol=1e-9, atol=1e-12)


def test_score_is_minus_eps_over_sigma(tiny_model64):
    m = tiny_model64
    x, v = _randn(2, 3, 4, 4, seed=4, dtype=torch.float64), _randn(2, 3, 4, 4, seed=5, dtype=torch.float64)
    t = torch.tensor([1, 999])
    sigma = (1 - m.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(m.score(x, t), -m.eps(x, t) / sigma, rtol=1e-14, atol=0)
    s, js = m.score_jvp(x, t, v)
    _, je = m.eps_jvp(x, t, v)
    torch.testing.assert_close(s, m.score(x, t))
    torch.testing.assert_close(js, -je / sigma, rtol=1e-14, atol=0)


def test_prediction_types_convert_to_eps(tiny_model64):
    x = _randn(1, 3, 4, 4, seed=6, dtype=torch.float64)
    out = tiny_model64.unet(x, torch.tensor([400])).sample
    ab = tiny_model64.alphas_cumprod[400]
    v_model = dataclasses.replace(tiny_model64, prediction_type="v_prediction")
    torch.testing.assert_close(v_model.eps(x, 400), ab.sqrt() * out + (1 - ab).sqrt() * x)
    x0_model = dataclasses.replace(tiny_model64, prediction_type="sample")
    torch.testing.assert_close(x0_model.eps(x, 400), (x - ab.sqrt() * out) / (1 - ab).sqrt())


def test_float32_and_float64(tiny_model, tiny_model64):
    x = _randn(1, 3, 16, 16, seed=7)
    h32, jv32 = tiny_model.h_jvp(x, 100, x)
    h64, jv64 = tiny_model64.h_jvp(x.double(), 100, x.double())
    assert h32.dtype == jv32.dtype == torch.float32 and h64.dtype == jv64.dtype == torch.float64
    torch.testing.assert_close(jv32.double(), jv64, rtol=1e-4, atol=1e-5)
    assert tiny_model.eps(x.double(), 100).dtype == torch.float32  # inputs are cast to the model's dtype


# --------------------------------------------------------------------------------------------------------------------
# Half precision
# --------------------------------------------------------------------------------------------------------------------
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("name, dtype", [
    ("fp32", torch.float32), ("float64", torch.float64), ("fp64", torch.float64), ("bf16", torch.bfloat16),
    ("bfloat16", torch.bfloat16), (torch.bfloat16, torch.bfloat16), (torch.float64, torch.float64),
    (None, torch.float32),
])
def test_dtype_names(tiny_pixel_dir, name, dtype):
    m = load_model(tiny_pixel_dir, device="cpu", dtype=name)
    assert m.dtype == dtype and all(p.dtype == dtype for p in m.unet.parameters())
    assert m.alphas_cumprod.dtype == torch.float64  # the schedule is never rounded


@pytest.mark.parametrize("name", ["float16", "fp16", torch.float16])
def test_float16_is_refused_on_the_cpu(tiny_pixel_dir, name):
    with pytest.raises(InputError, match=r"float16 is refused on the CPU.*bfloat16 is the CPU half precision"):
        load_model(tiny_pixel_dir, device="cpu", dtype=name)


@pytest.mark.parametrize("name", ["half", "float8", torch.int8, torch.complex64, 16])
def test_unknown_dtypes_are_refused(tiny_pixel_dir, name):
    with pytest.raises(InputError, match="dtype must be"):
        load_model(tiny_pixel_dir, device="cpu", dtype=name)


@pytest.mark.parametrize("which", ["pixel", "latent"])
def test_bfloat16_maps_stay_close_to_float64(which, tiny_model_bf16, tiny_latent_model_bf16, tiny_model64, latent64):
    """Every map of the interface runs in bfloat16 (measured relative errors against float64 on the tiny models:
    0.008 to 0.022; bar 0.08)."""
    m, ref = (tiny_model_bf16, tiny_model64) if which == "pixel" else (tiny_latent_model_bf16, latent64)
    s = m.sample_size
    x, v = _randn(2, m.channels, s, s, seed=11), _randn(2, m.channels, s, s, seed=12)
    t = torch.tensor([10, 600])
    pairs = {
        "eps": (m.eps(x, t), ref.eps(x, t)),
        "score": (m.score(x, t), ref.score(x, t)),
        "h": (m.h(x, t), ref.h(x, t)),
        "h_jvp": (m.h_jvp(x, t, v)[1], ref.h_jvp(x, t, v)[1]),
        "eps_jvp": (m.eps_jvp(x, t, v)[1], ref.eps_jvp(x, t, v)[1]),
        "score_jvp": (m.score_jvp(x, t, v)[1], ref.score_jvp(x, t, v)[1]),
    }
    ref_point = ref.h_jvp_point(x[:1], 600, v)
    for batching in ("vmap", "repeat"):
        h, jv = m.h_jvp_point(x[:1], 600, v, batching=batching)
        pairs[f"h_jvp_point {batching}"] = (jv, ref_point[1])
        pairs[f"h point {batching}"] = (h, ref_point[0])
    for name, (got, want) in pairs.items():
        assert got.dtype == torch.bfloat16 and got.shape == want.shape, name
        assert bool(torch.isfinite(got).all()), name
        assert _rel(got, want) < 0.08, f"{name}: {_rel(got, want):.3g}"


def test_bfloat16_schedule_is_computed_in_float64(tiny_model_bf16, tiny_model64):
    m = tiny_model_bf16
    t = torch.arange(12)
    ab64 = tiny_model64.alphas_cumprod[t]
    assert bool((ab64.to(torch.bfloat16) == 1).any())  # bfloat16 cannot tell alpha_bar(t) from 1 for small t
    sig = m.sigma(t, 12)
    assert sig.dtype == torch.bfloat16 and bool((sig > 0).all())
    torch.testing.assert_close(sig, (1 - ab64).sqrt().to(torch.bfloat16), rtol=0, atol=0)  # rounded once
    torch.testing.assert_close(m.alpha_bar(t, 12), ab64.to(torch.bfloat16), rtol=0, atol=0)
    x = _randn(1, 3, 16, 16, seed=13)
    s0 = m.score(x, 0)
    assert bool(torch.isfinite(s0).all())
    assert _rel(s0, tiny_model64.score(x, 0)) < 0.08


def test_bfloat16_prediction_type_conversions(tiny_model_bf16, tiny_model64):
    x = _randn(1, 3, 8, 8, seed=14)
    for kind in ("v_prediction", "sample"):
        got = dataclasses.replace(tiny_model_bf16, prediction_type=kind).eps(x, 3)
        want = dataclasses.replace(tiny_model64, prediction_type=kind).eps(x, 3)
        assert got.dtype == torch.bfloat16 and bool(torch.isfinite(got).all())
        assert _rel(got, want) < 0.08, kind


@pytest.mark.parametrize("which", ["pixel", "latent"])
def test_bfloat16_rate_map_and_ddim(which, tiny_model_bf16, tiny_latent_model_bf16, tiny_model64, latent64):
    """A rate map and a DDIM round trip in bfloat16 (measured against float64 on the tiny models: rate maps 0.003 to
    0.004, the inverted x_t 0.009 to 0.011, the reconstruction 0.013)."""
    from pipeline import rate_map
    from pipeline.ddim import invert, sample

    m, ref = (tiny_model_bf16, tiny_model64) if which == "pixel" else (tiny_latent_model_bf16, latent64)
    s = m.sample_size
    x0 = _randn(1, m.channels, s, s, seed=15).clamp(-1, 1)
    rates = rate_map(m, x0, 300, patch_size=s // 4, batch_size=8)
    assert rates.dtype == torch.bfloat16 and bool(torch.isfinite(rates).all())
    assert _rel(rates, rate_map(ref, x0, 300, patch_size=s // 4, batch_size=8)) < 0.05
    xt, xt64 = invert(m, x0, t_end=300, num_steps=6), invert(ref, x0, t_end=300, num_steps=6)
    assert xt.dtype == torch.bfloat16 and _rel(xt, xt64) < 0.08
    rec, rec64 = sample(m, xt, t_start=300, num_steps=6), sample(ref, xt64, t_start=300, num_steps=6)
    assert rec.dtype == torch.bfloat16 and bool(torch.isfinite(rec).all()) and _rel(rec, rec64) < 0.08


def test_bfloat16_latent_encode_decode(tiny_latent_model_bf16, latent64):
    """The VAE in bfloat16 (measured against float64: latents 0.007, decoded images 0.022)."""
    images = _randn(1, 3, 16, 16, seed=16).clamp(-1, 1)
    z, z64 = tiny_latent_model_bf16.encode(images), latent64.encode(images)
    assert z.dtype == torch.bfloat16 and _rel(z, z64) < 0.08
    out = tiny_latent_model_bf16.decode(z)
    assert out.dtype == torch.bfloat16 and _rel(out, latent64.decode(z64)) < 0.08
    assert tiny_latent_model_bf16.cond.dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda(tiny_pixel_dir, tiny_model64, dtype):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    from pipeline import rate_map

    m = load_model(tiny_pixel_dir, device="cuda", dtype=dtype)
    assert m.dtype == dtype and m.device.type == "cuda"
    x, v = _randn(1, 3, 16, 16, seed=17), _randn(3, 3, 16, 16, seed=18)
    h, jv = m.h_jvp_point(x, 500, v)
    assert jv.dtype == dtype and _rel(jv.cpu(), tiny_model64.h_jvp_point(x, 500, v)[1]) < 0.08
    rates = rate_map(m, x, 500, patch_size=4)
    assert bool(torch.isfinite(rates).all())


# --------------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, match",
    [
        (torch.zeros(1, 4, 16, 16), "has 4 channels; this model takes 3"),
        (torch.zeros(3, 16, 16), r"must have shape \(B, 3, H, W\)"),
        (torch.zeros(1, 3, 15, 15), "must be a multiple of 2"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN or inf"),
        (torch.full((1, 3, 16, 16), float("inf")), "NaN or inf"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.long), "floating-point"),
        ([[0.0]], "must be a torch.Tensor"),
    ],
)
def test_bad_x_raises(tiny_model, x, match):
    for fn in (tiny_model.eps, tiny_model.h, tiny_model.score):
        with pytest.raises(InputError, match=match):
            fn(x, 10)


@pytest.mark.parametrize(
    "t, match",
    [
        (-1, r"must lie in \[0, 999\]"),
        (1000, r"must lie in \[0, 999\]"),
        (torch.tensor([1.5, 2.0]), "non-integer"),
        (2.5, "must be an int"),
        (True, "must be an int"),
        ("10", "must be an int"),
        (torch.tensor([1, 2, 3]), r"have shape \(2,\)"),
    ],
)
def test_bad_t_raises(tiny_model, t, match):
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(InputError, match=match):
        tiny_model.eps(x, t)
    with pytest.raises(InputError, match=match):
        tiny_model.h_jvp(x, t, x)


def test_accepted_t_forms(tiny_model):
    x = _randn(2, 3, 8, 8, seed=8)
    ref = tiny_model.h(x, torch.tensor([5, 5]))
    for t in (5, torch.tensor(5), torch.tensor([5.0, 5.0]), torch.tensor([5])):
        torch.testing.assert_close(tiny_model.h(x, t), ref, rtol=0, atol=0)


def test_jvp_direction_must_match(tiny_model):
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(InputError, match="v must have the shape of x"):
        tiny_model.h_jvp(x, 10, torch.zeros(2, 3, 16, 16))
    with pytest.raises(InputError, match="v contains NaN"):
        tiny_model.eps_jvp(x, 10, torch.full((1, 3, 16, 16), float("nan")))


# --------------------------------------------------------------------------------------------------------------------
# Devices and model sources that fail (issue 16): named errors, not AssertionError / "Internal error (OSError)"
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_on_a_cpu_machine_is_an_input_error(tiny_pixel_dir, device):
    """Before: torch's raw AssertionError ("Torch not compiled with CUDA enabled") from inside Module.to."""
    with pytest.raises(InputError, match=r"^CUDA is not available here; devices: cpu"):
        load_model(tiny_pixel_dir, device=device)


@pytest.mark.parametrize("device, match", [("foo", "'foo' is not a torch device"), (3.5, "must be a string"),
                                           ("xla", "'xla' is not available here")])
def test_bad_devices_are_input_errors(tiny_pixel_dir, device, match):
    with pytest.raises(InputError, match=match):
        load_model(tiny_pixel_dir, device=device)
    assert model_mod.check_device("cpu") == torch.device("cpu") and "cpu" in model_mod.available_devices()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_devices_is_an_input_error(tiny_pixel_dir):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tiny_pixel_dir, device=f"cuda:{torch.cuda.device_count()}")


def _copy(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["junk", "truncated", "empty"])
def test_junk_weights_are_a_model_load_error_naming_the_file(tiny_pixel_dir, tmp_path, damage):
    """Before: diffusers' OSError, shown by the app as "Internal error (OSError)"."""
    folder = _copy(tiny_pixel_dir, tmp_path / damage)
    (weights,) = (folder / "unet").glob("*.safetensors")
    data = weights.read_bytes()
    weights.write_bytes({"junk": b"not a safetensors file " * 40, "truncated": data[:1000], "empty": b""}[damage])
    with pytest.raises(ModelLoadError, match=rf"could not load {weights}"):
        load_model(folder, device="cpu")


def test_junk_configs_are_model_load_errors(tiny_pixel_dir, tmp_path):
    folder = _copy(tiny_pixel_dir, tmp_path / "badjson")
    (folder / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"could not load .*unet/config.json \(JSONDecodeError"):
        load_model(folder, device="cpu")
    (folder / "unet" / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="a JSON object is expected"):
        load_model(folder, device="cpu")
    folder2 = _copy(tiny_pixel_dir, tmp_path / "badsched")
    (folder2 / "scheduler" / "scheduler_config.json").write_text('{"num_train_timesteps": "many"}')
    with pytest.raises(ModelLoadError, match="could not load the scheduler config"):
        load_model(folder2, device="cpu")


def test_source_strings_are_bounded_and_checked(tiny_pixel_dir, tmp_path, monkeypatch):
    """Before: a 5,000-character source failed inside os.stat ("File name too long", an OSError)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=rf"model source is 5000 characters long; at most "
                                         rf"{model_mod.MAX_SOURCE_LENGTH}"):
        load_model("x" * 5000, device="cpu")
    with pytest.raises(InputError, match="model source must be a string or a path"):
        load_model(123, device="cpu")
    with pytest.raises(InputError, match="model source is empty"):
        load_model("  ", device="cpu")
    with pytest.raises(ModelLoadError, match="is not a usable path"):
        load_model(str(tmp_path / ("y" * 300)), device="cpu")  # a name longer than the file system allows
    with pytest.raises(ModelLoadError):
        load_model("x\0y", device="cpu")
    with pytest.raises(ModelLoadError, match="is a file, not a diffusers model folder"):
        load_model(Path(tiny_pixel_dir) / "model_index.json", device="cpu")
