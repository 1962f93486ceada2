"""What an edit returns (:class:`EditResult`) and how a task's loop output becomes one (:func:`finish`: decode,
resize, paste back, measure)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..images import tensor_to_uint8
from .curves import LOG_FLOOR
from .inputs import to_model
from .loop import MatchOutput, MatchPlan
from .run import Run


@dataclass(frozen=True)
class EditResult:
    """One edit. Curves are rates r_t(x_t, e_p) of the K target patches at the S grid timesteps ``timesteps``."""

    task: str  # "remove" | "transfer" | "saliency" | "blend"
    image: np.ndarray  # (H, W, 3) uint8, the input's size; equal to the input where ``changed`` is False
    changed: np.ndarray  # (H, W) bool: pixels that may differ from the input
    timesteps: np.ndarray  # (S,) int, increasing: t_1 < ... < t_S = t_edit
    patches: np.ndarray  # (K,) int: row-major patch indices of the target patches (grid of model_size / patch_size)
    curves_before: np.ndarray | None  # (S, K) along the input's trajectory (None unless measure_curves)
    curves_after: np.ndarray | None  # (S, K) along the returned image's trajectory (None unless measure_curves)
    reference: np.ndarray  # (S, K) reference rates r*
    weights: np.ndarray  # (S, K) loss weight of each patch at each step (0 = inactive)
    loss_history: np.ndarray  # (N,) curve loss at each gradient iteration, before its update
    loss_steps: np.ndarray  # (N,) the timestep of each entry of loss_history
    seconds: float  # wall time of the whole call
    timing: dict[str, float]  # seconds per stage
    config: dict[str, Any]  # the effective configuration
    diagnostics: dict[str, Any] = field(default_factory=dict)  # patch counts, evaluations, curve errors, ...

    def mean_curve(self, which: str = "after") -> np.ndarray:
        """Geometric mean over the target patches of "before", "after" or "reference" curves.  -> (S,)"""
        arrays = {"before": self.curves_before, "after": self.curves_after, "reference": self.reference}
        if which not in arrays:
            raise InputError(f"which must be one of {sorted(arrays)}, got {which!r}")
        arr = arrays[which]
        if arr is None:
            raise InputError(f"curves_{which} were not measured (measure_curves=False)")
        return np.exp(np.log(np.maximum(arr, LOG_FLOOR)).mean(axis=1))


def finish(task: str, run: Run, *, match: MatchOutput, plan: MatchPlan, idx: torch.Tensor, image: np.ndarray,
            changed: np.ndarray, before: torch.Tensor | None, diagnostics: dict[str, Any]) -> EditResult:
    """Decode, resize, paste back; optionally measure the result's curves; build the :class:`EditResult`."""
    model, cfg = run.model, run.cfg
    with torch.no_grad():
        edited = tensor_to_uint8(model.decode(match.x0)[0], image.shape[:2])  # (H, W, 3)
    result = np.where(changed[..., None], edited, image)
    run.clock.lap("decode")
    after = None
    if cfg.measure_curves:
        traj = run.invert(to_model(model, result), "measuring the result's curves")
        after = run.curves(traj, plan.directions)
    ref, w = plan.reference[1:], plan.weights[1:]
    diag: dict[str, Any] = {
        "num_target_patches": int(idx.numel()),
        "rate_evaluations_with_grad": match.rate_evals,
        "gradient_iterations": int(match.loss.size),
        "loss_first": float(match.loss[0]) if match.loss.size else None,
        "loss_last": float(match.loss[-1]) if match.loss.size else None,
        "changed_fraction": float(changed.mean()),
        "model_image_size": int(model.image_size),
        "resized": tuple(image.shape[:2]) != (model.image_size,) * 2,
        **diagnostics,
    }
    if before is not None and after is not None:
        diag["curve_error_before"] = _log_error(before, ref, w)
        diag["curve_error_after"] = _log_error(after, ref, w)
    as_np = lambda a: None if a is None else _numpy(a)  # noqa: E731
    return EditResult(
        task=task, image=result, changed=changed.copy(), timesteps=plan.start.timesteps[1:].cpu().numpy(),
        patches=idx.cpu().numpy(), curves_before=as_np(before), curves_after=as_np(after), reference=as_np(ref),
        weights=as_np(w), loss_history=match.loss, loss_steps=match.loss_steps, seconds=run.clock.total(),
        timing=dict(run.clock.stages), config=asdict(cfg), diagnostics=diag,
    )


def _numpy(a: torch.Tensor) -> np.ndarray:
    """A tensor as a NumPy array; half-precision ones (bfloat16 has no NumPy type) as float32."""
    a = a.detach().cpu()
    return (a.float() if a.dtype in (torch.bfloat16, torch.float16) else a).numpy()


def _log_error(c: torch.Tensor, ref: torch.Tensor, w: torch.Tensor) -> float | None:
    """RMS of log(c / r*) over the active (step, patch) entries."""
    if float(w.sum()) <= 0:
        return None
    d = torch.log(c.clamp_min(LOG_FLOOR)) - torch.log(ref.clamp_min(LOG_FLOOR))
    return float(((w * d * d).sum() / w.sum()).sqrt())
