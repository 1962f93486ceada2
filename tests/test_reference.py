"""Reference architectures (``benchmarks/reference.py``): the public configs, and their small variants built into
temporary folders, loaded with ``load_model`` and run (eps, h, JVPs against autograd in float64, a rate map, a DDIM
round trip, the JVP's error in float32 and bfloat16), and a reference folder loaded by hub id from the local cache.

The full-size models are only counted here (built on the meta device: no memory, no weights); building and loading
them is measured once by ``python -m benchmarks.reference --measure`` (figures in its docstring).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.reference import (
    ARCHS,
    CLIP_SPECIAL_TOKENS,
    SMALL_DIVISOR,
    build_reference,
    jvp_relative_errors,
    main,
    public_config,
    scaled_configs,
    small_sample_size,
)
from pipeline import load_model, rate_map
from pipeline.ddim import invert, sample

ROOT = Path(__file__).resolve().parent.parent
ARCH_NAMES = sorted(ARCHS)
#: Keys of each config that the small variants may change; every other key must keep its public value.
SCALED_KEYS = {
    "unet": {"block_out_channels", "norm_num_groups", "sample_size", "cross_attention_dim"},
    "vae": {"block_out_channels", "norm_num_groups", "sample_size"},
    "text_encoder": {"hidden_size", "intermediate_size", "projection_dim"},
}


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta_modules(cfgs: dict) -> dict[str, torch.nn.Module]:
    """The modules of a set of configs, on the meta device (no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        cls = UNet2DConditionModel if cfgs["unet"]["_class_name"] == "UNet2DConditionModel" else UNet2DModel
        out = {"unet": cls.from_config(cfgs["unet"])}
        if "vae" in cfgs:
            out["vae"] = AutoencoderKL.from_config(cfgs["vae"])
            text = {k: v for k, v in cfgs["text_encoder"].items() if k not in ("architectures", "transformers_version")}
            out["text_encoder"] = CLIPTextModel(CLIPTextConfig(**text))
    return out


_BUILT: dict[str, str] = {}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """``small_dir(arch)``: the folder of ``arch``'s small variant (built once per module, seed 0)."""

    def get(arch: str) -> str:
        if arch not in _BUILT:
            out = tmp_path_factory.mktemp(f"ref-{arch}") / "model"
            build_reference(arch, out, seed=0, divisor=SMALL_DIVISOR, sample_size=small_sample_size(arch))
            _BUILT[arch] = str(out)
        return _BUILT[arch]

    return get


# --------------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------------
def test_embedded_configs_are_the_shared_public_copies():
    shared = ROOT.parent / "shared" / "reference-configs"
    if not shared.is_dir():
        pytest.skip(f"no {shared} beside the checkout")
    for path in sorted((ROOT / "benchmarks" / "reference_configs").glob("*.json")):
        assert json.loads(path.read_text()) == json.loads((shared / path.name).read_text()), path.name


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_public_configs_have_the_public_parameter_counts(arch):
    counts = {name: _count(m) for name, m in _meta_modules(scaled_configs(arch)).items()}
    assert counts == ARCHS[arch].params
    assert scaled_configs(arch)["unet"] == public_config(arch, "unet")  # divisor 1: verbatim


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_small_variant_keeps_the_public_layout(arch):
    small = scaled_configs(arch, SMALL_DIVISOR, small_sample_size(arch))
    for part, allowed in SCALED_KEYS.items():
        pub = public_config(arch, part)
        if pub is None:
            assert part not in small
            continue
        changed = {k for k in pub if small[part][k] != pub[k]}
        assert changed <= allowed, f"{part}: {changed - allowed} changed"
        assert set(small[part]) == set(pub)
    unet, pub = small["unet"], public_config(arch, "unet")
    assert len(unet["block_out_channels"]) == len(pub["block_out_channels"])
    assert all(c % unet["norm_num_groups"] == 0 for c in unet["block_out_channels"])
    # channels per norm group are kept where the width needed no rounding
    assert unet["norm_num_groups"] == pub["norm_num_groups"] // SMALL_DIVISOR
    assert small["scheduler"] == public_config(arch, "scheduler")
    n_small = sum(_count(m) for m in _meta_modules(small).values())
    assert n_small < 7e6  # tiny: a few million parameters at most (mostly CLIP's 49408-token embedding)


# --------------------------------------------------------------------------------------------------------------------
# Small variants: build, load, run
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_small_variant_builds_and_loads(arch, small_dir):
    folder = Path(small_dir(arch))
    cfgs = scaled_configs(arch, SMALL_DIVISOR, small_sample_size(arch))
    latent = ARCHS[arch].latent
    unet_dir = folder / "unet" if latent else folder  # the hub layouts: SD's subfolders, google/ddpm-*'s flat root
    assert json.loads((unet_dir / "config.json").read_text()) == cfgs["unet"]  # written verbatim
    assert (folder / "model_index.json").is_file() and not list(folder.rglob("*.bin"))
    m = load_model(folder, device="cpu")
    assert m.kind == ("latent" if latent else "pixel") and m.dtype == torch.float32
    assert type(m.unet).__name__ == cfgs["unet"]["_class_name"] and m.sample_size == small_sample_size(arch)
    assert m.info["attention_modules"] >= 1  # JVP-safe attention installed
    sched = (folder / "scheduler" / "scheduler_config.json") if latent else (folder / "scheduler_config.json")
    assert json.loads(sched.read_text()) == public_config(arch, "scheduler")
    from diffusers import DDPMScheduler

    ref = DDPMScheduler.from_config(public_config(arch, "scheduler")).alphas_cumprod.double()
    torch.testing.assert_close(m.alphas_cumprod, ref, rtol=0, atol=0)
    if latent:
        assert m.vae_scale == 8 and m.image_size == 8 * m.sample_size and m.channels == 4
        assert m.cond.shape == (1, 77, cfgs["text_encoder"]["hidden_size"])
        from transformers import CLIPTokenizer

        tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        ids = tok([""], padding="max_length", max_length=tok.model_max_length).input_ids[0]
        assert ids == [CLIP_SPECIAL_TOKENS["<|startoftext|>"]] + [CLIP_SPECIAL_TOKENS["<|endoftext|>"]] * 76


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_small_variant_maps_and_jvps_match_autograd_float64(arch, small_dir):
    m = load_model(small_dir(arch), device="cpu", dtype=torch.float64)
    s = m.downsample_factor  # the smallest input: the mid block sees 1x1 (float64 convolutions are slow)
    x = _randn(2, m.channels, s, s, seed=1, dtype=torch.float64)
    v = _randn(2, m.channels, s, s, seed=2, dtype=torch.float64)
    t = torch.tensor([20, 700])
    e = m.eps(x, t)
    assert e.shape == x.shape and e.dtype == torch.float64 and bool(torch.isfinite(e).all())
    h = m.h(x, t)
    assert h.shape[:2] == (2, m.unet.config.block_out_channels[-1]) and h.shape[2:] == (1, 1)
    for fn, raw in ((m.h_jvp, m.h_raw), (m.eps_jvp, m.eps_raw)):
        val, jv = fn(x, t, v)
        ref_val, ref_jv = torch.autograd.functional.jvp(lambda xx, raw=raw: raw(xx, t), x, v)
        torch.testing.assert_close(val, ref_val, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(jv, ref_jv, rtol=1e-9, atol=1e-12)
    hp, jp = m.h_jvp_point(x[:1], 20, v)  # two directions at one point (vmap)
    torch.testing.assert_close(jp[1:], m.h_jvp(x[:1], 20, v[1:])[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_small_variant_rate_map_and_ddim_round_trip(arch, small_dir):
    m = load_model(small_dir(arch), device="cpu")
    s = m.sample_size
    x0 = _randn(1, m.channels, s, s, seed=3).clamp(-1, 1)
    x_t = invert(m, x0, t_end=40, num_steps=4)
    assert x_t.shape == x0.shape and bool(torch.isfinite(x_t).all()) and not torch.equal(x_t, x0)
    rec = sample(m, x_t, t_start=40, num_steps=4)
    # the corrected inversion is not exact; at low noise it comes close (measured 4e-5 to 1e-4, weight seeds 0 and 1)
    assert float((rec - x0).norm() / x0.norm()) < 1e-3
    rates = rate_map(m, x_t, 40, patch_size=s // 2, batch_size=2)
    assert rates.shape == (2, 2) and bool(torch.isfinite(rates).all()) and bool((rates > 0).all())
    e = torch.zeros_like(x0)
    e[..., : s // 2, : s // 2] = 1
    _, jv = m.h_jvp(x_t, 40, e / e.norm())
    torch.testing.assert_close(rates[0, 0], jv.norm(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_small_variant_jvp_error_per_dtype(arch, small_dir):
    """h and its JVP in float32 and bfloat16 against float64 (measured on the small variants, weight seeds 0 and 1,
    point seeds 0 and 1: float32 h 4e-7 to 1.2e-6, JVP 9e-7 to 2.1e-6; bfloat16 h 0.009 to 0.027, JVP 0.019 to
    0.045; full-size figures in benchmarks/reference.py). Bars: 10x float32's worst, 3x bfloat16's."""
    errs = jvp_relative_errors(small_dir(arch), ("float32", "bfloat16"), size=None, seed=1)
    assert errs["float32"]["jvp"] < 2e-5 and errs["float32"]["h"] < 2e-5
    assert errs["bfloat16"]["jvp"] < 0.15 and errs["bfloat16"]["h"] < 0.1
    assert errs["bfloat16"]["jvp"] > 1e-4  # it really ran in bfloat16


def test_cli_builds_small_and_refuses_full_size_in_the_repository(tmp_path, capsys):
    assert main(["--arch", "ddpm-256", "--out", str(tmp_path / "m"), "--small", "--seed", "3",
                 "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["divisor"] == SMALL_DIVISOR and report["params"]["unet"] < 1e6
    assert json.loads((tmp_path / "m" / "config.json").read_text())["sample_size"] == small_sample_size("ddpm-256")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        build_reference("ddpm-256", tmp_path / "m", divisor=SMALL_DIVISOR)
    with pytest.raises(SystemExit):
        main(["--arch", "cifar10-32", "--out", str(ROOT / "reference-full-size")])
    assert "inside the repository" in capsys.readouterr().err and not (ROOT / "reference-full-size").exists()
    with pytest.raises(ValueError, match="multiple of 32"):
        scaled_configs("ddpm-256", SMALL_DIVISOR, sample_size=48)


# --------------------------------------------------------------------------------------------------------------------
# Loading by hub id from the local cache, network off
# --------------------------------------------------------------------------------------------------------------------
def place_in_hub_cache(folder: Path, cache: Path, repo_id: str, commit: str = "0123456789abcdef" * 2 + "01234567"
                       ) -> Path:
    """Lay ``folder`` out as the Hugging Face hub cache does after a download of ``repo_id``: files as content-named
    blobs, a snapshot of symlinks to them, and ``refs/main`` naming the commit. Returns the snapshot folder."""
    import hashlib

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def run_offline(code: str, hf_home: Path, cwd: Path, **env_vars: str) -> dict:
    """Run ``code`` in a new Python with the hub cache under ``hf_home``, the network off (``HF_HUB_OFFLINE``), no
    other ``HF_*`` variable and ``env_vars`` added; -> the JSON object its last output line prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
               **env_vars)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_load_by_hub_id_from_the_local_cache_offline(small_dir, tmp_path):
    hf_home = tmp_path / "hf-home"
    snap = place_in_hub_cache(Path(small_dir("cifar10-32")), hf_home / "hub", "google/ddpm-cifar10-32")
    assert (snap / "diffusion_pytorch_model.safetensors").is_symlink()
    code = (
        "import json, sys, torch\n"
        "from pipeline import load_model, ModelLoadError\n"
        "m = load_model('google/ddpm-cifar10-32', device='cpu')\n"
        "x = torch.zeros(1, 3, m.sample_size, m.sample_size)\n"
        "out = dict(source=m.source, kind=m.kind, size=m.sample_size, eps=float(m.eps(x, 10).abs().sum()),\n"
        "           params=sum(p.numel() for p in m.unet.parameters()))\n"
        "try:\n"
        "    load_model('google/ddpm-celebahq-256', device='cpu')\n"
        "except ModelLoadError as err:\n"
        "    out['missing'] = str(err)\n"
        "print(json.dumps(out))\n"
    )
    got = run_offline(code, hf_home, tmp_path, TEST_TORCH_THREADS="1")
    direct = load_model(small_dir("cifar10-32"), device="cpu")
    x = torch.zeros(1, 3, direct.sample_size, direct.sample_size)
    assert got["source"] == "google/ddpm-cifar10-32" and got["kind"] == "pixel" and got["size"] == direct.sample_size
    assert got["params"] == sum(p.numel() for p in direct.unet.parameters())
    assert got["eps"] == pytest.approx(float(direct.eps(x, 10).abs().sum()), rel=1e-6)
    assert "could not fetch 'google/ddpm-celebahq-256'" in got["missing"]  # not cached, network off: advice



# --------------------------------------------------------------------------------------------------------------------
# benchmarks/scale.py on the small variants
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory from /proc")
def test_scale_benchmark_on_small_variants(small_dir, tmp_path, monkeypatch):
    """The scale benchmark end to end (one measuring process per architecture) on the small pixel and latent
    variants: every call row is measured with a peak at least the loaded model's resident set, the probe runs when
    forced by a tiny threshold, a time limit turns calls into 'not run' rows, and the report hides the folder."""
    from benchmarks import scale

    refs = tmp_path / "refs"
    refs.mkdir()
    for arch in ("cifar10-32", "sd15"):
        (refs / arch).symlink_to(small_dir(arch))
    monkeypatch.setenv("DIFFGEO_MAX_BATCH", "4")  # inherited by the workers: 16 directions in 4 parts
    out = tmp_path / "scale"
    assert scale.main(["--folders", str(refs), "--archs", "cifar10-32,sd15", "--threads", "1", "--parts", "calls",
                       "--out", str(out)]) == 0  # the export and ort parts have their own tests (test_export_scale)
    data = json.loads(out.with_suffix(".json").read_text())
    assert str(refs) not in out.with_suffix(".md").read_text() and str(refs) not in data["command"]
    for rep in data["reports"]:
        calls = {r["call"]: r for r in rep["rows"]}
        assert set(calls) == {"load", "batch limit", "eps", "eps_jvp", "h_jvp", "h_jvp_point x16", "rate map 8x8",
                              "curve map 10 timesteps 8x8"}, rep
        assert calls["batch limit"]["limit"] == 4 and calls["h_jvp_point x16"]["parts"] == 4
        assert calls["rate map 8x8"]["directions"] == 64 and calls["curve map 10 timesteps 8x8"]["directions"] == 640
        for r in rep["rows"]:
            assert r["seconds"] >= 0 and r["peak_rss_gib"] >= calls["load"]["rss_after_gib"] * 0.5
    report = scale.worker("cifar10-32", str(refs / "cifar10-32"), "float32", time_limit=0.0)
    skipped = [r for r in report["rows"] if "skipped" in r]
    assert [r["call"] for r in skipped] == ["eps_jvp", "h_jvp", "h_jvp_point x16", "rate map 8x8",
                                            "curve map 10 timesteps 8x8"]
    assert skipped[-1]["estimate_s"] > skipped[-2]["estimate_s"] > skipped[-3]["estimate_s"] > 0
    # a run of one architecture keeps the other's rows
    assert scale.main(["--folders", str(refs), "--archs", "sd15", "--threads", "1", "--parts", "calls",
                       "--time-limit", "0", "--out", str(out)]) == 0
    again = {r["arch"]: r for r in json.loads(out.with_suffix(".json").read_text())["reports"]}
    assert again["cifar10-32"] == {r["arch"]: r for r in data["reports"]}["cifar10-32"]
    assert any("skipped" in r for r in again["sd15"]["rows"])
    out.with_suffix(".json").write_text(json.dumps(data))  # back to the full run for the jvp part below
    # the jvp part: float32 and bfloat16 against float64, the calls rows kept
    assert scale.main(["--folders", str(refs), "--archs", "cifar10-32,sd15", "--threads", "1", "--parts", "jvp",
                       "--jvp-sizes", "sd15=8", "--out", str(out)]) == 0
    data2 = json.loads(out.with_suffix(".json").read_text())
    assert data2["reports"] == data["reports"]
    jvp = {r["arch"]: r for r in data2["jvp"]["reports"]}
    assert jvp["sd15"]["size"] == 8 and jvp["cifar10-32"]["size"] == jvp["cifar10-32"]["sample_size"]
    for r in jvp.values():
        assert r["errors"]["float32"]["jvp"] < 1e-4 and 1e-4 < r["errors"]["bfloat16"]["jvp"] < 0.2, r
    md = out.with_suffix(".md").read_text()
    assert "| sd15 | 8x8 (reduced) | bfloat16 |" in md and "## JVP error against float64" in md


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_small_variant_runs_every_task(arch, small_dir):
    """Every task of the app on each architecture's small variant, at a few steps: curves and saliency, the four
    edits, and the geodesic (interpolation and extrapolation). Outputs come back at the image's size, finite, and
    each edit leaves the pixels outside its mask untouched."""
    import numpy as np

    from pipeline import edit
    from pipeline.interpolate import extrapolate_images, interpolate_images
    from pipeline.rates import generation_curves

    m = load_model(small_dir(arch), device="cpu")
    n, s = m.image_size, m.sample_size
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
    mask = np.zeros((n, n), bool)
    mask[: n // 2, : n // 2] = True
    source = np.zeros((n, n), bool)
    source[n // 2 :, n // 2 :] = True
    patch = s // 2
    curves = generation_curves(m, a, num_timesteps=3, patch_size=patch)
    assert curves.saliency.shape == (n, n) and bool(torch.isfinite(curves.saliency).all())
    few = dict(t_edit=100, num_steps=2, iterations=1, patch_size=patch, measure_curves=False)
    results = {
        "remove": (edit.remove_object(m, a, mask, **few), a, mask),
        "transfer": (edit.transfer(m, a, mask, source, **few), a, mask),
        "saliency": (edit.adjust_saliency(m, a, mask, 2.0, **few), a, mask),
        "blend": (edit.blend(m, a, b, mask, **few), a, None),
    }
    for name, (res, image, region) in results.items():
        out = np.asarray(res.image)
        assert out.shape == (n, n, 3) and out.dtype == np.uint8, name
        if region is not None:
            assert np.array_equal(out[~region], image[~region]), name
    geo = dict(n_points=3, t_star=100, num_steps=2, max_iter=2)
    inter = interpolate_images(m, a, b, **geo)
    extra = extrapolate_images(m, a, b, beyond=0.25, **geo)
    for path in (inter, extra):
        frames = np.asarray(path.images)
        assert frames.shape[1:] == (n, n, 3) and frames.shape[0] >= 3


def test_scale_tasks_benchmark_on_a_small_variant(small_dir, tmp_path):
    """``benchmarks.scale_tasks`` on the small SD layout: each task in its own process, its peak memory and an
    estimate at the app's defaults; a second run of other tasks keeps the first run's rows."""
    from benchmarks import scale_tasks

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sd15").symlink_to(small_dir("sd15"))
    out = tmp_path / "report"
    args = ["--folders", str(tmp_path / "models"), "--archs", "sd15", "--threads", "1", "--out", str(out)]
    assert scale_tasks.main([*args, "--tasks", "rates"]) == 0
    assert scale_tasks.main([*args, "--tasks", "blend"]) == 0
    rows = {r["task"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert set(rows) == {"rates", "blend"}
    for r in rows.values():
        assert "error" not in r, r
        assert 0.1 < r["peak_rss_gib"] < 8 and r["seconds"] > 0 and r["estimate_default_s"] > r["seconds"]
    assert rows["blend"]["gradient_directions"] > 0 and rows["rates"]["default_units"] == 20 * 8**2  # 8 x 8 grid
    md = out.with_suffix(".md").read_text()
    assert "| sd15 | rates |" in md and "| sd15 | blend |" in md and "--tasks rates" in md and "--tasks blend" in md
    # the geodesic with Adam: one energy + gradient evaluation per iteration, the estimate from their cost
    assert scale_tasks.main([*args, "--tasks", "geodesic", "--geo-iters", "1", "--geo-optimizer", "adam"]) == 0
    geo = {r["task"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}["geodesic"]
    assert "error" not in geo and geo["optimizer"] == "adam" and 1 <= geo["energy_evaluations"] <= 2
    expected = geo["ddim_s"] * scale_tasks.APP_STEPS / 2 + geo["per_evaluation_s"] * scale_tasks.APP_SOLVER_EVALS
    assert geo["estimate_default_s"] == pytest.approx(expected)
    assert "--geo-optimizer adam" in out.with_suffix(".md").read_text()
