"""The public checkpoints in the app: offered by hub id, allow-listed in hosted mode, loaded offline from the local
hub cache (a small variant of the CIFAR-10 DDPM's architecture laid out as the cache lays out a download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reference import SMALL_DIVISOR, build_reference, small_sample_size
from pipeline.errors import InputError
from pipeline.model import embedded_models
from ui.config import PUBLIC_MODELS, AppConfig
from ui.models import ModelManager

ROOT = Path(__file__).resolve().parent.parent
#: The embedded models the dropdown lists first ("default" always: it says what is missing when chosen without one).
EMBEDDED = ["default", *(n for n in embedded_models() if n != "default")]


def test_model_list_offers_the_public_checkpoints(monkeypatch):
    assert PUBLIC_MODELS == ("google/ddpm-cifar10-32", "google/ddpm-ema-celebahq-256",
                             "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert list(AppConfig().model_choices()) == [*EMBEDDED, *PUBLIC_MODELS]
    assert list(AppConfig(hosted=True).model_choices()) == EMBEDDED, "hosted: nothing unless allowed"
    assert list(AppConfig(hosted=True, allowed_models=("public",)).model_choices()) == [*EMBEDDED, *PUBLIC_MODELS]
    one = AppConfig(hosted=True, allowed_models=("google/ddpm-cifar10-32",))
    assert list(one.model_choices()) == [*EMBEDDED, "google/ddpm-cifar10-32"]
    manager = ModelManager(one)
    assert manager.resolve("google/ddpm-cifar10-32") == ("google/ddpm-cifar10-32", "google/ddpm-cifar10-32")
    with pytest.raises(InputError, match="offers the models"):
        manager.resolve("stable-diffusion-v1-5/stable-diffusion-v1-5")
    monkeypatch.setenv("DIFFGEO_ALLOWED_MODELS", "public")
    assert list(AppConfig.from_env(hosted=True).model_choices()) == [*EMBEDDED, *PUBLIC_MODELS]


def test_hosted_app_loads_an_allowed_hub_id_offline(tmp_path):
    from test_reference import place_in_hub_cache, run_offline

    folder = tmp_path / "cifar-small"
    build_reference("cifar10-32", folder, seed=0, divisor=SMALL_DIVISOR, sample_size=small_sample_size("cifar10-32"))
    hf_home = tmp_path / "hf-home"
    place_in_hub_cache(folder, hf_home / "hub", "google/ddpm-cifar10-32")
    code = (
        "import json\n"
        "from ui.config import AppConfig\n"
        "from ui.models import ModelManager\n"
        "m = ModelManager(AppConfig.from_env())\n"
        "src, label = m.resolve('google/ddpm-cifar10-32')\n"
        "model = m.model(src, 'cpu')\n"
        "print(json.dumps(dict(src=src, kind=model.kind, size=model.sample_size, source=model.source)))\n"
    )
    got = run_offline(code, hf_home, ROOT, DIFFGEO_ALLOWED_MODELS="public", DIFFGEO_HOSTED="1")
    assert got == {"src": "google/ddpm-cifar10-32", "kind": "pixel", "size": small_sample_size("cifar10-32"),
                   "source": "google/ddpm-cifar10-32"}
