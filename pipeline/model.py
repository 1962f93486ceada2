"""One model interface: any diffusers UNet, pixel or latent, seen as eps, score, h and their JVPs.

Notation (docs/maths.md section 2):

| code            | paper                                   |
|-----------------|-----------------------------------------|
| ``eps(x, t)``   | noise predictor eps(x_t, t)             |
| ``alpha_bar(t)``| cumulative signal coefficient           |
| ``sigma(t)``    | sqrt(1 - alpha_bar(t))                  |
| ``score(x, t)`` | s(x_t, t) = -eps(x_t, t) / sigma(t)     |
| ``h(x, t)``     | h_t(x_t), the U-Net mid-block output    |

The class implements :class:`pipeline.protocols.DiffusionOps`, the one interface rates, editing, DDIM and geodesics
consume; every ``accel`` backend implements it too, on the same primitives (:class:`pipeline.protocols.ModelMaps`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, ModelLoadError
from .protocols import ModelMaps, point_jvp

log = logging.getLogger(__name__)

#: The embedded default model, a diffusers pipeline folder inside the repository.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Models that ship with the project, by name -> their folder under ``DEFAULT_MODEL_DIR``: ``"default"`` (trained on
#: the smooth scene family) and ``"textured"`` (the default fine-tuned on the smooth and textured families; its card
#: is ``weights/textured/README.md``). :func:`load_model` takes these names before any folder of the same name.
EMBEDDED_MODELS = {"default": ".", "textured": "textured"}

#: U-Nets on which vmap over func.jvp failed once (weakly keyed), so ``auto`` point JVPs go straight to repeat.
_VMAP_FAILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: Longest model source string (a name, path or hub id) ``load_model`` accepts; longer ones are refused with
#: :class:`InputError` before touching the file system (a 5,000-character "path" used to fail inside ``os.stat``).
MAX_SOURCE_LENGTH = 1000

#: dtype names ``load_model`` accepts (torch dtypes are accepted too: float32, float64, bfloat16, float16).
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "fp64": torch.float64,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
}


# --------------------------------------------------------------------------------------------------------------------
# JVP-safe attention
# --------------------------------------------------------------------------------------------------------------------
class PlainAttnProcessor:
    """Attention as plain matmul + softmax, with a contiguous output.

    PyTorch's fused SDPA kernels have no forward-mode derivative (nor a double backward on CPU), diffusers' classic
    ``AttnProcessor`` segfaults under ``make_fx`` tracing (``baddbmm`` on an empty tensor), and GroupNorm's forward-mode
    rule fails on the channels-last layout that attention blocks return. This processor avoids all three, so
    ``torch.func.jvp``, double backward and export tracing all work. Numerically it equals the default processor.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, hh, ww = hidden_states.shape
            hidden_states = hidden_states.reshape(b, c, hh * ww).transpose(1, 2)  # (B, HW, C)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        q, k, v = (attn.head_to_batch_dim(z) for z in (query, key, value))  # (B*heads, L, d)
        scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scale  # (B*heads, Lq, Lk)
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, k.shape[1], query.shape[0])
            scores = scores + mask
        probs = scores.softmax(dim=-1).to(v.dtype)
        hidden_states = attn.batch_to_head_dim(torch.matmul(probs, v))  # (B, Lq, C)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, hh, ww)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states.contiguous()


def make_jvp_safe(unet: torch.nn.Module) -> int:
    """Install :class:`PlainAttnProcessor` on every attention module of ``unet``; returns how many were replaced."""
    from diffusers.models.attention_processor import Attention

    n = 0
    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(PlainAttnProcessor())
            n += 1
    return n


# --------------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class DiffusionModel(ModelMaps):
    """A diffusion model as the maps of docs/maths.md section 2.

    Pixel models (``kind="pixel"``) work on images in [-1, 1] directly; latent models (``kind="latent"``) work on
    VAE latents, with the empty-prompt conditioning ``cond`` fixed at load time. ``x`` always means model space.
    """

    unet: torch.nn.Module
    alphas_cumprod: torch.Tensor  # (T,) float64, on the CPU
    kind: str = "pixel"  # "pixel" | "latent"
    vae: torch.nn.Module | None = None
    cond: torch.Tensor | None = None  # (1, L, D) empty-prompt text embedding for latent models
    prediction_type: str = "epsilon"  # "epsilon" | "v_prediction" | "sample"
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    # ---- metadata --------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def channels(self) -> int:
        """Channels of model space (3 for RGB pixel models, the VAE's latent channels otherwise)."""
        return int(self.unet.config.in_channels)

    @property
    def sample_size(self) -> int:
        """Spatial size of model space."""
        s = self.unet.config.sample_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    @property
    def vae_scale(self) -> int:
        """Pixels per model-space pixel: 1 for pixel models, the VAE's downsampling factor otherwise."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_size(self) -> int:
        """Spatial size, in pixels, of the images the model generates."""
        return self.sample_size * self.vae_scale

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def downsample_factor(self) -> int:
        """Model-space sizes must be multiples of this (the U-Net's total downsampling)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> DiffusionModel:
        """Move (in place) to ``device`` and/or ``dtype``; returns ``self``. A device this machine lacks raises
        :class:`InputError` (:func:`check_device`)."""
        if device is not None:
            device = check_device(device)
        for m in (self.unet, self.vae):
            if m is None:
                continue
            if getattr(m, "_keep_in_fp32_modules", None) or getattr(m, "is_quantized", False):
                m.to(device=device, dtype=dtype)  # diffusers' own checks and warnings apply
            else:  # diffusers' override would only warn that an empty list of fp32 modules exists
                torch.nn.Module.to(m, device=device, dtype=dtype)
        if self.cond is not None:
            self.cond = self.cond.to(device=device, dtype=dtype)
        return self

    # ---- input checks ----------------------------------------------------------------------------------------------
    def timesteps(self, t: int | torch.Tensor, batch: int) -> torch.Tensor:
        """Validate ``t`` (an int, a 0-d tensor, or a (B,) integer tensor) and return it as a (batch,) long tensor."""
        T = self.num_train_timesteps
        if isinstance(t, bool) or not isinstance(t, (int, torch.Tensor)) and not hasattr(t, "__index__"):
            raise InputError(f"t must be an int or an integer tensor of shape ({batch},), got {type(t).__name__}")
        tt = torch.as_tensor(t, device=self.device)
        if tt.is_floating_point():
            if not torch.equal(tt, tt.round()):
                raise InputError("t must hold integer timesteps; got non-integer values")
            tt = tt.round()
        tt = tt.long().reshape(-1)
        if tt.numel() == 1:
            tt = tt.expand(batch)
        if tt.shape != (batch,):
            raise InputError(f"t must be an int or have shape ({batch},) to match the batch, got {tuple(tt.shape)}")
        if bool((tt < 0).any()) or bool((tt >= T).any()):
            raise InputError(f"t must lie in [0, {T - 1}] (num_train_timesteps={T}); got {tt.tolist()}")
        return tt

    def check_x(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Validate a model-space batch: a finite (B, C, H, W) tensor with the model's channels."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor of shape (B, {self.channels}, H, W), "
                             f"got {type(x).__name__}")
        if x.ndim != 4:
            raise InputError(f"{name} must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise InputError(f"{name} has {x.shape[1]} channels; this model takes {self.channels}")
        f = self.downsample_factor
        if x.shape[2] % f or x.shape[3] % f:
            raise InputError(f"{name} spatial size {tuple(x.shape[2:])} must be a multiple of {f} for this U-Net")
        if not x.is_floating_point():
            raise InputError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{name} contains NaN or inf")
        return x.to(device=self.device, dtype=self.dtype)

    # ---- schedule ---------------------------------------------------------------------------------------------------
    def _schedule64(self, t: int | torch.Tensor, batch: int) -> torch.Tensor:
        """alpha_bar(t) in float64 on the model's device, (B,): schedule arithmetic is done in it, then rounded once
        to the model's dtype (in bfloat16, alpha_bar(t) of the linear DDPM schedule rounds to 1 for t < 10, where
        sigma(t) = sqrt(1 - alpha_bar(t)) formed in bfloat16 would be 0 and the score infinite)."""
        tt = self.timesteps(t, batch)
        return self.alphas_cumprod.to(tt.device)[tt]

    def alpha_bar(self, t: int | torch.Tensor, batch: int = 1) -> torch.Tensor:
        """alpha_bar(t) as a (B,) tensor in the model's dtype."""
        return self._schedule64(t, batch).to(self.dtype)

    def sigma(self, t: int | torch.Tensor, batch: int = 1) -> torch.Tensor:
        """sigma(t) = sqrt(1 - alpha_bar(t)), (B,), in the model's dtype (computed in float64, rounded once)."""
        return (1.0 - self._schedule64(t, batch)).sqrt().to(self.dtype)

    # ---- raw maps (no checks: t is a (B,) long tensor; used by tracing and export) ----------------------------------
    def _cond(self, batch: int) -> torch.Tensor | None:
        return None if self.cond is None else self.cond.expand(batch, -1, -1)

    def eps_raw(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps(x, t) without input checks; ``t`` a (B,) long tensor.  (B, C, H, W) -> (B, C, H, W)."""
        if self.kind == "latent":
            out = self.unet(x, t, encoder_hidden_states=self._cond(x.shape[0])).sample
        else:
            out = self.unet(x, t).sample
        if self.prediction_type == "epsilon":
            return out
        ab = self.alphas_cumprod.to(x.device)[t]  # float64: sqrt(ab), sqrt(1 - ab) are rounded once to x's dtype
        sa, s1a = (c.to(x.dtype).view(-1, 1, 1, 1) for c in (ab.sqrt(), (1 - ab).sqrt()))
        if self.prediction_type == "v_prediction":  # eps = sqrt(ab) v + sqrt(1 - ab) x
            return sa * out + s1a * x
        return (x - sa * out) / s1a  # "sample": the net predicts x_0

    def h_raw(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """h_t(x): the encoder path of the U-Net up to the mid block, without input checks.

        Equals the output of a forward hook on ``unet.mid_block``.  (B, C, H, W) -> (B, C_h, H_h, W_h).
        """
        unet = self.unet
        if getattr(unet.config, "center_input_sample", False):
            x = 2 * x - 1.0
        emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))  # (B, D_t)
        cond = self._cond(x.shape[0])
        h, skip = unet.conv_in(x), x
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=cond)
            elif hasattr(block, "skip_conv"):
                h, _, skip = block(hidden_states=h, temb=emb, skip_sample=skip)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        if getattr(unet.mid_block, "has_cross_attention", False):
            return unet.mid_block(h, emb, encoder_hidden_states=cond)
        return unet.mid_block(h, emb)

    # ---- the maps (pipeline.protocols.ModelMaps builds the public ones, with checks, on these) ---------------------
    @property
    def torch_model(self) -> DiffusionModel:
        """The differentiable PyTorch model: this one."""
        return self

    @property
    def supports_autograd(self) -> bool:
        """Outputs carry autograd graphs when inputs require grad."""
        return True

    def _h(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return self.h_raw(x, tt)

    def _eps(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return self.eps_raw(x, tt)

    # forward AD cannot make a dual tensor of an expanded (stride-0) input, e.g. x.expand(K, ...) for K directions
    # at one point: the JVPs take contiguous copies (a no-op for contiguous inputs).
    def _h_jvp(self, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.jvp(lambda xx: self.h_raw(xx, tt), (x.contiguous(),), (v.contiguous(),))

    def _eps_jvp(self, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.jvp(lambda xx: self.eps_raw(xx, tt), (x.contiguous(),), (v.contiguous(),))

    def point_batching(self, batching: str = "auto", n: int = 2) -> str:
        """``auto``: vmap (the primal h_t(x) once per call) unless there is one direction (vmap only adds overhead:
        1.2x slower on the default model) or vmap failed on this U-Net before; then repeat."""
        if batching == "auto":
            return "vmap" if n > 1 and self.unet not in _VMAP_FAILED else "repeat"
        return super().point_batching(batching, n)

    def _point_batchings(self) -> tuple[str, ...]:
        return ("vmap", "repeat")

    def h_jvp_point(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor, *, batching: str = "auto"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_t(x), D h_t(x)[v_i]) for n directions at one point (:meth:`ModelMaps.h_jvp_point`); differentiable in
        ``x``. With ``auto``, a vmap that fails on this U-Net falls back to repeat, and is not tried again on it."""
        try:
            return super().h_jvp_point(x, t, v, batching=batching)
        except (RuntimeError, NotImplementedError) as err:
            if batching != "auto" or self.point_batching("auto", int(v.shape[0])) != "vmap":
                raise
            log.warning("vmap over func.jvp failed on this U-Net (%s); repeating x instead", err)
            _VMAP_FAILED[self.unet] = str(err)
            return super().h_jvp_point(x, t, v, batching="repeat")

    def _h_jvp_point(self, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor, mode: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        if mode == "vmap":
            return point_jvp(lambda xx: self.h_raw(xx, tt), x, v)
        return super()._h_jvp_point(x, tt, v, mode)

    # ---- image space <-> model space --------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> model-space x_0 (the VAE latent mean, scaled, for latent models)."""
        images = images.to(device=self.device, dtype=self.dtype)
        if self.vae is None:
            return images.clone()
        z = self.vae.encode(images).latent_dist.mean
        return z * self.vae.config.scaling_factor

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Model-space x_0 -> images (B, 3, H, W) in [-1, 1] (clamped)."""
        if self.vae is None:
            return x0.clamp(-1, 1)
        return self.vae.decode(x0 / self.vae.config.scaling_factor).sample.clamp(-1, 1)


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------
_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")


#: Why float16 is refused on the CPU. Measured with PyTorch 2.13 (CPU build) on a 2-core AVX-512 Xeon without
#: bfloat16 or AMX instructions, 2 threads, a busy machine: google/ddpm-cifar10-32's 35.7M-parameter U-Net at 32x32
#: took 25-27 s per eps call in float16, against 0.8-1.5 s in float32 and 2-5 s in bfloat16 (its h JVP: 14-20 s,
#: 1.8-8 s, 2.2-2.5 s); a single 128-channel 3x3 convolution at 32x32, one thread: 620 ms, 3.5 ms, 18 ms. Every
#: operation ran: float16 is not missing on the CPU, only slow.
_CPU_FLOAT16 = (
    "dtype float16 is refused on the CPU: PyTorch {torch} runs float16 convolutions on the CPU but without fast "
    "kernels (measured: an eps call of a 35.7M-parameter U-Net 18-31x slower than in float32 and 5-13x slower "
    "than in bfloat16). "
    "bfloat16 is the CPU half precision: pass dtype='bfloat16' (or 'bf16'), or use float16 on a CUDA device."
)


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device | None = None) -> torch.dtype:
    """The torch dtype ``load_model`` computes in, from a dtype or one of the names of ``_DTYPES``; float16 is
    refused on the CPU (see ``_CPU_FLOAT16``)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise InputError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        dtype = _DTYPES[dtype]
    if not isinstance(dtype, torch.dtype) or dtype not in tuple(_DTYPES.values()):
        raise InputError(f"dtype must be torch.float32, torch.float64, torch.bfloat16 or torch.float16, got {dtype}")
    if dtype == torch.float16 and device is not None and device.type == "cpu":
        raise InputError(_CPU_FLOAT16.format(torch=torch.__version__.split("+")[0]))
    return dtype


def available_devices() -> list[str]:
    """The torch devices usable here: ``"cpu"``, then ``"cuda:0"``, ``"cuda:1"``, ... and ``"mps"`` when present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine (None: CUDA when available, else the CPU).

    Raises :class:`InputError` naming the devices that exist for a malformed device, a device type this machine lacks
    ("CUDA is not available here; devices: cpu") or a CUDA index beyond the device count (torch itself would fail
    later with an ``AssertionError`` or a ``RuntimeError`` from deep inside ``Module.to``).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    devices = ", ".join(available_devices())
    if not isinstance(device, (str, torch.device)):
        raise InputError(f"device must be a string or a torch.device, got {type(device).__name__}; devices here: "
                         f"{devices}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"device {str(device)[:80]!r} is not a torch device; devices here: {devices}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"CUDA is not available here; devices: {devices}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {str(dev)!r} does not exist ({torch.cuda.device_count()} CUDA device(s)); "
                             f"devices: {devices}")
        return dev
    if dev.type == "mps" and "mps" in devices:
        return dev
    raise InputError(f"device type {dev.type!r} is not available here; devices: {devices}")


@contextlib.contextmanager
def _loading(what: Path | str) -> Iterator[None]:
    """Turn the errors of reading a model file (a missing or junk file, a bad JSON, a corrupt safetensors header, a
    config that diffusers or transformers refuse, weights of the wrong shapes) into :class:`ModelLoadError` naming
    ``what``; ModelLoadError and InputError pass through."""
    try:
        yield
    except (ModelLoadError, InputError):
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ModelLoadError(f"could not load {what} ({type(err).__name__}: {_short(err)})") from err
    except Exception as err:  # safetensors' SafetensorError and other loaders' own exception classes
        if type(err).__module__.split(".")[0] in ("safetensors", "safetensors_rust", "diffusers", "transformers",
                                                  "huggingface_hub", "json"):
            raise ModelLoadError(f"could not load {what} ({type(err).__name__}: {_short(err)})") from err
        raise


def _short(err: BaseException, limit: int = 300) -> str:
    """The first ``limit`` characters of an error's message, on one line."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_json(path: Path) -> dict:
    with _loading(path), open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ModelLoadError(f"could not load {path} (a JSON object is expected, got {type(data).__name__})")
    return data


def _schedule(folder: Path) -> tuple[torch.Tensor, str]:
    """alphas_cumprod and prediction type from a scheduler config (``scheduler/`` or ``scheduler_config.json``)."""
    from diffusers import DDPMScheduler

    for cfg in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if cfg.is_file():
            sched = DDPMScheduler.from_config(_read_json(cfg))
            break
    else:
        log.warning("no scheduler config in %s: using the DDPM default (1000 linear steps)", folder)
        sched = DDPMScheduler()
    return sched.alphas_cumprod.to(torch.float64).clone(), sched.config.get("prediction_type", "epsilon")


def _load_folder(folder: Path) -> DiffusionModel:
    import diffusers

    if (folder / "model_index.json").is_file() and (folder / "unet").is_dir():
        unet_dir = folder / "unet"
    elif (folder / "config.json").is_file():
        # a UNet folder, or a flat pipeline folder (model_index.json beside the UNet's config.json and weights, as
        # in the google/ddpm-* hub repositories; diffusers loads a component from the root when its subfolder is
        # missing)
        unet_dir = folder
    elif (folder / "model_index.json").is_file():
        unet_dir = folder / "unet"
    else:
        raise ModelLoadError(
            f"{folder} is not a diffusers model folder: expected model_index.json (a pipeline folder) "
            "or config.json (a UNet folder, with scheduler_config.json beside it or in scheduler/)"
        )
    if not (unet_dir / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no unet/config.json")
    cls_name = _read_json(unet_dir / "config.json").get("_class_name")
    if cls_name not in _UNET_CLASSES:
        raise ModelLoadError(f"unsupported U-Net class {cls_name!r} in {unet_dir}; "
                             f"supported: {', '.join(_UNET_CLASSES)}")
    weights = sorted(unet_dir.glob("*.safetensors"))
    if not weights:
        raise ModelLoadError(f"{unet_dir} has no .safetensors weights (pickled weights are never loaded)")
    with _loading(weights[0] if len(weights) == 1 else f"the U-Net weights in {unet_dir}"):
        unet = getattr(diffusers, cls_name).from_pretrained(unet_dir, use_safetensors=True)
    with _loading(f"the scheduler config of {folder}"):
        alphas_cumprod, prediction_type = _schedule(folder)
    if cls_name == "UNet2DModel":
        if unet.config.time_embedding_type != "positional" or unet.class_embedding is not None:
            raise ModelLoadError("only unconditional UNet2DModels with positional time embeddings are supported")
        return DiffusionModel(unet=unet, alphas_cumprod=alphas_cumprod, prediction_type=prediction_type)

    # Latent model: UNet2DConditionModel + AutoencoderKL + empty-prompt conditioning.
    if unet.config.addition_embed_type is not None or unet.class_embedding is not None:
        raise ModelLoadError("UNet2DConditionModels with added or class embeddings (e.g. SDXL) are not supported")
    for sub in ("vae", "text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise ModelLoadError(f"latent model {folder} lacks the {sub}/ folder (needs vae, text_encoder, tokenizer)")
    from transformers import CLIPTextModel, CLIPTokenizer

    with _loading(folder / "vae"):
        vae = diffusers.AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True)
    with _loading(folder / "tokenizer"):
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    with _loading(folder / "text_encoder"):
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True)
        ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        with torch.no_grad():
            cond = text_encoder(ids)[0]  # (1, L, D)
    return DiffusionModel(
        unet=unet, alphas_cumprod=alphas_cumprod, kind="latent", vae=vae, cond=cond, prediction_type=prediction_type
    )


def _load_hub(repo_id: str) -> DiffusionModel:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors", "tokenizer/*"]
    try:
        path = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        try:
            path = snapshot_download(repo_id, allow_patterns=patterns)
        except Exception as err:
            raise ModelLoadError(
                f"could not fetch {repo_id!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
                f"Without network, download it elsewhere (`huggingface-cli download {repo_id}`) "
                "and pass the local folder instead."
            ) from err
    return _load_folder(Path(path))


def embedded_model_dir(name: str) -> Path:
    """The folder of the embedded model ``name`` (a key of :data:`EMBEDDED_MODELS`); it may be missing."""
    if name not in EMBEDDED_MODELS:
        raise InputError(f"embedded models are {', '.join(EMBEDDED_MODELS)}; got {name!r}")
    return (DEFAULT_MODEL_DIR / EMBEDDED_MODELS[name]).resolve()


def embedded_models() -> list[str]:
    """Names of the embedded models present on this machine (their folder has ``model_index.json``)."""
    return [n for n in EMBEDDED_MODELS if (embedded_model_dir(n) / "model_index.json").is_file()]


def load_model(
    source: str | os.PathLike = "default",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> DiffusionModel:
    """Load a diffusion model as a :class:`DiffusionModel` with JVP-safe attention, in eval mode, frozen.

    Args:
        source: ``"default"`` (the embedded model in ``weights/``), ``"textured"`` (the embedded model fine-tuned on
            textured scenes too, ``weights/textured/``; see :data:`EMBEDDED_MODELS`), a local diffusers folder (a
            pipeline folder with ``model_index.json``, or a UNet folder with its scheduler config), or a Hugging Face
            hub id
            (``owner/name``; needs network unless already in the local cache).
        device: torch device; default CUDA when available, else CPU.
        dtype: ``torch.float32`` (default), ``torch.float64``, ``torch.bfloat16`` or ``torch.float16``, or one of the
            strings ``"float32"``/``"fp32"``, ``"float64"``/``"fp64"``, ``"bfloat16"``/``"bf16"``,
            ``"float16"``/``"fp16"``. float16 needs a CUDA device (on the CPU it raises :class:`InputError`:
            bfloat16 is the CPU half precision). In half precision the U-Net (and VAE) weights and activations are
            half; the schedule stays float64 (``alphas_cumprod``), ``alpha_bar``/``sigma`` are computed in float64
            and rounded once, and the empty-prompt conditioning of latent models is computed by the text encoder
            in float32, then rounded.
    """
    device = check_device(device)
    dtype = _resolve_dtype(dtype, device)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"model source must be a string or a path, got {type(source).__name__}")
    src = os.fspath(source)
    if not isinstance(src, str):
        raise InputError(f"model source must be a text path, got {type(src).__name__}")
    if not src.strip():
        raise InputError("model source is empty: give 'default', a local model folder or a hub id 'owner/name'")
    if len(src) > MAX_SOURCE_LENGTH:
        raise InputError(f"model source is {len(src)} characters long; at most {MAX_SOURCE_LENGTH} are accepted")
    try:
        exists = Path(src).expanduser().exists()
    except (OSError, ValueError, RuntimeError) as err:  # a name too long for the file system, a NUL byte, no $HOME
        raise ModelLoadError(f"model source {src!r} is not a usable path ({type(err).__name__}: {_short(err)})") \
            from err
    if src in EMBEDDED_MODELS:
        folder = embedded_model_dir(src)
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"the embedded {src} model is missing from {Path(DEFAULT_MODEL_DIR.name, EMBEDDED_MODELS[src])}/ "
                "(train one with `python -m pipeline train`), or pass a local model folder"
            )
        model = _load_folder(folder)
    elif exists:
        folder = Path(src).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model source {src!r} is a file, not a diffusers model folder")
        model = _load_folder(folder)
    elif src.count("/") == 1 and not src.startswith((".", "/", "~")):
        model = _load_hub(src)
    else:
        raise ModelLoadError(f"model source {src!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}), "
                             "an existing folder, nor a hub id 'owner/name'")
    model.source = src
    n_attn = make_jvp_safe(model.unet)
    for m in (model.unet, model.vae):
        if m is not None:
            m.eval().requires_grad_(False)
    model.to(device=device, dtype=dtype)
    model.info.update(attention_modules=n_attn, unet_class=type(model.unet).__name__)
    return model
