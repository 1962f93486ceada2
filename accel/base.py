"""The backend interface: batched h, h_jvp, eps, eps_jvp (and score, score_jvp), torch tensors in and out.

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

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (a package does not import, no GPU, ...). The message says why and what to do."""


Tensors = tuple[torch.Tensor, ...]


class Backend:
    """Base class: input checks and the public maps; subclasses implement ``_h``, ``_h_jvp``, ``_eps``, ``_eps_jvp``
    on validated inputs (``x``, ``v``: (B, C, H, W) on the model's device and dtype; ``t``: (B,) long).

    | method                 | returns                                   | shapes                                  |
    |------------------------|-------------------------------------------|-----------------------------------------|
    | ``h(x, t)``            | h_t(x)                                    | (B, C, H, W) -> (B, C_h, H_h, W_h)      |
    | ``h_jvp(x, t, v)``     | (h_t(x), D h_t(x)[v])                     | -> 2 x (B, C_h, H_h, W_h)               |
    | ``eps(x, t)``          | eps(x, t)                                 | -> (B, C, H, W)                         |
    | ``eps_jvp(x, t, v)``   | (eps(x, t), D eps(x, t)[v])               | -> 2 x (B, C, H, W)                     |
    | ``score(x, t)``        | s = -eps / sigma(t)                       | -> (B, C, H, W)                         |
    | ``score_jvp(x, t, v)`` | (s, D s[v]) = -(eps, D eps[v]) / sigma(t) | -> 2 x (B, C, H, W)                     |
    """

    name: str = "base"

    def __init__(self, model):
        if not hasattr(model, "check_x") or not hasattr(model, "timesteps"):
            raise InputError(f"backends wrap a pipeline.model.DiffusionModel (see load_model), "
                             f"got {type(model).__name__}")
        self.model = model
        self.info: dict[str, object] = {"backend": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # ---- input checks ----------------------------------------------------------------------------------------------
    def _xt(self, x: torch.Tensor, t: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.model.check_x(x)
        return x, self.model.timesteps(t, x.shape[0])

    def _xtv(self, x: torch.Tensor, t, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, tt = self._xt(x, t)
        v = self.model.check_x(v, "v")
        if v.shape != x.shape:
            raise InputError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
        return x, tt, v

    # ---- public maps -------------------------------------------------------------------------------------------------
    def h(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """h_t(x), the U-Net mid-block output.  (B, C, H, W) -> (B, C_h, H_h, W_h)"""
        return self._h(*self._xt(x, t))

    def h_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_t(x), D h_t(x)[v]).  x, v: (B, C, H, W) -> 2 x (B, C_h, H_h, W_h)"""
        return self._h_jvp(*self._xtv(x, t, v))

    def eps(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """eps(x, t).  (B, C, H, W) -> (B, C, H, W)"""
        return self._eps(*self._xt(x, t))

    def eps_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps(x, t), D eps(x, t)[v]).  x, v: (B, C, H, W) -> 2 x (B, C, H, W)"""
        return self._eps_jvp(*self._xtv(x, t, v))

    def score(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """s(x, t) = -eps(x, t) / sigma(t).  (B, C, H, W) -> (B, C, H, W)"""
        x, tt = self._xt(x, t)
        return -self._eps(x, tt) / self._sigma(tt)

    def score_jvp(self, x: torch.Tensor, t: int | torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(x, t), D s(x, t)[v]) = -(eps, D eps[v]) / sigma(t).  -> 2 x (B, C, H, W)"""
        x, tt, v = self._xtv(x, t, v)
        e, je = self._eps_jvp(x, tt, v)
        s = self._sigma(tt)
        return -e / s, -je / s

    def _sigma(self, tt: torch.Tensor) -> torch.Tensor:
        return self.model.sigma(tt, tt.shape[0]).view(-1, 1, 1, 1)  # (B, 1, 1, 1)

    # ---- implementations ------------------------------------------------------------------------------------------
    def _h(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _h_jvp(self, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _eps(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _eps_jvp(self, x: torch.Tensor, tt: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


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


def shared_point(x: torch.Tensor, tt: torch.Tensor) -> bool:
    """True when every row of ``x`` (B, C, H, W) and ``tt`` (B,) equals the first: many directions at one point."""
    return x.shape[0] > 1 and bool((tt == tt[0]).all()) and torch.equal(x, x[:1].expand_as(x))
