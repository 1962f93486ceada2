"""The four editing tasks: each prepares its start content and reference curves ``r*`` (the table in
:mod:`pipeline.edit`), runs the shared loop and returns an :class:`~pipeline.edit.results.EditResult`."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from .. import masks as M
from ..ddim import Trajectory
from ..errors import InputError
from ..images import resize_mask, resize_uint8, to_mask
from ..progress import CancelFlag, ProgressFn
from ..protocols import DiffusionOps
from ..validate import check_float
from .configs import BlendConfig, RemoveConfig, SaliencyConfig, TransferConfig, for_model, with_overrides
from .curves import LOG_FLOOR, geomean
from .inputs import check_image, check_mask, to_model
from .loop import MatchOutput, MatchPlan
from .regions import (
    corresponding_patches,
    harmonic_fill,
    harmonic_patch_fill,
    mean_fill,
    model_mask,
    patch_neighbours,
    pixel_dilate,
    region_patches,
    shift_fill,
    warp_region,
)
from .results import EditResult, finish
from .run import Run


# --------------------------------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------------------------------
def remove_object(model: DiffusionOps, image, mask, *, guide=None, config: RemoveConfig | None = None,
                  progress: ProgressFn | None = None, cancel: CancelFlag | None = None, **overrides) -> EditResult:
    """Remove the object under ``mask``: its curves are matched to the curve of the background ring around it.

    image: (H, W, 3) uint8 / PIL / any accepted image; mask: (H, W) bool or integer. Config fields may be given as
    keyword overrides (``remove_object(model, img, mask, num_steps=10)``). The masked region starts from ``init``
    content (default: the harmonic fill of its surroundings; ``"shift"``: the translated copy of the image that best
    continues the ring, :func:`~pipeline.edit.regions.shift_fill`) re-noised by ``init_noise``; with
    ``reference="shape"`` each target patch follows the ring's curve shifted to its own mean level (the ring's rates
    are biased by its position, its shape is not), with ``"level"`` the ring's curve itself, with ``"harmonic"`` the
    harmonic interpolation of its 4-neighbour patches' log-curves on the patch grid (:func:`harmonic_patch_fill`: a
    local reference that follows structure such as a horizon line through the hole). By default the loss acts late
    (window ``(0, t_edit / 2]``) with a dead zone ``tolerance=0.2``: on the tuning split every update that the
    phase-free rates ask for where the fill already roughly matches cost PSNR. ``curve_weight=0`` is the ablation
    (the same loop without the curve loss; with ``exact`` it returns the start content). The result equals the input
    outside ``mask``.

    ``samples > 1`` (with ``init_noise > 0``) runs the loop that many times from independent fresh noise (seeds
    ``seed, seed + 1, ...``) and returns the mean of the fills (in model space): an estimate of the posterior mean of
    the hole given its surroundings, the fill with the least expected squared error. One sample draws a plausible
    texture at a random phase; the mean keeps what the samples agree on (a stripe's continuation, dots on their
    lattice) and averages the rest to its level. :data:`~pipeline.edit.configs.GENERATIVE_REMOVAL` holds the settings
    chosen on textured scenes. The loss history and rate evaluations of all the fills are concatenated and summed.

    ``guide`` (an image of ``image``'s size, optional): the hole's patches follow the guide's own curves at the same
    patches instead of a reference from the ring (``reference`` is then unused): a rough picture of the wanted
    background steers how much structure each patch carries. Given the true background it is an oracle: the best
    any curve reference can do (``benchmarks/results/edit_removal_study_textured_model-textured.md``).
    """
    cfg = for_model(with_overrides(config, overrides, RemoveConfig), model)
    run = Run(model, cfg, progress, cancel, inversions=1 + int(cfg.measure_curves and cfg.init != "invert")
              + int(guide is not None), matches=cfg.samples)
    img = check_image(image)
    mask_px = check_mask(mask, img.shape[:2])
    guide_img = None
    if guide is not None:
        guide_img = check_image(guide, name="guide")
        if guide_img.shape != img.shape:
            raise InputError(f"guide must have the image's size {img.shape[:2]}, got {guide_img.shape[:2]}")
    x0 = to_model(model, img)
    hole = model_mask(mask_px, model)
    region = M.dilate(hole, cfg.grow)
    ring = M.ring(region, cfg.ring_width)
    ring_idx = region_patches(ring, cfg.patch_size, min_cover=0.25, exclude=region)
    if ring_idx.numel() == 0:
        ring_idx = region_patches(ring, cfg.patch_size, min_cover=0.0)
    if ring_idx.numel() == 0:
        raise InputError("the mask leaves no background around it to take the reference curves from")
    idx = region_patches(region, cfg.patch_size, min_cover=0.0)
    fills = {"invert": lambda: x0, "harmonic": lambda: harmonic_fill(x0, region), "mean": lambda: mean_fill(x0, region),
             "shift": lambda: shift_fill(x0, region)}
    x_start = fills[cfg.init]()
    run.clock.lap("prepare")

    traj = run.invert(x_start)
    v, v_ring = run.directions(idx), run.directions(run.subset(ring_idx, cfg.max_reference_patches))
    weights = run.window(traj.timesteps, (0, cfg.t_edit // 2))
    n = model.sample_size // cfg.patch_size
    nb = patch_neighbours(idx, n)  # (J,) patches 4-adjacent to the targets
    if guide_img is not None:  # the guide's own curves at the hole's patches
        traj_guide = run.invert(to_model(model, guide_img), "DDIM inversion of the guide")
        log_ring = torch.log(run.curves(traj_guide, v, steps=weights > 0).clamp_min(LOG_FLOOR))  # (S, K)
    elif cfg.reference == "harmonic" and nb.numel() > 0:  # each target patch: harmonic fill of neighbours' log-curves
        log_nb = torch.log(run.curves(traj, run.directions(nb), steps=weights > 0).clamp_min(LOG_FLOOR))  # (S, J)
        log_ring = harmonic_patch_fill(log_nb, nb, idx, n)  # (S, K), NaN off the window
    else:
        log_ring = torch.log(geomean(run.curves(traj, v_ring, steps=weights > 0), dim=1))[:, None]  # (S, 1)
    if cfg.reference == "shape" and guide_img is None:  # each patch's reference at its own mean log-rate
        on = weights[1:, None] > 0
        log_own = torch.log(run.curves(traj, v, steps=weights > 0).clamp_min(LOG_FLOOR))  # (S, K)
        shift = torch.where(on, log_own - log_ring, 0).sum(0, keepdim=True) / on.sum().clamp_min(1)  # (1, K)
        log_ring = log_ring + shift
    reference = _expand(torch.exp(torch.nan_to_num(log_ring, nan=0.0)).expand(-1, idx.numel()), idx.numel())
    before = None
    if cfg.measure_curves:
        before = run.curves(traj if cfg.init == "invert" else run.invert(x0, "measuring the input's curves"), v)
    plan = MatchPlan(start=traj, outside=traj, edit=M.feather(region, cfg.feather), directions=v,
                     reference=reference, weights=weights[:, None].expand(-1, idx.numel()).contiguous(),
                     x_init=_mix_init(traj, region, cfg.init_noise, model, cfg.seed))
    match = run.match(plan)
    if cfg.samples > 1:
        match = _mean_of_fills(run, plan, match, traj, region)
    return finish("remove", run, match=match, plan=plan, idx=idx, image=img, changed=mask_px, before=before,
                   diagnostics={"num_reference_patches": int(v_ring.shape[0]), "samples": cfg.samples})


def transfer(model: DiffusionOps, image, target_mask, source_mask, *, reference=None,
             config: TransferConfig | None = None, progress: ProgressFn | None = None, cancel: CancelFlag | None = None,
             **overrides) -> EditResult:
    """Make the region under ``target_mask`` take on the content of the region under ``source_mask``.

    The source region lies in ``reference`` (any size; ``source_mask`` has its size) or, when ``reference`` is None,
    in ``image`` itself. Each target patch follows the curve of the source patch at the same relative position of
    the two regions' bounding boxes. With ``init="paste"`` the target starts from the source content warped onto it.
    The returned image equals the input outside ``target_mask``.
    """
    cfg = for_model(with_overrides(config, overrides, TransferConfig), model)
    same = reference is None
    need_in = same or cfg.init == "invert" or cfg.measure_curves  # the input's own trajectory is used
    run = Run(model, cfg, progress, cancel,
               inversions=int(need_in) + int(cfg.init == "paste") + int(not same))
    img = check_image(image)
    tgt_px = check_mask(target_mask, img.shape[:2], name="target_mask")
    src_img = img if same else check_image(reference, name="reference")
    src_px = check_mask(source_mask, src_img.shape[:2], name="source_mask")
    x0 = to_model(model, img)
    region = M.dilate(model_mask(tgt_px, model), cfg.grow)
    src_region = model_mask(src_px, model)
    idx = region_patches(region, cfg.patch_size, min_cover=0.25)
    src_idx = region_patches(src_region, cfg.patch_size, min_cover=0.25)
    start_img = img
    if cfg.init == "paste":
        start_img = np.where(tgt_px[..., None], warp_region(src_img, src_px, tgt_px), img).astype(np.uint8)
    run.clock.lap("prepare")

    traj_in = run.invert(x0) if need_in else None
    traj = traj_in if cfg.init == "invert" else run.invert(to_model(model, start_img), "DDIM inversion (pasted)")
    traj_src = traj_in if same else run.invert(to_model(model, src_img), "DDIM inversion of the reference")
    n = model.sample_size // cfg.patch_size
    match_src = src_idx[corresponding_patches(idx, src_idx, region, src_region, n)]  # (K,) source per target patch
    uniq, inv = torch.unique(match_src, return_inverse=True)
    v, v_src = run.directions(idx), run.directions(uniq)
    weights = run.window(traj.timesteps, (0, cfg.t_edit))
    src_curves = run.curves(traj_src, v_src, steps=weights > 0)[:, inv]  # (S, K)
    before = None
    if cfg.measure_curves:
        before = run.curves(traj_in, v)
    plan = MatchPlan(start=traj, outside=traj, edit=M.feather(region, cfg.feather), directions=v,
                     reference=_expand(src_curves, idx.numel()),
                     weights=weights[:, None].expand(-1, idx.numel()).contiguous(),
                     x_init=_mix_init(traj, region, cfg.init_noise, model, cfg.seed))
    match = run.match(plan)
    return finish("transfer", run, match=match, plan=plan, idx=idx, image=img, changed=tgt_px, before=before,
                   diagnostics={"num_source_patches": int(uniq.numel()), "reference_image": not same})


def adjust_saliency(model: DiffusionOps, image, mask, factor: float, *, config: SaliencyConfig | None = None,
                    progress: ProgressFn | None = None, cancel: CancelFlag | None = None, **overrides) -> EditResult:
    """Make the region under ``mask`` more (``factor > 1``) or less (``factor < 1``) salient.

    For t > t_b each region patch's log-curve is pushed to ``log r* = b_p + factor (log c_p - b_p)``: its fluctuation
    about a baseline b_p is scaled by ``factor``. ``fluctuation`` picks b_p:

    - ``"context"`` (default): ``b_p(t) = log g(t) + mean_{t > t_b} (log c_p - log g)``, g the geometric-mean curve
      of patches outside the region. The context-normalised curve ``c_p / g`` (what the time-normalised saliency
      maps of :mod:`pipeline.rates` measure) keeps its mean level and has its log-fluctuation over time scaled.
    - ``"contrast"``: ``b(t) = log g(t)``: the whole log-contrast to the context is scaled, its level included.
      This conflates level and fluctuation: for a patch less active than its context (``c_p < g``) factor 2 squares
      a ratio below 1 and *shrinks* the fluctuation of ``c_p / g``, so "more salient" lowered the curve-saliency
      contrast on the benchmark (1.925 -> 1.858 on the held-out scenes).
    - ``"own"`` (the literal reading of docs/maths.md section 4): b_p is the patch's own mean log-rate over t > t_b, so
      the curve's total variation scales, the image-wide time profile included.

    Diagnostics: ``log_fluctuation_before`` / ``_reference`` (/ ``_after`` when curves are measured): rms over t > t_b
    and the patches of ``log c - b``; the reference's is ``factor`` times the input's. The returned image equals the
    input outside ``mask``.
    """
    cfg = for_model(with_overrides(config, overrides, SaliencyConfig), model)
    check_float("factor (above 1: more salient, below 1: less)", factor, 0.0, lo_open=True)
    run = Run(model, cfg, progress, cancel, inversions=1)
    img = check_image(image)
    mask_px = check_mask(mask, img.shape[:2])
    x0 = to_model(model, img)
    region = M.dilate(model_mask(mask_px, model), cfg.grow)
    idx = region_patches(region, cfg.patch_size, min_cover=0.25)
    rest = region_patches(1 - region, cfg.patch_size, min_cover=0.99)
    if cfg.fluctuation != "own" and rest.numel() == 0:
        raise InputError("the mask leaves no patch outside it to compare the region's curves with")
    run.clock.lap("prepare")

    traj = run.invert(x0)
    v = run.directions(idx)
    own = run.curves(traj, v)  # (S, K)
    late = (traj.timesteps[1:] > cfg.t_b).to(own.device)[:, None]  # (S, 1)
    log_own = torch.log(own.clamp_min(LOG_FLOOR))
    n_ref = 0
    late_mean = lambda a: (a * late).sum(0, keepdim=True) / late.sum().clamp_min(1)  # noqa: E731  (S, K) -> (1, K)
    if cfg.fluctuation == "own":
        base = late_mean(log_own)  # (1, K) mean over t > t_b
    else:
        v_rest = run.directions(run.subset(rest, cfg.max_reference_patches))
        base = torch.log(geomean(run.curves(traj, v_rest), dim=1))[:, None]  # (S, 1) context log-curve
        n_ref = int(v_rest.shape[0])
        if cfg.fluctuation == "context":  # about the patch's own mean offset from the context
            base = base + late_mean(log_own - base)  # (S, K)
    reference = torch.where(late, torch.exp(base + float(factor) * (log_own - base)), own)  # (S, K)
    weights = run.window(traj.timesteps, (cfg.t_b + 1, cfg.t_edit))
    plan = MatchPlan(start=traj, outside=traj, edit=M.feather(region, cfg.feather), directions=v,
                     reference=_expand(reference, idx.numel()),
                     weights=weights[:, None].expand(-1, idx.numel()).contiguous(), anchor=traj)
    match = run.match(plan)

    def fluctuation(c: torch.Tensor) -> float:  # rms over t > t_b and patches of log c - b
        d = (torch.log(c.clamp_min(LOG_FLOOR)) - base) * late
        return float((d.pow(2).sum() / (late.sum() * d.shape[1]).clamp_min(1)).sqrt())

    result = finish("saliency", run, match=match, plan=plan, idx=idx, image=img, changed=mask_px,
                     before=own if cfg.measure_curves else None,
                     diagnostics={"factor": float(factor), "num_reference_patches": n_ref,
                                  "log_fluctuation_before": fluctuation(own),
                                  "log_fluctuation_reference": fluctuation(reference)})
    if result.curves_after is not None:
        result.diagnostics["log_fluctuation_after"] = fluctuation(torch.as_tensor(result.curves_after).to(own))
    return result


def blend(model: DiffusionOps, background, foreground, mask, *, guide=None, config: BlendConfig | None = None,
          progress: ProgressFn | None = None, cancel: CancelFlag | None = None, **overrides) -> EditResult:
    """Paste the object of ``foreground`` under ``mask`` into ``background`` and harmonise the seam.

    ``foreground`` and ``mask`` share a size; they are resized to the background's size when it differs. The edit
    region is the mask dilated by ``seam_width`` model cells (``EditResult.changed``); the returned image equals the
    background outside it. The loop starts from the paste with its alpha blurred by ``alpha_blur`` pixels
    (:func:`soft_paste`; 0: the hard paste), which is also what the ablation (``curve_weight=0``) returns. Object
    patches follow the foreground's curves for t > t_switch (identity), seam patches the background's curves for t
    <= t_switch (harmonised edges).

    ``guide`` (an image of the background's size, optional): every edited patch follows the guide's own curves at
    the same patch and time instead (same windows). Given the true composite it is an oracle: the best any curve
    reference can do (``benchmarks/results/edit_blend_study_tuning_textured_model-textured.md``).
    """
    cfg = for_model(with_overrides(config, overrides, BlendConfig), model)
    run = Run(model, cfg, progress, cancel, inversions=3)  # the paste, the background, the foreground or the guide
    bg = check_image(background, name="background")
    fg = check_image(foreground, name="foreground")
    guide_img = None
    if guide is not None:
        guide_img = check_image(guide, name="guide")
        if guide_img.shape != bg.shape:
            raise InputError(f"guide must have the background's size {bg.shape[:2]}, got {guide_img.shape[:2]}")
    obj_px = check_mask(mask, fg.shape[:2])
    if fg.shape[:2] != bg.shape[:2]:
        fg = resize_uint8(fg, bg.shape[:2])
        obj_px = to_mask(resize_mask(obj_px, bg.shape[:2]).numpy() > 0.5, name="mask")
    pasted = soft_paste(bg, fg, obj_px, cfg.alpha_blur)
    changed = pixel_dilate(obj_px, cfg.seam_width, model)
    obj = model_mask(obj_px, model)
    region = M.dilate(obj, cfg.seam_width)
    band = M.seam(obj, cfg.seam_width)
    obj_idx = region_patches(obj, cfg.patch_size, min_cover=0.5)
    seam_idx = region_patches(band, cfg.patch_size, min_cover=0.25)
    idx = torch.unique(torch.cat([obj_idx, seam_idx]))
    run.clock.lap("prepare")

    traj = run.invert(to_model(model, pasted))
    traj_bg = run.invert(to_model(model, bg), "DDIM inversion of the background")
    v = run.directions(idx)
    weights_t = run.window(traj.timesteps, (0, cfg.t_edit))
    early = (traj.timesteps > cfg.t_switch).to(weights_t)  # (S+1,)
    is_obj = torch.isin(idx, obj_idx).to(weights_t)  # (K,)
    is_seam = torch.isin(idx, seam_idx).to(weights_t) * (1 - is_obj)
    weights = weights_t[:, None] * (early[:, None] * is_obj[None] + (1 - early[:, None]) * is_seam[None])  # (S+1, K)
    if guide_img is None:  # the foreground's curves on object patches, the background's on seam patches
        traj_fg = run.invert(to_model(model, fg), "DDIM inversion of the foreground")
        c_fg = run.curves(traj_fg, v, steps=(weights * is_obj).sum(1) > 0)
        c_bg = run.curves(traj_bg, v, steps=(weights * is_seam).sum(1) > 0)
        reference = torch.where(is_obj[None] > 0, c_fg, c_bg)  # (S, K)
    else:  # the guide's own curves at every edited patch
        traj_guide = run.invert(to_model(model, guide_img), "DDIM inversion of the guide")
        reference = run.curves(traj_guide, v, steps=weights.sum(1) > 0)
    reference = torch.where(torch.isnan(reference), torch.ones_like(reference), reference)  # inactive entries
    before = run.curves(traj, v) if cfg.measure_curves else None
    plan = MatchPlan(start=traj, outside=traj_bg, edit=M.feather(region, cfg.feather), directions=v,
                     reference=_expand(reference, idx.numel()), weights=weights, anchor=traj)
    match = run.match(plan)
    return finish("blend", run, match=match, plan=plan, idx=idx, image=bg, changed=changed, before=before,
                   diagnostics={"num_object_patches": int(obj_idx.numel()), "num_seam_patches": int(seam_idx.numel())})


def soft_paste(background: np.ndarray, foreground: np.ndarray, mask: np.ndarray, blur: float) -> np.ndarray:
    """``foreground`` over ``background`` with alpha = ``mask`` blurred by a Gaussian of std ``blur`` pixels (a hard
    paste for ``blur = 0``): an object edge that mixes the two images over about a pixel, as an anti-aliased edge
    does, instead of keeping a fringe of the foreground's old background. (H, W, 3) uint8 x 2, (H, W) bool -> uint8."""
    if blur <= 0:
        return np.where(mask[..., None], foreground, background).astype(np.uint8)
    import cv2

    alpha = cv2.GaussianBlur(mask.astype(np.float64), (0, 0), blur)[..., None]
    return np.clip(np.rint(alpha * foreground + (1 - alpha) * background), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# Start states and references
# --------------------------------------------------------------------------------------------------------------------
def _mean_of_fills(run: Run, plan: MatchPlan, first: MatchOutput, traj: Trajectory,
                   region: torch.Tensor) -> MatchOutput:
    """``run.cfg.samples`` fills of ``plan`` (``first`` is the one from ``seed``; the others from ``seed + j``'s fresh
    noise, sharing its round trip) -> their mean x_0, with the losses concatenated and the evaluations summed."""
    cfg = run.cfg
    outs = [first]
    for j in range(1, cfg.samples):
        x_init = _mix_init(traj, region, cfg.init_noise, run.model, cfg.seed + j)
        outs.append(run.match(replace(plan, x_init=x_init), round_trip=first.round_trip))
    return MatchOutput(x0=torch.stack([o.x0 for o in outs]).mean(0), loss=np.concatenate([o.loss for o in outs]),
                       loss_steps=np.concatenate([o.loss_steps for o in outs]),
                       rate_evals=sum(o.rate_evals for o in outs), round_trip=first.round_trip)


def _mix_init(traj: Trajectory, region: torch.Tensor, amount: float, model, seed: int) -> torch.Tensor | None:
    """Start state at t_edit: inside ``region`` the inverted state mixed with fresh forward noise of the start image.

    ``x = m (sqrt(1 - a) x_inv + sqrt(a) (sqrt(ab) x_0 + sqrt(1 - ab) z)) + (1 - m) x_inv``, a = ``amount``.
    """
    if amount <= 0:
        return None
    gen = torch.Generator().manual_seed(int(seed) + 1)
    inv, x0 = traj.states[-1], traj.states[0]
    ab = model.alphas_cumprod[int(traj.timesteps[-1])]  # float64: the coefficients are rounded once
    z = torch.randn(inv.shape, generator=gen, dtype=torch.float64).to(inv)
    fresh = ab.sqrt().to(inv) * x0 + (1 - ab).sqrt().to(inv) * z
    m = M.as_model_mask(region, inv)
    return m * (math.sqrt(1 - amount) * inv + math.sqrt(amount) * fresh) + (1 - m) * inv


def _expand(ref: torch.Tensor, k: int) -> torch.Tensor:
    """(S,) or (S, K) reference on steps 1..S -> (S+1, K) on the grid (row 0 copies row 1; it is never active)."""
    ref = ref[:, None].expand(-1, k) if ref.ndim == 1 else ref
    return torch.cat([ref[:1], ref]).contiguous()
