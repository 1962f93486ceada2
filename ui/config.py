"""How the app serves: the ``AppConfig`` dataclass, read from ``DIFFGEO_*`` variables and overridden by the CLI, and
the ``Limits`` on what one request may ask for (the one place they are set: the sliders, the backend choices, the
request checks and the hosted demo's info line all read them from here)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

#: Backends the settings offer; ``accel.get_backend`` resolves them ("auto" picks the fastest available).
BACKENDS = ("auto", "torch", "torch-compile", "onnxruntime", "tensorrt")

#: Largest accepted upload. The mask editors send their canvas as PNG files (background, composite, each layer): a
#: PNG of the largest accepted image (``pipeline.images.MAX_SIDE`` = 4096 a side, RGBA) holds at most 64 MiB of pixels,
#: so every image the app accepts fits (a 12 MP photo holds 36 MB of RGB pixels). Images beyond the side limit are
#: refused with a message by the handlers, after the upload.
MAX_FILE_SIZE = "80mb"

#: Longest model source accepted (a folder path or a hub id ``owner/name``).
MAX_SOURCE_CHARS = 256

#: Public checkpoints the model list offers by hub id (loaded from the network, or offline from the local hub cache):
#: the 35.7M-parameter CIFAR-10 DDPM (32x32), a 113.7M-parameter 256x256 DDPM (every google/ddpm-*-256 shares its
#: architecture) and Stable Diffusion 1.5 (latent, 512x512 images, 859.5M-parameter U-Net). Hosted mode offers them
#: only when allowed: ``DIFFGEO_ALLOWED_MODELS=public`` (all of them) or by id.
PUBLIC_MODELS = ("google/ddpm-cifar10-32", "google/ddpm-ema-celebahq-256",
                 "stable-diffusion-v1-5/stable-diffusion-v1-5")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: the accepted ranges of the settings that decide how long it holds a model slot,
    and how long it may run. Ranges are ``(lo, hi)``, both included; the sliders show exactly these ranges.

    Normal mode (:data:`LOCAL_LIMITS`) offers every backend and the full sliders; a hosted demo
    (:data:`HOSTED_LIMITS`) offers only backends that are ready without minutes of compiling or exporting
    (``auto`` is what ``--warmup`` prepares; ``torch`` needs nothing), shorter sliders, and stops every model request
    after ``time_limit_s`` (its cancel flag is set by a timer; the user gets a message saying so).
    """

    backends: tuple[str, ...] = BACKENDS
    steps: tuple[int, int] = (2, 100)  # DDIM steps / curve timesteps (every model-bound tab)
    #: rate-map patch grids (patches per side of model space, whatever its size;
    #: ``pipeline.rates.patch_size_for_grid``): grid**2 JVPs per timestep, so grid 32 is 16x grid 8's
    patch_grids: tuple[int, ...] = (32, 16, 8, 4)
    edit_iterations: tuple[int, int] = (0, 10)  # gradient steps per timestep of the editing tabs
    path_points: tuple[int, int] = (3, 17)  # geodesic path points
    solver_iterations: tuple[int, int] = (1, 500)  # L-BFGS iterations of the geodesic boundary value problem
    lab_points: tuple[int, int] = (5, 33)  # geometry lab path points (no model)
    lab_iterations: tuple[int, int] = (10, 500)  # geometry lab solver iterations (no model)
    time_limit_s: float | None = None  # a model request is stopped after this long (None: no limit)

    def describe(self) -> str:
        """One Markdown line for the page: what this demo accepts."""
        limit = f"; a request stops after {self.time_limit_s:g} s" if self.time_limit_s else ""
        return (f"**This demo's limits:** backends {', '.join(self.backends)}; at most {self.steps[1]} steps, "
                f"patch grids {', '.join(map(str, self.patch_grids))}, {self.edit_iterations[1]} gradient steps per "
                f"timestep, {self.path_points[1]} path points and {self.solver_iterations[1]} solver "
                f"iterations{limit}.")


#: The curves tab's default patch grid (8 x 8 patches of model space on any model: 64 JVPs per timestep).
DEFAULT_PATCH_GRID = 8

#: Limits of a local (not hosted) app: every backend, the full sliders, no time limit.
LOCAL_LIMITS = Limits()

#: Limits of a hosted demo (``--hosted``). torch-compile compiles for minutes on first use, onnxruntime and tensorrt
#: export graphs for minutes (``auto`` picks the one ``--warmup`` prepared), so only ``auto`` and ``torch`` are offered.
HOSTED_LIMITS = Limits(backends=("auto", "torch"), steps=(2, 50), patch_grids=(16, 8, 4),
                       edit_iterations=(0, 5), path_points=(3, 11), solver_iterations=(1, 200), lab_points=(5, 33),
                       lab_iterations=(10, 300), time_limit_s=300.0)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


#: Model dtypes the app can load (``--dtype``): the JVP's error against float64 per dtype is measured per public
#: architecture at full size by ``benchmarks/scale.py --parts jvp`` (bfloat16 2.6 to 3.9 % relative, float32 ~2e-6).
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class AppConfig:
    """How the app serves. ``from_env`` reads the ``DIFFGEO_*`` variables; command-line flags override them."""

    model: str = "default"  # model source selected when the page opens ("default", a folder, or a hub id)
    hosted: bool = False  # hosted demo: allow-listed models only, no local paths, the limits of HOSTED_LIMITS
    allowed_models: tuple[str, ...] = ()  # hosted mode: hub ids users may pick besides "default" and ``model``
    device: str | None = None  # torch device for models; None = CUDA when available, else CPU
    dtype: str | None = None  # model dtype (DTYPES); None = float32. bfloat16 on CPU; float16 and bfloat16 on CUDA
    concurrency: int = 1  # model-bound jobs that run at once (the rest wait in the queue)
    queue_size: int = 64  # jobs that may wait in the queue before new ones are refused
    max_file_size: str = MAX_FILE_SIZE  # largest accepted upload (a file, or one PNG the mask editor sends)
    steps: int = 20  # initial value of the steps setting (DDIM steps / curve timesteps)
    max_steps: int = 100  # upper end of the steps slider (hosted demos on a CPU may lower it)
    time_limit_s: float | None = None  # per-request time limit; None: the mode's (hosted 300 s, local none); 0: none

    @classmethod
    def from_env(cls, **overrides: Any) -> AppConfig:
        """The configuration the environment describes; ``overrides`` that are not None replace its fields."""
        env = os.environ
        limit = env.get("DIFFGEO_TIME_LIMIT", "").strip()
        cfg = cls(
            model=env.get("DIFFGEO_MODEL", "default"),
            hosted=_env_flag("DIFFGEO_HOSTED"),
            allowed_models=tuple(s.strip() for s in env.get("DIFFGEO_ALLOWED_MODELS", "").split(",") if s.strip()),
            device=env.get("DIFFGEO_DEVICE") or None,
            dtype=env.get("DIFFGEO_DTYPE") or None,
            concurrency=int(env.get("DIFFGEO_CONCURRENCY", "1")),
            max_file_size=env.get("DIFFGEO_MAX_FILE_SIZE", MAX_FILE_SIZE),
            steps=int(env.get("DIFFGEO_STEPS", "20")),
            max_steps=int(env.get("DIFFGEO_MAX_STEPS", "100")),
            time_limit_s=float(limit) if limit else None,
        )
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if cfg.dtype is not None and cfg.dtype not in DTYPES:
            raise ValueError(f"dtype (--dtype / DIFFGEO_DTYPE) must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
        return cfg

    @property
    def limits(self) -> Limits:
        """What one request may ask for in this mode (:data:`HOSTED_LIMITS` or :data:`LOCAL_LIMITS`): the steps end at
        ``max_steps`` (hosted: at most the hosted limit), and ``time_limit_s`` replaces the mode's when set."""
        base = HOSTED_LIMITS if self.hosted else LOCAL_LIMITS
        hi = min(self.max_steps, base.steps[1]) if self.hosted else self.max_steps
        steps = (base.steps[0], max(base.steps[0], hi))
        limit = base.time_limit_s if self.time_limit_s is None else (self.time_limit_s or None)
        return replace(base, steps=steps, time_limit_s=limit)

    def model_choices(self) -> dict[str, str]:
        """Names shown in the model dropdown -> model sources: "default", the other embedded models present
        (``pipeline.model.embedded_models``: "textured"), the selected model, the allowed ones (``public`` stands
        for :data:`PUBLIC_MODELS`), and in normal mode the public checkpoints. Hosted mode offers nothing else and
        names local folders without their path."""
        from pipeline.model import embedded_models

        choices = {"default": "default"} | {n: n for n in embedded_models()}
        allowed = [m for a in self.allowed_models for m in (PUBLIC_MODELS if a == "public" else (a,))]
        if not self.hosted:
            allowed += PUBLIC_MODELS
        extra = [self.model] if self.model not in choices else []
        extra += [m for m in allowed if m not in extra and m not in choices]
        for i, src in enumerate(extra, 1):
            hosted_local = self.hosted and (os.sep in src or src.startswith(".")) and Path(src).expanduser().exists()
            choices[f"local model {i}" if hosted_local else src] = src
        return choices

    @property
    def default_choice(self) -> str:
        """The dropdown name of ``model``, selected when the page opens."""
        return next(name for name, src in self.model_choices().items() if src == self.model)
