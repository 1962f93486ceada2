"""Fast checks of benchmark helpers that reported figures depend on (the benchmarks themselves: test_benchmarks.py)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from test_ddim import CountingEps

from benchmarks.default_model import denoising_error, inversion_calls, parse_inversion
from pipeline import InputError
from pipeline.ddim import invert


@pytest.mark.parametrize("spec", ["corrected", "explicit", "explicit+2", "corrected+1"])
def test_inversion_calls_match_the_model_calls_invert_makes(tiny_model, spec):
    method, n = parse_inversion(spec)
    counter = CountingEps(tiny_model)
    x0 = torch.zeros(1, 3, tiny_model.sample_size, tiny_model.sample_size)
    invert(counter, x0, t_end=200, num_steps=5, method=method, fixed_point=n)
    assert counter.calls == inversion_calls(spec, 5)


@pytest.mark.parametrize("spec", ["", "implicit", "explicit+", "explicit+x", "explicit+-1", "corrected+1+1"])
def test_bad_inversion_specs_are_rejected(spec):
    with pytest.raises(InputError, match="METHOD"):
        parse_inversion(spec)


class _KnownImageEps:
    """A noise predictor for images that are all one known value c: the exact noise (``oracle``) or zero."""

    def __init__(self, tiny_model, c: float, oracle: bool):
        self.alphas_cumprod, self.device, self.dtype = tiny_model.alphas_cumprod, torch.device("cpu"), torch.float32
        self.c, self.oracle = c, oracle

    def eps(self, xt, t):
        ab = float(self.alphas_cumprod[int(t)])
        return (xt - ab**0.5 * self.c) / (1 - ab) ** 0.5 if self.oracle else torch.zeros_like(xt)


def test_denoising_error_is_zero_for_the_exact_noise_and_one_for_zero(tiny_model):
    images = np.full((10, 8, 8, 3), 255, np.uint8)  # x_0 = 1 everywhere
    exact = denoising_error(_KnownImageEps(tiny_model, 1.0, True), images, (50, 800), batch_size=4)
    zero = denoising_error(_KnownImageEps(tiny_model, 1.0, False), images, (50, 800), batch_size=4)
    assert set(exact) == {50, 800} and max(exact.values()) < 1e-9
    assert all(abs(v - 1.0) < 0.1 for v in zero.values())  # E eps^2 = 1 over 1920 draws
    # the noise is seeded: the same figures again, and another seed differs
    assert denoising_error(_KnownImageEps(tiny_model, 1.0, False), images, (50,), batch_size=4) == {50: zero[50]}
    assert denoising_error(_KnownImageEps(tiny_model, 1.0, False), images, (50,), seed=1)[50] != zero[50]


def test_edit_quality_files_are_kept_apart_by_split_family_and_embedded_model():
    from benchmarks.edit_quality import BenchConfig, reproduce_command, result_stem

    assert result_stem(BenchConfig(), "edit_quality") == "edit_quality"
    assert result_stem(BenchConfig(split="tuning", family="textured"), "edit_quality") == "edit_quality_tuning_textured"
    tex = BenchConfig(family="textured", model="textured")
    assert result_stem(tex, "edit_removal_study", split=False) == "edit_removal_study_textured_model-textured"
    assert result_stem(BenchConfig(model="some/folder"), "edit_quality") == "edit_quality"  # folders: --out decides
    assert "--no-generative" in reproduce_command(BenchConfig(generative=False))
    assert "generative" not in reproduce_command(BenchConfig())


def test_fills_vs_curves_table_pools_single_fills_and_correlates_per_scene():
    """The table's means pool each kind's fills, and the per-scene correlation has the sign of the data (closer curves
    with higher PSNR: negative)."""
    from benchmarks.edit_quality import fills_vs_curves_markdown

    def scene(seed, sign):  # PSNR falls (sign > 0) or rises (sign < 0) with the curve distance
        fills = {"harmonic fill": (10.0, 0.4), "single fill 0": (12.0, 0.3), "single fill 1": (14.0, 0.2),
                 "mean of 2": (16.0, 0.1)}
        return {"seed": seed, "background": "stripes",
                **{k: {"psnr": p, "curve_rms": c if sign < 0 else 0.5 - c} for k, (p, c) in fills.items()}}

    res = {"rows": [scene(1, -1), scene(2, +1)], "samples": 2, "grid": {"t_edit": 300, "num_steps": 20},
           "family": "textured", "model": "textured"}
    md = fills_vs_curves_markdown(res, "CMD")
    assert "| single generative fill | 13.00 | 0.250 |" in md  # (0.3, 0.2) and (0.2, 0.3) pooled
    assert "| harmonic fill | 10.00 | 0.250 |" in md and "| mean of 2 generative fills | 16.00 | 0.250 |" in md
    corr = {ln.split("|")[1].strip(): float(ln.split("|")[3]) for ln in md.splitlines() if ln.startswith("| 1 |")
            or ln.startswith("| 2 |")}
    assert corr == {"1": -1.0, "2": 1.0}
    assert "`CMD`" in md


def test_edit_study_runs_on_the_tuning_split_only_and_tables_each_configuration(tmp_path):
    from benchmarks.edit_quality import BenchConfig, edit_study_markdown, run_edit_study

    with pytest.raises(InputError, match="TUNING split"):
        run_edit_study(None, BenchConfig(), "blend", [{}], tmp_path / "s.json")
    summary = {f"{m}/{k}": {"mean": v, "n": 2, "n_inf": 0} for m, k, v in [
        ("seam gradient error", "curve", 0.5), ("seam gradient error", "naive paste", 0.6),
        ("psnr edited region", "curve", 25.0), ("psnr edited region", "naive paste", 24.0)]}
    study = {"entries": {'{"lr": 0.001}': {"summary": summary, "n": 2, "cpu_s": 12.0}}}
    cfg = BenchConfig(split="tuning", family="textured", model="textured", n_blend=2)
    md = edit_study_markdown(study, "blend", cfg)
    assert '| `{"lr": 0.001}` | 2 | 0.5 | 0.6 | 25 | 24 | 12 |' in md
    assert "--split tuning --n-blend 2 --edit-study blend" in md


def test_removal_rows_carry_the_texture_measure_and_the_table_shows_it(tiny_model):
    """Each removal method gets its texture error (|mean gradient magnitude - truth's| inside the mask) and ratio
    beside PSNR and SSIM, recomputed here for the harmonic fill, and the removal table shows both columns."""
    from benchmarks.edit_quality import BenchConfig, colour_texture, markdown, run_removal
    from pipeline.scenes import make_scene

    cfg = BenchConfig(n_remove=1, repaint_steps=2, generative=False, overrides={"remove": {"iterations": 1}})
    part = run_removal(tiny_model, cfg)
    row = part["rows"][0]
    sc = make_scene(row["seed"], size=tiny_model.image_size)
    m, gt = sc.masks[-1], sc.removed[-1]
    names = [k.split("/", 1)[1] for k in row if k.startswith("psnr/")]
    assert {f"texture/{n}" for n in names} <= set(row) and {f"texture_ratio/{n}" for n in names} <= set(row)
    truth = colour_texture(gt, m)[1]
    assert truth > 0
    for n in names:
        assert row[f"texture/{n}"] == pytest.approx(abs(row[f"texture_ratio/{n}"] * truth - truth), abs=1e-9)
    res = {"config": asdict(cfg), "model": "tiny", "command": "c", "total_seconds": 1.0, "torch_threads": 1, "jobs": 1,
           "part_seconds": {"remove": 1.0}, "parts": {"remove": part}}
    md = markdown(res)
    assert "| method | PSNR (dB) | SSIM | texture error | texture / truth's |" in md
    s = part["summary"]
    assert f"| {s['texture/opencv telea']['mean']:.4f} | {s['texture_ratio/opencv telea']['mean']:.2f} |" in md


def test_transfer_rows_carry_the_curve_loss_at_the_first_and_last_step(tiny_model):
    """The curve results of the transfer part record the loop's curve loss at its first and last gradient step (the
    same values as the edit's own loss history; the ablation has none), and the transfer table shows them."""
    from benchmarks.edit_quality import BenchConfig, _transfer_scenes, markdown, run_transfer
    from pipeline import edit as E

    kw = {"t_edit": 100, "num_steps": 3, "iterations": 1}
    cfg = BenchConfig(n_transfer=1, overrides={"transfer": kw})
    part = run_transfer(tiny_model, cfg)
    row = part["rows"][0]
    assert "curve loss first/ablation" not in row
    sc = _transfer_scenes(cfg, tiny_model.image_size, 1)[0]
    for name, extra in (("curve", {}), ("curve, init=invert", {"init": "invert"})):
        r = E.transfer(tiny_model, sc.image, sc.masks[-1], sc.masks[0], measure_curves=False, seed=cfg.seed,
                       **kw, **extra)
        assert row[f"curve loss first/{name}"] == pytest.approx(float(r.loss_history[0]))
        assert row[f"curve loss last/{name}"] == pytest.approx(float(r.loss_history[-1]))
    res = {"config": asdict(cfg), "model": "tiny", "command": "c", "total_seconds": 1.0, "torch_threads": 1, "jobs": 1,
           "part_seconds": {"transfer": 1.0}, "parts": {"transfer": part}}
    md = markdown(res)
    s = part["summary"]
    assert (f"| curve, init=invert | {s['curve loss first/curve, init=invert']['mean']:.4g} | "
            f"{s['curve loss last/curve, init=invert']['mean']:.4g} |") in md


def test_blend_references_measure_both_distances_to_the_truths_curves(tiny_model):
    """--blend-references: per tuning pair, the rms log-distance of the paste's curves and of blend's reference to the
    true composite's curves, recomputed here from blend's own outputs; the table shows the pair and the means."""
    from benchmarks.edit_quality import OFFSETS, BenchConfig, blend_references_markdown, run_blend_references
    from pipeline import edit as E
    from pipeline.scenes import SPLITS, make_scene, render

    kw = {"t_edit": 100, "num_steps": 3, "t_switch": 50}
    cfg = BenchConfig(split="tuning", overrides={"blend": kw})
    res = run_blend_references(tiny_model, cfg, (0, 1))
    row = res["rows"][0]
    a_seed, b_seed = SPLITS["tuning"][OFFSETS["blend_a"]], SPLITS["tuning"][OFFSETS["blend_b"]]
    assert row["seeds"] == [a_seed, b_seed]
    a, b = make_scene(a_seed, size=tiny_model.image_size), make_scene(b_seed, size=tiny_model.image_size)
    truth = render(b.background_params, b.params + [a.params[-1]], size=tiny_model.image_size,
                   ground_truth=False).image
    common = {**kw, "curve_weight": 0.0, "measure_curves": True}
    g = E.blend(tiny_model, b.image, a.image, a.masks[-1], guide=truth, **common)
    p = E.blend(tiny_model, b.image, a.image, a.masks[-1], **common)
    on = g.weights > 0
    assert row["entries"] == on.sum() > 0
    lt = np.log(g.reference[on])
    assert row["paste"] == pytest.approx(np.sqrt(np.mean((np.log(g.curves_before[on]) - lt) ** 2)))
    assert row["reference"] == pytest.approx(np.sqrt(np.mean((np.log(p.reference[on]) - lt) ** 2)))
    md = blend_references_markdown(res, "CMD")
    assert f"| {a_seed}, {b_seed} | {row['entries']} | {row['paste']:.3f} | {row['reference']:.3f} |" in md
    assert "`CMD`" in md


def test_shift_fill_continues_a_periodic_texture_at_its_phase():
    """A hole in diagonal stripes is filled exactly by the copy one period away; a hole that leaves no shift landing
    wholly on known pixels is left as it is."""
    from benchmarks.edit_quality import shift_fill

    yy, xx = np.mgrid[0:32, 0:32]
    truth = np.stack([(xx + 2 * yy) % 7 * 30, (xx + 2 * yy) % 7 * 10 + 40, 200 - (xx + 2 * yy) % 7 * 20], -1)
    truth = truth.astype(np.uint8)
    m = np.zeros((32, 32), bool)
    m[12:19, 10:17] = True
    img = truth.copy()
    img[m] = (255, 0, 255)
    assert np.array_equal(shift_fill(img, m), truth)
    big = np.ones((32, 32), bool)
    big[0, 0] = False
    assert np.array_equal(shift_fill(img, big), img)


def test_blend_references_command_writes_its_files(tiny_pixel_dir, tmp_path):
    """``--blend-references I0:I1`` runs the measurement on the TUNING pairs and writes its json and md, with the
    command that reproduces it."""
    import json as _json

    from benchmarks.edit_quality import main

    overrides = _json.dumps({"blend": {"t_edit": 100, "num_steps": 3, "t_switch": 50}})
    assert main(["--model", tiny_pixel_dir, "--out", str(tmp_path), "--blend-references", "0:1", "--threads", "1",
                 "--overrides", overrides]) == 0
    res = _json.loads((tmp_path / "edit_blend_references.json").read_text())
    assert len(res["rows"]) == 1 and "--blend-references 0:1 --overrides" in res["command"]
    assert res["command"] in (tmp_path / "edit_blend_references.md").read_text()
