"""How the app serves: the ``AppConfig`` dataclass, read from ``DIFFGEO_*`` variables and overridden by the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

#: Backends the settings offer; ``accel.get_backend`` resolves them ("auto" picks the fastest available).
BACKENDS = ("auto", "torch", "torch-compile", "onnxruntime", "tensorrt")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class AppConfig:
    """How the app serves. ``from_env`` reads the ``DIFFGEO_*`` variables; command-line flags override them."""

    model: str = "default"  # model source selected when the page opens ("default", a folder, or a hub id)
    hosted: bool = False  # hosted demo: allow-listed models only, no local paths in the page or in messages
    allowed_models: tuple[str, ...] = ()  # hosted mode: hub ids users may pick besides "default" and ``model``
    device: str | None = None  # torch device for models; None = CUDA when available, else CPU
    concurrency: int = 1  # model-bound jobs that run at once (the rest wait in the queue)
    queue_size: int = 64  # jobs that may wait in the queue before new ones are refused
    max_file_size: str = "10mb"  # largest accepted upload
    steps: int = 20  # initial value of the steps setting (DDIM steps / curve timesteps)
    max_steps: int = 100  # upper end of the steps slider (hosted demos on a CPU may lower it)

    @classmethod
    def from_env(cls, **overrides: Any) -> AppConfig:
        """The configuration the environment describes; ``overrides`` that are not None replace its fields."""
        env = os.environ
        cfg = cls(
            model=env.get("DIFFGEO_MODEL", "default"),
            hosted=_env_flag("DIFFGEO_HOSTED"),
            allowed_models=tuple(s.strip() for s in env.get("DIFFGEO_ALLOWED_MODELS", "").split(",") if s.strip()),
            device=env.get("DIFFGEO_DEVICE") or None,
            concurrency=int(env.get("DIFFGEO_CONCURRENCY", "1")),
            max_file_size=env.get("DIFFGEO_MAX_FILE_SIZE", "10mb"),
            steps=int(env.get("DIFFGEO_STEPS", "20")),
            max_steps=int(env.get("DIFFGEO_MAX_STEPS", "100")),
        )
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    def model_choices(self) -> dict[str, str]:
        """Names shown in the model dropdown -> model sources. Hosted mode names local folders without their path."""
        choices = {"default": "default"}
        extra = [self.model] if self.model != "default" else []
        extra += [m for m in self.allowed_models if m not in extra and m != "default"]
        for i, src in enumerate(extra, 1):
            hosted_local = self.hosted and (os.sep in src or src.startswith(".")) and Path(src).expanduser().exists()
            choices[f"local model {i}" if hosted_local else src] = src
        return choices

    @property
    def default_choice(self) -> str:
        """The dropdown name of ``model``, selected when the page opens."""
        return next(name for name, src in self.model_choices().items() if src == self.model)
