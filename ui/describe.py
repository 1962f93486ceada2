"""What a result says, in a user's words: the resolution the model worked at, the region it changed, what the curve loss
did, and (in the status line) the backend and the time; the internals go to a details panel.

Two readouts of an edit measure different things and are named so they cannot contradict each other:

- the **curve loss** is what the gradient steps minimise while the image is generated back, one value per gradient
  step at the timestep being generated (with the task's dead zone: mismatches within the tolerance cost nothing);
- the **curve mismatch** (with "measure curves") is measured afterwards on the input and on the result: the RMS of
  log(r / r*) over the active timesteps and patches (0 = the region follows the reference curves).

A loss that stays flat is explained, not plotted; a mismatch that grows is said to grow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: What each editing task did, as the result's first words.
TASK_WORDS = {
    "remove": "Removed the painted object",
    "transfer": "Transferred the source region's content into the target region",
    "saliency": "Changed how salient the painted region is",
    "blend": "Blended the painted object into the background",
}

#: The note on the page about the embedded model (weights/README.md has the model card).
MODEL_NOTE = (
    "**About the model.** The embedded default model is a small diffusion model trained only on 32x32 procedural "
    "scenes (smooth backgrounds with a few simple shapes: disks, squares, rings, bars; see `weights/README.md`). "
    "It sees any photo shrunk to 32x32, so on photographs an edited region comes back as a smooth patch in the "
    "mask's shape, without texture, and the curves describe that 32x32 picture. A real checkpoint (a diffusers "
    "folder or hub id under Settings → Model, e.g. a 256x256 DDPM or Stable Diffusion 1.5) works at its own "
    "resolution and knows real images: the same geometry then fills regions with plausible detail."
)

#: Flat means: the loss changed by less than this fraction of its size (or it is zero throughout).
FLAT_RTOL = 1e-3


def model_resolution(model: Any, work_shape: tuple[int, ...]) -> str:
    """``"32x32 pixels (each model pixel covers 32x24 of the working copy's)"``."""
    r = getattr(model, "image_size", None)
    if not r:
        return "its own resolution"
    h, w = work_shape[:2]
    cover = f"; each model pixel covers about {w / r:.0f}x{h / r:.0f} of the image's pixels" if max(h, w) > r else ""
    return f"{r}x{r} pixels{cover}"


def region_words(changed: np.ndarray) -> str:
    """``"12,345 px (3.1 % of the image), a 120x96 px box at x 40-159, y 10-105"``."""
    n = int(changed.sum())
    if n == 0:
        return "no pixels"
    rows, cols = np.nonzero(changed)
    frac = 100.0 * n / changed.size
    bw, bh = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
    return (f"{n:,} px ({frac:.1f} % of the image), inside a {bw}x{bh} px box at x {cols.min()}-{cols.max()}, "
            f"y {rows.min()}-{rows.max()}")


def loss_words(loss: np.ndarray, steps: np.ndarray, iterations: int) -> tuple[str, bool]:
    """(a sentence on what the curve loss did, whether its plot says anything)."""
    loss = np.asarray(loss, dtype=np.float64)
    if loss.size == 0:
        why = "gradient steps per timestep is 0" if iterations == 0 else "no timestep was inside the loss window"
        return (f"**Curve loss:** not optimised ({why}): the region is the start content generated back.", False)
    lo, hi = float(loss.min()), float(loss.max())
    if hi - lo <= FLAT_RTOL * max(abs(hi), 1e-12) or hi == 0.0:
        return (f"**Curve loss:** stayed at {loss[0]:.3g} over {loss.size} gradient steps: the region's curves were "
                "already within the task's tolerance of the reference, so the gradient steps changed nothing and "
                "the change comes from the start content (no loss plot).", False)
    text = f"**Curve loss:** {loss[0]:.3g} at the first gradient step, {loss[-1]:.3g} at the last ({loss.size} steps)"
    steps = np.asarray(steps)
    if iterations >= 2 and steps.size == loss.size:
        fell = total = 0
        for t in np.unique(steps):
            seg = loss[steps == t]
            if seg.size >= 2:
                total += 1
                fell += int(seg[-1] < seg[0])
        if total:
            text += f"; it fell within {fell} of the {total} timesteps it was optimised at"
    text += (". Each timestep is generated once, from noisy to clean, so the loss also moves because the timestep "
             "changes, not only because of the gradient steps.")
    return text, True


def mismatch_words(before: float | None, after: float | None) -> str:
    """A sentence on the measured curve mismatch before and after (empty when not measured)."""
    if before is None or after is None:
        return ""
    if after < before:
        trend = "closer to the reference"
    elif after > before:
        trend = ("farther from the reference: the edit did not bring the curves closer at these settings (try a "
                 "deeper edit or more gradient steps)")
    else:
        trend = "as far from the reference as before"
    return (f"**Curve mismatch** (measured on the input and on the result; 0 = on the reference): {before:.3g} → "
            f"{after:.3g}, {trend}.")


def edit_summary(task: str, result: Any, *, size_note: str, model: Any, work_shape: tuple[int, ...],
                 changed_full: np.ndarray, extra: str = "") -> tuple[str, bool]:
    """(Markdown summary of an edit, whether the loss plot is worth showing)."""
    loss_text, show_loss = loss_words(result.loss_history, result.loss_steps,
                                      int((result.config or {}).get("iterations", 0)))
    diag = result.diagnostics or {}
    lines = [
        f"**{TASK_WORDS.get(task, task)}** ({extra})." if extra else f"**{TASK_WORDS.get(task, task)}.**",
        f"**Worked at:** the model's {model_resolution(model, work_shape)}, on {size_note}.",
        f"**Changed:** {region_words(changed_full)}; every other pixel is the input's.",
        loss_text,
    ]
    mismatch = mismatch_words(diag.get("curve_error_before"), diag.get("curve_error_after"))
    if mismatch:
        lines.append(mismatch)
    return "  \n".join(lines), show_loss


def edit_details(result: Any) -> str:
    """The details panel of an edit: configuration, diagnostics and time per stage, as Markdown tables."""
    def table(title: str, rows: dict[str, Any]) -> str:
        body = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows.items())
        return f"**{title}**\n\n| | |\n|---|---|\n{body}\n"

    cfg = {k: v for k, v in (result.config or {}).items() if not callable(v)}
    timing = {k: f"{v:.2f} s" for k, v in (result.timing or {}).items()}
    return "\n".join([table("Diagnostics", result.diagnostics or {}), table("Time per stage", timing),
                      table("Configuration", cfg)])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/")
