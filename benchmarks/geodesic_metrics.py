"""Benchmark of the geodesic metrics (pipeline.geodesic.METRICS) against LERP and SLERP, measured the paper's way.

Parts (``--parts``, results merged into ``benchmarks/results/geodesic_metrics.json`` and rewritten to the markdown):

1. ``synthetic``: closed-form sphere S^2 (R^3, R^64) and torus (R^3, R^5), sigma 0.1, 16 points, from the chord:
   how far each metric's geodesic leaves the manifold (sphere: max |r/R - 1|, out of the great circle's plane;
   torus: max distance to the torus) and its Euclidean length over the true geodesic's. Bars: the sphere test's
   (radial < 0.02, out-of-plane < 1e-6, |length / arc - 1| < 0.02) and, on the torus, no farther off than the score
   metric.
2. ``scenes``: held-out moving-object scenes (:func:`pipeline.scenes.scene_path`, the first ``--pairs`` held-out seeds
   whose object moves), interpolation of first and last frame at each t* by every variant; the default model.
4. ``energy``: for the same held-out pairs, the true frames DDIM-inverted to t* against LERP, in both metrics: the
   Euclidean and metric parts of their energies, and the lam above which the true path would be the cheaper.
3. ``digits``: held-out rotated digits (:mod:`pipeline.digits`): the same digit at angles theta and theta + ``SPAN``,
   interpolated by every variant with the digits model (``weights/digits16``), scored against the true rotations:
   nearest rotated frame, the angle recovered per frame (the best-matching rotation of that digit on a 2-degree grid)
   against the angle the frame should show, and whether the recovered angles are monotonic along the path.

For every path: nearest-frame RMSE (interior frames), own-frame RMSE (to the frame at the same parameter), realism
of the pooled interior frames (SFD and KID against held-out real images, :mod:`benchmarks.path_quality`), the
per-frame denoising error at t = 50, and smoothness (consecutive-frame RMSE mean / max, step CV). ``gt frames`` is the
reference row: the true frames at the path's parameters (no model involved; the realism and denoising floor).

Usage:  python benchmarks/geodesic_metrics.py [--parts synthetic,scenes,digits] [--pairs 4] [--t-stars 200,400]
        [--variants 'lerp,slerp,score lam=1000,denoiser lam=100'] [--report-only]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.path_quality import (  # noqa: E402
    denoising_error,
    nearest_frames,
    perceptual_metric,
    perceptual_scores,
    realism,
    smoothness,
)

#: name -> arguments of pipeline.interpolate.interpolate_images (method, metric, lam).
VARIANTS: dict[str, dict] = {
    "lerp": {"method": "lerp"},
    "slerp": {"method": "slerp"},
    "score lam=1000": {"method": "geodesic", "metric": "score", "lam": 1000.0},
    "denoiser lam=10": {"method": "geodesic", "metric": "denoiser", "lam": 10.0},
    "denoiser lam=100": {"method": "geodesic", "metric": "denoiser", "lam": 100.0},
    "denoiser lam=1000": {"method": "geodesic", "metric": "denoiser", "lam": 1000.0},
}
GT = "gt frames"
SPAN = 90.0  # degrees between the two ends of a digit pair
ANGLE_GRID = 2.0  # degrees between the rotations the recovered angle is read from
DENOISE_T = 50  # timestep of the per-frame denoising error
N_REF = 500  # held-out real images of the realism reference
DIGITS_MODEL = ROOT / "weights" / "digits16"
OUT = ROOT / "benchmarks" / "results"


# --------------------------------------------------------------------------------------------------------------------
# 1. synthetic manifolds
# --------------------------------------------------------------------------------------------------------------------
SYNTH_METRICS = {"score lam=1000": ("score", 1000.0), "denoiser lam=10": ("denoiser", 10.0),
                 "denoiser lam=100": ("denoiser", 100.0),
                 "denoiser lam=1000": ("denoiser", 1000.0)}


def bench_synthetic(n_pairs: int) -> list[dict]:
    """Sphere and torus rows, one per (manifold, metric): off-manifold distance, length ratio, iterations."""
    from benchmarks.geodesics import pairs_on
    from pipeline.geodesic import geodesic_bvp
    from pipeline.synthetic import sphere, torus

    rows = []
    cases = [("sphere", D, sphere(2, D, sigma=0.1, seed=D)) for D in (3, 64)]
    cases += [("torus", D, torus(D, sigma=0.1, seed=None if D == 3 else D)) for D in (3, 5)]
    for kind, D, M in cases:
        if kind == "sphere":
            pairs = pairs_on(M, n_pairs)
        else:
            pairs = [tuple(M.sample(2, seed=100 + k)) for k in range(n_pairs)]
        for name, (metric, lam) in SYNTH_METRICS.items():
            per = []
            for a, b in pairs:
                r = geodesic_bvp(M.score, a, b, lam=lam, n_points=16, score_jvp=M.score_jvp, metric=metric,
                                 sigma=M.sigma, max_iter=500)
                eu = float((r.path[1:] - r.path[:-1]).norm(dim=-1).sum())
                rec = {"iterations": r.iterations, "converged": r.converged, "seconds": r.seconds,
                       "length_ratio": eu / float(M.distance(a[None], b[None])[0])}
                if kind == "sphere":
                    q, _ = torch.linalg.qr(torch.stack((a, b)).T)
                    rec["off_manifold"] = float((r.path.norm(dim=-1) / M.radius - 1).abs().max())
                    rec["out_of_plane"] = float((r.path - (r.path @ q) @ q.T).norm(dim=-1).max() / M.radius)
                else:
                    rec["off_manifold"] = float((r.path - M.project(r.path)).norm(dim=-1).max())
                per.append(rec)
            row = {"manifold": kind, "D": D, "sigma": M.sigma, "variant": name, "pairs": len(per),
                   "converged": sum(p["converged"] for p in per),
                   "off_manifold_max": max(p["off_manifold"] for p in per),
                   "length_ratio_mean": float(np.mean([p["length_ratio"] for p in per])),
                   "length_ratio_worst": max((p["length_ratio"] for p in per), key=lambda v: abs(v - 1)),
                   "iterations_mean": float(np.mean([p["iterations"] for p in per])),
                   "seconds_mean": float(np.mean([p["seconds"] for p in per]))}
            if kind == "sphere":
                row["out_of_plane_max"] = max(p["out_of_plane"] for p in per)
            rows.append(row)
            print(f"  {kind} R^{D} {name}: off {row['off_manifold_max']:.4f} L {row['length_ratio_mean']:.4f} "
                  f"it {row['iterations_mean']:.0f}", flush=True)
    for row in rows:  # the bars
        if row["manifold"] == "sphere":
            row["meets_bar"] = bool(row["off_manifold_max"] < 0.02 and row["out_of_plane_max"] < 1e-6
                                    and abs(row["length_ratio_worst"] - 1) < 0.02)
        else:
            ref = next(r for r in rows if r["manifold"] == "torus" and r["D"] == row["D"]
                       and r["variant"] == "score lam=1000")
            row["meets_bar"] = bool(row["off_manifold_max"] <= ref["off_manifold_max"] * (1 + 1e-9))
    return rows


# --------------------------------------------------------------------------------------------------------------------
# 2 and 3. image paths
# --------------------------------------------------------------------------------------------------------------------
def _to01(images) -> np.ndarray:
    return np.stack(images).astype(np.float64) / 255.0


def _score_path(model, imgs_u8: np.ndarray, truth01: np.ndarray, own: list[int]) -> dict:
    """Per-path numbers of a decoded path (n, H, W, 3) uint8 against the dense truth (m, H, W, 3) in [0, 1]."""
    imgs = imgs_u8.astype(np.float64) / 255.0
    nearest, idx = nearest_frames(imgs, truth01)
    own_rmse = np.sqrt(((imgs - truth01[own]) ** 2).mean(axis=(1, 2, 3)))
    den = denoising_error(model, imgs_u8[1:-1], t=DENOISE_T)
    dist, _ = _perceptual()
    extra = perceptual_scores(dist, imgs, truth01) if dist is not None else {}
    return {"nearest_rmse": float(nearest[1:-1].mean()), "nearest_rmse_max": float(nearest[1:-1].max()),
            "own_rmse": float(own_rmse[1:-1].mean()), "endpoint_rmse": float(nearest[[0, -1]].mean()),
            "nearest_frame": [int(k) for k in idx], "denoise_err": float(den.mean()), **smoothness(imgs), **extra}


@functools.lru_cache(maxsize=1)
def _perceptual():
    """LPIPS when its package and weights are on this machine (benchmarks.path_quality.perceptual_metric)."""
    return perceptual_metric()


def _run_variant(model, a, b, *, name: str, t_star: int, n_points: int, max_iter: int, num_steps: int):
    from pipeline.interpolate import interpolate_images

    kw = dict(VARIANTS[name])
    t0 = time.perf_counter()
    res = interpolate_images(model, a, b, n_points=n_points, t_star=t_star, num_steps=num_steps, max_iter=max_iter,
                             **kw)
    return np.stack(res.images), {"iterations": res.geodesic.iterations if res.geodesic else 0,
                                  "converged": bool(res.geodesic.converged) if res.geodesic else None,
                                  "seconds": time.perf_counter() - t0}


def _aggregate(per: list[dict], interiors: list[np.ndarray], ref: np.ndarray, truth: np.ndarray) -> dict:
    keys = ["nearest_rmse", "nearest_rmse_max", "own_rmse", "denoise_err", "step_mean", "step_max", "step_cv",
            "iterations", "seconds", "angle_err", "monotonic", "lpips_nearest", "lpips_step_mean"]
    out = {k: float(np.mean([p[k] for p in per])) for k in keys if per and k in per[0]}
    out["nearest_rmse_worst"] = max(p["nearest_rmse_max"] for p in per)
    out["step_max_worst"] = max(p["step_max"] for p in per)
    pooled = np.concatenate(interiors)
    out.update(realism(pooled, ref))
    # the same against the pooled dense true frames of these pairs: realism given the scenes (0 for a perfect path)
    own = realism(pooled, truth)
    out.update(sfd_truth=own["sfd"], kid_truth=own["kid"], n_truth=int(truth.shape[0]))
    out["pairs"] = len(per)
    return out


def _image_part(model, pairs: list[dict], ref: np.ndarray, *, variants: list[str], t_stars: list[int],
                n_points: int, max_iter: int, num_steps: int, extra=None, save=None) -> dict:
    """Run every variant on every pair at every t*; ``pairs``: dicts with a, b (uint8), truth01 (dense), own
    (frame index per path point), gt (uint8 frames at the parameters), id. ``save(partial)`` after every row, so an
    interrupted run keeps the rows it finished."""
    rows, per_pair = [], {}
    for t_star in t_stars:
        for name in [GT, *variants]:
            per, interiors = [], []
            for pr in pairs:
                if name == GT:
                    imgs, info = pr["gt"], {"iterations": 0, "converged": None, "seconds": 0.0}
                else:
                    imgs, info = _run_variant(model, pr["a"], pr["b"], name=name, t_star=t_star, n_points=n_points,
                                              max_iter=max_iter, num_steps=num_steps)
                rec = {"id": pr["id"], **info, **_score_path(model, imgs, pr["truth01"], pr["own"])}
                if extra is not None:
                    rec.update(extra(imgs, pr))
                per.append(rec)
                interiors.append(imgs[1:-1])
                print(f"  t*={t_star} {name} {pr['id']}: nearest {rec['nearest_rmse']:.4f} den "
                      f"{rec['denoise_err']:.4f} step {rec['step_mean']:.4f} {info['seconds']:.0f}s", flush=True)
            truth = np.concatenate([np.round(pr["truth01"] * 255).astype(np.uint8) for pr in pairs])
            rows.append({"t_star": t_star, "variant": name, **_aggregate(per, interiors, ref, truth)})
            per_pair[f"t{t_star}/{name}"] = per
            if save is not None:
                save({"rows": rows, "per_pair": per_pair})
    return {"rows": rows, "per_pair": per_pair}


def bench_scenes(variants, t_stars, n_pairs, n_points, max_iter, num_steps, save=None,
                 model_source: str = "default") -> dict:
    """Held-out moving-object scenes with the default model (or ``model_source``)."""
    from pipeline.model import load_model
    from pipeline.scenes import make_dataset, scene_path, split_seeds

    model = load_model(model_source, device="cpu")
    dense = 4 * (n_points - 1) + 1
    own = [round(i * (dense - 1) / (n_points - 1)) for i in range(n_points)]
    pairs = []
    for seed in split_seeds("heldout", 200):  # the first held-out scenes whose object visibly moves
        frames = scene_path(seed, 2, size=model.image_size)
        if np.abs(frames[0].image.astype(int) - frames[1].image.astype(int)).mean() < 1.0:
            continue
        frames = scene_path(seed, dense, size=model.image_size)
        imgs = np.stack([f.image for f in frames])
        pairs.append({"id": seed, "a": imgs[0], "b": imgs[-1], "truth01": imgs / 255.0, "own": own,
                      "gt": imgs[own]})
        if len(pairs) == n_pairs:
            break
    ref = make_dataset(split_seeds("heldout", N_REF, offset=500_000), model.image_size)
    head = {"model": model_source, "seeds": [p["id"] for p in pairs],
            "n_points": n_points, "max_iter": max_iter, "num_steps": num_steps,
            "reference": f"{N_REF} held-out scenes (seeds from offset 500000 of the held-out split)"}
    out = _image_part(model, pairs, ref, variants=variants, t_stars=t_stars, n_points=n_points, max_iter=max_iter,
                      num_steps=num_steps, save=None if save is None else (lambda part: save({**head, **part})))
    return {**head, **out}


def _digit_pairs(model, n_pairs: int, n_points: int, seed: int = 0) -> list[dict]:
    from pipeline.digits import DIGIT_SPLITS, rotated_digit, rotation_path

    rng = np.random.default_rng(seed)
    r = DIGIT_SPLITS["heldout"]
    idx = rng.choice(np.arange(r.start, r.stop), n_pairs, replace=False)
    dense = 4 * (n_points - 1) + 1
    own = [round(i * (dense - 1) / (n_points - 1)) for i in range(n_points)]
    grid = np.arange(0.0, 360.0, ANGLE_GRID)
    pairs = []
    for i in idx:
        th = float(rng.uniform(0.0, 360.0))
        frames = np.stack(rotation_path(int(i), th, th + SPAN, dense, size=model.image_size))
        bank = np.stack([rotated_digit(int(i), g, size=model.image_size) for g in grid]).astype(np.float64) / 255
        pairs.append({"id": f"digit {int(i)} @ {th:.0f}deg", "a": frames[0], "b": frames[-1], "theta": th,
                      "truth01": frames / 255.0, "own": own, "gt": frames[own], "bank": bank, "grid": grid})
    return pairs


def _angles(imgs_u8: np.ndarray, pr: dict) -> dict:
    """Angle recovered per frame (best rotation of the digit on the grid), relative to theta_a, in (-180, 180]."""
    imgs = imgs_u8.astype(np.float64) / 255.0
    rmse = np.sqrt(((imgs[:, None] - pr["bank"][None]) ** 2).mean(axis=(2, 3, 4)))  # (n, grid)
    ang = pr["grid"][rmse.argmin(axis=1)]
    rel = (ang - pr["theta"] + 180.0) % 360.0 - 180.0  # (n,)
    n = len(imgs)
    target = SPAN * np.arange(n) / (n - 1)
    return {"angles": [float(a) for a in rel], "angle_err": float(np.abs(rel - target)[1:-1].mean()),
            "monotonic": float(bool(np.all(np.diff(rel) >= -ANGLE_GRID)))}


def bench_digits(variants, t_stars, n_pairs, n_points, max_iter, num_steps, save=None,
                 model_source: str = str(DIGITS_MODEL)) -> dict:
    """Held-out rotated digits with the digits model (or ``model_source``)."""
    from pipeline.digits import DIGIT_SPLITS, make_digit_pool
    from pipeline.model import load_model

    model = load_model(model_source, device="cpu")
    pairs = _digit_pairs(model, n_pairs, n_points)
    ref = make_digit_pool(N_REF, size=model.image_size, seed=12345, split="heldout")
    head = {"pairs": [p["id"] for p in pairs], "span_degrees": SPAN, "n_points": n_points, "max_iter": max_iter,
            "num_steps": num_steps,
            "model": "weights/digits16" if Path(model_source) == DIGITS_MODEL else model_source,
            "heldout_digits": f"indices {DIGIT_SPLITS['heldout'].start}-{DIGIT_SPLITS['heldout'].stop - 1}",
            "reference": f"{N_REF} held-out digits at random angles"}
    out = _image_part(model, pairs, ref, variants=variants, t_stars=t_stars, n_points=n_points, max_iter=max_iter,
                      num_steps=num_steps, extra=_angles,
                      save=None if save is None else (lambda part: save({**head, **part})))
    return {**head, **out}


# --------------------------------------------------------------------------------------------------------------------
# 4. what each metric charges for the true path
# --------------------------------------------------------------------------------------------------------------------
def _energy_terms(score, path: torch.Tensor, sigma: float) -> dict:
    """The two parts of E = Eu + lam Q of a path for both metrics: Eu = (N/2) sum |d|^2, Q = (N/2) sum q_i."""
    from pipeline.geodesic import denoiser_term, score_term

    n = path.shape[0] - 1
    d = path[1:] - path[:-1]
    with torch.no_grad():
        q_score = float(score_term(score, path).sum())
    q_den = float(denoiser_term(score, path, sigma=sigma).sum())
    return {"eu": 0.5 * n * float(d.double().pow(2).sum()), "q_score": 0.5 * n * q_score, "q_denoiser": 0.5 * n * q_den}


def bench_energy(kind: str, t_stars, n_pairs: int, n_points: int, num_steps: int, model_source: str) -> dict:
    """For each held-out pair and t*: the true frames at the path's parameters DDIM-inverted to t* (the path a geodesic
    would have to find) against LERP between the same inverted ends, in both metrics. With E = Eu + lam Q, the true
    path is cheaper than LERP for lam > lam* = (Eu_gt - Eu_lerp) / (Q_lerp - Q_gt) when Q_gt < Q_lerp, never when not.
    """
    from pipeline import ddim
    from pipeline.images import image_to_tensor
    from pipeline.interpolate import model_sigma, score_functions
    from pipeline.model import load_model

    if kind == "scenes":
        from pipeline.scenes import scene_path, split_seeds

        model = load_model(model_source, device="cpu")
        dense = 4 * (n_points - 1) + 1
        own = [round(i * (dense - 1) / (n_points - 1)) for i in range(n_points)]
        frames = []
        for seed in split_seeds("heldout", 200):
            fr = scene_path(seed, 2, size=model.image_size)
            if np.abs(fr[0].image.astype(int) - fr[1].image.astype(int)).mean() < 1.0:
                continue
            fr = scene_path(seed, dense, size=model.image_size)
            frames.append((seed, [fr[k].image for k in own]))
            if len(frames) == n_pairs:
                break
    else:
        model = load_model(model_source, device="cpu")
        frames = [(p["id"], list(p["gt"])) for p in _digit_pairs(model, n_pairs, n_points)]
    rows, per = [], {}
    for t_star in t_stars:
        score, _ = score_functions(model, t_star)
        sigma = model_sigma(model, t_star)
        recs = []
        for pid, imgs in frames:
            x = torch.cat([image_to_tensor(im, model.image_size) for im in imgs])
            gt = ddim.invert(model, model.encode(x), t_end=t_star, num_steps=num_steps)  # (n, C, h, w)
            t = torch.linspace(0, 1, n_points, dtype=gt.dtype).reshape(-1, 1, 1, 1)
            lin = (1 - t) * gt[0] + t * gt[-1]
            g, lo = _energy_terms(score, gt, sigma), _energy_terms(score, lin, sigma)
            rec = {"id": pid, "gt": g, "lerp": lo, "euclid_ratio": g["eu"] / lo["eu"]}
            for m in ("score", "denoiser"):
                qg, ql = g[f"q_{m}"], lo[f"q_{m}"]
                rec[f"q_ratio_{m}"] = qg / ql
                rec[f"lam_star_{m}"] = (g["eu"] - lo["eu"]) / (ql - qg) if qg < ql else math.inf
            recs.append(rec)
            print(f"  {kind} t*={t_star} {pid}: Eu gt/lerp {rec['euclid_ratio']:.1f}, Q gt/lerp score "
                  f"{rec['q_ratio_score']:.3g} denoiser {rec['q_ratio_denoiser']:.3g}", flush=True)
        per[f"t{t_star}"] = recs
        rows.append({"t_star": t_star, "pairs": len(recs),
                     "euclid_ratio": float(np.median([r["euclid_ratio"] for r in recs])),
                     **{f"q_ratio_{m}": float(np.median([r[f"q_ratio_{m}"] for r in recs]))
                        for m in ("score", "denoiser")},
                     **{f"lam_star_{m}": float(np.median([r[f"lam_star_{m}"] for r in recs]))
                        for m in ("score", "denoiser")},
                     **{f"gt_cheaper_{m}": sum(r[f"q_ratio_{m}"] < 1 for r in recs) for m in ("score", "denoiser")}})
    return {"rows": rows, "per_pair": per, "n_points": n_points, "num_steps": num_steps}


# --------------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------------
def _f(x, fmt=".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _md_synthetic(rows: list[dict]) -> list[str]:
    out = ["## 1. Sphere and torus: does the path stay on the manifold?", "",
           "off-manifold: sphere max |r/R - 1|, torus max distance to the torus; length: Euclidean path length over "
           "the true geodesic's (mean, worst). Bar: sphere radial < 0.02, out-of-plane < 1e-6, |length - 1| < 0.02; "
           "torus: off-manifold no larger than the score metric's.", "",
           "| manifold | D | metric | pairs | conv | off-manifold (max) | out-of-plane (max) | length (mean) | "
           "(worst) | iterations | seconds | bar |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['manifold']} | {r['D']} | {r['variant']} | {r['pairs']} | {r['converged']}/{r['pairs']} | "
                   f"{r['off_manifold_max']:.4f} | {_f(r.get('out_of_plane_max'), '.1e')} | "
                   f"{r['length_ratio_mean']:.4f} | {r['length_ratio_worst']:.4f} | {r['iterations_mean']:.0f} | "
                   f"{r['seconds_mean']:.2f} | {'met' if r['meets_bar'] else 'MISSED'} |")
    return out


def _md_images(res: dict, title: str, digits: bool) -> list[str]:
    head = ("| t* | variant | pairs | nearest RMSE (mean) | (worst) | own-frame RMSE | "
            + ("angle err (deg) | monotonic | " if digits else "")
            + "SFD | KID | KID vs true frames | denoise err | step mean | step max | step CV | iters | s/pair |"
            + (" LPIPS nearest | LPIPS step |" if any("lpips_nearest" in r for r in res["rows"]) else ""))
    out = [title, "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in res["rows"]:
        out.append(f"| {r['t_star']} | {r['variant']} | {r['pairs']} | {r['nearest_rmse']:.4f} | "
                   f"{r['nearest_rmse_worst']:.4f} | {r['own_rmse']:.4f} | "
                   + (f"{r['angle_err']:.1f} | {r['monotonic']:.2f} | " if digits else "")
                   + f"{r['sfd']:.2f} | {r['kid']:.3f} | {_f(r.get('kid_truth'), '.3f')} | {r['denoise_err']:.4f} | "
                   f"{r['step_mean']:.4f} | "
                   f"{r['step_max_worst']:.4f} | {r['step_cv']:.3f} | {r['iterations']:.0f} | {r['seconds']:.0f} |"
                   + (f" {r['lpips_nearest']:.4f} | {r['lpips_step_mean']:.4f} |" if "lpips_nearest" in r else ""))
    return out


def _md_energy(res: dict) -> list[str]:
    out = ["## 4. What each metric charges for the true path", "",
           "The true frames at the path's parameters DDIM-inverted to t* (the path a geodesic would have to find) "
           "against LERP between the same inverted ends. E = Eu + lam Q; Eu ratio = Eu(true) / Eu(LERP), Q ratio = "
           "Q(true) / Q(LERP) per metric (medians over pairs); the true path is cheaper than LERP for "
           "lam > lam* = (Eu_true - Eu_lerp) / (Q_lerp - Q_true) when its Q is smaller, for no lam when not "
           "('pairs with Q smaller' counts them). LERP is not the minimiser, so this bounds what a metric of this "
           "family can do: where the true path costs more than LERP, the geodesic will not find it.", "",
           "| data | t* | pairs | Eu ratio | Q ratio score | Q ratio denoiser | pairs with Q smaller (score / "
           "denoiser) | lam* score | lam* denoiser |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in ("scenes", "digits"):
        for r in res.get(kind, {}).get("rows", []):
            out.append(f"| {kind} | {r['t_star']} | {r['pairs']} | {r['euclid_ratio']:.1f} | "
                       f"{r['q_ratio_score']:.3g} | {r['q_ratio_denoiser']:.3g} | {r['gt_cheaper_score']} / "
                       f"{r['gt_cheaper_denoiser']} | {r['lam_star_score']:.3g} | {r['lam_star_denoiser']:.3g} |")
    return out


def markdown(res: dict) -> str:
    lines = ["# Geodesic metrics against LERP and SLERP", "",
             "Reproduce: " + "; ".join(f"`{c}`" for c in res.get("commands", [])), "",
             f"Machine: {res.get('machine', '?')}. Wall times on a shared, loaded CPU.", "",
             "Columns. nearest RMSE: pixel RMSE in [0, 1] of each interior decoded frame to the nearest of the dense "
             "ground-truth frames (mean over pairs of the per-path mean; worst: the largest single frame); own-frame "
             "RMSE: to the true frame at the same parameter; SFD / KID: the pooled interior frames (pairs x "
             "(points - 2) images) against held-out real images on 68 standardised scene statistics (SFD is biased "
             "upwards at this sample size: compare rows, not to other tables; KID is the unbiased MMD^2 estimate, "
             "0 for matching distributions; the interior frames all come from the few pairs, so even the true frames "
             "score far from 0 against the varied reference); KID vs true frames: the same pooled frames against "
             "the pooled dense true frames of the same pairs (realism given the scenes; near 0 for the true "
             "frames); denoise err: the model's epsilon error at t = 50 per interior frame "
             "(4 fixed noise draws; lower is more like the training data); step mean / max / CV: consecutive-frame "
             "RMSE, its largest value and its coefficient of variation (evenness). `gt frames` are the true frames "
             "at the path's parameters: the realism and smoothness floor, no model involved. LPIPS columns (nearest "
             "true frame, consecutive frames) appear when the lpips package and its AlexNet weights are on the "
             f"machine; this run: {res.get('perceptual', 'not recorded')}. No Inception features (clean-fid's "
             "weights are not available offline).", ""]
    if "synthetic" in res:
        lines += _md_synthetic(res["synthetic"]) + [""]
    if "scenes" in res:
        s = res["scenes"]
        lines += _md_images(s, "## 2. Held-out moving-object scenes\n\n"
                            f"Model {s.get('model', 'default')}; held-out seeds {s['seeds']}; "
                            f"{s['n_points']} points, {s['num_steps']} DDIM steps, geodesic max_iter "
                            f"{s['max_iter']}; realism reference: {s['reference']}.", digits=False) + [""]
    if "digits" in res:
        d = res["digits"]
        lines += _md_images(d, f"## 3. Held-out rotated digits\n\nModel {d['model']}; {len(d['pairs'])} held-out "
                            f"digits ({d['heldout_digits']}), each from a random angle theta to theta + "
                            f"{d['span_degrees']:.0f} degrees: {', '.join(d['pairs'])}; {d['n_points']} points, "
                            f"{d['num_steps']} DDIM steps, geodesic max_iter {d['max_iter']}; realism reference: "
                            f"{d['reference']}. angle err: mean |recovered - intended| angle of the interior frames "
                            f"(recovered = the best-matching rotation of the same digit on a {ANGLE_GRID:g}-degree "
                            "grid); monotonic: fraction of paths whose recovered angles never step back by more than "
                            "one grid step.", digits=True) + [""]
    if "energy" in res:
        lines += _md_energy(res["energy"]) + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the chosen parts, merge them into the JSON, rewrite the markdown."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="synthetic,scenes,digits", help="comma-separated subset")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    p.add_argument("--t-stars", default="200,400")
    p.add_argument("--pairs", type=int, default=4, help="held-out pairs per image part")
    p.add_argument("--synthetic-pairs", type=int, default=5)
    p.add_argument("--n-points", type=int, default=9)
    p.add_argument("--max-iter", type=int, default=50)
    p.add_argument("--num-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scenes-model", default="default", help="model of the scenes part (default: the embedded one)")
    p.add_argument("--digits-model", default=str(DIGITS_MODEL), help="model of the digits part (weights/digits16)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--report-only", action="store_true", help="only rewrite the markdown from the JSON")
    args = p.parse_args(argv)
    out_json, out_md = Path(args.out) / "geodesic_metrics.json", Path(args.out) / "geodesic_metrics.md"
    res = json.loads(out_json.read_text()) if out_json.is_file() else {}
    if not args.report_only:
        torch.set_num_threads(args.threads)
        variants = args.variants.split(",")
        bad = [v for v in variants if v not in VARIANTS]
        if bad:
            p.error(f"unknown variants {bad}; known: {', '.join(VARIANTS)}")
        t_stars = [int(t) for t in args.t_stars.split(",")]
        res["machine"] = (f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                          f"{args.threads} thread(s)")
        dist, why = _perceptual()
        res["perceptual"] = why if dist is not None else f"not available ({why})"
        cmd = "python benchmarks/geodesic_metrics.py " + " ".join(
            f"'{a}'" if " " in a else a for a in (argv if argv is not None else sys.argv[1:]))
        res["commands"] = [*[c for c in res.get("commands", []) if c != cmd], cmd.strip()]
        for part in args.parts.split(","):
            print(f"{part}:", flush=True)
            if part == "synthetic":
                res["synthetic"] = bench_synthetic(args.synthetic_pairs)
            elif part == "energy":
                res["energy"] = {k: bench_energy(k, t_stars, args.pairs, args.n_points, args.num_steps,
                                                 args.scenes_model if k == "scenes" else args.digits_model)
                                 for k in ("scenes", "digits")}
            elif part in ("scenes", "digits"):
                fn = bench_scenes if part == "scenes" else bench_digits

                def save(partial, part=part):
                    res[part] = partial
                    out_json.write_text(json.dumps(res, indent=1, default=float))

                res[part] = fn(variants, t_stars, args.pairs, args.n_points, args.max_iter, args.num_steps, save,
                               args.scenes_model if part == "scenes" else args.digits_model)
            else:
                p.error(f"unknown part {part!r}; known: synthetic, scenes, digits, energy")
            out_json.write_text(json.dumps(res, indent=1, default=float))
    out_md.write_text(markdown(res))
    print(f"wrote {out_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
