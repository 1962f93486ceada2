"""Rotated digits (pipeline.digits) and a tiny DDPM trained on them with the project's trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import load_model
from pipeline.digits import DIGIT_SPLITS, digit_label, make_digit_pool, rotated_digit, rotation_path
from pipeline.errors import InputError
from pipeline.train import TrainConfig, check_config, load_pool, train


def test_splits_are_disjoint_and_cover_the_digits():
    tr, ho = set(DIGIT_SPLITS["train"]), set(DIGIT_SPLITS["heldout"])
    assert not tr & ho and len(tr | ho) == 1797
    assert 0 <= digit_label(1500) <= 9


def test_rotation_is_a_rotation():
    a = rotated_digit(1500, 0.0).astype(float)
    assert a.shape == (16, 16, 3) and a.max() > 200 and np.array_equal(a[..., 0], a[..., 2])
    assert a[:2].max() == 0 and a[:, :2].max() == 0  # the padding border stays black unrotated
    # 90 degrees is an exact grid permutation for an even canvas rotated about its centre
    r90 = rotated_digit(1500, 90.0).astype(float)
    np.testing.assert_allclose(r90[..., 0], np.rot90(a[..., 0]), atol=1.0)
    # ink is (nearly) preserved by a non-grid rotation, and the image changes
    r30 = rotated_digit(1500, 30.0).astype(float)
    assert abs(r30.sum() / a.sum() - 1) < 0.05 and np.abs(r30 - a).mean() > 5
    path = rotation_path(1500, 10.0, 100.0, 4)
    assert len(path) == 4 and np.array_equal(path[-1], rotated_digit(1500, 100.0))


def test_pool_is_reproducible_and_from_its_split():
    p1, p2 = make_digit_pool(8, seed=3), make_digit_pool(8, seed=3)
    assert p1.shape == (8, 16, 16, 3) and p1.dtype == np.uint8 and np.array_equal(p1, p2)
    assert not np.array_equal(p1, make_digit_pool(8, seed=4))
    assert make_digit_pool(2, size=32).shape == (2, 32, 32, 3)
    with pytest.raises(InputError):
        make_digit_pool(2, split="test")
    with pytest.raises(InputError):
        rotated_digit(1797, 0.0)
    with pytest.raises(InputError):
        rotated_digit(0, 0.0, size=20)


def test_tiny_digits_model_trains_and_loads(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), size=16, dataset="digits", block_out_channels=(8, 16),
                      attention_levels=(False, True), norm_num_groups=4, attention_head_dim=8, batch_size=16,
                      lr=3e-3, warmup_steps=5, pool_size=64, steps=30, minutes=None, log_every=10, device="cpu",
                      ema_decay=0.9, hflip=False)
    result = train(cfg)
    pool = load_pool(cfg, result.out_dir)
    assert pool.shape == (64, 16, 16, 3) and np.array_equal(pool, make_digit_pool(64, seed=cfg.seed))
    assert result.losses[-1][1] < result.losses[0][1]
    model = load_model(result.pipeline_dir, device="cpu")
    assert model.eps(torch.randn(2, 3, 16, 16), 500).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("kw", [dict(dataset="mnist"), dict(dataset="digits", size=24)])
def test_bad_digits_config(tmp_path, kw):
    base = dict(out_dir=str(tmp_path), block_out_channels=(8, 16), attention_levels=(False, True),
                norm_num_groups=4, steps=1, minutes=None)
    with pytest.raises(InputError):
        check_config(TrainConfig(**{**base, **kw}))
