"""``python -m pipeline rates`` run in-process on the tiny model: the files exist, load, and agree with each other."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import build_parser, main


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("cli_img") / "in.png"
    Image.fromarray(img).save(path)
    return path


def test_rates_cli_writes_files(tiny_pixel_dir, png, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["rates", "--image", str(png), "--model", tiny_pixel_dir, "--out", str(out), "--timesteps", "2",
               "--t-max", "400", "--patch-size", "8", "--points", "1,1;20.5,15", "--statistic", "tv",
               "--device", "cpu"])
    assert rc == 0
    assert "wrote saliency.png" in capsys.readouterr().out
    with Image.open(out / "saliency.png") as im:
        assert im.size == (24, 20) and im.mode == "RGB"
    with Image.open(out / "curves.png") as im:
        assert im.size[0] > 100
    data = np.load(out / "curves.npz")
    assert data["timesteps"].tolist() == [400, 200]
    assert data["curves"].shape == data["accumulated"].shape == (2, 2, 2)
    assert data["saliency"].shape == (20, 24) and data["patch_saliency"].shape == (2, 2)
    assert str(data["statistic"]) == "tv" and int(data["patch_size"]) == 8
    with open(out / "curves.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["row", "col", "x0", "y0", "x1", "y1", "saliency", "t=400", "t=200"] and len(rows) == 5
    np.testing.assert_allclose([float(v) for v in rows[4][7:]], data["curves"][:, 1, 1], rtol=1e-5)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--patch-size", "3"], "does not divide"),
        (["--points", "1;2"], "--points must look like"),
        (["--points", "30,1"], "outside the 24x20 image"),
    ],
)
def test_rates_cli_bad_input_exits_2(tiny_pixel_dir, png, tmp_path, capsys, extra, match):
    args = ["rates", "--image", str(png), "--model", tiny_pixel_dir, "--out", str(tmp_path), "--timesteps", "1",
            "--patch-size", "8", "--device", "cpu"]
    assert main(args + extra) == 2
    assert match in capsys.readouterr().err


def test_rates_cli_every_flag_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["rates"]
    for action in sub._actions:
        assert action.help, f"{action.option_strings} has no help"
