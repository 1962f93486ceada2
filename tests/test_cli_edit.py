"""The four editing commands of ``python -m pipeline``, run in-process on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import build_parser, main

FAST = ["--t-edit", "100", "--num-steps", "2", "--iterations", "1", "--no-measure"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_edit")
    yy, xx = np.mgrid[0:20, 0:24]
    img = np.stack([xx * 10, yy * 12, 128 + 0 * xx], axis=-1).astype(np.uint8)
    img[6:13, 8:15] = (250, 30, 30)
    mask = np.zeros((20, 24), np.uint8)
    mask[6:13, 8:15] = 255
    src = np.zeros((20, 24), np.uint8)
    src[1:5, 1:6] = 255
    paths = {"image": d / "img.png", "mask": d / "mask.png", "src": d / "src.png", "fg": d / "fg.png", "dir": d}
    Image.fromarray(img).save(paths["image"])
    Image.fromarray(mask).save(paths["mask"])
    Image.fromarray(src).save(paths["src"])
    Image.fromarray(img[::-1].copy()).save(paths["fg"])
    return paths, img, mask > 0


def _check_out(path, img, changed):
    out = np.asarray(Image.open(path))
    assert out.shape == img.shape
    assert np.array_equal(out[~changed], img[~changed])


@pytest.mark.parametrize("task", ["remove", "transfer", "saliency", "blend"])
def test_edit_commands(tiny_pixel_dir, files, task, capsys):
    paths, img, mask = files
    out = paths["dir"] / f"{task}.png"
    argv = [task, "--image", str(paths["image"]), "--mask", str(paths["mask"]), "--out", str(out),
            "--model", tiny_pixel_dir, "--device", "cpu", *FAST]
    extra = {"remove": ["--init", "mean"], "transfer": ["--source-mask", str(paths["src"])],
             "saliency": ["--factor", "0.5", "--t-b", "10"],
             "blend": ["--foreground", str(paths["fg"]), "--alpha-blur", "0.7"]}[task]
    assert main(argv + extra) == 0
    assert f"{task}: wrote" in capsys.readouterr().out
    if task != "blend":
        _check_out(out, img, mask)
    else:
        assert np.asarray(Image.open(out)).shape == img.shape


def test_report_and_config_flags(tiny_pixel_dir, files):
    paths, img, mask = files
    out, rep = paths["dir"] / "r.png", paths["dir"] / "r.json"
    argv = ["remove", "--image", str(paths["image"]), "--mask", str(paths["mask"]), "--out", str(out),
            "--model", tiny_pixel_dir, "--device", "cpu", "--t-edit", "100", "--num-steps", "2", "--iterations", "1",
            "--seed", "5", "--window", "0", "60", "--grad-mode", "double", "--inversion", "explicit",
            "--report", str(rep)]
    assert main(argv) == 0
    data = json.loads(rep.read_text())
    assert data["task"] == "remove" and data["config"]["seed"] == 5 and data["config"]["window"] == [0, 60]
    assert data["config"]["grad_mode"] == "double" and data["config"]["inversion"] == "explicit"
    assert data["config"]["relative"] is True and data["config"]["tolerance"] == 0.2  # RemoveConfig defaults
    assert len(data["curves_before"]) == 2 and len(data["timesteps"]) == 2
    _check_out(out, img, mask)


def test_bad_input_exits_2(tiny_pixel_dir, files, capsys):
    paths, _, _ = files
    empty = paths["dir"] / "empty.png"
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(empty)
    argv = ["remove", "--image", str(paths["image"]), "--mask", str(empty), "--out", str(paths["dir"] / "x.png"),
            "--model", tiny_pixel_dir, *FAST]
    assert main(argv) == 2
    assert "empty" in capsys.readouterr().err
    not_image = paths["dir"] / "notes.txt"
    not_image.write_text("not an image")
    argv[4] = str(not_image)
    assert main(argv) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_help_lists_commands_and_flags():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for task in ("remove", "transfer", "saliency", "blend"):
        assert task in sub.choices
        p = sub.choices[task]
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{task} {action.option_strings} has no help"
    text = sub.choices["saliency"].format_help()
    assert "--factor" in text and "--t-b" in text and "--grad-mode" in text


def test_new_loop_flags_reach_the_config(tiny_pixel_dir, files):
    """--tolerance, --absolute, --reference (remove) and --fluctuation (saliency) set their config fields."""
    paths, img, mask = files
    out, rep = paths["dir"] / "f.png", paths["dir"] / "f.json"
    base = ["--image", str(paths["image"]), "--mask", str(paths["mask"]), "--out", str(out), "--model",
            tiny_pixel_dir, "--device", "cpu", *FAST, "--report", str(rep)]
    assert main(["remove", *base, "--tolerance", "0.3", "--absolute", "--reference", "harmonic"]) == 0
    cfg = json.loads(rep.read_text())["config"]
    assert cfg["tolerance"] == 0.3 and cfg["relative"] is False and cfg["reference"] == "harmonic"
    _check_out(out, img, mask)
    assert main(["transfer", *base, "--source-mask", str(paths["mask"]), "--keep-mean"]) == 0
    assert json.loads(rep.read_text())["config"]["keep_mean"] is True
    assert main(["saliency", *base, "--factor", "2", "--t-b", "10", "--fluctuation", "own"]) == 0
    assert json.loads(rep.read_text())["config"]["fluctuation"] == "own"
    # --generative starts from GENERATIVE_REMOVAL; explicit flags (FAST's --t-edit and --num-steps, --samples) win
    assert main(["remove", *base, "--generative", "--samples", "2"]) == 0
    report = json.loads(rep.read_text())
    assert report["config"]["init_noise"] == 1.0 and report["config"]["samples"] == 2
    assert report["config"]["t_edit"] == 100 and report["diagnostics"]["samples"] == 2
    _check_out(out, img, mask)
    # --guide: the input as its own guide, from the inverted input: its measured curves are the reference
    measured = [a for a in base if a != "--no-measure"]
    assert main(["remove", *measured, "--guide", str(paths["image"]), "--init", "invert", "--window", "0", "100"]) == 0
    report = json.loads(rep.read_text())
    on = np.asarray(report["weights"]) > 0
    assert on.any()
    np.testing.assert_allclose(np.asarray(report["reference"])[on], np.asarray(report["curves_before"])[on],
                               rtol=1e-5)
    _check_out(out, img, mask)
