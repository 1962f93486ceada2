"""Training: a tiny DDPM on 16x16 scenes learns, resumes, and exports a loadable pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline import load_model
from pipeline.errors import InputError
from pipeline.train import (
    TrainConfig,
    build_unet,
    check_config,
    diffusion_loss,
    load_pool,
    make_scheduler,
    sample_batch,
    train,
)


def tiny_config(out, **kw) -> TrainConfig:
    base = dict(
        out_dir=str(out), size=16, block_out_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4,
        attention_head_dim=8, batch_size=16, lr=3e-3, warmup_steps=5, pool_size=64, steps=40, minutes=None,
        log_every=10, device="cpu", ema_decay=0.9,
    )
    base.update(kw)
    return TrainConfig(**base)


def fixed_batch_loss(unet, cfg: TrainConfig, pool: torch.Tensor) -> float:
    """Mean diffusion loss over a fixed batch (fixed images, timesteps and noise), averaged over 4 draws."""
    gen = torch.Generator().manual_seed(123)
    ac = make_scheduler(cfg).alphas_cumprod.float()
    with torch.no_grad():
        return float(torch.stack([diffusion_loss(unet, sample_batch(pool, 32, gen, False), ac, gen)
                                  for _ in range(4)]).mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("train"))
    return cfg, train(cfg)


def test_training_lowers_loss(trained):
    cfg, result = trained
    pool = torch.from_numpy(load_pool(cfg, result.out_dir))
    torch.manual_seed(cfg.seed)
    initial = build_unet(cfg).eval()  # the same init the run started from
    trained_unet = build_unet(cfg).eval()
    trained_unet.load_state_dict(torch.load(result.checkpoint, weights_only=True)["model"])
    before, after = fixed_batch_loss(initial, cfg, pool), fixed_batch_loss(trained_unet, cfg, pool)
    assert after < 0.7 * before, (before, after)
    assert result.losses[-1][1] < result.losses[0][1]
    assert result.steps == 40 and result.steps_this_run == 40


def test_logs_and_state(trained):
    cfg, result = trained
    lines = (result.out_dir / "train.log").read_text().splitlines()
    assert sum(line.startswith("step ") for line in lines) == 4
    state = json.loads((result.out_dir / "train_state.json").read_text())
    assert state["steps"] == 40 and state["config"]["size"] == 16


def test_exported_pipeline_loads(trained):
    cfg, result = trained
    model = load_model(result.pipeline_dir, device="cpu")
    assert model.sample_size == 16 and model.num_train_timesteps == 1000
    x = torch.randn(2, 3, 16, 16)
    assert model.eps(x, 500).shape == (2, 3, 16, 16)
    assert torch.allclose(model.alphas_cumprod, make_scheduler(cfg).alphas_cumprod.double())


def test_resume_continues_step_count(tmp_path):
    cfg = tiny_config(tmp_path, steps=6, log_every=3)
    first = train(cfg)
    assert first.steps == 6 and first.resumed_from == 0
    second = train(tiny_config(tmp_path, steps=9, log_every=3))
    assert second.resumed_from == 6 and second.steps == 9 and second.steps_this_run == 3
    fresh = train(tiny_config(tmp_path, steps=2, resume=False, log_every=1))
    assert fresh.steps == 2 and fresh.resumed_from == 0


@pytest.mark.parametrize(
    "kw",
    [dict(size=6), dict(size=18, block_out_channels=(8, 16, 16), attention_levels=(False, False, True)),
     dict(attention_levels=(True,)), dict(norm_num_groups=3), dict(steps=None, minutes=None), dict(lr=0.0),
     dict(device="tpu"), dict(lr_decay="step"), dict(lr_min_ratio=2.0)],
)
def test_bad_config(tmp_path, kw):
    from pipeline.train import resolve_device

    with pytest.raises(InputError):
        cfg = check_config(tiny_config(tmp_path, **kw))
        resolve_device(cfg.device)


def test_cli_registers_train():
    from pipeline.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "x", "--steps", "5", "--minutes", "0", "--threads", "1"])
    assert args.command == "train" and args.steps == 5 and args.minutes == 0.0


def test_cli_sample_writes_grid(trained, tmp_path):
    from pipeline.cli import main

    out = tmp_path / "grid.png"
    assert main(["sample", "--model", str(trained[1].pipeline_dir), "--n", "3", "--steps", "2", "--cell", "16",
                 "--out", str(out), "--device", "cpu"]) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 3 * 16


def test_cancel_writes_resumable_checkpoint(tmp_path):
    from pipeline.errors import Cancelled

    seen = []
    with pytest.raises(Cancelled):
        train(tiny_config(tmp_path, steps=50), progress=lambda k, n, desc: seen.append(k),
              cancel=lambda: len(seen) >= 3)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3
    assert load_model(tmp_path / "pipeline", device="cpu").sample_size == 16


def test_lr_schedule(tmp_path):
    from pipeline.train import lr_at

    const = tiny_config(tmp_path, lr=1.0, warmup_steps=10)
    assert lr_at(const, 0) == pytest.approx(0.1) and lr_at(const, 50, 0.9) == 1.0
    cos = tiny_config(tmp_path, lr=1.0, warmup_steps=10, lr_decay="cosine", lr_min_ratio=0.1)
    assert lr_at(cos, 50, 0.0) == 1.0 and lr_at(cos, 50, 1.0) == pytest.approx(0.1)
    assert lr_at(cos, 50, 0.5) == pytest.approx(0.55)


def test_mixed_pool_and_init_from(trained, tmp_path):
    """The mixed dataset alternates the scene families by seed; init_from starts from another model's weights (one
    step at a negligible learning rate exports them unchanged to 1e-8; a fresh start differs by about 0.1) and refuses a
    different architecture."""
    from pipeline.scenes import make_scene

    cfg = tiny_config(tmp_path / "mixed", dataset="mixed", pool_size=4)
    (tmp_path / "mixed").mkdir()
    pool = load_pool(cfg, tmp_path / "mixed")
    for s in range(4):
        assert (pool[s] == make_scene(s, size=16, family=("smooth", "textured")[s % 2]).image).all()
    assert (tmp_path / "mixed" / "mixed_16px_4.npy").is_file()
    src = str(trained[1].pipeline_dir)
    res = train(tiny_config(tmp_path / "ft", dataset="textured", pool_size=16, steps=1, lr=1e-12, init_from=src))
    fresh = train(tiny_config(tmp_path / "fresh", dataset="textured", pool_size=16, steps=1, lr=1e-12))
    a = load_model(src).unet.state_dict()
    b = load_model(res.pipeline_dir).unet.state_dict()
    c = load_model(fresh.pipeline_dir).unet.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-8
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 0.02  # measured 0.099
    assert "initialised from" in (tmp_path / "ft" / "train.log").read_text()
    with pytest.raises(InputError, match="init_from .* differs"):
        train(tiny_config(tmp_path / "bad", block_out_channels=(8, 8), pool_size=16, steps=1, init_from=src))
