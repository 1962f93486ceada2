"""The one model interface every algorithm consumes, and the maps shared by its implementations.

Rates, editing, DDIM and geodesics take one argument, ``model``, typed :class:`DiffusionOps`. Two kinds of object
implement it: :class:`pipeline.model.DiffusionModel` (eager PyTorch, differentiable) and every ``accel`` backend
(:class:`accel.base.Backend`: the same model's maps on ONNX Runtime, TensorRT or compiled graphs; it forwards the
schedule and the image <-> model-space maps to the model it wraps). Both build the public maps below on the same four
primitives through :class:`ModelMaps`, so input checks, the score and the point JVP are written once.

| method                        | returns                                       | shapes                               |
|-------------------------------|-----------------------------------------------|--------------------------------------|
| ``eps(x, t)``                 | eps(x_t, t)                                   | (B, C, H, W) -> (B, C, H, W)         |
| ``eps_jvp(x, t, v)``          | (eps, D eps(x_t)[v])                          | -> 2 x (B, C, H, W)                  |
| ``score(x, t)``               | s(x_t, t) = -eps(x_t, t) / sigma(t)           | -> (B, C, H, W)                      |
| ``score_jvp(x, t, v)``        | (s, D s[v]) = -(eps, D eps[v]) / sigma(t)     | -> 2 x (B, C, H, W)                  |
| ``h(x, t)``                   | h_t(x_t), the U-Net mid-block output          | -> (B, C_h, H_h, W_h)                |
| ``h_jvp(x, t, v)``            | (h, D h_t(x_t)[v])                            | -> 2 x (B, C_h, H_h, W_h)            |
| ``h_jvp_point(x, t, v)``      | (h_t(x), D h_t(x)[v_i] for each i), x shared  | x (1, ...), v (n, ...) -> (1, ...),  |
|                               |                                               | (n, C_h, H_h, W_h)                   |

``t`` is an int or a (B,) integer tensor of training timesteps; ``x`` and ``v`` live in model space (pixels in
[-1, 1], or VAE latents). ``torch_model`` is the differentiable PyTorch model behind the object (itself for a
:class:`~pipeline.model.DiffusionModel`): algorithms that differentiate a loss through the maps (editing's gradient
steps, the autograd geodesic gradient) use it, everything else goes through the object's own maps.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from .errors import InputError
from .memory import max_batch, split_calls

if TYPE_CHECKING:
    from .model import DiffusionModel

log = logging.getLogger(__name__)

#: How ``h_jvp_point`` batches many directions at one point: ``vmap`` (torch.func.vmap over the tangents of
#: torch.func.jvp: the primal once; PyTorch only), ``repeat`` (x repeated along the batch), ``graph`` (an exported
#: point graph), ``auto`` (the implementation's fastest: see :meth:`ModelMaps.point_batching`).
BATCHINGS = ("auto", "vmap", "repeat", "graph")


def score_from_eps(eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``s(x_t, t) = -eps(x_t, t) / sigma(t)`` (also maps ``D eps[v]`` to ``D s[v]``, the map being linear).

    eps: (B, C, H, W); sigma: (B,) or a scalar -> (B, C, H, W)
    """
    sigma = torch.as_tensor(sigma, dtype=eps.dtype, device=eps.device)
    return -eps / sigma.reshape(-1, *([1] * (eps.ndim - 1))) if sigma.ndim else -eps / sigma


def point_jvp(fn, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(x), D fn(x)[v_i])`` for n tangents at one point: ``torch.func.vmap`` over the tangents of
    ``torch.func.jvp``, the primal not batched, so ``fn(x)`` is computed once for all n directions.

    Differentiable in ``x`` (reverse over forward). fn: (1, C, H, W) -> (1, ...); x (1, C, H, W); v (n, C, H, W)
    -> ((1, ...), (n, ...)). Also the source of the exported ``h_jvp_point`` graph (:mod:`export.trace`).
    """

    def one(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # u: (1, C, H, W)
        return torch.func.jvp(fn, (x,), (u,))

    out, jv = torch.func.vmap(one, in_dims=0, out_dims=(None, 0))(v[:, None])  # (1, ...), (n, 1, ...)
    return out, jv[:, 0]


@runtime_checkable
class DiffusionOps(Protocol):
    """What every algorithm of the project needs from a diffusion model (see the module docstring)."""

    kind: str  # "pixel" | "latent"
    alphas_cumprod: torch.Tensor  # (T,) float64 on the CPU

    @property
    def device(self) -> torch.device: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def channels(self) -> int: ...
    @property
    def sample_size(self) -> int: ...
    @property
    def image_size(self) -> int: ...
    @property
    def vae_scale(self) -> int: ...
    @property
    def num_train_timesteps(self) -> int: ...
    @property
    def torch_model(self) -> DiffusionModel: ...
    @property
    def supports_autograd(self) -> bool: ...

    def timesteps(self, t: int | torch.Tensor, batch: int) -> torch.Tensor: ...
    def check_x(self, x: torch.Tensor, name: str = "x") -> torch.Tensor: ...
    def alpha_bar(self, t: int | torch.Tensor, batch: int = 1) -> torch.Tensor: ...
    def sigma(self, t: int | torch.Tensor, batch: int = 1) -> torch.Tensor: ...
    def encode(self, images: torch.Tensor) -> torch.Tensor: ...
    def decode(self, x0: torch.Tensor) -> torch.Tensor: ...

    def eps(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor: ...
    def eps_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]: ...
    def score(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor: ...
    def score_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]: ...
    def h(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor: ...
    def h_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def h_jvp_point(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor, *, batching: str = "auto"
                    ) -> tuple[torch.Tensor, torch.Tensor]: ...
    def point_batching(self, batching: str = "auto", n: int = 2) -> str: ...
    def max_batch(self) -> int | None: ...


class ModelMaps:
    """The public maps of :class:`DiffusionOps`, with their input checks, built on four primitives.

    Subclasses provide the schedule and checks (``check_x``, ``timesteps``, ``sigma``) and implement, on validated
    inputs (``x``, ``v``: (B, C, H, W) on the model's device and dtype; ``tt``: (B,) long), ``_h``, ``_h_jvp``,
    ``_eps``, ``_eps_jvp``; optionally ``_h_jvp_point`` (default: x repeated along the batch).
    """

    # ---- input checks ----------------------------------------------------------------------------------------------
    def _xt(self, x: torch.Tensor, t: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.check_x(x)
        return x, self.timesteps(t, x.shape[0])

    def _xtv(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, tt = self._xt(x, t)
        v = self.check_x(v, "v")
        if v.shape != x.shape:
            raise InputError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
        return x, tt, v

    def _sigma4(self, tt: torch.Tensor) -> torch.Tensor:
        return self.sigma(tt, tt.shape[0]).view(-1, 1, 1, 1)  # (B, 1, 1, 1)

    # ---- public maps -------------------------------------------------------------------------------------------------
    # Every map splits a batch larger than max_batch() into parts (pipeline.memory): the maps are per-sample, so the
    # result is the same; only the peak memory changes.
    def h(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """h_t(x_t), the U-Net mid-block output.  (B, C, H, W) -> (B, C_h, H_h, W_h)"""
        x, tt = self._xt(x, t)
        return split_calls(self._h, self._batch_limit(x.shape[0]), x, tt)

    def h_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_t(x), D h_t(x)[v]).  x, v: (B, C, H, W) -> 2 x (B, C_h, H_h, W_h)"""
        x, tt, v = self._xtv(x, t, v)
        return split_calls(self._h_jvp, self._batch_limit(x.shape[0]), x, tt, v)

    def eps(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Noise prediction eps(x_t, t).  (B, C, H, W) -> (B, C, H, W)"""
        x, tt = self._xt(x, t)
        return split_calls(self._eps, self._batch_limit(x.shape[0]), x, tt)

    def eps_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps(x, t), D eps(x, t)[v]).  x, v: (B, C, H, W) -> 2 x (B, C, H, W)"""
        x, tt, v = self._xtv(x, t, v)
        return split_calls(self._eps_jvp, self._batch_limit(x.shape[0]), x, tt, v)

    def score(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """s(x_t, t) = -eps(x_t, t) / sigma(t).  (B, C, H, W) -> (B, C, H, W)"""
        x, tt = self._xt(x, t)
        return score_from_eps(split_calls(self._eps, self._batch_limit(x.shape[0]), x, tt), self._sigma4(tt))

    def score_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(x, t), D s(x, t)[v]) = -(eps, D eps[v]) / sigma(t).  -> 2 x (B, C, H, W)"""
        x, tt, v = self._xtv(x, t, v)
        e, je = split_calls(self._eps_jvp, self._batch_limit(x.shape[0]), x, tt, v)
        sig = self._sigma4(tt)
        return score_from_eps(e, sig), score_from_eps(je, sig)

    def max_batch(self) -> int | None:
        """Largest batch one call runs at once (bigger batches are split), None for no limit: measured once per
        model from the memory budget (:func:`pipeline.memory.max_batch`; ``DIFFGEO_MAX_BATCH`` overrides)."""
        return max_batch(self)

    def _batch_limit(self, n: int) -> int | None:
        return None if n <= 1 else self.max_batch()

    def h_jvp_point(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor, *, batching: str = "auto"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_t(x), D h_t(x)[v_i]) for n directions at one point.  x (1, C, H, W), v (n, C, H, W) ->
        (1, C_h, H_h, W_h), (n, C_h, H_h, W_h). ``batching``: one of :data:`BATCHINGS` that this object supports."""
        x, tt = self._xt(x, t)
        if x.shape[0] != 1:
            raise InputError(f"x must hold one point, shape (1, {x.shape[1]}, H, W); got batch {x.shape[0]}")
        v = self.check_x(v, "v")
        if v.shape[1:] != x.shape[1:]:
            raise InputError(f"directions v must have the shape (n, {', '.join(map(str, x.shape[1:]))}), "
                             f"got {tuple(v.shape)}")
        mode = self.point_batching(batching, v.shape[0])
        limit = self._batch_limit(v.shape[0])
        if limit is None or v.shape[0] <= limit:
            return self._h_jvp_point(x, tt, v, mode)
        parts = [self._h_jvp_point(x, tt, v[i:i + limit], mode) for i in range(0, v.shape[0], limit)]
        return parts[0][0], torch.cat([jv for _, jv in parts])

    def point_batching(self, batching: str = "auto", n: int = 2) -> str:
        """The batching :meth:`h_jvp_point` runs for ``batching`` with ``n`` directions: "vmap", "repeat" or "graph"
        (``auto`` resolved; an unsupported choice raises :class:`InputError` listing the supported ones)."""
        supported = self._point_batchings()
        if batching == "auto":
            return supported[0]
        if batching not in BATCHINGS or batching not in supported:
            raise InputError(f"batching must be 'auto' or one of {supported} for {type(self).__name__}, "
                             f"got {batching!r}")
        return batching

    # ---- implementations ------------------------------------------------------------------------------------------
    def _point_batchings(self) -> tuple[str, ...]:
        """Supported point batchings, the preferred one first."""
        return ("repeat",)

    def _h_jvp_point(self, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor, mode: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        n = v.shape[0]
        # forward AD cannot make a dual tensor of an expanded (stride-0) input: repeat makes a real copy
        h, jv = self._h_jvp(x.repeat(n, 1, 1, 1), tt.repeat(n), v.contiguous())
        return h[:1], jv

    def _h(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _h_jvp(self, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _eps(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _eps_jvp(self, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError
