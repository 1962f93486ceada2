"""Train the embedded default model: a DDPM (epsilon prediction) UNet2DModel on procedural scenes.

Recipe (``TrainConfig``): 1000 linear-beta DDPM steps, loss ``E_{x0, t, eps} || eps_theta(x_t, t) - eps ||^2`` with
``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``, t uniform; AdamW with a linear warm-up, gradient clipping,
an exponential moving average (EMA) of the weights. Data: a fixed pool of training-split scenes
(:mod:`pipeline.scenes`), rendered once and cached as ``.npy`` in the output folder, with random horizontal flips.

The output folder holds:

- ``checkpoint.pt``: model, EMA, optimizer, step, data RNG, elapsed time (resumable; written atomically);
- ``pipeline/``: the EMA weights as a diffusers ``DDPMPipeline`` folder (UNet + DDIM scheduler, safetensors),
  re-exported at every checkpoint, so ``pipeline.load_model(out / "pipeline")`` always loads the latest model;
- ``train.log``: loss every ``log_every`` steps with wall time; ``train_state.json``: a summary of the run.

Presets: ``PRESETS["cpu32"]`` (32x32, sized for a 2-core CPU, the shipped default), ``PRESETS["gpu64"]``, and
``PRESETS["digits16"]`` (``dataset="digits"``: rotated scikit-learn digits, :mod:`pipeline.digits`, 16x16, the model
of the rotated-digits geodesic benchmark).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .errors import Cancelled, InputError
from .progress import CancelFlag, ProgressFn, check_cancelled, report
from .scenes import TRAIN_SEEDS, make_dataset

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LR_DECAYS = ("none", "cosine")
#: Training data: procedural scenes of the smooth family ("scenes"), of the textured family ("textured"), both
#: ("mixed": even seeds smooth, odd seeds textured; pipeline.scenes.FAMILIES), or rotated sklearn digits.
DATASETS = ("scenes", "textured", "mixed", "digits")
PIPELINE_NAME = "pipeline"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Stop at ``steps`` or after ``minutes`` of training, whichever first."""

    out_dir: str = "runs/default32"  # output folder (checkpoint, exported pipeline, logs, data cache)
    size: int = 32  # image side in pixels
    # --- U-Net (diffusers UNet2DModel) ---
    block_out_channels: tuple[int, ...] = (32, 64, 128)  # channels per resolution level (32, 16, 8 px at size 32)
    attention_levels: tuple[bool, ...] = (False, False, True)  # self-attention per level (only 8x8) + the mid block
    layers_per_block: int = 1  # ResNet blocks per level: 1 measured fastest per parameter on 2 CPU cores
    norm_num_groups: int = 8  # GroupNorm groups (must divide every channel count)
    attention_head_dim: int = 32  # channels per attention head
    # --- diffusion ---
    num_train_timesteps: int = 1000  # DDPM steps
    beta_start: float = 1e-4  # linear beta schedule, as in Ho et al. 2020
    beta_end: float = 0.02
    # --- optimisation ---
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (small U-Nets tolerate a high rate; measured stable on digits)
    warmup_steps: int = 200  # linear learning-rate warm-up
    lr_decay: str = "none"  # "none" (constant after warm-up) | "cosine" (to lr * lr_min_ratio over this invocation)
    lr_min_ratio: float = 0.05  # final lr / lr of the cosine decay
    weight_decay: float = 0.01  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float = 0.999  # EMA decay (with the warm-up min(decay, (1 + n) / (10 + n)))
    steps: int | None = None  # total optimisation steps (None: only the time budget stops the run)
    minutes: float | None = 100.0  # training time budget of this invocation, in minutes (None: only ``steps``)
    # --- data ---
    dataset: str = "scenes"  # one of DATASETS: "scenes" | "textured" | "mixed" (pipeline.scenes families) | "digits"
    pool_size: int = 30_000  # training images rendered once (scenes: seeds TRAIN_SEEDS[:pool_size]; digits: random
    # training digits at random angles, from ``seed``)
    hflip: bool = True  # random horizontal flips
    # --- bookkeeping ---
    seed: int = 0  # model init and data order
    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    threads: int | None = None  # torch CPU threads (None: torch's default)
    checkpoint_minutes: float = 10.0  # write checkpoint + pipeline export every this many minutes (and at the end)
    log_every: int = 50  # steps between loss lines in train.log
    resume: bool = True  # continue from out_dir/checkpoint.pt when it exists
    init_from: str | None = None  # fresh starts only: a model source (load_model: "default", a pipeline folder) whose
    # U-Net weights initialise the model and its EMA (fine-tuning); its architecture must be this config's


#: Named recipes. ``cpu32`` is the shipped default (2 CPU cores, ~100 minutes); ``gpu64`` a larger 64x64 model.
PRESETS: dict[str, TrainConfig] = {
    "cpu32": TrainConfig(),
    "gpu64": TrainConfig(
        out_dir="runs/default64", size=64, block_out_channels=(64, 128, 256, 256),
        attention_levels=(False, False, True, True), layers_per_block=2, norm_num_groups=32, attention_head_dim=64,
        batch_size=128, lr=2e-4, warmup_steps=1000, ema_decay=0.9995, steps=200_000, minutes=None, pool_size=200_000,
        checkpoint_minutes=20.0,
    ),
    # the default model fine-tuned on smooth and textured scenes (pipeline.scenes.FAMILIES), 60 minutes on 2 CPU cores
    "textured32": TrainConfig(
        out_dir="runs/textured32", dataset="mixed", init_from="default", lr=3e-4, warmup_steps=100,
        lr_decay="cosine", minutes=60.0,
    ),
    # rotated digits (pipeline.digits) for the geodesic benchmark: 16 x 16, ~20 minutes on one CPU thread
    "digits16": TrainConfig(
        out_dir="runs/digits16", size=16, dataset="digits", block_out_channels=(32, 64, 64),
        attention_levels=(False, False, True), hflip=False, lr_decay="cosine", minutes=20.0, pool_size=30_000,
        threads=1, checkpoint_minutes=5.0,
    ),
}


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    out_dir: Path
    pipeline_dir: Path  # the exported EMA pipeline (load with pipeline.load_model)
    checkpoint: Path
    steps: int  # total steps done (across resumes)
    steps_this_run: int
    wall_seconds: float  # training time of this invocation (data preparation excluded)
    total_train_seconds: float  # training time across resumes
    seconds_per_step: float  # mean over this invocation
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss over the preceding window)
    parameters: int = 0
    device: str = "cpu"
    resumed_from: int = 0  # step of the checkpoint resumed from (0: fresh start)


# --------------------------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------------------------
def check_config(cfg: TrainConfig) -> TrainConfig:
    """Validate a config; raises :class:`InputError` naming the bad field."""
    n = len(cfg.block_out_channels)
    if cfg.size < 8 or cfg.size % (2 ** (n - 1)):
        raise InputError(f"size must be >= 8 and a multiple of {2 ** (n - 1)} for {n} levels, got {cfg.size}")
    if len(cfg.attention_levels) != n:
        raise InputError(f"attention_levels has {len(cfg.attention_levels)} entries; block_out_channels has {n}")
    if any(c % cfg.norm_num_groups for c in cfg.block_out_channels):
        raise InputError(
            f"norm_num_groups={cfg.norm_num_groups} must divide every channel count {cfg.block_out_channels}"
        )
    if cfg.steps is None and cfg.minutes is None:
        raise InputError("give steps, minutes, or both: the run needs a stopping rule")
    if cfg.steps is not None and cfg.steps < 1:
        raise InputError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.minutes is not None and cfg.minutes <= 0:
        raise InputError(f"minutes must be > 0, got {cfg.minutes}")
    for name in ("batch_size", "pool_size", "log_every", "layers_per_block"):
        if getattr(cfg, name) < 1:
            raise InputError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise InputError(f"lr must be > 0, got {cfg.lr}")
    if cfg.lr_decay not in LR_DECAYS:
        raise InputError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, got {cfg.lr_decay!r}")
    if not 0 <= cfg.lr_min_ratio <= 1:
        raise InputError(f"lr_min_ratio must lie in [0, 1], got {cfg.lr_min_ratio}")
    if not 0 <= cfg.ema_decay < 1:
        raise InputError(f"ema_decay must lie in [0, 1), got {cfg.ema_decay}")
    if cfg.dataset not in DATASETS:
        raise InputError(f"dataset must be one of {', '.join(DATASETS)}, got {cfg.dataset!r}")
    if cfg.dataset == "digits" and cfg.size not in (16, 32):
        raise InputError(f"the digits dataset comes in sizes 16 and 32, got size {cfg.size}")
    if cfg.dataset != "digits" and cfg.pool_size > len(TRAIN_SEEDS):
        raise InputError(f"pool_size must be <= {len(TRAIN_SEEDS)} (the training split), got {cfg.pool_size}")
    return cfg


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise InputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def build_unet(cfg: TrainConfig):
    """The UNet2DModel of ``cfg`` (attention blocks where ``attention_levels`` says, plus the mid block)."""
    from diffusers import UNet2DModel

    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return UNet2DModel(
        sample_size=cfg.size, in_channels=3, out_channels=3, block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block, down_block_types=down, up_block_types=up,
        norm_num_groups=cfg.norm_num_groups, attention_head_dim=cfg.attention_head_dim,
    )


def init_weights(unet, source: str) -> None:
    """Copy the U-Net weights of the model ``source`` (anything :func:`pipeline.load_model` accepts) into ``unet``;
    raises :class:`InputError` when the architectures differ."""
    from .model import load_model

    src = load_model(source, device="cpu", dtype="float32").unet.state_dict()
    own = unet.state_dict()
    if set(src) != set(own) or any(src[k].shape != own[k].shape for k in own):
        diff = sorted(set(src) ^ set(own)) or [k for k in own if src[k].shape != own[k].shape]
        raise InputError(f"init_from {source!r}: its U-Net differs from this config's ({len(diff)} tensors, e.g. "
                         f"{diff[0]}); use a model trained with the same architecture")
    unet.load_state_dict(src)


def make_scheduler(cfg: TrainConfig, kind: str = "ddpm"):
    """The noise schedule of ``cfg`` as a diffusers DDPMScheduler (training) or DDIMScheduler (export)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[kind]
    return cls(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
               beta_schedule="linear", prediction_type="epsilon", clip_sample=True)


def load_pool(cfg: TrainConfig, out: Path, progress: ProgressFn | None = None) -> np.ndarray:
    """The training pool (pool_size, H, W, 3) uint8, from ``out/data_{size}px_{n}.npy`` (scenes) or
    ``out/digits_{size}px_{n}_seed{seed}.npy`` (digits), or rendered and cached."""
    if cfg.dataset == "digits":
        path = out / f"digits_{cfg.size}px_{cfg.pool_size}_seed{cfg.seed}.npy"
    elif cfg.dataset == "scenes":
        path = out / f"data_{cfg.size}px_{cfg.pool_size}.npy"
    else:
        path = out / f"{cfg.dataset}_{cfg.size}px_{cfg.pool_size}.npy"
    if path.is_file():
        data = np.load(path)
        if data.shape == (cfg.pool_size, cfg.size, cfg.size, 3) and data.dtype == np.uint8:
            return data
        log.warning("ignoring %s: unexpected shape %s / dtype %s", path, data.shape, data.dtype)
    t0 = time.time()
    if cfg.dataset == "digits":
        from .digits import make_digit_pool

        data = make_digit_pool(cfg.pool_size, size=cfg.size, seed=cfg.seed)
    else:
        seeds = TRAIN_SEEDS[: cfg.pool_size]
        family = {"scenes": "smooth", "textured": "textured"}.get(cfg.dataset) or [
            ("smooth", "textured")[s % 2] for s in seeds]
        data = make_dataset(seeds, cfg.size, progress=progress, family=family)
    dt = time.time() - t0
    log.info("rendered %d scenes in %.1f s (%.0f scenes/s)", len(data), dt, len(data) / max(dt, 1e-9))
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, data)
    os.replace(tmp, path)
    return data


def sample_batch(pool: torch.Tensor, batch_size: int, gen: torch.Generator, hflip: bool) -> torch.Tensor:
    """A random batch from the uint8 pool (N, H, W, 3), as floats in [-1, 1].  -> (B, 3, H, W)."""
    idx = torch.randint(0, pool.shape[0], (batch_size,), generator=gen)
    x = pool[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W)
    if hflip:
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x


def diffusion_loss(unet, x0: torch.Tensor, alphas_cumprod: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """L = mean || eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t) - eps ||^2, t ~ U{0..T-1}.  x0: (B, 3, H, W)."""
    b = x0.shape[0]
    t = torch.randint(0, alphas_cumprod.shape[0], (b,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    dev = next(unet.parameters()).device
    x_t = (ab.sqrt() * x0 + (1 - ab).sqrt() * eps).to(dev)
    return torch.nn.functional.mse_loss(unet(x_t, t.to(dev)).sample, eps.to(dev))


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    """theta_ema <- decay theta_ema + (1 - decay) theta (in place on ``ema``)."""
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(b)


def lr_at(cfg: TrainConfig, step: int, frac: float = 0.0) -> float:
    """Learning rate at global ``step`` when a fraction ``frac`` in [0, 1] of this invocation's budget is spent.

    lr_t = lr min(1, (step + 1) / warmup) d(frac), with d = 1 ("none") or
    d = r + (1 - r) (1 + cos(pi frac)) / 2, r = lr_min_ratio ("cosine").
    """
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    if cfg.lr_decay == "cosine":
        f = min(max(frac, 0.0), 1.0)
        return cfg.lr * warm * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * f)))
    return cfg.lr * warm


def export_pipeline(ema, cfg: TrainConfig, folder: Path) -> Path:
    """Write the EMA U-Net with a DDIM scheduler as a diffusers DDPMPipeline folder (safetensors), atomically."""
    from diffusers import DDPMPipeline

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    unet = copy.deepcopy(ema).to("cpu").eval()
    DDPMPipeline(unet=unet, scheduler=make_scheduler(cfg, "ddim")).save_pretrained(tmp, safe_serialization=True)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def save_checkpoint(path: Path, *, model, ema, opt, step: int, gen: torch.Generator, train_seconds: float,
                    cfg: TrainConfig) -> None:
    """Everything needed to resume, in one torch file (tensors and plain types only), written atomically."""
    state = {
        "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(), "step": step,
        "data_rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "train_seconds": train_seconds,
        "config": json.dumps(asdict(cfg)),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------
def train(
    config: TrainConfig, *, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
) -> TrainResult:
    """Train (or resume) a DDPM on training-split scenes; see the module docstring for what lands in ``out_dir``.

    ``progress(step, total, "train loss ...")`` is called after every step (``total`` is 0 when only the time budget
    stops the run). When ``cancel`` is set, the run writes a checkpoint (resumable) and raises ``Cancelled``.
    """
    cfg = check_config(config)
    from tqdm.auto import tqdm

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logfile = open(out / "train.log", "a")

    def note(msg: str) -> None:
        logfile.write(msg + "\n")
        logfile.flush()
        log.info(msg)

    torch.manual_seed(cfg.seed)
    model = build_unet(cfg).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n_params = sum(p.numel() for p in model.parameters())
    step, prev_seconds, resumed_from = 0, 0.0, 0
    ckpt = out / CHECKPOINT_NAME
    if cfg.resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        step = resumed_from = int(state["step"])
        prev_seconds = float(state["train_seconds"])
        note(f"resumed from {ckpt} at step {step}")
    elif cfg.init_from:
        init_weights(model, cfg.init_from)
        ema.load_state_dict(model.state_dict())
        note(f"initialised from {cfg.init_from}")
    note(f"config {json.dumps(asdict(cfg))}")
    note(f"device {device}, threads {torch.get_num_threads()}, parameters {n_params}")

    pool = torch.from_numpy(load_pool(cfg, out))  # (N, H, W, 3) uint8
    alphas_cumprod = make_scheduler(cfg).alphas_cumprod.to(torch.float32)  # (T,)

    def checkpoint(seconds: float) -> None:
        save_checkpoint(ckpt, model=model, ema=ema, opt=opt, step=step, gen=gen, train_seconds=seconds, cfg=cfg)
        export_pipeline(ema, cfg, out / PIPELINE_NAME)
        note(f"checkpoint step {step} train_seconds {seconds:.0f}")

    budget = None if cfg.minutes is None else cfg.minutes * 60.0
    losses: list[tuple[int, float]] = []
    window: list[float] = []
    t_start = time.time()
    last_ckpt = t_start
    steps_this_run = 0
    bar = tqdm(total=cfg.steps, initial=step, desc="train", mininterval=10.0, dynamic_ncols=True)
    model.train()
    while (cfg.steps is None or step < cfg.steps) and (budget is None or time.time() - t_start < budget):
        if _cancelled(cancel):
            checkpoint(prev_seconds + time.time() - t_start)
            logfile.close()
            raise Cancelled(f"training cancelled at step {step}; checkpoint written to {ckpt}")
        lr = lr_at(cfg, step, _budget_fraction(cfg, steps_this_run, step - steps_this_run, time.time() - t_start))
        for g in opt.param_groups:
            g["lr"] = lr
        x0 = sample_batch(pool, cfg.batch_size, gen, cfg.hflip)
        loss = diffusion_loss(model, x0, alphas_cumprod, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        step += 1
        steps_this_run += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            note(f"non-finite loss at step {step}; stopping without checkpointing")
            raise RuntimeError(f"training diverged (loss {value}) at step {step}; lower lr or resume from checkpoint")
        window.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        report(progress, step, cfg.steps or 0, f"train loss {value:.4f}")
        if step % cfg.log_every == 0:
            elapsed = time.time() - t_start
            losses.append((step, float(np.mean(window))))
            note(f"step {step} loss {np.mean(window):.5f} lr {lr:.2e} "
                 f"wall {prev_seconds + elapsed:.0f}s s/step {elapsed / steps_this_run:.3f}")
            window = []
        if time.time() - last_ckpt >= cfg.checkpoint_minutes * 60.0:
            checkpoint(prev_seconds + time.time() - t_start)
            last_ckpt = time.time()
    bar.close()
    wall = time.time() - t_start
    if window:
        losses.append((step, float(np.mean(window))))
    checkpoint(prev_seconds + wall)
    result = TrainResult(
        out_dir=out, pipeline_dir=out / PIPELINE_NAME, checkpoint=ckpt, steps=step, steps_this_run=steps_this_run,
        wall_seconds=wall, total_train_seconds=prev_seconds + wall,
        seconds_per_step=wall / max(steps_this_run, 1), losses=losses, parameters=n_params, device=str(device),
        resumed_from=resumed_from,
    )
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    summary["config"] = asdict(cfg)
    summary["torch_threads"] = torch.get_num_threads()
    with open(out / "train_state.json", "w") as f:
        json.dump(summary, f, indent=1)
    note(f"done: {step} steps, {wall:.0f}s this run, {wall / max(steps_this_run, 1):.3f} s/step")
    logfile.close()
    return result


def _budget_fraction(cfg: TrainConfig, done: int, start_step: int, elapsed: float) -> float:
    """Fraction of this invocation's budget spent: the larger of the step and the time fractions."""
    fracs = [0.0]
    if cfg.steps is not None:
        fracs.append(done / max(cfg.steps - start_step, 1))
    if cfg.minutes is not None:
        fracs.append(elapsed / (cfg.minutes * 60.0))
    return min(max(fracs), 1.0)


def _cancelled(cancel: CancelFlag | None) -> bool:
    try:
        check_cancelled(cancel)
    except Cancelled:
        return True
    return False


def config_with(base: TrainConfig, **overrides) -> TrainConfig:
    """``base`` with the non-None ``overrides`` applied (for CLIs: unset flags keep the preset's value)."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
