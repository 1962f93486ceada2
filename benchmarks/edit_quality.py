"""Quality benchmark of editing by curve matching (``pipeline.edit``) on procedural scenes with ground truth.

Run:  python -m benchmarks.edit_quality --model default --out benchmarks/results

Scenes come from ``pipeline.scenes``. Reported numbers use the HELD-OUT split only (offsets below); the saliency
study (``--study``) and any tuning use the TUNING split, and the study's results are written separately
(``edit_saliency_study.{json,md}``), so no reported figure was chosen on the seeds it is reported on.

1. **Removal.** The top object of each scene (its visible mask = its whole coverage) is removed. Metrics inside the
   mask against ``Scene.removed``: PSNR (dB, on 0..255), SSIM (scikit-image, the SSIM map averaged over the mask)
   and texture (how much structure the fill carries, whatever its phase: the absolute difference of the mean Sobel
   gradient magnitude of luminance from the truth's, and its ratio to the truth's).
   Methods: this method (``RemoveConfig()`` defaults), the same loop with the curve loss off (ablation,
   ``curve_weight=0``), its start content alone (the harmonic fill, no diffusion: shows what the loop adds), OpenCV
   inpainting (Telea, Navier-Stokes; radius 3), an exemplar fill by one translation (:func:`shift_fill`: copies the
   hole from the shift whose copy best matches the ring around it, so a periodic texture continues at its phase),
   and diffusers' RePaint with the same U-Net (``--repaint-steps`` steps, jump length 5, 2 resamplings).
2. **Saliency.** ROC AUC (scikit-learn) of saliency maps against the union of the object masks: the curve-fluctuation
   map (``pipeline.rates.generation_curves`` with the configuration the TUNING-split study chose: direct estimator,
   patch 4, direction smoothing 1, statistic std of time-normalised curves; plus, from the same curves, the paper's
   TV statistic and the mean rate), OpenCV's spectral-residual and fine-grained static saliency. Then
   ``adjust_saliency`` with factors 2 and 0.5 on the top object: the region's saliency contrast (mean saliency
   inside / mean outside) before and after, for both the curve map and spectral residual, and PSNR inside (how much
   the region changed) and outside (must be inf: unchanged).
3. **Transfer.** Scenes with two or more objects: target = the top object, source = the bottom object (same image).
   Distances between target and source regions of colour (CIE76 distance of mean Lab colours) and texture (absolute
   difference of the mean Sobel gradient magnitude of luminance, on 0..1), before and after; methods: this method,
   ablation (curve loss off), the start content alone (source warped onto the target).
4. **Blending.** Foreground = the top object of scene A, background = scene B; ground truth = B re-rendered with A's
   object composited on top (``pipeline.scenes.render``). Gradient error across the seam: mean over pixels within one
   pixel of the mask boundary of ``|| grad(result) - grad(truth) ||`` (Sobel, per channel, 0..1 images), and PSNR over
   the edited region. Methods: this method, ablation, naive pasting, ``cv2.seamlessClone`` (normal clone).
5. **Wall time** per call of each task on this machine (and the process CPU time, the fairer figure on a shared CPU).

Partial reruns: ``--tasks remove,saliency`` redoes only those parts and keeps the others (their tables, times and
the command that made them) from the existing results file when the scenes and settings agree
(:func:`merge_previous`); ``--n-saliency 0`` redoes only ``adjust_saliency`` and keeps the AUC rows.

Removal study (TUNING split): ``--remove-study '[{...}, ...]' --study-scenes 0:8`` runs ``remove_object`` with each
override dict and merges the PSNR / SSIM per scene into ``edit_removal_study.{json,md}``.

Held-out offsets: removal 30_000, saliency 31_000, transfer 32_000 (scenes with >= 2 objects, scanned from there),
blending 33_000 (A) and 34_000 (B). Tuning runs use the same offsets in the tuning split.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import edit as E  # noqa: E402
from pipeline import load_model  # noqa: E402
from pipeline import masks as M  # noqa: E402
from pipeline.errors import InputError  # noqa: E402
from pipeline.images import tensor_to_uint8  # noqa: E402
from pipeline.model import EMBEDDED_MODELS  # noqa: E402
from pipeline.scenes import FAMILIES, SPLITS, make_scene, render  # noqa: E402

OFFSETS = {"remove": 30_000, "saliency": 31_000, "transfer": 32_000, "blend_a": 33_000, "blend_b": 34_000}
TASKS = ("remove", "saliency", "transfer", "blend")


@dataclass(frozen=True)
class BenchConfig:
    model: str = "default"  # model source for load_model
    out: str = "benchmarks/results"  # output folder
    split: str = "heldout"  # scene split: "heldout" for reported numbers, "tuning" for tuning runs
    family: str = "smooth"  # scene family (pipeline.scenes.FAMILIES): "smooth" (the default) or "textured"
    tasks: tuple[str, ...] = TASKS  # which parts to run
    n_remove: int = 24  # scenes for removal
    n_saliency: int = 24  # scenes for the saliency AUC
    n_adjust: int = 6  # scenes for adjust_saliency (each with factors 2 and 0.5)
    n_transfer: int = 8  # scenes for transfer
    n_blend: int = 12  # scene pairs for blending
    repaint_steps: int = 50  # RePaint inference steps
    curve_timesteps: int = 10  # timesteps of the generation curves for saliency maps
    curve_patch: int = 4  # patch size of the saliency maps (model cells); chosen by the tuning-split study
    curve_smooth: float = 1.0  # Gaussian std of the patch directions (model cells); chosen by the study
    statistic: str = "std"  # saliency statistic; chosen by the study (best AUC without map blur)
    normalize: str = "time"  # curve normalisation; chosen by the study
    t_min: int | None = None  # saliency window t > t_min; chosen by the study
    seed: int = 0  # seeds of the edits and RePaint
    threads: int | None = None  # torch CPU threads
    overrides: dict = field(default_factory=dict)  # edit config overrides per task, {"remove": {...}, ...}
    generative: bool = True  # removal also with E.GENERATIVE_REMOVAL (mean of fills from fresh noise), and its ablation


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------
def psnr_in(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    """PSNR (dB, 0..255) over the pixels of mask m (all channels); inf when identical."""
    d = a[m].astype(np.float64) - b[m].astype(np.float64)
    mse = float((d * d).mean()) if d.size else 0.0
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim_in(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    """Mean of scikit-image's SSIM map (7x7 window, RGB) over the pixels of mask m."""
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(a, b, channel_axis=2, data_range=255, full=True, win_size=7)
    return float(smap.mean(axis=2)[m].mean())


def auc(score: np.ndarray, label: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(label.ravel().astype(int), score.ravel()))


def contrast(sal: np.ndarray, m: np.ndarray) -> float:
    """Saliency contrast of a region: mean inside / mean outside."""
    return float(sal[m].mean() / max(sal[~m].mean(), 1e-12))


def sobel(img: np.ndarray) -> np.ndarray:
    """Per-channel Sobel gradients of a [0, 1] image.  (H, W, C) -> (H, W, C, 2)"""
    import cv2

    f = img.astype(np.float32)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3).reshape(f.shape)  # OpenCV drops a single channel axis
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3).reshape(f.shape)
    return np.stack([gx, gy], axis=-1)


def boundary_band(m: np.ndarray, r: int = 1) -> np.ndarray:
    """Pixels within r of the mask boundary (dilation minus erosion)."""
    import cv2

    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    mu = m.astype(np.uint8)
    return (cv2.dilate(mu, k) - cv2.erode(mu, k)).astype(bool)


def seam_gradient_error(result: np.ndarray, truth: np.ndarray, m: np.ndarray) -> float:
    """Mean over the boundary band of ||grad(result) - grad(truth)|| (all channels, images on 0..1)."""
    g = sobel(result / 255.0) - sobel(truth / 255.0)  # (H, W, 3, 2)
    return float(np.sqrt((g**2).sum(axis=(2, 3)))[boundary_band(m)].mean())


def colour_texture(img: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean Lab colour (3,) and mean Sobel gradient magnitude of luminance (0..1) over a region."""
    from skimage.color import rgb2lab

    lab = rgb2lab(img)[m].mean(axis=0)
    lum = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    g = sobel(lum[..., None])[:, :, 0]  # (H, W, 2)
    return lab, float(np.sqrt((g**2).sum(-1))[m].mean())


def region_distance(img: np.ndarray, tgt: np.ndarray, src_img: np.ndarray, src: np.ndarray) -> tuple[float, float]:
    """(colour distance CIE76 between mean Lab colours, texture distance) of two regions."""
    la, ta = colour_texture(img, tgt)
    lb, tb = colour_texture(src_img, src)
    return float(np.linalg.norm(la - lb)), float(abs(ta - tb))


# --------------------------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------------------------
def opencv_inpaint(img: np.ndarray, m: np.ndarray, method: str) -> np.ndarray:
    import cv2

    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    return cv2.inpaint(img, m.astype(np.uint8), 3, flag)


def repaint(model, img: np.ndarray, m: np.ndarray, *, steps: int, seed: int) -> np.ndarray:
    """diffusers' RePaint with the model's own U-Net and schedule (pixel models at the model's size)."""
    from diffusers import RePaintPipeline, RePaintScheduler

    from pipeline.images import image_to_tensor

    sched = RePaintScheduler(num_train_timesteps=model.num_train_timesteps,
                             trained_betas=_betas(model).numpy())
    pipe = RePaintPipeline(unet=model.unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    s = model.image_size
    x = image_to_tensor(img, s, dtype=model.dtype, device=model.device)
    keep = 1.0 - torch.from_numpy(M.support(m, (s, s)).numpy())[None, None].to(x)  # 1 = known
    out = pipe(image=x, mask_image=keep, num_inference_steps=steps, jump_length=5, jump_n_sample=2,
               generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
    edited = tensor_to_uint8(torch.from_numpy(np.asarray(out)).permute(2, 0, 1) * 2 - 1, img.shape[:2])
    return np.where(m[..., None], edited, img)


def shift_fill(img: np.ndarray, m: np.ndarray, *, ring: int = 3) -> np.ndarray:
    """Exemplar fill by one translation (:func:`pipeline.edit.regions.best_shift`) of a uint8 image: the hole takes
    the pixels of the shifted copy that best continues the ring around it. ``img`` unchanged if no shift qualifies."""
    s = E.best_shift(img, m, ring=ring)
    if s is None:
        return img.copy()
    out = img.copy()
    hy, hx = np.nonzero(m)
    out[hy, hx] = img[hy + s[0], hx + s[1]]
    return out


def _betas(model) -> torch.Tensor:
    """The betas of the model's schedule, recovered from alphas_cumprod."""
    ab = model.alphas_cumprod.to(torch.float64)
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    return 1 - ab / prev


def seamless_clone(bg: np.ndarray, fg: np.ndarray, m: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone (normal clone) of fg under m into bg, in place; the naive paste if OpenCV refuses."""
    import cv2

    mm = boundary_dilate(m, 1)
    ys, xs = np.nonzero(mm)
    center = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    try:
        return cv2.seamlessClone(fg, bg, mm.astype(np.uint8) * 255, center, cv2.NORMAL_CLONE)
    except cv2.error:
        return np.where(m[..., None], fg, bg)


def boundary_dilate(m: np.ndarray, r: int) -> np.ndarray:
    import cv2

    return cv2.dilate(m.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


# --------------------------------------------------------------------------------------------------------------------
# Parts
# --------------------------------------------------------------------------------------------------------------------
class _Timer:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def done(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _seeds(cfg: BenchConfig, key: str, n: int) -> range:
    r = SPLITS[cfg.split]
    return r[OFFSETS[key] : OFFSETS[key] + n]


def _summary(rows: list[dict], keys: list[str]) -> dict:
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows if k in r and r[k] is not None], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        out[k] = {"mean": float(finite.mean()) if finite.size else float("nan"), "n": int(vals.size),
                  "n_inf": int((~np.isfinite(vals)).sum())}
    return out


def run_removal(model, cfg: BenchConfig) -> dict:
    kw = cfg.overrides.get("remove", {})
    variants = [("curve", {}), ("ablation", {"curve_weight": 0.0})]
    if cfg.generative:  # the task's overrides, with the generative settings over them
        gen = {**kw, **E.GENERATIVE_REMOVAL}
        variants += [("generative, curve", gen), ("generative, ablation", {**gen, "curve_weight": 0.0})]
    rows, times = [], {**{name: [] for name, _ in variants}, "repaint": []}
    for seed in _seeds(cfg, "remove", cfg.n_remove):
        sc = make_scene(seed, size=model.image_size, family=cfg.family)
        i = sc.num_objects - 1
        m, gt, img = sc.masks[i], sc.removed[i], sc.image
        outs = {}
        for name, extra in variants:
            t = _Timer()
            r = E.remove_object(model, img, m, measure_curves=False, seed=cfg.seed, **{**kw, **extra})
            times[name].append(t.done())
            outs[name] = r.image
        x0 = E.to_model(model, img)
        fill = E.harmonic_fill(x0, M.dilate(E.model_mask(m, model), E.RemoveConfig(**kw).grow))
        outs["harmonic fill (start content)"] = np.where(m[..., None], tensor_to_uint8(model.decode(fill)[0],
                                                                                       img.shape[:2]), img)
        outs["opencv telea"] = opencv_inpaint(img, m, "telea")
        outs["opencv navier-stokes"] = opencv_inpaint(img, m, "ns")
        outs["shift fill (exemplar)"] = shift_fill(img, m)
        t = _Timer()
        outs["repaint"] = repaint(model, img, m, steps=cfg.repaint_steps, seed=cfg.seed)
        times["repaint"].append(t.done())
        row = {"seed": seed, "background": sc.background_params["kind"], "mask_pixels": int(m.sum())}
        truth_texture = colour_texture(gt, m)[1]
        for name, out in outs.items():
            row[f"psnr/{name}"] = psnr_in(out, gt, m)
            row[f"ssim/{name}"] = ssim_in(out, gt, m)
            tex = colour_texture(out, m)[1]
            row[f"texture/{name}"] = abs(tex - truth_texture)
            row[f"texture_ratio/{name}"] = tex / max(truth_texture, 1e-12)
        rows.append(row)
        print(f"  removal {len(rows)}/{cfg.n_remove} seed {seed}: " + ", ".join(
            f"{k.split('/')[1]} {v:.1f}" for k, v in row.items() if k.startswith("psnr/")), flush=True)
    keys = [k for k in rows[0] if "/" in k]
    return {"rows": rows, "summary": _summary(rows, keys), "time": _time_summary(times)}


def _time_summary(times: dict[str, list[tuple[float, float]]]) -> dict:
    return {k: {"wall_s": float(np.mean([w for w, _ in v])), "cpu_s": float(np.mean([c for _, c in v]))}
            for k, v in times.items() if v}


#: Extra statistics reported from the same curves: (label, statistic, normalize, t_min).
EXTRA_STATISTICS = (
    ("curve: paper's TV of time-normalised curves", "tv", "time", None),
    ("curve: mean rate (un-normalised curves)", "mean", "none", None),
)


def _curve_maps(model, img: np.ndarray, cfg: BenchConfig, extra: bool = False) -> dict[str, np.ndarray]:
    """Curve-fluctuation saliency maps at the image's size: the benchmark's configuration (and the extra statistics)."""
    import torch.nn.functional as F

    from pipeline.rates import generation_curves, saliency_from_curves

    res = generation_curves(model, img, num_timesteps=cfg.curve_timesteps, patch_size=cfg.curve_patch,
                            smooth=cfg.curve_smooth, statistic=cfg.statistic, normalize=cfg.normalize, t_min=cfg.t_min)
    maps = {"curve fluctuation": res.saliency.numpy()}
    for label, stat, norm, t_min in EXTRA_STATISTICS if extra else ():
        ps = saliency_from_curves(res.curves, res.timesteps, statistic=stat, normalize=norm, t_min=t_min)
        maps[label] = F.interpolate(ps[None, None].double(), size=img.shape[:2], mode="bilinear",
                                    align_corners=False)[0, 0].numpy()
    return maps


def _curve_saliency(model, img: np.ndarray, cfg: BenchConfig) -> np.ndarray:
    return _curve_maps(model, img, cfg)["curve fluctuation"]


def opencv_saliency(img: np.ndarray, kind: str) -> np.ndarray:
    import cv2

    algo = (cv2.saliency.StaticSaliencySpectralResidual_create() if kind == "spectral"
            else cv2.saliency.StaticSaliencyFineGrained_create())
    ok, sal = algo.computeSaliency(img[..., ::-1].copy())  # OpenCV wants BGR
    if not ok:
        raise RuntimeError(f"OpenCV {kind} saliency failed")
    sal = np.asarray(sal, np.float64)
    if sal.shape != img.shape[:2]:
        sal = cv2.resize(sal, img.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return sal


def run_saliency(model, cfg: BenchConfig) -> dict:
    rows = []
    for seed in _seeds(cfg, "saliency", cfg.n_saliency):
        sc = make_scene(seed, size=model.image_size, family=cfg.family)
        label = np.any(sc.masks, axis=0)
        if label.all() or not label.any():
            continue
        row = {"seed": seed, **{f"auc/{k}": auc(v, label) for k, v in _curve_maps(model, sc.image, cfg, True).items()},
               "auc/opencv spectral residual": auc(opencv_saliency(sc.image, "spectral"), label),
               "auc/opencv fine grained": auc(opencv_saliency(sc.image, "fine"), label)}
        rows.append(row)
        print(f"  saliency AUC {len(rows)}/{cfg.n_saliency}: " + ", ".join(
            f"{k[4:]} {v:.3f}" for k, v in row.items() if k.startswith("auc/")), flush=True)
    adjust, times = [], []
    kw = cfg.overrides.get("saliency", {})
    for seed in _seeds(cfg, "saliency", cfg.n_adjust):
        sc = make_scene(seed, size=model.image_size, family=cfg.family)
        m = sc.masks[-1]
        base = {"curve": contrast(_curve_saliency(model, sc.image, cfg), m),
                "spectral": contrast(opencv_saliency(sc.image, "spectral"), m)}
        for factor in (2.0, 0.5):
            t = _Timer()
            r = E.adjust_saliency(model, sc.image, m, factor, measure_curves=False, seed=cfg.seed, **kw)
            times.append(t.done())
            row = {"seed": seed, "factor": factor,
                   "curve contrast before": base["curve"],
                   "curve contrast after": contrast(_curve_saliency(model, r.image, cfg), m),
                   "spectral contrast before": base["spectral"],
                   "spectral contrast after": contrast(opencv_saliency(r.image, "spectral"), m),
                   "psnr inside": psnr_in(r.image, sc.image, m), "psnr outside": psnr_in(r.image, sc.image, ~m)}
            adjust.append(row)
            print(f"  adjust_saliency x{factor} seed {seed}: curve {row['curve contrast before']:.3f} -> "
                  f"{row['curve contrast after']:.3f}, spectral {row['spectral contrast before']:.3f} -> "
                  f"{row['spectral contrast after']:.3f}, psnr in {row['psnr inside']:.1f}", flush=True)
    adj_summary = {}
    for factor in (2.0, 0.5):
        sel = [r for r in adjust if r["factor"] == factor]
        adj_summary[str(factor)] = _summary(sel, [k for k in sel[0] if k not in ("seed", "factor")]) if sel else {}
    keys = [k for k in rows[0] if k.startswith("auc/")] if rows else []
    return {"rows": rows, "summary": _summary(rows, keys), "adjust_rows": adjust, "adjust_summary": adj_summary,
            "time": _time_summary({"adjust_saliency": times})}


def _transfer_scenes(cfg: BenchConfig, size: int, n: int):
    r = SPLITS[cfg.split]
    k = OFFSETS["transfer"]
    found = []
    while len(found) < n:
        sc = make_scene(r[k], size=size, family=cfg.family)
        if sc.num_objects >= 2 and sc.masks[0].sum() >= 4 and sc.masks[-1].sum() >= 4:
            found.append(sc)
        k += 1
    return found


def run_transfer(model, cfg: BenchConfig) -> dict:
    kw = cfg.overrides.get("transfer", {})
    rows, times = [], {"curve": [], "ablation": []}
    for sc in _transfer_scenes(cfg, model.image_size, cfg.n_transfer):
        img, tgt, src = sc.image, sc.masks[-1], sc.masks[0]
        row = {"seed": sc.seed}
        outs = {"input": img, "start content (warped source)": np.where(tgt[..., None],
                                                                        E.warp_region(img, src, tgt), img)}
        for name, extra in (("curve", {}), ("ablation", {"curve_weight": 0.0}), ("curve, init=invert",
                                                                                 {"init": "invert"})):
            t = _Timer()
            r = E.transfer(model, img, tgt, src, measure_curves=False, seed=cfg.seed, **{**kw, **extra})
            outs[name] = r.image
            if name in times:
                times[name].append(t.done())
            if name != "ablation" and r.loss_history.size:  # how far the start is from the reference, and the end
                row[f"curve loss first/{name}"] = float(r.loss_history[0])
                row[f"curve loss last/{name}"] = float(r.loss_history[-1])
        for name, out in outs.items():
            c, tx = region_distance(out, tgt, img, src)
            row[f"colour/{name}"], row[f"texture/{name}"] = c, tx
        rows.append(row)
        print(f"  transfer {len(rows)}/{cfg.n_transfer} seed {sc.seed}: " + ", ".join(
            f"{k.split('/')[1]} {v:.1f}" for k, v in row.items() if k.startswith("colour/")), flush=True)
    keys = [k for k in rows[0] if "/" in k]
    return {"rows": rows, "summary": _summary(rows, keys), "time": _time_summary(times)}


def run_blend(model, cfg: BenchConfig) -> dict:
    kw = cfg.overrides.get("blend", {})
    rows, times = [], {"curve": [], "ablation": []}
    for a_seed, b_seed in zip(_seeds(cfg, "blend_a", cfg.n_blend), _seeds(cfg, "blend_b", cfg.n_blend),
                                  strict=False):
        size = model.image_size
        a, b = make_scene(a_seed, size=size, family=cfg.family), make_scene(b_seed, size=size, family=cfg.family)
        m = a.masks[-1]
        truth = render(b.background_params, b.params + [a.params[-1]], size=size, ground_truth=False).image
        outs = {"naive paste": np.where(m[..., None], a.image, b.image),
                "opencv seamlessClone": seamless_clone(b.image, a.image, m)}
        changed = None
        for name, extra in (("curve", {}), ("ablation", {"curve_weight": 0.0})):
            t = _Timer()
            conf = {**kw, **extra}
            if conf.get("guide") == "truth":  # the oracle: the true composite's curves as the reference
                conf["guide"] = truth
            r = E.blend(model, b.image, a.image, m, measure_curves=False, seed=cfg.seed, **conf)
            times[name].append(t.done())
            outs[name], changed = r.image, r.changed
        row = {"seeds": [a_seed, b_seed]}
        for name, out in outs.items():
            row[f"seam gradient error/{name}"] = seam_gradient_error(out, truth, m)
            row[f"psnr edited region/{name}"] = psnr_in(out, truth, changed)
        rows.append(row)
        print(f"  blend {len(rows)}/{cfg.n_blend}: " + ", ".join(
            f"{k.split('/')[1]} {v:.3f}" for k, v in row.items() if k.startswith("seam")), flush=True)
    keys = [k for k in rows[0] if "/" in k]
    return {"rows": rows, "summary": _summary(rows, keys), "time": _time_summary(times)}


# --------------------------------------------------------------------------------------------------------------------
# Saliency study (TUNING split only)
# --------------------------------------------------------------------------------------------------------------------
#: Curve computations of the study: (name, generation_curves keyword arguments).
STUDY_CURVES = (
    ("direct p2 smooth1", {"patch_size": 2, "estimator": "direct", "smooth": 1.0}),
    ("direct p4", {"patch_size": 4, "estimator": "direct"}),
    ("direct p4 smooth1", {"patch_size": 4, "estimator": "direct", "smooth": 1.0}),
    ("projected p2 k8", {"patch_size": 2, "estimator": "projected", "k": 8, "iters": 3}),
)
STUDY_STATISTICS = ("tv", "mean", "peak", "std")
STUDY_NORMALIZE = ("none", "time", "curve")
STUDY_T_MIN = (None, 100, 300, 600)
STUDY_MAP_BLUR = (0.0, 1.5, 3.0)  # Gaussian std (pixels) applied to the upsampled map (fills object interiors)


def _blur_map(sal: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return sal if sigma <= 0 else cv2.GaussianBlur(sal, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def run_saliency_study(model, cfg: BenchConfig, n: int, curves: tuple = STUDY_CURVES) -> dict:
    """AUC of every (curves, statistic, normalisation, window, map blur) on ``n`` TUNING scenes."""
    import torch.nn.functional as F

    from pipeline.rates import generation_curves, saliency_from_curves

    seeds = SPLITS["tuning"][OFFSETS["saliency"] : OFFSETS["saliency"] + n]
    scores: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for j, seed in enumerate(seeds):
        sc = make_scene(seed, size=model.image_size, family=cfg.family)
        label = np.any(sc.masks, axis=0)
        for name, kw in curves:
            t = time.process_time()
            res = generation_curves(model, sc.image, num_timesteps=cfg.curve_timesteps, **kw)
            seconds[name] = seconds.get(name, 0.0) + time.process_time() - t
            for stat in STUDY_STATISTICS:
                for norm in STUDY_NORMALIZE:
                    if stat == "mean" and norm == "curve":
                        continue  # constant 1
                    for t_min in STUDY_T_MIN:
                        try:
                            ps = saliency_from_curves(res.curves, res.timesteps, statistic=stat, normalize=norm,
                                                      t_min=t_min)
                        except InputError:
                            continue
                        sal = F.interpolate(ps[None, None].double(), size=label.shape, mode="bilinear",
                                            align_corners=False)[0, 0].numpy()
                        for blur in STUDY_MAP_BLUR:
                            key = f"{name}, {stat}, {norm}, t>{t_min or 0}, blur {blur:g}"
                            scores.setdefault(key, []).append(auc(_blur_map(sal, blur), label))
        for kind in ("spectral", "fine"):
            scores.setdefault(f"opencv {kind}", []).append(auc(opencv_saliency(sc.image, kind), label))
        best = max(scores, key=lambda k: np.mean(scores[k]))
        print(f"  study {j + 1}/{n}: best so far {best} {np.mean(scores[best]):.3f}", flush=True)
    table = sorted(((k, float(np.mean(v)), float(np.std(v))) for k, v in scores.items()), key=lambda r: -r[1])
    return {"seeds": [int(s) for s in seeds], "table": table,
            "cpu_seconds_per_image": {k: v / n for k, v in seconds.items()}, "curve_timesteps": cfg.curve_timesteps}


def study_markdown(st: dict) -> str:
    lines = ["# Saliency study on the TUNING split (curve-fluctuation maps vs object masks)", "",
             f"{len(st['seeds'])} tuning scenes, {st['curve_timesteps']} timesteps; ROC AUC mean and std over scenes. "
             "Key: curves, statistic, normalisation, window, Gaussian blur of the map (pixels).", "",
             "CPU seconds per image: " + ", ".join(f"{k} {v:.1f}" for k, v in st["cpu_seconds_per_image"].items()),
             "", "| configuration | AUC | std |", "|---|---|---|"]
    for k, m, s in st["table"][:25]:
        lines.append(f"| {k} | {m:.3f} | {s:.3f} |")
    lines += ["", "Best configuration per statistic and per curve computation:", "", "| group | best | AUC |",
              "|---|---|---|"]
    groups = [f", {stat}, " for stat in STUDY_STATISTICS] + [f"{name}, " for name, _ in STUDY_CURVES]
    groups += [", blur 0"]
    for g in groups:
        rows = [r for r in st["table"] if g in r[0] or (g.endswith(", ") and r[0].startswith(g))]
        if rows:
            lines.append(f"| {g.strip(', ')} | {rows[0][0]} | {rows[0][1]:.3f} |")
    for k, m, _ in st["table"]:
        if k.startswith("opencv"):
            lines.append(f"| baseline | {k} | {m:.3f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Removal study (TUNING split only)
# --------------------------------------------------------------------------------------------------------------------
def run_removal_study(model, cfg: BenchConfig, configs: list[dict], scenes: tuple[int, int], path: Path) -> dict:
    """PSNR / SSIM inside the mask of ``remove_object`` with each override dict of ``configs`` on TUNING scenes.

    ``scenes = (i0, i1)``: the removal scenes ``i0..i1-1`` of the TUNING split (offset ``OFFSETS["remove"]``).
    Results are merged into the study file at ``path`` (one entry per configuration and scene; a rerun replaces
    it), so the study can grow over several invocations. ``{"curve_weight": 0}`` is the ablation;
    ``{"guide": "truth", ...}`` passes the object-free ground truth as ``guide`` (the oracle curve reference).
    """
    study = json.loads(path.read_text()) if path.exists() else {"entries": {}, "notes": []}
    seeds = SPLITS["tuning"][OFFSETS["remove"] + scenes[0] : OFFSETS["remove"] + scenes[1]]
    for conf in configs:
        key = json.dumps(conf, sort_keys=True)
        for seed in seeds:
            sc = make_scene(seed, size=model.image_size, family=cfg.family)
            i = sc.num_objects - 1
            m, gt = sc.masks[i], sc.removed[i]
            t = _Timer()
            kw = {k: v for k, v in conf.items() if k != "guide"}
            if conf.get("guide") == "truth":  # the oracle: the true background's curves as the reference
                kw["guide"] = gt
            elif conf.get("guide") == "shift":  # an exemplar fill that continues a periodic texture at its phase
                kw["guide"] = shift_fill(sc.image, m)
            r = E.remove_object(model, sc.image, m, measure_curves=False, seed=cfg.seed, **kw)
            cpu = t.done()[1]
            row = {"psnr": psnr_in(r.image, gt, m), "ssim": ssim_in(r.image, gt, m), "cpu_s": cpu,
                   "background": sc.background_params["kind"]}
            if "guide" in kw:
                row["guide_psnr"] = psnr_in(kw["guide"], gt, m)
            if path.exists():  # re-read: another study process may have added entries meanwhile
                study = json.loads(path.read_text())
            study["entries"].setdefault(key, {})[str(seed)] = row
            print(f"  {key} seed {seed}: {row['psnr']:.2f} dB", flush=True)
            path.write_text(json.dumps(study, indent=1))
    return study


def removal_study_markdown(study: dict, family: str = "smooth") -> str:
    """Table of the removal study: each configuration against the ablation on the scenes both were run on."""
    abl = study["entries"].get(json.dumps({"curve_weight": 0.0}, sort_keys=True), {})
    of = "" if family == "smooth" else f" of the {family} family"
    lines = [f"# Removal study on the TUNING split{of} (PSNR / SSIM inside the mask vs the object-free ground truth)",
             "", "Reproduce a row: `python -m benchmarks.edit_quality --remove-study '[{...}]' --study-scenes 0:N"
             + ("" if family == "smooth" else f" --family {family}") + " --threads 1`.", "",
             "Each row: `remove_object` with `RemoveConfig` defaults of the code at the time of the run plus the "
             "overrides shown; `{\"curve_weight\": 0.0}` is the ablation (returns the harmonic-fill start content). "
             "\"vs ablation\" compares on the scenes both rows were run on (wins / scenes).", "",
             "| overrides | scenes | PSNR (dB) | SSIM | ablation PSNR, same scenes | vs ablation (dB) | wins | "
             "CPU s / call |", "|---|---|---|---|---|---|---|---|"]
    for key, rows in study["entries"].items():
        seeds = sorted(rows)
        p = np.array([rows[s]["psnr"] for s in seeds])
        both = [s for s in seeds if s in abl]
        a = np.array([abl[s]["psnr"] for s in both])
        b = np.array([rows[s]["psnr"] for s in both])
        lines.append(f"| `{key}` | {len(seeds)} ({seeds[0][-2:]}..{seeds[-1][-2:]}) | {p.mean():.2f} | "
                     f"{np.mean([rows[s]['ssim'] for s in seeds]):.3f} | "
                     f"{a.mean() if both else float('nan'):.2f} | {(b - a).mean() if both else float('nan'):+.2f} | "
                     f"{int((b > a + 1e-9).sum())}/{len(both)} | {np.mean([rows[s]['cpu_s'] for s in seeds]):.1f} |")
    lines += ["", "Per scene (PSNR dB; scene = last two digits of the tuning seed, background kind):", ""]
    all_seeds = sorted({s for rows in study["entries"].values() for s in rows})
    kinds = {s: r[s]["background"] for r in study["entries"].values() for s in r}
    lines += ["| overrides | " + " | ".join(f"{s[-2:]} {kinds[s]}" for s in all_seeds) + " |",
              "|---|" + "---|" * len(all_seeds)]
    for key, rows in study["entries"].items():
        lines.append(f"| `{key}` | " + " | ".join(f"{rows[s]['psnr']:.1f}" if s in rows else "" for s in all_seeds)
                     + " |")
    if study.get("notes"):
        lines += ["", "## Notes", ""] + list(study["notes"])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Transfer and blending studies (TUNING split only)
# --------------------------------------------------------------------------------------------------------------------
#: Per task of --edit-study: the runner, the scene count's field, and the (metric, curve, start content) columns.
EDIT_STUDY = {
    "transfer": (run_transfer, "n_transfer", [("colour", "curve", "start content (warped source)"),
                                              ("texture", "curve", "start content (warped source)")]),
    "blend": (run_blend, "n_blend", [("seam gradient error", "curve", "naive paste"),
                                     ("psnr edited region", "curve", "naive paste")]),
}


def run_edit_study(model, cfg: BenchConfig, task: str, configs: list[dict], path: Path) -> dict:
    """``task`` ("transfer" or "blend") with each override dict of ``configs`` on the TUNING split (``cfg.split``
    must be "tuning"), its summary merged into the study file at ``path`` (one entry per configuration)."""
    if cfg.split != "tuning":
        raise InputError("an edit study runs on the TUNING split (--split tuning)")
    runner, n_field, _ = EDIT_STUDY[task]
    study = json.loads(path.read_text()) if path.exists() else {"entries": {}}
    for conf in configs:
        key = json.dumps(conf, sort_keys=True)
        t = _Timer()
        res = runner(model, replace(cfg, overrides={task: conf}))
        study["entries"][key] = {"summary": res["summary"], "n": getattr(cfg, n_field), "cpu_s": t.done()[1]}
        path.write_text(json.dumps(study, indent=1))
    return study


def edit_study_markdown(study: dict, task: str, cfg: BenchConfig) -> str:
    """One row per configuration: the curve result and the start content on each metric."""
    _, n_field, cols = EDIT_STUDY[task]
    command = shlex.join(["python", "-m", "benchmarks.edit_quality", "--model", cfg.model, "--family", cfg.family,
                          "--split", "tuning", f"--{n_field.replace('_', '-')}", str(getattr(cfg, n_field)),
                          "--edit-study", task, "[{...}]"])
    lines = [f"# {task.capitalize()} study on the TUNING split ({cfg.family} scenes, model `{cfg.model}`)", "",
             f"Reproduce a row: `{command}` (the row's overrides as the JSON list). Each row runs `{task}` with the "
             "task's config defaults of the code at the time of the run plus the overrides; the start content is "
             "what the loop starts from (and what its ablation returns).", "",
             "| overrides | scenes | " + " | ".join(f"{m}: curve | {m}: {start}" for m, _, start in cols)
             + " | CPU s |", "|---|---|" + "---|---|" * len(cols) + "---|"]
    for key, e in study["entries"].items():
        sm = e["summary"]
        cells = " | ".join(f"{sm[f'{m}/{c}']['mean']:.4g} | {sm[f'{m}/{st}']['mean']:.4g}" for m, c, st in cols)
        lines.append(f"| `{key}` | {e['n']} | {cells} | {e['cpu_s']:.0f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Fills against curves (TUNING split only): does a fill's closeness in curves go with its closeness in pixels?
# --------------------------------------------------------------------------------------------------------------------
def run_fills_vs_curves(model, cfg: BenchConfig, scenes: tuple[int, int], samples: int = 8) -> dict:
    """On the TUNING removal scenes ``scenes = (i0, i1)``: PSNR inside the mask and the rms log-curve distance to the
    object-free truth (the hole's patches, each image's curves along its own DDIM inversion, every step up to
    ``GENERATIVE_REMOVAL``'s t_edit) of the harmonic fill, ``samples`` single generative fills (no curve loss) and
    their mean. The curve loss can only help where closer curves mean closer pixels. Each image's curves come from
    ``remove_object(init="invert", curve_weight=0)``'s ``curves_before``: the removal's own patches and grid."""
    gen = {**E.GENERATIVE_REMOVAL, "curve_weight": 0.0}
    grid = {"t_edit": gen["t_edit"], "num_steps": gen["num_steps"]}

    def curves(img, m):  # (S, K) curves of img's hole patches along img's own inversion
        r = E.remove_object(model, img, m, init="invert", curve_weight=0.0, measure_curves=True, seed=cfg.seed,
                            **grid)
        return np.log(np.maximum(r.curves_before, 1e-12))

    rows = []
    seeds = SPLITS["tuning"][OFFSETS["remove"] + scenes[0] : OFFSETS["remove"] + scenes[1]]
    for seed in seeds:
        sc = make_scene(seed, size=model.image_size, family=cfg.family)
        i = sc.num_objects - 1
        m, gt = sc.masks[i], sc.removed[i]
        truth = curves(gt, m)
        fills = {"harmonic fill": E.remove_object(model, sc.image, m, curve_weight=0.0, measure_curves=False,
                                                  seed=cfg.seed).image}
        for j in range(samples):
            fills[f"single fill {j}"] = E.remove_object(model, sc.image, m, measure_curves=False,
                                                        seed=cfg.seed + j, **{**gen, "samples": 1}).image
        fills[f"mean of {samples}"] = E.remove_object(model, sc.image, m, measure_curves=False, seed=cfg.seed,
                                                      **{**gen, "samples": samples}).image
        row = {"seed": seed, "background": sc.background_params["kind"]}
        for name, img in fills.items():
            dist = float(np.sqrt(np.mean((curves(img, m) - truth) ** 2)))
            row[name] = {"psnr": psnr_in(img, gt, m), "curve_rms": dist}
        rows.append(row)
        print(f"  seed {seed}: " + ", ".join(f"{k} {v['psnr']:.1f} dB / {v['curve_rms']:.3f}"
                                            for k, v in row.items() if isinstance(v, dict)), flush=True)
    return {"rows": rows, "samples": samples, "grid": grid, "family": cfg.family, "model": cfg.model}


def fills_vs_curves_markdown(res: dict, command: str) -> str:
    """Per-kind means (single fills pooled) and the per-scene correlation of curve distance with PSNR over fills."""
    k = res["samples"]
    kinds = {"harmonic fill": ["harmonic fill"], "single generative fill": [f"single fill {j}" for j in range(k)],
             f"mean of {k} generative fills": [f"mean of {k}"]}
    lines = [f"# Fills against curves on the TUNING split ({res['family']} scenes, model `{res['model']}`)", "",
             f"Reproduce: `{command}`", "",
             "For each scene: PSNR inside the mask against the object-free truth, and the rms distance of log-curves "
             "to the truth's (the hole's patches, each image's curves along its own DDIM inversion, grid "
             f"t_edit = {res['grid']['t_edit']} in {res['grid']['num_steps']} steps). Generative fills: "
             "`GENERATIVE_REMOVAL` without the curve loss.", "",
             "| fill | PSNR (dB) | rms log-curve distance to the truth |", "|---|---|---|"]
    for kind, names in kinds.items():
        ps = [r[n]["psnr"] for r in res["rows"] for n in names]
        cs = [r[n]["curve_rms"] for r in res["rows"] for n in names]
        lines.append(f"| {kind} | {np.mean(ps):.2f} | {np.mean(cs):.3f} |")
    corr = []
    names = [n for ns in kinds.values() for n in ns]
    for r in res["rows"]:
        ps, cs = np.array([r[n]["psnr"] for n in names]), np.array([r[n]["curve_rms"] for n in names])
        corr.append(float(np.corrcoef(cs, ps)[0, 1]))
    lines += ["", "Per scene: Pearson correlation, over the scene's fills, of the curve distance with PSNR (negative: "
              "closer curves go with closer pixels):", "",
              "| scene | background | correlation |", "|---|---|---|"]
    lines += [f"| {r['seed']} | {r['background']} | {c:+.2f} |" for r, c in zip(res["rows"], corr, strict=True)]
    lines.append(f"| mean | | {np.mean(corr):+.2f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Blend references (TUNING split only): is the reference closer to the true composite's curves than the paste is?
# --------------------------------------------------------------------------------------------------------------------
def run_blend_references(model, cfg: BenchConfig, pairs: tuple[int, int]) -> dict:
    """On the TUNING blend pairs ``pairs = (i0, i1)``: the rms log-distance, over the blend's active (patch, step)
    entries, of the true composite's curves to the paste's own curves (where the loop starts) and to the reference
    ``blend`` builds from the foreground and background. Matching can only approach the truth with a reference closer
    to it than the start is. All three along their own DDIM inversions, with ``blend``'s settings and overrides."""
    kw = {**cfg.overrides.get("blend", {}), "curve_weight": 0.0, "measure_curves": True, "seed": cfg.seed}
    rows = []
    a_seeds = SPLITS["tuning"][OFFSETS["blend_a"] + pairs[0] : OFFSETS["blend_a"] + pairs[1]]
    b_seeds = SPLITS["tuning"][OFFSETS["blend_b"] + pairs[0] : OFFSETS["blend_b"] + pairs[1]]
    for a_seed, b_seed in zip(a_seeds, b_seeds, strict=True):
        size = model.image_size
        a, b = make_scene(a_seed, size=size, family=cfg.family), make_scene(b_seed, size=size, family=cfg.family)
        m = a.masks[-1]
        truth = render(b.background_params, b.params + [a.params[-1]], size=size, ground_truth=False).image
        oracle = E.blend(model, b.image, a.image, m, guide=truth, **kw)  # reference: the truth's curves
        plain = E.blend(model, b.image, a.image, m, **kw)
        on = oracle.weights > 0
        log_truth = np.log(oracle.reference[on])
        paste, ref = (float(np.sqrt(np.mean((np.log(c[on]) - log_truth) ** 2)))
                      for c in (oracle.curves_before, plain.reference))
        rows.append({"seeds": [a_seed, b_seed], "entries": int(on.sum()), "paste": paste, "reference": ref})
        print(f"  pair {len(rows)}: paste {rows[-1]['paste']:.3f}, reference {rows[-1]['reference']:.3f}", flush=True)
    return {"rows": rows, "family": cfg.family, "model": cfg.model, "overrides": cfg.overrides.get("blend", {})}


def blend_references_markdown(res: dict, command: str) -> str:
    """Per pair and on average: the distances of the paste's curves and of the reference to the truth's."""
    lines = [f"# Blend references on the TUNING split ({res['family']} scenes, model `{res['model']}`)", "",
             f"Reproduce: `{command}`", "",
             "rms distance of log-curves to the true composite's, over the blend's active (patch, step) entries "
             "(object patches early, seam patches late): the paste's own curves (the loop's start) and the reference "
             "`blend` builds (the foreground's curves on object patches, the background's on seam patches). The loop "
             "moves the paste's curves toward the reference, so it can only approach the truth where the reference "
             "is the closer of the two.", "",
             "| pair (A, B seeds) | entries | paste | reference |", "|---|---|---|---|"]
    lines += [f"| {r['seeds'][0]}, {r['seeds'][1]} | {r['entries']} | {r['paste']:.3f} | {r['reference']:.3f} |"
              for r in res["rows"]]
    lines.append(f"| mean | | {np.mean([r['paste'] for r in res['rows']]):.3f} | "
                 f"{np.mean([r['reference'] for r in res['rows']]):.3f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------------
RUNNERS = {"remove": run_removal, "saliency": run_saliency, "transfer": run_transfer, "blend": run_blend}


def _run_part(cfg: BenchConfig, task: str) -> tuple[str, dict, float]:
    """One part in this process (a worker when ``jobs > 1``): load the model, run, time it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    print(f"{task} ...", flush=True)
    part = RUNNERS[task](load_model(cfg.model, device="cpu"), cfg)
    return task, part, time.perf_counter() - t0


def result_stem(cfg: BenchConfig, name: str, *, split: bool = True) -> str:
    """File stem of a result: ``name``, then ``_tuning`` for the tuning split (when ``split``), then ``_<family>``
    for a family other than the default, then ``_model-<name>`` for an embedded model other than the default
    (``pipeline.model.EMBEDDED_MODELS``), so each split, family and embedded model keeps its own tables."""
    return (name + ("_tuning" if split and cfg.split != "heldout" else "")
            + ("" if cfg.family == "smooth" else f"_{cfg.family}")
            + (f"_model-{cfg.model}" if cfg.model in EMBEDDED_MODELS and cfg.model != "default" else ""))


def run_benchmark(cfg: BenchConfig, *, jobs: int = 1) -> dict:
    """Run the parts (``jobs`` worker processes in parallel); write ``edit_quality.{json,md}`` (tuning: ``_tuning``)."""
    if cfg.split not in SPLITS or cfg.split == "train":
        raise InputError(f"split must be 'heldout' (reported numbers) or 'tuning', got {cfg.split!r}")
    res: dict = {"config": asdict(cfg), "model": cfg.model, "command": reproduce_command(cfg, jobs=jobs),
                 "torch_threads": cfg.threads or torch.get_num_threads(), "jobs": jobs, "parts": {},
                 "part_seconds": {}}
    t0 = time.perf_counter()
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            done = list(pool.map(_run_part, [cfg] * len(cfg.tasks), cfg.tasks))
    else:
        done = [_run_part(cfg, task) for task in cfg.tasks]
    for task, part, seconds in done:
        res["parts"][task], res["part_seconds"][task] = part, seconds
    res["total_seconds"] = time.perf_counter() - t0
    res["part_commands"] = {task: res["command"] for task in cfg.tasks}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = result_stem(cfg, "edit_quality")
    merge_previous(res, out / f"{stem}.json")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=_json_default))
    (out / f"{stem}.md").write_text(markdown(res))
    return res


#: Config fields that must agree for a previous run's parts to be kept next to a new run's (all but the part choice).
_MERGE_KEYS = ("model", "split", "family", "n_remove", "n_saliency", "n_adjust", "n_transfer", "n_blend",
               "repaint_steps", "curve_timesteps", "curve_patch", "curve_smooth", "statistic", "normalize", "t_min",
               "seed")


def merge_previous(res: dict, path: Path) -> None:
    """Keep the parts a run did not redo from the previous results file at ``path`` (in place).

    A run of some parts (``--tasks``) replaces only those parts: the others, their times and the command that made
    them are carried over when the previous run used the same scenes and settings (``_MERGE_KEYS``; a differing
    ``n_saliency`` only for the AUC rows, see below), so the written tables stay complete and each says where it
    came from. With ``--n-saliency 0`` the saliency part reruns only ``adjust_saliency`` and keeps the previous AUC
    rows (the AUC does not depend on ``pipeline.edit``).
    """
    if not path.exists():
        return
    prev = json.loads(path.read_text())
    pc, cfg = prev.get("config", {}), res["config"]
    pc = {"family": "smooth", **pc}  # results written before scene families were smooth-family runs
    same = lambda keys: all(pc.get(k) == cfg.get(k) for k in keys)  # noqa: E731
    commands = prev.get("part_commands") or {t: prev.get("command") for t in prev.get("parts", {})}
    keys_auc = [k for k in _MERGE_KEYS if k not in ("n_saliency", "n_adjust")]
    sal = res["parts"].get("saliency")
    if sal is not None and cfg.get("n_saliency") == 0 and "saliency" in prev.get("parts", {}) and same(keys_auc):
        old = prev["parts"]["saliency"]
        sal["rows"], sal["summary"] = old["rows"], old["summary"]
        res["part_commands"]["saliency"] = (f"AUC: {commands.get('saliency')}; adjust_saliency: "
                                            f"{res['part_commands']['saliency']}")
        res["config"] = {**cfg, "n_saliency": pc.get("n_saliency")}
    keys = [k for k in _MERGE_KEYS if k != "n_saliency" or cfg.get("n_saliency") != 0]
    if not same(keys):
        return
    for task, part in prev.get("parts", {}).items():
        if task not in res["parts"]:
            res["parts"][task] = part
            res["part_seconds"][task] = prev.get("part_seconds", {}).get(task, float("nan"))
            res["part_commands"][task] = commands.get(task)
    res["parts"] = {t: res["parts"][t] for t in TASKS if t in res["parts"]}


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def reproduce_command(cfg: BenchConfig, *, jobs: int = 1) -> str:
    d = BenchConfig()
    args = ["python", "-m", "benchmarks.edit_quality"] + (["--jobs", str(jobs)] if jobs > 1 else [])
    for f, flag in (("model", "--model"), ("out", "--out"), ("split", "--split"), ("family", "--family"),
                    ("n_remove", "--n-remove"),
                    ("n_saliency", "--n-saliency"), ("n_adjust", "--n-adjust"), ("n_transfer", "--n-transfer"),
                    ("n_blend", "--n-blend"), ("repaint_steps", "--repaint-steps"),
                    ("curve_timesteps", "--curve-timesteps"), ("curve_patch", "--curve-patch"),
                    ("curve_smooth", "--curve-smooth"),
                    ("statistic", "--statistic"), ("normalize", "--normalize"), ("t_min", "--t-min"),
                    ("seed", "--seed"), ("threads", "--threads")):
        v = getattr(cfg, f)
        if v != getattr(d, f):
            args += [flag, str(v)]
    if tuple(cfg.tasks) != TASKS:
        args += ["--tasks", ",".join(cfg.tasks)]
    if not cfg.generative:
        args += ["--no-generative"]
    if cfg.overrides:
        args += ["--overrides", json.dumps(cfg.overrides)]
    return shlex.join(args)


def _fmt(v: float, digits: int = 2) -> str:
    return "inf" if v == float("inf") else f"{v:.{digits}f}"


def markdown(res: dict) -> str:
    cfg = res["config"]
    family = cfg.get("family", "smooth")
    lines = [f"# Editing by curve matching: quality on {cfg['split']} scenes"
             + ("" if family == "smooth" else f" of the {family} family"), "",
             f"Model `{res['model']}`; reproduce with `{res['command']}`; total {res['total_seconds']:.0f} s wall "
             f"with {res['torch_threads']} torch thread(s) per process, {res['jobs']} process(es) "
             f"(per part: {', '.join(f'{k} {v:.0f} s' for k, v in res['part_seconds'].items() if k in cfg['tasks'])})"
             ".", ""]
    kept = {t: c for t, c in res.get("part_commands", {}).items() if c != res["command"]}
    if kept:
        lines += ["Parts from other runs (kept because this run did not redo them, or redid only part of them): "
                  + "; ".join(f"{t}: `{c}` ({res['part_seconds'].get(t, float('nan')):.0f} s)" for t, c in kept.items())
                  + ".", ""]
    parts = res["parts"]
    if "remove" in parts:
        p = parts["remove"]
        s = p["summary"]
        names = [k.split("/", 1)[1] for k in s if k.startswith("psnr/")]
        tex = f"texture/{names[0]}" in s  # results written before the texture columns lack them
        lines += [f"## Removal ({s[f'psnr/{names[0]}']['n']} scenes, top object; inside the mask vs ground truth)", "",
                  "| method | PSNR (dB) | SSIM |" + (" texture error | texture / truth's |" if tex else ""),
                  "|---|---|---|" + ("---|---|" if tex else "")]
        for n in sorted(names, key=lambda n: -s[f"psnr/{n}"]["mean"]):
            lines.append(f"| {n} | {_fmt(s[f'psnr/{n}']['mean'])} | {_fmt(s[f'ssim/{n}']['mean'], 3)} |"
                         + (f" {s[f'texture/{n}']['mean']:.4f} | {s[f'texture_ratio/{n}']['mean']:.2f} |"
                            if tex else ""))
        if tex:
            lines += ["", "Texture error: the absolute difference of the mean Sobel gradient magnitude of luminance "
                      "(0..1) inside the mask between the result and the truth, per scene, then averaged (lower is "
                      "better; the transfer's texture measure). Texture / truth's: the same magnitude's ratio to "
                      "the truth's (below 1: smoother than the truth)."]
        lines.append("")
    if "saliency" in parts:
        p = parts["saliency"]
        s = p["summary"]
        lines += ["## Saliency", "", f"ROC AUC against the object masks ({len(p['rows'])} scenes; curve map: direct "
                  f"estimator, {cfg['curve_timesteps']} timesteps, patch {cfg['curve_patch']}, direction smoothing "
                  f"{cfg['curve_smooth']}, statistic {cfg['statistic']}, normalize {cfg['normalize']}, t_min "
                  f"{cfg['t_min']}: the best configuration without map blur of the tuning-split study "
                  "`edit_saliency_study.md`)", "", "| map | AUC |", "|---|---|"]
        for k, v in s.items():
            lines.append(f"| {k[4:]} | {v['mean']:.3f} |")
        lines += ["", "adjust_saliency on the top object (contrast = mean saliency inside / outside; mean over "
                  "scenes):",
                  "", "| factor | curve contrast before -> after | spectral contrast before -> after | "
                  "PSNR inside | PSNR outside |", "|---|---|---|---|---|"]
        for f, a in p["adjust_summary"].items():
            if a:
                cb, ca = a["curve contrast before"]["mean"], a["curve contrast after"]["mean"]
                lines.append(f"| {f} | {cb:.3f} -> {ca:.3f}"
                             f" | {a['spectral contrast before']['mean']:.3f} -> "
                             f"{a['spectral contrast after']['mean']:.3f} | {_fmt(a['psnr inside']['mean'])} | "
                             f"{'inf' if a['psnr outside']['n_inf'] == a['psnr outside']['n'] else 'finite!'} |")
        lines.append("")
    if "transfer" in parts:
        s = parts["transfer"]["summary"]
        names = [k.split("/", 1)[1] for k in s if k.startswith("colour/")]
        lines += [f"## Transfer ({s[f'colour/{names[0]}']['n']} scenes; distance target region -> source region, "
                  "lower = more like the source)", "", "| result | colour (CIE76) | texture |", "|---|---|---|"]
        for n in names:
            lines.append(f"| {n} | {s[f'colour/{n}']['mean']:.2f} | {s[f'texture/{n}']['mean']:.4f} |")
        lossed = [n for n in names if f"curve loss first/{n}" in s]
        if lossed:  # a start that already matches the reference leaves the loss nothing to correct
            lines += ["", "Curve loss (mean over scenes) at the first and the last gradient step of the loop:", "",
                      "| result | first step | last step |", "|---|---|---|"]
            lines += [f"| {n} | {s[f'curve loss first/{n}']['mean']:.4g} | {s[f'curve loss last/{n}']['mean']:.4g} |"
                      for n in lossed]
        lines.append("")
    if "blend" in parts:
        s = parts["blend"]["summary"]
        names = [k.split("/", 1)[1] for k in s if k.startswith("seam")]
        lines += [f"## Blending ({s[f'seam gradient error/{names[0]}']['n']} pairs; vs the re-rendered composite)", "",
                  "| method | seam gradient error | PSNR edited region (dB) |", "|---|---|---|"]
        for n in names:
            lines.append(f"| {n} | {s[f'seam gradient error/{n}']['mean']:.4f} | "
                         f"{_fmt(s[f'psnr edited region/{n}']['mean'])} |")
        lines.append("")
    times = {f"{t}: {k}": v for t, p in parts.items() for k, v in p.get("time", {}).items()}
    if times:
        lines += ["## Time per call", "", "| task: method | wall (s) | process CPU (s) |", "|---|---|---|"]
        for k, v in times.items():
            lines.append(f"| {k} | {v['wall_s']:.2f} | {v['cpu_s']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=d.model, help="model source for load_model (default: the embedded model)")
    p.add_argument("--out", default=d.out, help="output folder")
    p.add_argument("--split", default=d.split, choices=("heldout", "tuning"),
                   help="scene split: heldout (reported numbers) or tuning (tuning runs; written separately)")
    p.add_argument("--family", default=d.family, choices=FAMILIES,
                   help="scene family: smooth (the default) or textured; non-default families write their own files")
    p.add_argument("--tasks", default=",".join(d.tasks), help="comma-separated parts: remove,saliency,transfer,blend")
    p.add_argument("--n-remove", type=int, default=d.n_remove, help="scenes for removal")
    p.add_argument("--n-saliency", type=int, default=d.n_saliency, help="scenes for the saliency AUC")
    p.add_argument("--n-adjust", type=int, default=d.n_adjust, help="scenes for adjust_saliency (x2 factors)")
    p.add_argument("--n-transfer", type=int, default=d.n_transfer, help="scenes for transfer")
    p.add_argument("--n-blend", type=int, default=d.n_blend, help="scene pairs for blending")
    p.add_argument("--repaint-steps", type=int, default=d.repaint_steps, help="RePaint inference steps")
    p.add_argument("--curve-timesteps", type=int, default=d.curve_timesteps, help="timesteps of saliency curves")
    p.add_argument("--curve-patch", type=int, default=d.curve_patch, help="patch size of saliency maps")
    p.add_argument("--curve-smooth", type=float, default=d.curve_smooth, help="patch-direction smoothing of maps")
    p.add_argument("--statistic", default=d.statistic, help="saliency statistic of the curve map")
    p.add_argument("--normalize", default=d.normalize, help="curve normalisation of the curve map")
    p.add_argument("--t-min", type=int, default=d.t_min, help="saliency window t > t_min")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the edits and RePaint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (per process)")
    p.add_argument("--jobs", type=int, default=1, help="run the parts in this many processes in parallel")
    p.add_argument("--overrides", default=None,
                   help='JSON edit-config overrides per task, e.g. {"remove": {"lr": 0.1}}')
    p.add_argument("--generative", action=argparse.BooleanOptionalAction, default=d.generative,
                   help="removal also with pipeline.edit.GENERATIVE_REMOVAL (the mean of fills from fresh noise) and "
                        "its ablation (default: on)")
    p.add_argument("--study", type=int, default=0, metavar="N",
                   help="instead of the benchmark, run the saliency study on N TUNING scenes")
    p.add_argument("--remove-study", default=None, metavar="JSON",
                   help='instead of the benchmark, run removal with each override dict of this JSON list on TUNING '
                        'scenes (--study-scenes) and merge into edit_removal_study.{json,md}; "[]" rewrites the md')
    p.add_argument("--study-scenes", default="0:8", metavar="I0:I1", help="TUNING removal scenes of --remove-study")
    p.add_argument("--edit-study", nargs=2, default=None, metavar=("TASK", "JSON"),
                   help="instead of the benchmark: transfer or blend with each override dict of the JSON list on the "
                        "TUNING split (with --split tuning), merged into edit_<task>_study_tuning...{json,md}")
    p.add_argument("--blend-references", default=None, metavar="I0:I1",
                   help="instead of the benchmark: on these TUNING blend pairs, the rms log-curve distance to the true "
                        "composite's curves of the paste's curves and of blend's reference (edit_blend_references)")
    p.add_argument("--fills-vs-curves", default=None, metavar="I0:I1",
                   help="instead of the benchmark: on these TUNING removal scenes, PSNR and log-curve distance to the "
                        "truth of the harmonic fill, single generative fills and their mean (edit_fills_vs_curves)")
    a = p.parse_args(argv)
    tasks = tuple(t for t in a.tasks.split(",") if t)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        p.error(f"unknown task(s) {bad}; accepted: {','.join(TASKS)}")
    cfg = BenchConfig(model=a.model, out=a.out, split=a.split, family=a.family, tasks=tasks, n_remove=a.n_remove,
                      n_saliency=a.n_saliency, n_adjust=a.n_adjust, n_transfer=a.n_transfer, n_blend=a.n_blend,
                      repaint_steps=a.repaint_steps, curve_timesteps=a.curve_timesteps, curve_patch=a.curve_patch,
                      curve_smooth=a.curve_smooth, statistic=a.statistic, normalize=a.normalize, t_min=a.t_min,
                      seed=a.seed, threads=a.threads, generative=a.generative,
                      overrides=json.loads(a.overrides) if a.overrides else {})
    if a.remove_study is not None:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        i0, i1 = (int(v) for v in a.study_scenes.split(":"))
        configs = json.loads(a.remove_study)
        model = load_model(cfg.model, device="cpu") if configs else None
        stem = result_stem(cfg, "edit_removal_study", split=False)
        st = run_removal_study(model, cfg, configs, (i0, i1), out / f"{stem}.json")
        (out / f"{stem}.md").write_text(removal_study_markdown(st, cfg.family))
        print(removal_study_markdown(st, cfg.family))
        return 0
    if a.edit_study is not None:
        task, configs = a.edit_study[0], json.loads(a.edit_study[1])
        if task not in EDIT_STUDY:
            p.error(f"--edit-study: the task must be one of {', '.join(EDIT_STUDY)}, got {task!r}")
        if cfg.split != "tuning":
            p.error("--edit-study runs on the TUNING split: add --split tuning")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = result_stem(cfg, f"edit_{task}_study")
        st = run_edit_study(load_model(cfg.model, device="cpu"), cfg, task, configs, out / f"{stem}.json")
        (out / f"{stem}.md").write_text(edit_study_markdown(st, task, cfg))
        print(edit_study_markdown(st, task, cfg))
        return 0
    for flag, value, runner, stem_name, to_md in (
            ("--blend-references", a.blend_references, run_blend_references, "edit_blend_references",
             blend_references_markdown),
            ("--fills-vs-curves", a.fills_vs_curves, run_fills_vs_curves, "edit_fills_vs_curves",
             fills_vs_curves_markdown)):
        if value is None:
            continue
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        i0, i1 = (int(v) for v in value.split(":"))
        res = runner(load_model(cfg.model, device="cpu"), cfg, (i0, i1))
        command = shlex.join(["python", "-m", "benchmarks.edit_quality", "--model", cfg.model, "--family", cfg.family,
                              flag, value] + (["--overrides", json.dumps(cfg.overrides)] if cfg.overrides else []))
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = result_stem(cfg, stem_name, split=False)
        (out / f"{stem}.json").write_text(json.dumps({**res, "command": command}, indent=1))
        (out / f"{stem}.md").write_text(to_md(res, command))
        print(to_md(res, command))
        return 0
    if a.study:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        st = run_saliency_study(load_model(cfg.model, device="cpu"), cfg, a.study)
        st["command"] = shlex.join(["python", "-m", "benchmarks.edit_quality", "--model", cfg.model,
                                    "--curve-timesteps", str(cfg.curve_timesteps), "--study", str(a.study)])
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "edit_saliency_study.json").write_text(json.dumps(st, indent=1))
        (out / "edit_saliency_study.md").write_text(study_markdown(st) + f"\nReproduce: `{st['command']}`\n")
        print(study_markdown(st))
        return 0
    print("reproduce with:", reproduce_command(cfg, jobs=a.jobs), flush=True)
    run_benchmark(cfg, jobs=a.jobs)
    print((Path(cfg.out) / f"{result_stem(cfg, 'edit_quality')}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
