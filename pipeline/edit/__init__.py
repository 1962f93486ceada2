"""Editing by generation-curve matching (docs/maths.md section 4): object removal, transfer, saliency, blending.

Every task is one loop (:func:`match_curves`) with a different reference curve ``r*``:

1. Invert the start image x_0 with DDIM to ``x_{t_edit}`` on the grid ``0 = t_0 < t_1 < ... < t_S = t_edit``,
   keeping the trajectory ``{x_t^orig}``.
2. Generate back. At each step t_k where the task's loss is active, take ``iterations`` damped Polyak gradient
   steps on ``x_{t_k}``, ``x <- x - min(0.5 L / <g, d>, lr / rms_m(d)) d`` with ``g = m * grad L``, ``d = g``
   (or ``g`` smoothed by a Gaussian of ``grad_blur`` cells, then masked) and

       L(x) = w_c * sum_p w_kp rho(log r_{t_k}(x, e_p) - log r*_kp) / sum_p w_kp  +  w_p * mean_m (x - a_k)^2

   with ``rho(d) = max(|d| - tol, 0)^2`` (``tol = tolerance``, a dead zone; 0: the squared log error)
   and ``r_t(x, e_p) = || D h_t(x)[e_p] ||`` the generation rate of the unit patch direction ``e_p``
   (:func:`pipeline.rates.patch_directions`) over the target patches p, and ``a_k`` the preservation anchor (the
   state before this step's updates, or a reference trajectory); then the DDIM step ``x_{t_{k-1}} = ddim(x_{t_k})``.
   With ``relative`` (the default of removal and saliency) the loop follows the plain regeneration (the same loop
   without updates), not the inversion: the reference becomes ``r* c^rec / c^inv`` and an inversion anchor becomes
   the regeneration, so only the change the task asks for is optimised, not the DDIM round-trip error
   (:func:`match_curves`).
3. After each step blend outside the mask with the original trajectory: ``x <- m x + (1 - m) x^orig``, with ``m`` the
   edit region in model space, feathered outwards (1 on the whole region).
4. Decode, resize to the input's size, and paste the input's pixels back outside the mask: the returned image equals
   the input exactly there.

Notation: ``c_p(t_k)`` (a *curve*) is the rate of patch p along a trajectory; ``curves_before`` is measured along the
input's trajectory, ``curves_after`` along the DDIM inversion of the returned image.

How rates are differentiated (``grad_mode``) and what each way costs: :mod:`pipeline.edit.curves`. How the
defaults were chosen: :mod:`pipeline.edit.configs`.

**Images** are uint8 (H, W, 3) arrays, PIL images or anything :func:`pipeline.images.to_uint8_rgb` accepts, at any
size within its limits. They are resized to the model's resolution (Lanczos down, bicubic up), edited there, and the
edit is resized back to the input's size (bicubic) before the paste-back: inside the mask the result has the
model's resolution, outside it the input is untouched. **Masks** are bool or integer (H, W) arrays (nonzero = inside)
of the image's size; empty and full masks, mismatched sizes and masks passed as images are refused.

Task references (what ``r*`` is; "ring" = dilated region minus region):

| task               | target patches        | reference r*                                                          |
|--------------------|-----------------------|-----------------------------------------------------------------------|
| ``remove_object``  | touching the mask     | the background ring's geometric-mean curve (its shape, by default)    |
| ``transfer``       | the target region     | the source region's curves, patch to patch through the bounding boxes |
| ``adjust_saliency``| the region            | ``log r* = b_p + a (log c_p - b_p)`` for t > t_b (b_p: rest of the    |
|                    |                       | image's curve at the patch's own mean offset from it)                 |
| ``blend``          | object and seam band  | foreground's curves (object, t > t_switch), background's (seam, below) |

Modules, one job each:

| module      | job                                                                                                  |
|-------------|------------------------------------------------------------------------------------------------------|
| ``configs`` | :class:`EditConfig` and the four task configs; their validation                                      |
| ``inputs``  | checks of images and masks; an image in model space                                                  |
| ``regions`` | masks in model space, patches of regions, patch correspondence, harmonic and mean fills, warping     |
| ``curves``  | rates of patch directions with gradients (the loss) and without (curves along trajectories)          |
| ``loop``    | the curve loss, the gradient step and :func:`match_curves` (one DDIM loop: ``ddim.sample`` + a hook) |
| ``run``     | per-call plumbing: clock, progress across stages, inversions and curves of one task call             |
| ``results`` | :class:`EditResult`; decode, resize, paste back and measure a task's output                          |
| ``tasks``   | :func:`remove_object`, :func:`transfer`, :func:`adjust_saliency`, :func:`blend`                      |
"""

from .configs import (
    FLUCTUATIONS,
    GENERATIVE_REMOVAL,
    GRAD_MODES,
    REMOVE_INITS,
    REMOVE_REFERENCES,
    TRANSFER_INITS,
    BlendConfig,
    EditConfig,
    RemoveConfig,
    SaliencyConfig,
    TransferConfig,
    check_config,
    check_for_model,
    default_patch_size,
    for_model,
    with_overrides,
)
from .curves import LOG_FLOOR, geomean, rates, trajectory_curves
from .inputs import check_image, check_mask, to_model
from .loop import LOSS_FLOOR, MASS_FLOOR, POLYAK, MatchOutput, MatchPlan, curve_loss, match_curves
from .regions import (
    best_shift,
    corresponding_patches,
    harmonic_fill,
    harmonic_patch_fill,
    mean_fill,
    model_mask,
    patch_coverage,
    patch_neighbours,
    pixel_dilate,
    region_patches,
    seeded_subset,
    shift_fill,
    warp_region,
)
from .results import EditResult
from .tasks import adjust_saliency, blend, remove_object, soft_paste, transfer

__all__ = [
    "BlendConfig", "EditConfig", "EditResult", "FLUCTUATIONS", "GENERATIVE_REMOVAL", "GRAD_MODES", "LOG_FLOOR",
    "LOSS_FLOOR", "MASS_FLOOR",
    "MatchOutput", "MatchPlan", "POLYAK", "REMOVE_INITS", "REMOVE_REFERENCES", "RemoveConfig", "SaliencyConfig",
    "TRANSFER_INITS", "TransferConfig", "adjust_saliency", "blend", "check_config", "check_for_model",
    "default_patch_size", "for_model", "check_image",
    "check_mask", "corresponding_patches", "curve_loss", "geomean", "harmonic_fill", "harmonic_patch_fill",
    "match_curves", "mean_fill", "model_mask", "patch_coverage", "patch_neighbours", "pixel_dilate", "rates",
    "region_patches", "remove_object", "seeded_subset", "shift_fill", "to_model", "trajectory_curves", "transfer",
    "warp_region", "best_shift", "soft_paste",
    "with_overrides",
]
