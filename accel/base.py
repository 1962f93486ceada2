"""The backend base class: the model interface (:class:`pipeline.protocols.DiffusionOps`) on another engine.

Every backend validates its inputs the same way (``model.check_x`` / ``model.timesteps``: ``x`` and ``v`` are finite
(B, C, H, W) float tensors, ``t`` an int or a (B,) integer tensor) and returns tensors on the model's device.
Backends with fixed-batch graphs serve any batch by splitting it into chunks of the exported sizes and padding the
last chunk (:func:`plan_chunks`, :func:`run_chunked`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import torch

from pipeline.errors import InputError
from pipeline.model import DiffusionModel
from pipeline.protocols import ModelMaps

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (a package does not import, no GPU, ...). The message says why and what to do."""


Tensors = tuple[torch.Tensor, ...]


class Backend(ModelMaps):
    """Base class of the backends: a :class:`~pipeline.model.DiffusionModel`'s maps on another engine.

    A backend implements :class:`pipeline.protocols.DiffusionOps`, so every algorithm accepts it where it accepts
    the model: the schedule, input checks and image <-> model-space maps are the wrapped model's; the public maps
    (with their checks, the score and the point JVP) come from :class:`~pipeline.protocols.ModelMaps`; subclasses
    implement ``_h``, ``_h_jvp``, ``_eps``, ``_eps_jvp`` (and optionally ``_h_jvp_point``) on validated inputs
    (``x``, ``v``: (B, C, H, W) on the model's device and dtype; ``t``: (B,) long).
    """

    name: str = "base"

    def __init__(self, model):
        if not isinstance(model, DiffusionModel):
            raise InputError(f"backends wrap a pipeline.model.DiffusionModel (see load_model), "
                             f"got {type(model).__name__}")
        self.model = model
        self.info: dict[str, object] = {"backend": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # ---- the wrapped model's schedule, checks and image maps -------------------------------------------------------
    @property
    def torch_model(self) -> DiffusionModel:
        """The wrapped PyTorch model (differentiable): the autograd fallback of the algorithms that need gradients."""
        return self.model

    @property
    def supports_autograd(self) -> bool:
        """Whether outputs carry autograd graphs (only the eager ``torch`` backend's do)."""
        return False

    kind = property(lambda self: self.model.kind, doc="'pixel' or 'latent', as the wrapped model")
    alphas_cumprod = property(lambda self: self.model.alphas_cumprod, doc="(T,) float64 schedule of the model")
    device = property(lambda self: self.model.device, doc="the wrapped model's device")
    dtype = property(lambda self: self.model.dtype, doc="the wrapped model's dtype")
    channels = property(lambda self: self.model.channels, doc="model-space channels")
    sample_size = property(lambda self: self.model.sample_size, doc="model-space spatial size")
    image_size = property(lambda self: self.model.image_size, doc="image size in pixels")
    vae_scale = property(lambda self: self.model.vae_scale, doc="pixels per model-space pixel")
    num_train_timesteps = property(lambda self: self.model.num_train_timesteps, doc="training timesteps T")
    downsample_factor = property(lambda self: self.model.downsample_factor, doc="the U-Net's total downsampling")

    def timesteps(self, t: int | torch.Tensor, batch: int) -> torch.Tensor:
        """The model's timestep check (:meth:`pipeline.model.DiffusionModel.timesteps`).  -> (batch,) long"""
        return self.model.timesteps(t, batch)

    def check_x(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """The model's input check (:meth:`pipeline.model.DiffusionModel.check_x`)."""
        return self.model.check_x(x, name)

    def alpha_bar(self, t: int | torch.Tensor, batch: int = 1) -> torch.Tensor:
        """alpha_bar(t), (B,)."""
        return self.model.alpha_bar(t, batch)

    def sigma(self, t: int | torch.Tensor, batch: int = 1) -> torch.Tensor:
        """sigma(t) = sqrt(1 - alpha_bar(t)), (B,)."""
        return self.model.sigma(t, batch)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> model-space x_0 (the model's own encoder: the VAE runs in PyTorch)."""
        return self.model.encode(images)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Model-space x_0 -> images (B, 3, H, W) in [-1, 1] (the model's own decoder)."""
        return self.model.decode(x0)


# --------------------------------------------------------------------------------------------------------------------
# Serving any batch with fixed-batch graphs
# --------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def plan_chunks(n: int, sizes: tuple[int, ...], overhead: float = 0.5) -> tuple[int, ...]:
    """The graph batch sizes to run for ``n`` rows: minimises ``sum(overhead + b)`` over chunks covering ``n``.

    The cost model: a call of batch ``b`` costs ``overhead + b`` row-evaluations (``overhead`` = per-call cost in
    rows; ~0.5 for ONNX Runtime on CPU, larger on GPUs where small batches are latency-bound). The last chunk may be
    padded. E.g. sizes (1, 8): n=5 -> (1, 1, 1, 1, 1); n=6 -> (8,); n=17 -> (8, 8, 1).
    """
    if n < 1:
        raise InputError(f"need at least one row, got {n}")
    sizes = tuple(sorted(set(sizes)))
    best = [0.0] + [float("inf")] * n
    choice = [0] * (n + 1)
    for m in range(1, n + 1):
        for b in sizes:
            c = overhead + b + best[max(0, m - b)]
            if c < best[m]:
                best[m], choice[m] = c, b
    out, m = [], n
    while m > 0:
        out.append(choice[m])
        m = max(0, m - choice[m])
    return tuple(sorted(out, reverse=True))


def _pad(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with its last row repeated up to ``rows`` rows (the padded rows are computed and discarded)."""
    extra = rows - t.shape[0]
    return t if extra == 0 else torch.cat([t, t[-1:].expand(extra, *t.shape[1:])])


def run_chunked(fn: Callable[[int, Tensors], Tensors], inputs: Tensors, sizes: Sequence[int],
                overhead: float = 0.5) -> Tensors:
    """Evaluate ``fn(batch, chunk_inputs) -> outputs`` over the rows of ``inputs`` with fixed-batch graphs.

    ``inputs`` share their first (row) axis; each chunk is padded to its graph batch by repeating its last row; the
    outputs are concatenated and trimmed to the rows asked for.
    """
    n = inputs[0].shape[0]
    outs: list[Tensors] = []
    start = 0
    for b in plan_chunks(n, tuple(sizes), overhead):
        stop = min(n, start + b)
        chunk = tuple(_pad(t[start:stop], b) for t in inputs)
        res = fn(b, chunk)
        outs.append(tuple(r[: stop - start] for r in res))
        start = stop
    if len(outs) == 1:
        return outs[0]
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
