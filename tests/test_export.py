"""Export: contracts as data, parity of every graph with PyTorch, the manifest, hash keys, rebuilds, the CLI.

Exporting is slow (tracing + the dynamo exporter: seconds per graph on CPU), so the whole graph set of the tiny model
is exported ONCE per session, through the CLI in-process (:func:`shared_export`), and shared with test_accel.py.

Tolerances (documented in export.manifest.TOLERANCES): fp32 ONNX vs PyTorch, norm-wise relative error
``max|a - b| / max|b| <= 1e-4`` (measured ~1e-6); against the float64 autograd reference, ``<= 1e-4`` as well.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export import (
    GRAPHS,
    TOLERANCES,
    ExportError,
    GraphSpec,
    Manifest,
    artifact_key,
    code_digest,
    code_version,
    export_specs,
    graph_spec,
    model_specs,
    weights_hash,
)
from export.fingerprint import file_sha256
from pipeline.errors import InputError

SHARED_BATCH = 2  # the static batch of the shared export's JVP graphs
REL_TOL = TOLERANCES["fp32"].max_rel

_SHARED: dict = {}


def shared_export(tmp_path_factory, tiny_pixel_dir) -> dict:
    """``python -m export`` run in-process once per session: every graph of the tiny model at batch 2, exported by
    two worker processes.

    Returns ``{"dir": Path, "rc": int, "stdout": str}``. Shared by test_export.py and test_accel.py.
    """
    if not _SHARED:
        from export.__main__ import main

        out = tmp_path_factory.mktemp("export_shared")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["--model", tiny_pixel_dir, "--out", str(out), "--batch-sizes", str(SHARED_BATCH),
                       "--graphs", *GRAPHS, "--device", "cpu", "--jobs", "2"])
        _SHARED.update(dir=out, rc=rc, stdout=buf.getvalue())
    return _SHARED


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b| (norm-wise relative error)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_pixel_dir) -> dict:
    return shared_export(tmp_path_factory, tiny_pixel_dir)


@pytest.fixture(scope="module")
def manifest(exported) -> Manifest:
    return Manifest.load(exported["dir"])


# ---- contracts as data -----------------------------------------------------------------------------------------------
def test_specs_are_frozen_data():
    spec = graph_spec("h_jvp", channels=3, size=(16, 16), h_shape=(16, 8, 8), batch=4)
    assert spec.name == "h_jvp_b4" and spec.input_names == ("x", "t", "v") and spec.output_names == ("h", "jh")
    assert spec.inputs[1].dtype == "int64" and spec.inputs[0].shape == (4, 3, 16, 16)
    assert spec.dynamic_axes == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.batch = 8
    assert GraphSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    dyn = graph_spec("eps", channels=3, size=(16, 16), h_shape=(16, 8, 8), opt_batch=8)
    assert dyn.batch is None and dyn.batch_range == (1, 8, 64)
    assert dyn.dynamic_axes == {"x": {0: "B"}, "t": {0: "B"}, "eps": {0: "B"}}
    other = graph_spec("h_jvp", channels=3, size=(16, 16), h_shape=(16, 8, 8), batch=8)
    assert spec.digest() != other.digest() and spec.digest() == graph_spec(
        "h_jvp", channels=3, size=(16, 16), h_shape=(16, 8, 8), batch=4).digest()
    point = graph_spec("h_jvp_point", channels=3, size=(16, 16), h_shape=(16, 8, 8), batch=4)
    assert point.inputs[0].shape == (1, 3, 16, 16) and point.outputs[1].shape == (4, 16, 8, 8)


def test_bad_arguments_say_what_is_accepted(tiny_model):
    with pytest.raises(InputError, match="subset of"):
        model_specs(tiny_model, graphs=("h", "nope"))
    with pytest.raises(InputError, match="batch_sizes"):
        model_specs(tiny_model, batch_sizes=(0,))
    with pytest.raises(InputError, match="static batch"):
        graph_spec("h_jvp", channels=3, size=(16, 16), h_shape=(16, 8, 8))
    with pytest.raises(InputError, match="precision"):
        export_specs(tiny_model, "unused", [], precision="int8")


def test_export_rejects_float64(tiny_model64, tmp_path):
    with pytest.raises(InputError, match="float32"):
        export_specs(tiny_model64, tmp_path, [])


# ---- the CLI run and the manifest ------------------------------------------------------------------------------------
def test_cli_exported_every_graph(exported, manifest):
    assert exported["rc"] == 0, exported["stdout"]
    names = {f"{g}.onnx" if g in ("h", "eps") else f"{g}_b{SHARED_BATCH}.onnx" for g in GRAPHS}
    assert set(manifest.artifacts) == names
    for name in names:
        assert name in exported["stdout"]
    assert "FAIL" not in exported["stdout"] and "manifest.json" in exported["stdout"]


def test_manifest_records_checks_and_hashes(exported, manifest, tiny_model):
    weights = weights_hash(tiny_model)
    assert manifest.weights_hash == weights
    cv = manifest.code_version
    assert cv == code_version() and {"torch", "onnx", "onnxscript", "sources_sha256"} <= set(cv)
    for name, art in manifest.artifacts.items():
        assert art.key == artifact_key(weights, art.spec.digest(), code_digest(cv))
        assert art.spec_digest == art.spec.digest() and art.weights_hash == weights
        for fname, digest in art.files.items():
            assert file_sha256(Path(exported["dir"]) / fname) == digest
        (check,) = art.checks
        assert check.passed and check.polygraphy_passed and "onnxruntime" in check.runner
        assert set(check.max_abs) == set(art.spec.output_names)
        assert max(check.max_rel.values()) <= REL_TOL
        assert manifest.problem(name, exported["dir"], art.key) is None


@pytest.mark.parametrize("graph", GRAPHS)
def test_parity_every_graph(exported, manifest, tiny_model, graph):
    """Each ONNX graph, run by onnxruntime directly, against the model's own PyTorch maps on fresh inputs."""
    import onnxruntime as ort

    name = f"{graph}.onnx" if graph in ("h", "eps") else f"{graph}_b{SHARED_BATCH}.onnx"
    spec = manifest.artifacts[name].spec
    sess = ort.InferenceSession(str(Path(exported["dir"]) / name), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(7)
    B = 3 if spec.batch is None else spec.batch  # dynamic graphs at a batch they were not traced at
    x = torch.randn(1 if graph == "h_jvp_point" else B, 3, 16, 16, generator=g)
    t = torch.randint(0, 1000, (x.shape[0],), generator=g)
    v = torch.randn(B, 3, 16, 16, generator=g)
    feeds = {"x": x.numpy(), "t": t.numpy(), "v": v.numpy()}
    outs = sess.run(None, {k: feeds[k] for k in spec.input_names})
    m = tiny_model
    if graph == "h":
        refs = (m.h(x, t),)
    elif graph == "eps":
        refs = (m.eps(x, t),)
    elif graph == "h_jvp":
        refs = m.h_jvp(x, t, v)
    elif graph == "eps_jvp":
        refs = m.eps_jvp(x, t, v)
    else:
        refs = (m.h(x, t), torch.cat([m.h_jvp(x, t, v[i : i + 1])[1] for i in range(B)]))
    for o, r in zip(outs, refs, strict=True):
        assert o.shape == tuple(r.shape)
        assert rel_err(torch.from_numpy(o), r.detach()) <= REL_TOL


@pytest.mark.parametrize("graph", ["h_jvp", "eps_jvp"])
def test_jvp_graphs_match_float64_autograd(exported, tiny_model64, graph):
    """The exported JVPs against an independent reference: torch.autograd.functional.jvp in float64."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(Path(exported["dir"]) / f"{graph}_b{SHARED_BATCH}.onnx"),
                                providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(SHARED_BATCH, 3, 16, 16, generator=g)
    v = torch.randn(SHARED_BATCH, 3, 16, 16, generator=g)
    t = torch.tensor([17, 905])
    _, jv = sess.run(None, {"x": x.numpy(), "t": t.numpy(), "v": v.numpy()})
    raw = tiny_model64.h_raw if graph == "h_jvp" else tiny_model64.eps_raw
    _, ref = torch.autograd.functional.jvp(lambda xx: raw(xx, t), x.double(), v.double())
    assert rel_err(torch.from_numpy(jv), ref) <= REL_TOL


def test_reexport_reuses_valid_artifacts(exported, manifest, tiny_model, caplog):
    specs = [a.spec for a in manifest.artifacts.values() if a.spec.graph in ("h", "h_jvp")]
    before = {f: (Path(exported["dir"]) / f).stat().st_mtime_ns for a in manifest.artifacts.values() for f in a.files}
    with caplog.at_level(logging.INFO, logger="export"):
        again = export_specs(tiny_model, exported["dir"], specs)
    assert "up to date" in caplog.text and "exporting" not in caplog.text
    assert again.artifacts.keys() == manifest.artifacts.keys()
    after = {f: (Path(exported["dir"]) / f).stat().st_mtime_ns for f in before}
    assert before == after


# ---- keys, staleness, corruption -------------------------------------------------------------------------------------
def test_changing_weights_changes_the_key(tiny_pixel_dir, tiny_model, manifest, exported):
    from pipeline import load_model

    other = load_model(tiny_pixel_dir, device="cpu")
    assert weights_hash(other) == weights_hash(tiny_model)
    with torch.no_grad():
        next(other.unet.parameters()).add_(1e-3)
    w = weights_hash(other)
    assert w != weights_hash(tiny_model)
    art = manifest.artifacts["h.onnx"]
    new_key = artifact_key(w, art.spec.digest(), code_digest())
    assert new_key != art.key
    assert manifest.problem("h.onnx", exported["dir"], new_key).startswith("stale")


def test_weights_hash_is_the_same_in_every_process_and_folder(tiny_pixel_dir, tmp_path):
    """The key must survive a restart: diffusers' private config entries (the folder's path, and the list of defaulted
    keys, whose order follows the process's string hashing) are not hashed; a real config change is."""
    import json
    import os
    import subprocess
    import sys

    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        shutil.copytree(tiny_pixel_dir, folder)
        cfg = json.loads((folder / "unet" / "config.json").read_text())
        for key in ("dropout", "downsample_type", "upsample_type", "add_attention", "resnet_time_scale_shift",
                    "class_embed_type", "num_class_embeds", "time_embedding_dim"):
            cfg.pop(key, None)  # defaulted on load: several entries in _use_default_values
        (folder / "unet" / "config.json").write_text(json.dumps(cfg))
        folders.append(folder)
    code = ("import sys; from pipeline import load_model; from export import weights_hash; "
            "m = load_model(sys.argv[1], device='cpu'); "
            "assert len(m.unet.config['_use_default_values']) > 3, m.unet.config['_use_default_values']; "
            "print(weights_hash(m))")
    root = str(Path(__file__).resolve().parent.parent)
    hashes = {subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True,
                             cwd=root, env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
              for folder, seed in zip(folders * 2, ("1", "2", "3", "4"), strict=True)}
    assert len(hashes) == 1, hashes
    cfg = json.loads((folders[1] / "unet" / "config.json").read_text())
    (folders[1] / "unet" / "config.json").write_text(json.dumps({**cfg, "norm_eps": 1e-3}))
    changed = subprocess.run([sys.executable, "-c", code, str(folders[1])], capture_output=True, text=True,
                             check=True, cwd=root).stdout.strip()
    assert changed not in hashes


def test_garbled_manifest_is_rebuilt_with_a_warning(exported, manifest, tiny_model, tmp_path, caplog):
    work = tmp_path / "art"
    shutil.copytree(exported["dir"], work)
    (work / "manifest.json").write_text('{"format": 1, "artifacts": {"h.onnx": [')  # truncated JSON
    spec = manifest.artifacts["h.onnx"].spec
    with caplog.at_level(logging.WARNING, logger="export"):
        rebuilt = export_specs(tiny_model, work, [spec])
    assert "ignoring the manifest" in caplog.text
    art = rebuilt.artifacts["h.onnx"]
    assert art.checked and Manifest.load(work).artifacts.keys() == {"h.onnx"}
    assert file_sha256(work / "h.onnx") == art.files["h.onnx"]


def test_tensorrt_export_without_tensorrt_says_why(tiny_model, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt imports here; this test covers machines without it")
    except Exception:
        pass
    with pytest.raises(ExportError, match="import tensorrt"):
        export_specs(tiny_model, tmp_path, model_specs(tiny_model, graphs=("h",)), tensorrt=True)


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engines_match_torch(tensorrt_cuda, tiny_pixel_dir, tmp_path, precision):
    from export import export_graphs
    from pipeline import load_model

    model = load_model(tiny_pixel_dir, device="cuda")
    man = export_graphs(model, tmp_path, batch_sizes=(2,), graphs=("h", "h_jvp"), precision=precision, tensorrt=True)
    engines = [a for a in man.artifacts.values() if a.kind == "engine"]
    assert len(engines) == 2 and all(a.checked and a.precision == precision for a in engines)
    assert (tmp_path / "timing.cache").is_file()


def test_cli_reports_errors(tmp_path, capsys):
    from export.__main__ import main

    assert main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    with pytest.raises(SystemExit):
        main(["--model", "default", "--out", str(tmp_path), "--graphs", "bogus"])


def test_check_detects_a_wrong_graph(exported, manifest, tiny_pixel_dir):
    """The parity check is not vacuous: the h graph checked against a model with other weights fails."""
    from export.check import check_onnx
    from pipeline import load_model

    other = load_model(tiny_pixel_dir, device="cpu")
    with torch.no_grad():
        for p in other.unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    spec = manifest.artifacts["h.onnx"].spec
    res = check_onnx(other, spec, Path(exported["dir"]) / "h.onnx", raise_on_failure=False)
    assert not res.passed and max(res.max_rel.values()) > REL_TOL
    assert np.isfinite(list(res.max_abs.values())).all()


@pytest.mark.slow
def test_latent_model_exports_every_graph(tiny_latent_model, tmp_path):
    """A Stable-Diffusion-style model (cross-attention on the constant empty-prompt conditioning) exports and checks."""
    from export import DEFAULT_GRAPHS, export_graphs

    man = export_graphs(tiny_latent_model, tmp_path, batch_sizes=(2,), graphs=DEFAULT_GRAPHS)
    assert len(man.artifacts) == 4 and all(a.checked for a in man.artifacts.values())


# ---- graph rewrites of the traced JVP ------------------------------------------------------------------------------
def _trace_jvp(fn, *inputs):
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    def jvp(x, v):
        return torch.func.jvp(fn, (x,), (v,))

    with torch.no_grad():
        return make_fx(jvp, tracing_mode="real", decomposition_table=core_aten_decompositions())(*inputs)


def _ops(gm) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("dim", [-1, 1])
def test_attention_jvp_rewrites_match_float64(dim):
    """Forward AD's softmax tangent recomputes the exponentials (logsumexp_jvp): the rewrite uses the softmax the graph
    already has. The score tangent ``dq k^T + q dk^T`` becomes one product of concatenated factors. The traced JVP
    still equals eager float64 forward AD."""
    from export.trace import fuse_matmul_sums, fuse_softmax_jvp

    g = torch.Generator().manual_seed(0)
    wq, wk = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.randn(6, 6, generator=g, dtype=torch.float64)

    def attention(x):  # (B, L, 6) -> (B, L, 6)
        scores = (x @ wq) @ (x @ wk).transpose(-1, -2) / 6**0.5
        return torch.softmax(scores, dim=dim) @ x

    x = torch.randn(2, 40, 6, generator=g, dtype=torch.float64)  # scores (2, 40, 40): larger than their factors
    v = torch.randn(2, 40, 6, generator=g, dtype=torch.float64)
    gm = _trace_jvp(attention, x, v)
    assert "aten.exp.default" in _ops(gm) and "aten.amax.default" in _ops(gm)  # the pattern is there to rewrite
    bmm_before = _ops(gm).count("aten.bmm.default")
    assert fuse_softmax_jvp(gm) == 1
    # the score tangent's two products become one; the output tangent's (smaller than its factors) stay two
    assert fuse_matmul_sums(gm) == 1
    gm.recompile()
    ops = _ops(gm)
    assert "aten.exp.default" not in ops and "aten.amax.default" not in ops and ops.count("aten._softmax.default") == 1
    assert ops.count("aten.bmm.default") == bmm_before - 1 and ops.count("aten.cat.default") == 2
    out, tangent = gm(x, v)
    ref_out, ref_tangent = torch.func.jvp(attention, (x,), (v,))
    assert rel_err(out, ref_out) < 1e-14
    assert rel_err(tangent, ref_tangent) < 1e-13


def test_jvp_rewrites_leave_other_graphs_alone():
    """A graph without the exact patterns (log-softmax's tangent; a softmax whose tangent is not taken; a sum of
    products smaller than their factors) is unchanged."""
    from export.trace import fuse_matmul_sums, fuse_softmax_jvp

    x = torch.randn(3, 7, dtype=torch.float64)
    w = torch.randn(7, 7, dtype=torch.float64)
    for fn in (lambda z: torch.log_softmax(z, -1), lambda z: torch.softmax(z.detach(), -1) * z,
               lambda z: (z @ w) @ z.T):  # a product's tangent whose output (3, 3) is smaller than its factors
        gm = _trace_jvp(fn, x, torch.randn_like(x))
        before = _ops(gm)
        assert fuse_softmax_jvp(gm) == 0 and fuse_matmul_sums(gm) == 0
        assert _ops(gm) == before


def test_traced_jvp_graph_of_a_cross_attention_unet_has_no_second_softmax(tiny_latent_model):
    """On the latent model's JVP graph (self- and cross-attention), every softmax tangent is rewritten: no
    exponential of the scores is left, and the cleaned graph still matches eager forward AD."""
    from export.trace import graph_function, trace_static

    m = tiny_latent_model
    s = m.sample_size
    h_shape = tuple(m.h(torch.zeros(1, m.channels, s, s), 10).shape[1:])
    spec = graph_spec("eps_jvp", channels=m.channels, size=(s, s), h_shape=h_shape, batch=1)
    traced = trace_static(m, spec)
    ops = _ops(traced.gm)
    assert ops.count("aten._softmax.default") > 0
    assert "aten.amax.default" not in ops
    g = torch.Generator().manual_seed(3)
    x, v = torch.randn(1, m.channels, s, s, generator=g), torch.randn(1, m.channels, s, s, generator=g)
    t = torch.tensor([m.num_train_timesteps // 2])
    with torch.no_grad():
        got, ref = traced(x, t, v), graph_function(m, "eps_jvp")(x, t, v)
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) < REL_TOL
