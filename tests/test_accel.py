"""Backends: torch <-> onnxruntime agree on h, h_jvp, eps, eps_jvp for any batch size; the artifact cache (made on
first use, keyed by hashes, corrupt files rebuilt with a warning); provider fallback; unavailable backends say why;
rates and an eps-based score through onnxruntime agree with torch.

The ONNX graphs come from test_export.py's session export (batch 2), so backends here use ``batch_sizes=(2,)``: odd
batches exercise chunking and padding. Tolerance: norm-wise relative error <= 1e-4 (fp32; measured ~1e-6).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_export import SHARED_BATCH, rel_err, shared_export

from export import TOLERANCES
from pipeline.errors import InputError

REL_TOL = TOLERANCES["fp32"].max_rel
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Point the artifact cache ($DIFFGEO_CACHE) at a temporary folder for this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFGEO_CACHE", str(tmp_path_factory.mktemp("diffgeo_cache")))
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_pixel_dir) -> Path:
    out = shared_export(tmp_path_factory, tiny_pixel_dir)
    assert out["rc"] == 0, out["stdout"]
    return Path(out["dir"])


@pytest.fixture(scope="module")
def ort_backend(tiny_model, exported):
    from accel import get_backend

    return get_backend(tiny_model, "onnxruntime", artifacts=exported, batch_sizes=(SHARED_BATCH,))


@pytest.fixture(scope="module")
def torch_backend(tiny_model):
    from accel import get_backend

    return get_backend(tiny_model, "torch")


def _inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    v = torch.randn(n, 3, 16, 16, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    return x, t, v


# ---- registry --------------------------------------------------------------------------------------------------------
def test_import_accel_is_light():
    code = ("import sys, accel; heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'polygraphy', 'tensorrt') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_available_backends_lists_reasons():
    from accel import BACKENDS, available_backends

    status = {s.name: s for s in available_backends()}
    assert set(status) == set(BACKENDS)
    assert status["torch"].available and status["onnxruntime"].available
    assert "onnxruntime" in status["onnxruntime"].reason and "providers" in status["onnxruntime"].reason
    assert status["tensorrt"].reason


def test_unknown_backend_lists_accepted(tiny_model):
    from accel import get_backend

    with pytest.raises(InputError, match="accepted: 'auto'"):
        get_backend(tiny_model, "jax")


def test_tensorrt_missing_raises_a_clear_error(tiny_model):
    from accel import BackendUnavailable, get_backend

    try:
        import tensorrt  # noqa: F401
    except Exception as err:
        with pytest.raises(BackendUnavailable, match="import tensorrt") as info:
            get_backend(tiny_model, "tensorrt")
        assert type(err).__name__ in str(info.value)
        return
    with pytest.raises(BackendUnavailable, match="CUDA"):  # tensorrt imports, but the model is on the CPU
        get_backend(tiny_model, "tensorrt")


@pytest.mark.tensorrt
def test_tensorrt_backend_matches_torch(tensorrt_cuda, tiny_pixel_dir, tmp_path):
    from accel import get_backend
    from pipeline import load_model

    model = load_model(tiny_pixel_dir, device="cuda")
    trt, ref = get_backend(model, "tensorrt", artifacts=tmp_path, batch_sizes=(2,)), get_backend(model, "torch")
    x, t, v = (a.cuda() for a in _inputs(3))
    for name in ("h", "eps"):
        assert rel_err(getattr(trt, name)(x, t), getattr(ref, name)(x, t)) <= REL_TOL
    for name in ("h_jvp", "eps_jvp"):
        for a, b in zip(getattr(trt, name)(x, t, v), getattr(ref, name)(x, t, v), strict=True):
            assert rel_err(a, b) <= REL_TOL


def test_auto_picks_onnxruntime_on_cpu_and_logs_it(tiny_model, exported, caplog):
    from accel import get_backend

    with caplog.at_level(logging.INFO, logger="accel"):
        b = get_backend(tiny_model, "auto", artifacts=exported, batch_sizes=(SHARED_BATCH,))
    assert b.name == "onnxruntime" and "auto picked the onnxruntime backend" in caplog.text


def test_auto_keeps_large_cpu_models_in_torch_unless_graphs_are_given(tiny_model, exported, caplog, monkeypatch):
    """On a CPU, ``auto`` exports on first use only for U-Nets up to ``AUTO_EXPORT_MAX_BYTES`` (SD 1.5's graphs take
    tens of minutes to export and their sessions hold the weights again); with exported artifacts it uses them."""
    from accel import get_backend, registry

    monkeypatch.setattr(registry, "AUTO_EXPORT_MAX_BYTES", 0)  # the tiny model is "large"
    with caplog.at_level(logging.INFO, logger="accel"):
        b = get_backend(tiny_model, "auto")
    assert b.name == "torch" and "exporting its graphs takes tens of minutes" in caplog.text
    assert get_backend(tiny_model, "auto", artifacts=exported, batch_sizes=(SHARED_BATCH,)).name == "onnxruntime"


# ---- backend switching -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])  # 1: padded; 2: exact; 3: two chunks, the last padded
def test_onnxruntime_matches_torch_for_any_batch(ort_backend, torch_backend, n):
    x, t, v = _inputs(n, seed=n)
    with torch.no_grad():
        for name in ("h", "eps"):
            a, b = getattr(ort_backend, name)(x, t), getattr(torch_backend, name)(x, t)
            assert a.shape == b.shape and rel_err(a, b) <= REL_TOL, name
        for name in ("h_jvp", "eps_jvp"):
            for a, b in zip(getattr(ort_backend, name)(x, t, v), getattr(torch_backend, name)(x, t, v), strict=True):
                assert a.shape == b.shape and rel_err(a, b) <= REL_TOL, name
        # an int timestep broadcasts like the model's own maps
        assert rel_err(ort_backend.h(x, 250), torch_backend.h(x, 250)) <= REL_TOL


def test_many_directions_at_one_point_use_the_point_graph(ort_backend, torch_backend):
    x, t, v = _inputs(1, seed=11)
    v = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        h, jh = ort_backend.h_jvp_point(x, t, v)
        h_ref, jh_ref = torch_backend.h_jvp_point(x, t, v)
    assert h.shape == h_ref.shape == (1, *h.shape[1:]) and jh.shape == jh_ref.shape == (5, *h.shape[1:])
    assert rel_err(h, h_ref) <= REL_TOL and rel_err(jh, jh_ref) <= REL_TOL
    assert ort_backend.point_batching() == "graph" and torch_backend.point_batching() == "vmap"
    assert f"h_jvp_point_b{SHARED_BATCH}" in ort_backend.running_on
    assert set(ort_backend.running_on.values()) == {"CPUExecutionProvider"}


def test_backends_validate_inputs(ort_backend):
    x, t, v = _inputs(2)
    with pytest.raises(InputError, match="channels"):
        ort_backend.h(torch.randn(2, 4, 16, 16), t)
    with pytest.raises(InputError, match=r"t must lie in \[0, 999\]"):
        ort_backend.eps(x, 1000)
    with pytest.raises(InputError, match="shape of x"):
        ort_backend.h_jvp(x, t, v[:1])
    with pytest.raises(InputError, match="no gradients"):
        ort_backend.h(x.requires_grad_(True), t)


def test_torch_compile_backend_plumbing(tiny_model, torch_backend):
    """torch-compile's JVP path (the traced aten graph, chunked) with the 'eager' compiler (dynamo only: fast); the
    inductor run of every map is the slow test below."""
    from accel import get_backend

    b = get_backend(tiny_model, "torch-compile", batch_sizes=(2,), compiler="eager")
    x, t, v = _inputs(3, seed=5)
    for a, r in zip(b.h_jvp(x, t, v), torch_backend.h_jvp(x, t, v), strict=True):
        assert rel_err(a, r) <= REL_TOL
    assert "traced" in b.info["jvp"]


@pytest.mark.slow
def test_torch_compile_inductor_matches_torch(tiny_model, torch_backend):
    from accel import get_backend

    b = get_backend(tiny_model, "torch-compile", batch_sizes=(2,))
    x, t, v = _inputs(2, seed=6)
    for name in ("h", "eps"):
        assert rel_err(getattr(b, name)(x, t), getattr(torch_backend, name)(x, t)) <= REL_TOL
    for name in ("h_jvp", "eps_jvp"):
        for a, r in zip(getattr(b, name)(x, t, v), getattr(torch_backend, name)(x, t, v), strict=True):
            assert rel_err(a, r) <= REL_TOL


# ---- providers -------------------------------------------------------------------------------------------------------
def test_cuda_provider_falls_back_to_cpu_and_says_so(tiny_model, exported, caplog):
    import onnxruntime as ort

    from accel import get_backend

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the test covers CPU-only builds")
    with caplog.at_level(logging.INFO, logger="accel"):
        b = get_backend(tiny_model, "onnxruntime", artifacts=exported, batch_sizes=(SHARED_BATCH,),
                        providers=["cuda", "cpu"])
        b.h(*_inputs(1)[:2])
    assert "CUDAExecutionProvider" in caplog.text and "falling back" in caplog.text
    assert b.providers == ["CPUExecutionProvider"] and b.info["missing_providers"] == ["CUDAExecutionProvider"]
    assert b.running_on == {"h": "CPUExecutionProvider"} and "h runs on CPUExecutionProvider" in caplog.text


def test_unknown_provider_is_rejected(tiny_model, exported):
    from accel import get_backend

    with pytest.raises(InputError, match="unknown onnxruntime providers"):
        get_backend(tiny_model, "onnxruntime", artifacts=exported, providers=["rocm-ish"])


@pytest.mark.gpu
def test_onnxruntime_cuda_io_binding(tiny_pixel_dir, exported):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime has no CUDA provider (providers: {ort.get_available_providers()}); "
                    "install onnxruntime-gpu (requirements-gpu.txt)")
    from accel import get_backend
    from pipeline import load_model

    model = load_model(tiny_pixel_dir, device="cuda")
    b, ref = get_backend(model, "onnxruntime", batch_sizes=(2,), providers=["cuda"]), get_backend(model, "torch")
    x, t, v = (a.cuda() for a in _inputs(3))
    out = b.eps_jvp(x, t, v)
    assert out[0].device.type == "cuda" and b.running_on["eps_jvp_b2"] == "CUDAExecutionProvider"
    for a, r in zip(out, ref.eps_jvp(x, t, v), strict=True):
        assert rel_err(a, r) <= 1e-3  # cuDNN convolutions (TF32 off by default in ORT) differ a little more


# ---- the cache -------------------------------------------------------------------------------------------------------
def test_default_cache_location_and_reuse(tiny_model, exported, caplog):
    """Artifacts live in $DIFFGEO_CACHE/<weights hash[:16]>/ with an export folder's layout; valid ones are reused."""
    from accel import get_backend
    from export import model_cache_dir, weights_hash

    target = model_cache_dir(weights_hash(tiny_model))
    assert str(target).startswith(os.environ["DIFFGEO_CACHE"])
    shutil.copytree(exported, target, dirs_exist_ok=True)
    with caplog.at_level(logging.INFO, logger="export"):
        b = get_backend(tiny_model, "onnxruntime", batch_sizes=(SHARED_BATCH,))
        b.h_jvp(*_inputs(2))
    assert b.info["artifacts"] == str(target)
    assert "up to date" in caplog.text and "exporting" not in caplog.text


def test_truncated_onnx_is_rebuilt_with_a_warning(tiny_model, exported, torch_backend, tmp_path, caplog):
    from accel import get_backend
    from export import Manifest
    from export.fingerprint import file_sha256

    work = tmp_path / "art"
    shutil.copytree(exported, work)
    data = (work / "h.onnx").read_bytes()
    (work / "h.onnx").write_bytes(data[: len(data) // 3])
    b = get_backend(tiny_model, "onnxruntime", artifacts=work, batch_sizes=(SHARED_BATCH,))
    x, t, _ = _inputs(3)
    with caplog.at_level(logging.WARNING, logger="export"):
        h = b.h(x, t)
    assert "rebuilding h.onnx" in caplog.text and "corrupt" in caplog.text
    assert rel_err(h, torch_backend.h(x, t)) <= REL_TOL
    assert file_sha256(work / "h.onnx") == Manifest.load(work).artifacts["h.onnx"].files["h.onnx"]


def test_changed_weights_get_a_new_key(tiny_pixel_dir, tiny_model, ort_backend):
    from accel import get_backend
    from export import model_cache_dir
    from export.build import onnx_key
    from pipeline import load_model

    other = load_model(tiny_pixel_dir, device="cpu")
    with torch.no_grad():
        next(other.unet.parameters()).mul_(1.01)
    b = get_backend(other, "onnxruntime", batch_sizes=(SHARED_BATCH,))
    assert b.weights != ort_backend.weights
    assert b.info["artifacts"] == str(model_cache_dir(b.weights)) != str(model_cache_dir(ort_backend.weights))
    spec = ort_backend.spec("h_jvp", SHARED_BATCH, (16, 16))
    assert onnx_key(spec, b.weights) != onnx_key(spec, ort_backend.weights)


# ---- consumers: rates and scores -------------------------------------------------------------------------------------
def test_rates_through_onnxruntime_match_torch(tiny_model, ort_backend):
    from pipeline import rates

    x, _, v = _inputs(3, seed=21)
    t = 400
    r_ort = rates.generation_rate(ort_backend, x, t, v)
    r_torch = rates.generation_rate(tiny_model, x, t, v)
    assert rel_err(r_ort, r_torch.detach()) <= REL_TOL
    m_ort = rates.rate_map(ort_backend, x[:1], t, patch_size=4)
    m_torch = rates.rate_map(tiny_model, x[:1], t, patch_size=4)
    assert m_ort.shape == m_torch.shape == (4, 4)
    assert rel_err(m_ort, m_torch) <= REL_TOL


def test_eps_based_score_through_onnxruntime_matches_torch(tiny_model, ort_backend):
    x, _, v = _inputs(3, seed=31)
    t = 400
    with torch.no_grad():
        assert rel_err(ort_backend.score(x, t), tiny_model.score(x, t)) <= REL_TOL
        for a, b in zip(ort_backend.score_jvp(x, t, v), tiny_model.score_jvp(x, t, v), strict=True):
            assert rel_err(a, b) <= REL_TOL
    from pipeline import geodesic

    path = torch.stack([x[0] + s * (x[1] - x[0]) for s in torch.linspace(0, 1, 5)])  # (5, 3, 16, 16)
    e_ort = geodesic.curve_energy(lambda z: ort_backend.score(z, t), path, lam=10.0)
    e_torch = geodesic.curve_energy(lambda z: tiny_model.score(z, t), path, lam=10.0)
    assert abs(float(e_ort) - float(e_torch)) <= REL_TOL * abs(float(e_torch))
    kw = dict(lam=10.0, n_steps=1, dt=0.1)  # one RK4 step: 4 score JVPs
    s_ort = geodesic.geodesic_shoot(lambda z: ort_backend.score(z, t), x[0], v[0] * 0.1,
                                    score_jvp=lambda z, u: ort_backend.score_jvp(z, t, u), **kw)
    s_torch = geodesic.geodesic_shoot(lambda z: tiny_model.score(z, t), x[0], v[0] * 0.1,
                                      score_jvp=lambda z, u: tiny_model.score_jvp(z, t, u), **kw)
    assert rel_err(s_ort.path, s_torch.path) <= REL_TOL
