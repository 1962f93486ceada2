"""Settings of editing: :class:`EditConfig` (the loop shared by every task), one config per task, and their
validation (:func:`check_config`, :func:`with_overrides`, :func:`check_for_model`).

Defaults were chosen on the TUNING split of :mod:`pipeline.scenes` (``benchmarks/edit_quality.py``; held-out numbers
in ``benchmarks/results/edit_quality.md``; removal settings in ``benchmarks/results/edit_removal_study.md``). On these
scenes the curve loss is a weak lever for removal: the fidelity comes from the start content (a harmonic fill) and
the exact round trip; rates are phase-free, so matching them adds structure of the right strength at the wrong place,
which costs PSNR except where the neighbours pin the structure down (a horizon line through the hole). Removal
therefore acts late (t <= t_edit / 2) with a dead zone (``tolerance``) and no configuration of the study beat its
ablation on the tuning scenes. Transfer and blending keep ``relative=False`` (their tables predate it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any

from ..ddim import INVERT_METHODS
from ..errors import InputError
from ..validate import check_bool, check_choice, check_float, check_int, is_int

#: How autograd differentiates rates (see :mod:`pipeline.edit.curves`).
GRAD_MODES = ("forward", "double", "fd")
#: Start content of the masked region for removal.
REMOVE_INITS = ("invert", "harmonic", "mean", "shift")
#: Removal references: the ring's mean curve ("level"), its shape at each patch's own level ("shape"), or the
#: harmonic interpolation of the neighbour patches' log-curves ("harmonic").
REMOVE_REFERENCES = ("level", "shape", "harmonic")
#: What saliency adjustment scales the fluctuation about.
FLUCTUATIONS = ("own", "context", "contrast")
#: Start content of the target region for transfer.
TRANSFER_INITS = ("invert", "paste")


# --------------------------------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditConfig:
    """Settings of the curve-matching loop shared by every task. Timesteps are in training steps (of 1000)."""

    t_edit: int = 500  # timestep the image is inverted to; larger = freer edits, less faithful to the input
    num_steps: int = 20  # DDIM steps between 0 and t_edit (inversion and generation share the grid)
    iterations: int = 3  # gradient steps on x_t at each active step
    lr: float = 0.05  # cap on the rms (per element, over the mask) of one update; x_t's scale is about 1
    curve_weight: float = 1.0  # weight w_c of the curve-matching loss; 0 switches it off (the ablation)
    preserve_weight: float = 0.0  # weight w_p of mean_m (x - anchor)^2
    tolerance: float = 0.0  # dead zone of the curve loss (log units): |log r - log r*| below it counts as matched
    window: tuple[int, int] | None = None  # (t_min, t_max) where the loss is active; None: the task's default
    patch_size: int | None = None  # side (model-space cells) of the patches e_p; None: default_patch_size(model)
    max_patches: int = 32  # target patches per gradient step (a seeded random subset when there are more)
    max_reference_patches: int = 16  # patches that build a mean reference curve (a seeded subset beyond this)
    feather: float = 2.0  # feathering radius (model-space cells) of the blend with the original trajectory
    grad_blur: float = 0.0  # Gaussian std (model cells) smoothing the gradient before a step (0: raw gradient)
    keep_mean: bool = False  # remove the region's per-channel mean from each update (rates: structure, not colour)
    grad_mode: str = "forward"  # "forward" (reverse-over-forward), "double" (double backward) or "fd"
    seed: int = 0  # seeds the patch subsets and any fresh noise: the same seed gives the same result
    measure_curves: bool = True  # also measure curves_before/curves_after (costs one inversion + 2 rate passes)
    exact: bool = True  # cancel the DDIM round-trip error: x_0 += x_0^start - (the same loop without updates)
    clip_x0: bool | None = None  # clamp x0_hat to [-1, 1] in the loop's DDIM steps; None: for pixel models
    relative: bool = False  # ask for the change r*/c along the regenerated path, not for undoing the round trip
    inversion: str = "corrected"  # DDIM inversion method (pipeline.ddim.invert): "corrected" or "explicit"


@dataclass(frozen=True)
class RemoveConfig(EditConfig):
    """Object removal: the target region's curves follow the background ring's curve (tuned on the TUNING split)."""

    t_edit: int = 200  # shallow: the start content is already object-free; deeper inversions only lose detail
    num_steps: int = 10  # DDIM steps between 0 and t_edit
    iterations: int = 2  # gradient steps per active step
    lr: float = 0.01  # small cap: removal is scored by fidelity, and rate gradients are high-frequency
    grad_blur: float = 2.0  # smooth updates (model cells): raw rate gradients add high-frequency artefacts
    ring_width: int = 3  # width (model-space cells) of the background ring that gives r*
    reference: str = "shape"  # "level": the ring's mean curve; "shape": its shape at each patch's level; "harmonic"
    grow: int = 0  # dilate the model-space edit region by this many cells (0: the cells the mask touches)
    init: str = "harmonic"  # start content: "invert" (the input), "harmonic" (Laplace fill), "mean", "shift" (copy)
    init_noise: float = 0.0  # 0: keep the inverted x_{t_edit} in the mask; 1: fresh forward noise of the start
    tolerance: float = 0.2  # dead zone (log units): the harmonic fill's small curve mismatches are left alone
    relative: bool = True  # match the change r*/c along the regenerated path (see match_curves)
    samples: int = 1  # fills from independent fresh noise (init_noise > 0) whose mean is returned (see remove_object)


#: Settings of the generative removal (:func:`pipeline.edit.remove_object` with ``**GENERATIVE_REMOVAL``): the hole
#: is regenerated from fresh noise at t = 300 with the known surroundings blended in at every step, and the mean of 8
#: such fills is returned. Chosen on the TUNING split of the textured scene family with the ``textured`` model
#: (``benchmarks/results/edit_removal_study_textured_model-textured.md``), where a fill must continue stripes, checks
#: and dots; on smooth scenes the harmonic fill of the defaults is better. Read-only: merge it, ``{**GENERATIVE_REMOVAL,
#: ...}``.
GENERATIVE_REMOVAL: Mapping[str, Any] = MappingProxyType({"t_edit": 300, "num_steps": 20, "init_noise": 1.0,
                                                          "samples": 8})


@dataclass(frozen=True)
class TransferConfig(EditConfig):
    """Semantic transfer: the target region's curves follow the source region's curves."""

    init: str = "paste"  # start content of the target: "invert" (the input) or "paste" (source warped onto target)
    init_noise: float = 0.0  # as in RemoveConfig
    grow: int = 0  # dilation (model cells) of the model-space edit region


@dataclass(frozen=True)
class SaliencyConfig(EditConfig):
    """Saliency adjustment: the region's log-curve fluctuation about a baseline is scaled by ``factor``."""

    t_b: int = 100  # fluctuation is scaled for t > t_b; below it the region keeps its own curve
    fluctuation: str = "context"  # baseline: "context" (rest of the image at the patch's offset), "contrast", "own"
    grad_blur: float = 2.0  # smooth updates (model cells): raw rate gradients add high-frequency artefacts
    preserve_weight: float = 0.1  # keeps the region's content near the original trajectory (anchor)
    grow: int = 0  # dilation (model cells) of the model-space edit region
    relative: bool = True  # match the change r*/c: factor 1 leaves the image (absolute: ~30 dB PSNR of drift)


@dataclass(frozen=True)
class BlendConfig(EditConfig):
    """Blending: object curves from the foreground early, seam curves from the background late (tuning split)."""

    t_edit: int = 250  # moderate: the pasted object must survive the round trip
    num_steps: int = 10  # DDIM steps between 0 and t_edit
    lr: float = 0.003  # small cap: larger steps degraded the seam on the tuning split (see the benchmark)
    grad_blur: float = 2.0  # smooth updates (model cells): raw rate gradients add high-frequency artefacts
    t_switch: int = 200  # object patches follow the foreground for t > t_switch, seam patches the background below
    seam_width: int = 2  # half-width (model cells) of the seam band; the edit region is the mask dilated by it
    preserve_weight: float = 0.1  # keeps the object near the pasted trajectory (anchor)
    alpha_blur: float = 0.5  # Gaussian std (input pixels) of the paste's alpha: a soft edge like an anti-aliased one


# --------------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------------
def with_overrides(config: EditConfig | None, overrides: dict[str, Any], cls: type) -> EditConfig:
    """``config`` (``cls()`` when None) with keyword overrides; unknown keys or bad values raise :class:`InputError`."""
    if config is None:
        config = cls()
    if not isinstance(config, cls):
        raise InputError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} option(s) {unknown}; accepted: {', '.join(sorted(names))}")
    if "window" in overrides and isinstance(overrides["window"], list):
        overrides = {**overrides, "window": tuple(overrides["window"])}
    return check_config(replace(config, **overrides))


def check_config(cfg: EditConfig) -> EditConfig:
    """Validate every field's type and range (model-independent checks); returns ``cfg``."""
    check_int("t_edit", cfg.t_edit, 1, 999)
    check_int("num_steps", cfg.num_steps, 1, int(cfg.t_edit))
    check_int("iterations", cfg.iterations, 0)
    check_float("lr", cfg.lr, 0.0)
    check_float("curve_weight", cfg.curve_weight, 0.0)
    check_float("preserve_weight", cfg.preserve_weight, 0.0)
    check_float("tolerance", cfg.tolerance, 0.0)
    check_bool("relative", cfg.relative)
    if cfg.patch_size is not None:
        check_int("patch_size", cfg.patch_size, 1)
    check_int("max_patches", cfg.max_patches, 1)
    check_int("max_reference_patches", cfg.max_reference_patches, 1)
    check_float("feather", cfg.feather, 0.0)
    check_float("grad_blur", cfg.grad_blur, 0.0)
    check_bool("keep_mean", cfg.keep_mean)
    check_int("seed", cfg.seed, 0)
    check_choice("grad_mode", cfg.grad_mode, GRAD_MODES)
    check_choice("inversion", cfg.inversion, INVERT_METHODS)
    check_bool("clip_x0 (None: clip for pixel models)", cfg.clip_x0, allow_none=True)
    if cfg.window is not None:
        w = cfg.window
        if not (isinstance(w, tuple) and len(w) == 2 and all(is_int(v) for v in w) and w[0] <= w[1]):
            raise InputError(f"window must be None or a pair of int timesteps (t_min, t_max), t_min <= t_max; "
                             f"got {w!r}")
    if isinstance(cfg, (RemoveConfig, TransferConfig, SaliencyConfig)):
        check_int("grow", cfg.grow, 0)
    if isinstance(cfg, RemoveConfig):
        check_int("ring_width", cfg.ring_width, 1)
        check_float("init_noise", cfg.init_noise, 0.0, 1.0)
        check_int("samples", cfg.samples, 1, 64)
        if cfg.samples > 1 and cfg.init_noise <= 0:
            raise InputError(f"samples={cfg.samples} needs init_noise > 0: without fresh noise every fill is the same")
        check_choice("init", cfg.init, REMOVE_INITS)
        check_choice("reference", cfg.reference, REMOVE_REFERENCES)
    if isinstance(cfg, TransferConfig):
        check_float("init_noise", cfg.init_noise, 0.0, 1.0)
        check_choice("init", cfg.init, TRANSFER_INITS)
    if isinstance(cfg, SaliencyConfig):
        check_int("t_b", cfg.t_b, 0, 999)
        check_choice("fluctuation", cfg.fluctuation, FLUCTUATIONS)
    if isinstance(cfg, BlendConfig):
        check_int("t_switch", cfg.t_switch, 0, 999)
        check_int("seam_width", cfg.seam_width, 1)
        check_float("alpha_blur", cfg.alpha_blur, 0.0)
    return cfg


#: The tasks were tuned on 32-cell model spaces with patches of 4 cells: an 8 x 8 grid. Larger model spaces keep
#: the grid (patches of S / 8 cells) so an edit evaluates as many patch directions on a 256-pixel or latent model as
#: on the default one; smaller ones keep 4-cell patches.
PATCH_GRID = 8
MIN_DEFAULT_PATCH = 4


def default_patch_size(model) -> int:
    """The patch side used when ``patch_size`` is None: ``max(4, S // 8)`` for model space S x S (4 on the 32x32
    default model, 8 on Stable Diffusion's 64x64 latents, 32 on a 256-pixel DDPM), reduced to a divisor of S."""
    s = int(model.sample_size)
    p = min(max(MIN_DEFAULT_PATCH, s // PATCH_GRID), s)
    while s % p:
        p -= 1
    return p


def for_model(cfg: EditConfig, model) -> EditConfig:
    """``cfg`` with its model-dependent defaults filled in (``patch_size``), checked against ``model``."""
    if cfg.patch_size is None:
        cfg = replace(cfg, patch_size=default_patch_size(model))
    check_for_model(cfg, model)
    return cfg


def check_for_model(cfg: EditConfig, model) -> None:
    """Checks that need the model: the patch size must divide model space, t_edit must be a training timestep."""
    s = model.sample_size
    if cfg.patch_size is None:
        raise InputError("patch_size is None: fill it with for_model(cfg, model) first")
    if s % cfg.patch_size:
        divisors = [d for d in range(1, s + 1) if s % d == 0]
        raise InputError(f"patch_size {cfg.patch_size} does not divide the model-space size {s}; accepted: {divisors}")
    if cfg.t_edit >= model.num_train_timesteps:
        raise InputError(f"t_edit must be below num_train_timesteps={model.num_train_timesteps}, got {cfg.t_edit}")
