"""Benchmark of score-metric geodesics: known spheres, peer solvers on the same energy, shooting, and images.

Writes ``benchmarks/results/geodesics.json`` and ``benchmarks/results/geodesics.md`` and prints the command that
reproduces them. Sections:

1. **Spheres** S^2 (radius 1, noise sigma) embedded in R^3, R^64 and R^3072 (closed-form score,
   :mod:`pipeline.synthetic`), lam = 1000, 16 points, from the straight chord: deviation from the great circle
   (radial, out of plane), length over the true arc, spacing evenness, iterations, evaluations and time; with the
   JVP-assembled gradient and with autograd; our L-BFGS with and without the Laplacian preconditioner,
   torch.optim.LBFGS and Adam.
2. **Peers** on the same discrete energy: ``scipy.optimize.minimize(method="L-BFGS-B")`` with the same gradient, and
   stochman's ``geodesic_minimizing_energy`` (R^3 and R^64; Adam and LBFGS at stochman's hard-coded lr = 0.1) on a
   ``DiscreteCurve`` with the same nodes and energy.
3. **Shooting**: metric-speed drift against RK4 substeps; agreement of the geodesic shot from a (with the BVP's
   Legendre velocity) with the BVP path and its end point b; extrapolation past b staying on the sphere.
4. **Images** (needs a trained model; skipped with the reason otherwise): moving-object scenes
   (:func:`pipeline.scenes.scene_path`, held-out seeds), interpolation between the first and last frame by geodesic,
   LERP and SLERP; distance of each decoded interpolant to the nearest ground-truth frame of a dense path (and to the
   frame at its own parameter), path smoothness, energy and Euclidean length; plus an oracle row ``gt-path``: the
   ground-truth frames themselves inverted to t*, the path a geodesic would have to find.
5. **Image study** (``--study``, TUNING seeds only, never the held-out ones): variants of the image geodesic
   (``STUDY_VARIANTS``: lam relative to the score, initialisation, iterations, points, quadrature rule, x0 clipping,
   t*) with the path's geometry at t*; writes ``geodesic_image_study.{json,md}`` (``--study-report`` rewrites the
   markdown from the JSON).

Wall times come from whatever machine runs it (the committed numbers: a shared 2-core CPU, see ``machine`` in the JSON).

Usage:  python benchmarks/geodesics.py [--quick] [--model default|PATH] [--skip-images] [--only PARTS] [--out DIR]
        python benchmarks/geodesics.py --study 'lerp,geo lam=1000,...' [--image-seeds N] [--t-stars 400,200]
        python benchmarks/geodesics.py --study-report
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

from pipeline.geodesic import (  # noqa: E402
    _Counter,
    _energy_grad_jvp,
    curve_energy,
    curve_length,
    extrapolate,
    geodesic_bvp,
    geodesic_shoot,
    lerp,
)
from pipeline.synthetic import sphere  # noqa: E402

LAM = 1000.0
N_POINTS = 16


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------
def pairs_on(M, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Point pairs on the sphere at angles in [60, 150] degrees (seeded)."""
    out, seed = [], 0
    while len(out) < count:
        a, b = M.sample(2, seed=1000 + seed)
        seed += 1
        ang = math.degrees(math.acos(float(a @ b) / M.radius**2))
        if 60 <= ang <= 150:
            out.append((a, b))
    return out


def great_circle_metrics(M, path: torch.Tensor, a: torch.Tensor, b: torch.Tensor, length: float) -> dict:
    q, _ = torch.linalg.qr(torch.stack((a, b)).T)  # (D, 2): the plane of the great circle
    seg = (path[1:] - path[:-1]).norm(dim=-1)
    arc = float(M.distance(a[None], b[None]))
    ridge = ridge_radius(M)
    return {
        "radial_dev": float((path.norm(dim=-1) / M.radius - 1).abs().max()),
        "ridge_dev": float((path[1:-1].norm(dim=-1) / ridge - 1).abs().max()),
        "out_of_plane": float((path - (path @ q) @ q.T).norm(dim=-1).max() / M.radius),
        "length_over_arc": length / arc,
        "spacing_max_over_min": float(seg.max() / seg.min()),
    }


_RIDGE = {}


def ridge_radius(M) -> float:
    """Radius where the radial score vanishes (the mode shell of p_sigma), by bisection."""
    key = (M.k, M.radius, M.sigma)
    if key not in _RIDGE:
        u = M.Q[:, 0]
        lo, hi = 0.5 * M.radius, M.radius
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            s = float(M.score((mid * u)[None])[0] @ u)
            lo, hi = (mid, hi) if s > 0 else (lo, mid)
        _RIDGE[key] = 0.5 * (lo + hi)
    return _RIDGE[key]


def summarize(rows: list[dict], keys: list[str]) -> dict:
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        if vals:
            out[k] = {"mean": float(np.mean(vals)), "max": float(np.max(vals)), "min": float(np.min(vals))}
    return out


# --------------------------------------------------------------------------------------------------------------------
# 1. spheres
# --------------------------------------------------------------------------------------------------------------------
SOLVERS = {
    "lbfgs+precond/jvp": dict(optimizer="lbfgs", gradient="jvp"),
    "lbfgs+precond/autograd": dict(optimizer="lbfgs", gradient="autograd"),
    "lbfgs/jvp": dict(optimizer="lbfgs", gradient="jvp", precondition=False),
    "torch-lbfgs/jvp": dict(optimizer="torch-lbfgs", gradient="jvp"),
    "adam/jvp": dict(optimizer="adam", gradient="jvp", max_iter=1000),
}
MAIN_SOLVERS = ("lbfgs+precond/jvp", "lbfgs+precond/autograd")  # the only ones run at the second sigma


def n_pairs_for(D: int, n_pairs: int) -> int:
    """Fewer pairs in R^3072, where scipy's L-BFGS-B alone costs ~0.1 s of CPU per iteration."""
    return n_pairs if D <= 64 else max(2, (n_pairs + 1) // 2)


def bench_spheres(dims, sigmas, n_pairs, solvers) -> list[dict]:
    rows = []
    for sigma in sigmas:
        for D in dims:
            M = sphere(2, D, sigma=sigma, seed=D)
            for name, opts in solvers.items():
                if sigma != sigmas[0] and name not in MAIN_SOLVERS:
                    continue
                per = []
                for a, b in pairs_on(M, n_pairs_for(D, n_pairs)):
                    kw = dict(opts)
                    max_iter = kw.pop("max_iter", 500)
                    jvp = M.score_jvp if kw.get("gradient") == "jvp" else None
                    r = geodesic_bvp(M.score, a, b, lam=LAM, n_points=N_POINTS, score_jvp=jvp, max_iter=max_iter,
                                     **kw)
                    per.append({**great_circle_metrics(M, r.path, a, b, r.length), "energy": r.energy[-1],
                                "energy_init": r.energy[0], "iterations": r.iterations,
                                "energy_evals": r.evaluations.energy, "score_points": r.evaluations.score_points,
                                "jvp_points": r.evaluations.jvp_points, "vjp_points": r.evaluations.vjp_points,
                                "seconds": r.seconds, "converged": r.converged})
                row = {"D": D, "sigma": sigma, "ridge_radius": ridge_radius(M), "solver": name, "pairs": len(per),
                       "converged": sum(p["converged"] for p in per),
                       **summarize(per, ["radial_dev", "ridge_dev", "out_of_plane", "length_over_arc",
                                         "spacing_max_over_min", "energy", "iterations", "energy_evals",
                                         "score_points", "jvp_points", "vjp_points", "seconds"])}
                rows.append(row)
                print(f"  sphere D={D} sigma={sigma} {name}: radial {row['radial_dev']['max']:.4f} "
                      f"L/arc {row['length_over_arc']['mean']:.4f} it {row['iterations']['mean']:.0f} "
                      f"t {row['seconds']['mean']:.2f}s", flush=True)
    return rows


# --------------------------------------------------------------------------------------------------------------------
# 2. peers
# --------------------------------------------------------------------------------------------------------------------
def scipy_peer(M, a, b, *, maxiter=2000) -> dict:
    from scipy.optimize import minimize

    counter = _Counter()
    shape = a.shape

    def fun(z):
        path = torch.cat((a[None], torch.from_numpy(z).reshape(-1, *shape), b[None]))
        counter.add(energy=1)
        e, g = _energy_grad_jvp(M.score, M.score_jvp, path, LAM, None, counter)
        return e, g[1:-1].reshape(-1).numpy()

    z0 = lerp(a, b, N_POINTS)[1:-1].reshape(-1).numpy()
    t0 = time.perf_counter()
    res = minimize(fun, z0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter, "ftol": 1e-7, "gtol": 1e-9})
    secs = time.perf_counter() - t0
    path = torch.cat((a[None], torch.from_numpy(res.x).reshape(-1, *shape), b[None]))
    length = curve_length(M.score, path, lam=LAM)
    return {**great_circle_metrics(M, path, a, b, length), "energy": float(res.fun), "iterations": int(res.nit),
            "energy_evals": counter.snapshot().energy, "seconds": secs, "converged": bool(res.success),
            "message": str(res.message)}


def stochman_peer(M, a, b, *, optimizer: str, max_iter: int) -> dict:
    from stochman.curves import DiscreteCurve
    from stochman.geodesic import geodesic_minimizing_energy
    from stochman.manifold import Manifold

    calls = {"energy": 0}

    class ScoreMetric(Manifold):
        """G(x) = I + lam s s^T, with the project's midpoint energy as stochman's curve energy."""

        def metric(self, points):
            s = M.score(points)  # (n, D)
            return torch.eye(points.shape[1], dtype=points.dtype) + LAM * s[:, :, None] * s[:, None, :]

        def curve_energy(self, curve, reduction="sum"):
            calls["energy"] += 1
            c = curve[0] if curve.ndim == 3 else curve  # (n, D); never modified in place
            return curve_energy(M.score, c, lam=LAM)

    curve = DiscreteCurve(a[None], b[None], num_nodes=N_POINTS)
    opt = {"adam": torch.optim.Adam, "lbfgs": torch.optim.LBFGS}[optimizer]
    t0 = time.perf_counter()
    ok = geodesic_minimizing_energy(curve, ScoreMetric(), optimizer=opt, max_iter=max_iter, eval_grid=N_POINTS)
    secs = time.perf_counter() - t0
    with torch.no_grad():
        path = curve(torch.linspace(0, 1, N_POINTS, dtype=a.dtype)).reshape(N_POINTS, -1)
        path[0], path[-1] = a, b
        e = float(curve_energy(M.score, path, lam=LAM))
    length = curve_length(M.score, path, lam=LAM)
    return {**great_circle_metrics(M, path, a, b, length), "energy": e, "iterations": max_iter,
            "energy_evals": calls["energy"], "seconds": secs, "converged": bool(ok)}


def bench_peers(dims, sigma, n_pairs, stochman_iters) -> list[dict]:
    rows = []
    try:
        import stochman  # noqa: F401

        stochman_error = None
    except Exception as err:  # recorded, not raised: the peer is optional
        stochman_error = f"{type(err).__name__}: {err}"
    for D in dims:
        M = sphere(2, D, sigma=sigma, seed=D)
        pairs = pairs_on(M, n_pairs_for(D, n_pairs))
        ours = []
        for a, b in pairs:
            r = geodesic_bvp(M.score, a, b, lam=LAM, n_points=N_POINTS, score_jvp=M.score_jvp, max_iter=500)
            ours.append({**great_circle_metrics(M, r.path, a, b, r.length), "energy": r.energy[-1],
                         "iterations": r.iterations, "energy_evals": r.evaluations.energy, "seconds": r.seconds,
                         "converged": r.converged})
        peers = {"ours: lbfgs+precond (jvp gradient)": ours,
                 "scipy L-BFGS-B (same energy + gradient)": [scipy_peer(M, a, b) for a, b in pairs]}
        if D <= 64:
            for opt in ("adam", "lbfgs"):
                name = f"stochman geodesic_minimizing_energy ({opt}, lr 0.1, {stochman_iters} it)"
                if stochman_error is not None:
                    rows.append({"D": D, "solver": name, "error": stochman_error})
                    continue
                try:
                    peers[name] = [stochman_peer(M, a, b, optimizer=opt, max_iter=stochman_iters) for a, b in pairs]
                except Exception as err:
                    rows.append({"D": D, "solver": name, "error": f"{type(err).__name__}: {err}"})
        for name, per in peers.items():
            ref = [o["energy"] for o in ours]
            for p, e0 in zip(per, ref, strict=True):
                p["energy_over_ours"] = p["energy"] / e0
            row = {"D": D, "sigma": sigma, "solver": name, "pairs": len(per),
                   "converged": sum(bool(p["converged"]) for p in per),
                   **summarize(per, ["energy", "energy_over_ours", "radial_dev", "length_over_arc", "iterations",
                                     "energy_evals", "seconds"])}
            rows.append(row)
            print(f"  peers D={D} {name}: E/E_ours {row['energy_over_ours']['mean']:.4f} "
                  f"evals {row['energy_evals']['mean']:.0f} t {row['seconds']['mean']:.2f}s", flush=True)
    return rows


# --------------------------------------------------------------------------------------------------------------------
# 3. shooting
# --------------------------------------------------------------------------------------------------------------------
def bench_shooting(dims, sigma, n_pairs) -> dict:
    """Shoot from a along the great circle towards b (v0 = tangent * angle, so t = 1 is b on the exact circle):
    metric-speed drift and distance from the great circle against RK4 substeps; then the BVP from a to the shot's
    end point, compared with the shot path; then extrapolation past b."""
    n = 32
    conservation, agreement, extrap = [], [], []
    for D in dims:
        M = sphere(2, D, sigma=sigma, seed=D)
        for a, b in pairs_on(M, n_pairs):
            theta = math.acos(float(a @ b) / M.radius**2)
            tangent = b - (a @ b) * a / M.radius**2
            v0 = theta * M.radius * tangent / tangent.norm()  # (D,)
            q, _ = torch.linalg.qr(torch.stack((a, b)).T)
            shot4 = None
            for sub in (1, 2, 4, 8):
                try:
                    shot = geodesic_shoot(M.score, a, v0, lam=LAM, n_steps=n - 1, substeps=sub, score_jvp=M.score_jvp)
                except Exception as err:  # divergence at coarse steps is a result too
                    conservation.append({"D": D, "substeps": sub, "error": str(err)})
                    continue
                shot4 = shot if sub == 4 else shot4
                conservation.append({
                    "D": D, "substeps": sub, "speed_drift": shot.speed_drift,
                    "radial_dev": float((shot.path.norm(dim=-1) / M.radius - 1).abs().max()),
                    "out_of_plane": float((shot.path - (shot.path @ q) @ q.T).norm(dim=-1).max()),
                    "end_error_over_chord": float((shot.path[-1] - b).norm() / (b - a).norm()),
                    "seconds": shot.seconds})
            if shot4 is None:
                continue
            e = shot4.path[-1]
            bvp = geodesic_bvp(M.score, a, e, lam=LAM, n_points=n, score_jvp=M.score_jvp, max_iter=500)
            chord = float((e - a).norm())
            agreement.append({"D": D, "angle_deg": math.degrees(theta),
                              "max_dev_over_chord": float((shot4.path - bvp.path).norm(dim=-1).max()) / chord,
                              "shot_length_over_bvp_length": shot4.length / bvp.length,
                              "bvp_radial_dev": float((bvp.path.norm(dim=-1) / M.radius - 1).abs().max())})
            row = {"D": D}
            for vel in ("legendre", "difference"):
                ex = extrapolate(M.score, a, b, beyond=0.5, lam=LAM, n_points=N_POINTS, score_jvp=M.score_jvp,
                                 velocity=vel, max_iter=500)
                extra = ex.path[N_POINTS:]
                row[vel] = {"radial_dev": float((extra.norm(dim=-1) / M.radius - 1).abs().max()),
                            "out_of_plane": float((extra - (extra @ q) @ q.T).norm(dim=-1).max()),
                            "extra_length_over_half_L": ex.shoot.length / (0.5 * ex.bvp.length),
                            "speed_drift": ex.shoot.speed_drift}
            extrap.append(row)
    table = []
    for sub in sorted({c["substeps"] for c in conservation}):
        runs = [c for c in conservation if c["substeps"] == sub]
        ok = [c for c in runs if "error" not in c]
        table.append({"substeps": sub, "runs": len(runs), "diverged": len(runs) - len(ok),
                      **summarize(ok, ["speed_drift", "radial_dev", "out_of_plane", "end_error_over_chord",
                                       "seconds"])})
        if ok:
            print(f"  shooting substeps={sub}: drift {table[-1]['speed_drift']['max']:.2e} radial "
                  f"{table[-1]['radial_dev']['max']:.2e} end/chord {table[-1]['end_error_over_chord']['max']:.2e}",
                  flush=True)
    agree = summarize(agreement, ["max_dev_over_chord", "shot_length_over_bvp_length", "bvp_radial_dev"])
    print(f"  shot vs BVP through its end point: max dev/chord {agree['max_dev_over_chord']['max']:.4f}", flush=True)
    ext = {vel: summarize([r[vel] for r in extrap], ["radial_dev", "out_of_plane", "extra_length_over_half_L",
                                                     "speed_drift"]) for vel in ("legendre", "difference")}
    return {"n_points": n, "conservation": table, "agreement": agree, "agreement_per_pair": agreement,
            "extrapolation": ext}


# --------------------------------------------------------------------------------------------------------------------
# 4. images
# --------------------------------------------------------------------------------------------------------------------
IMAGE_METHODS = ("geodesic", "lerp", "slerp")
GT_PATH = "gt-path"  # oracle row: the DDIM inversions of the ground-truth frames themselves, as a path at t*


def _gt_path(model, images: list, *, t_star: int, num_steps: int):
    """The oracle path: every ground-truth frame inverted to t* (as interpolate_images inverts the two ends), decoded
    back, with its score-metric energy and length at lam = LAM. Shows what a path that moves the object costs."""
    from types import SimpleNamespace

    from pipeline import ddim
    from pipeline.geodesic import curve_energy, curve_length
    from pipeline.images import image_to_tensor
    from pipeline.interpolate import decode_path, score_functions

    x = torch.cat([image_to_tensor(im, model.image_size) for im in images])  # (n, 3, H, W)
    path = ddim.invert(model, model.encode(x), t_end=t_star, num_steps=num_steps)  # (n, C, h, w)
    _, dec = decode_path(model, path, t_star=t_star, num_steps=num_steps)
    score, _ = score_functions(model, t_star)
    with torch.no_grad():
        e = float(curve_energy(score, path, lam=LAM))
    return SimpleNamespace(images=dec, path=path, energy=[e], length=curve_length(score, path, lam=LAM),
                           euclidean_length=float((path[1:] - path[:-1]).flatten(1).norm(dim=1).sum()), geodesic=None)


def bench_images(model_source: str, n_seeds: int, n_points: int, num_steps: int, max_iter: int,
                 t_stars: tuple[int, ...] = (400,), split: str = "heldout") -> dict:
    from pipeline.errors import ModelLoadError
    from pipeline.interpolate import interpolate_images
    from pipeline.model import load_model

    try:
        model = load_model(model_source, device="cpu")
    except ModelLoadError as err:
        msg = f"skipped: load_model({model_source!r}) raised ModelLoadError: {err}"
        print("  images " + msg, flush=True)
        return {"skipped": msg}
    try:
        from pipeline.scenes import scene_path
    except ImportError as err:
        return {"skipped": f"pipeline.scenes.scene_path unavailable: {err}"}
    import hashlib

    h = hashlib.sha256()
    for prm in model.unet.state_dict().values():  # which weights (checkpoints change while a model trains)
        h.update(prm.detach().cpu().float().numpy().tobytes())
    weights_sha = h.hexdigest()[:16]
    from pipeline.scenes import split_seeds

    dense = 4 * (n_points - 1) + 1
    seeds, degenerate = [], []
    for seed in split_seeds(split, 200):  # the first scenes of the split whose object visibly moves
        frames = scene_path(seed, 2, size=model.image_size)
        if np.abs(frames[0].image.astype(int) - frames[1].image.astype(int)).mean() < 1.0:
            degenerate.append(seed)  # e.g. a rotating ring: all frames identical
            continue
        seeds.append(seed)
        if len(seeds) == n_seeds:
            break
    per = {(t, m): [] for t in t_stars for m in (*IMAGE_METHODS, GT_PATH)}
    for seed in seeds:
        frames = scene_path(seed, dense, size=model.image_size)
        truth = np.stack([f.image for f in frames]).astype(np.float64) / 255  # (dense, H, W, 3)
        a, b = frames[0].image, frames[-1].image
        own = [round(i * (dense - 1) / (n_points - 1)) for i in range(n_points)]  # frame index at t_i = i / (n - 1)
        for t_star, method in per:
            t0 = time.perf_counter()
            if method == GT_PATH:
                res = _gt_path(model, [frames[k].image for k in own], t_star=t_star, num_steps=num_steps)
            else:
                res = interpolate_images(model, a, b, n_points=n_points, t_star=t_star, lam=LAM, method=method,
                                         num_steps=num_steps, max_iter=max_iter)
            imgs = np.stack(res.images).astype(np.float64) / 255  # (n, H, W, 3)
            rmse = np.sqrt(((imgs[:, None] - truth[None]) ** 2).mean(axis=(2, 3, 4)))  # (n, dense)
            nearest = rmse.min(axis=1)
            steps = np.sqrt(((imgs[1:] - imgs[:-1]) ** 2).mean(axis=(1, 2, 3)))  # (n - 1,)
            second = np.sqrt(((imgs[2:] - 2 * imgs[1:-1] + imgs[:-2]) ** 2).mean(axis=(1, 2, 3)))
            per[t_star, method].append({
                "seed": seed, "nearest_gt_rmse_interior": float(nearest[1:-1].mean()),
                "nearest_gt_rmse_max": float(nearest[1:-1].max()), "endpoint_rmse": float(nearest[[0, -1]].mean()),
                "own_frame_rmse": float(rmse[np.arange(n_points), own][1:-1].mean()),
                "nearest_frame": [int(k) for k in rmse.argmin(axis=1)],
                "step_rmse_cv": float(steps.std() / max(steps.mean(), 1e-12)),
                "second_diff_over_step": float(second.mean() / max(steps.mean(), 1e-12)),
                "energy_final": res.energy[-1], "energy_initial": res.energy[0], "length": res.length,
                "euclid_over_chord": res.euclidean_length / float((res.path[-1] - res.path[0]).norm()),
                "iterations": res.geodesic.iterations if res.geodesic else 0,
                "seconds": time.perf_counter() - t0})
            last = per[t_star, method][-1]
            print(f"  images seed={seed} t*={t_star} {method}: nearest-GT RMSE {last['nearest_gt_rmse_interior']:.4f}"
                  f" own {last['own_frame_rmse']:.4f} energy {last['energy_final']:.4g} smooth "
                  f"{last['second_diff_over_step']:.3f} {last['seconds']:.0f} s", flush=True)
    keys = ["nearest_gt_rmse_interior", "nearest_gt_rmse_max", "endpoint_rmse", "own_frame_rmse", "step_rmse_cv",
            "second_diff_over_step", "energy_final", "length", "euclid_over_chord", "iterations", "seconds"]
    return {"model": model_source, "weights_sha256_16": weights_sha, "split": split, "seeds": seeds,
            "skipped_static_seeds": degenerate, "n_points": n_points,
            "num_steps": num_steps, "t_stars": list(t_stars), "lam": LAM, "max_iter": max_iter,
            "dense_truth_frames": dense,
            "rows": [{"t_star": t, "method": m, **summarize(v, keys)} for (t, m), v in per.items()],
            "per_seed": {f"t{t}/{m}": v for (t, m), v in per.items()}}


# --------------------------------------------------------------------------------------------------------------------
# 5. image study (TUNING seeds only): why the geodesic loses to LERP on images, and what changes it
# --------------------------------------------------------------------------------------------------------------------
STUDY_VARIANTS: dict[str, dict] = {
    # name -> path and solver settings. lam_rel: lam = lam_rel / mean(|s(a)|^2, |s(b)|^2), so lam_rel is the weight
    # of the score term relative to the Euclidean one for a unit step along s (lam = 1000 is lam_rel ~ 1e6 at t*=400).
    "lerp": {"kind": "lerp"},
    "slerp": {"kind": "slerp"},
    "gt": {"kind": "gt"},  # the DDIM inversions of the ground-truth frames at the same parameters: the target path
    "geo lam=1000": {"kind": "geodesic", "lam": 1000.0},
    "geo lam=1000 slerp-init": {"kind": "geodesic", "lam": 1000.0, "init": "slerp"},
    "geo lam=1000 gt-init": {"kind": "geodesic", "lam": 1000.0, "init": "gt"},
    "geo lam_rel=1": {"kind": "geodesic", "lam_rel": 1.0},
    "geo lam_rel=100": {"kind": "geodesic", "lam_rel": 100.0},
    "geo lam_rel=1e4": {"kind": "geodesic", "lam_rel": 1e4},
    "geo lam=1000 iters=200": {"kind": "geodesic", "lam": 1000.0, "max_iter": 200},
    "geo lam=1000 n=17": {"kind": "geodesic", "lam": 1000.0, "n_points": 17},
    "lerp n=17": {"kind": "lerp", "n_points": 17},
    "geo lam=1000 n=33": {"kind": "geodesic", "lam": 1000.0, "n_points": 33},
    "geo lam=1000 simpson": {"kind": "geodesic", "lam": 1000.0, "rule": "simpson"},
    "geo lam=1000 simpson iters=200": {"kind": "geodesic", "lam": 1000.0, "rule": "simpson", "max_iter": 200},
    # two stages: the midpoint geodesic (max_iter), then Simpson's rule from it (max_iter more iterations)
    "geo lam=1000 midpoint->simpson": {"kind": "geodesic", "lam": 1000.0, "rule": "simpson", "init": "midpoint-geo"},
    "lerp n=33": {"kind": "lerp", "n_points": 33},
}


def _rmse_to_truth(imgs: np.ndarray, truth: np.ndarray) -> dict:
    """imgs (n, H, W, 3), truth (dense, H, W, 3), both in [0, 1] -> nearest-GT RMSE stats of the interior points."""
    rmse = np.sqrt(((imgs[:, None] - truth[None]) ** 2).mean(axis=(2, 3, 4)))  # (n, dense)
    nearest = rmse.min(axis=1)
    dense = truth.shape[0]
    # the frame the path *should* show at t_i = i / (n - 1): distance to that frame, not just the nearest one
    target = np.array([rmse[i, round(i * (dense - 1) / (len(imgs) - 1))] for i in range(len(imgs))])
    steps = np.sqrt(((imgs[1:] - imgs[:-1]) ** 2).mean(axis=(1, 2, 3)))
    return {"nearest_gt_rmse": float(nearest[1:-1].mean()), "nearest_gt_rmse_max": float(nearest[1:-1].max()),
            "own_frame_rmse": float(target[1:-1].mean()), "endpoint_rmse": float(nearest[[0, -1]].mean()),
            "argmin_frame": [int(k) for k in rmse.argmin(axis=1)], "step_rmse_cv": float(steps.std() / steps.mean())}


def _path_geometry(score, path: torch.Tensor, lam: float, score_jvp=None, sigma: float = 1.0) -> dict:
    """Where the path lies at t*: norms, score norms at points and midpoints, the score term's share of the energy,
    and (with ``score_jvp``) the normal fraction q_i = -sigma^2 d_i . H(m_i) d_i / |d_i|^2 of each step (H = D s, the
    log-density Hessian: q ~ 1 for a step off the data, ~ 0 along it)."""
    from pipeline.geodesic import segments

    with torch.no_grad():
        d, m = segments(path)
        s_pts = score(path)  # (n, *shape)
        if score_jvp is not None:
            s_mid, hd = score_jvp(m, d)  # (n - 1, *shape) each
        else:
            s_mid, hd = score(m), None
    flat = lambda z: z.flatten(1).double()  # noqa: E731
    sn_pts, sn_mid = flat(s_pts).norm(dim=1), flat(s_mid).norm(dim=1)
    c_mid = (flat(s_mid) * flat(d)).sum(1)  # s(m_i) . d_i
    c_end = 0.5 * ((flat(s_pts[:-1]) * flat(d)).sum(1) + (flat(s_pts[1:]) * flat(d)).sum(1))
    n = d.shape[0]
    dd = (flat(d) ** 2).sum(1)
    norms = flat(path).norm(dim=1)
    return {
        "norm_over_ends": [float(v) for v in norms / norms[[0, -1]].mean()],  # |x_i| / mean(|a|, |b|)
        "score_norm_pts": [float(v) for v in sn_pts],
        "score_norm_mid_over_pts": [float(v) for v in sn_mid / (0.5 * (sn_pts[:-1] + sn_pts[1:]))],
        "energy_mid": float(0.5 * n * (dd + lam * c_mid**2).sum()),
        # the same energy with s . d taken as the mean of the two end points' values instead of at the midpoint
        "energy_endpoints": float(0.5 * n * (dd + lam * c_end**2).sum()),
        "energy_euclid_part": float(0.5 * n * dd.sum()),
        "euclid_length": float(dd.sqrt().sum()),
        "chord": float(flat(path[-1:] - path[:1]).norm()),
        "cos_s_d_mid": [float(v) for v in c_mid / (sn_mid * dd.sqrt())],
        "normal_fraction": None if hd is None else [float(v) for v in -sigma**2 * (flat(hd) * flat(d)).sum(1) / dd],
        "segment_length": [float(v) for v in dd.sqrt()],
    }


def image_study(model_source: str, *, n_seeds: int, t_stars: tuple[int, ...], variants: list[str], n_points: int,
                num_steps: int, max_iter: int, out: Path, clip: bool = False) -> dict:
    """Explore the image geodesic on TUNING seeds (never the held-out ones): every variant of STUDY_VARIANTS on each
    seed and t*, with the path's geometry at t* and its decoded distance to the ground-truth frames. Writes
    ``geodesic_image_study.json`` after every case (so a long run can be inspected or cut short)."""
    from pipeline import ddim
    from pipeline.geodesic import geodesic_bvp, lerp, relative_lam, slerp
    from pipeline.images import image_to_tensor
    from pipeline.interpolate import decode_path, score_functions
    from pipeline.model import load_model
    from pipeline.scenes import scene_path, split_seeds

    model = load_model(model_source, device="cpu")
    dense = 4 * (n_points - 1) + 1
    seeds = []
    for seed in split_seeds("tuning", 200):
        fr = scene_path(seed, 2, size=model.image_size)
        if np.abs(fr[0].image.astype(int) - fr[1].image.astype(int)).mean() >= 1.0:
            seeds.append(seed)
        if len(seeds) == n_seeds:
            break
    out.mkdir(parents=True, exist_ok=True)
    path_json = out / "geodesic_image_study.json"
    res = json.loads(path_json.read_text()) if path_json.is_file() else {"cases": []}
    res.update({"model": model_source, "n_points": n_points, "num_steps": num_steps, "max_iter": max_iter,
                "dense_truth_frames": dense,
                "variants": {**res.get("variants", {}), **{k: STUDY_VARIANTS[k] for k in variants}}})
    for seed in seeds:
        frames = scene_path(seed, dense, size=model.image_size)
        truth = np.stack([f.image for f in frames]).astype(np.float64) / 255
        n_fine = max(v.get("n_points", n_points) for v in map(STUDY_VARIANTS.get, variants))  # GT path points
        idx = [round(i * (dense - 1) / (n_fine - 1)) for i in range(n_fine)]
        imgs = torch.cat([image_to_tensor(frames[k].image, model.image_size) for k in idx])
        for t_star in t_stars:
            t0 = time.perf_counter()
            x_fine = ddim.invert(model, model.encode(imgs), t_end=t_star, num_steps=num_steps)  # (n_fine, C, h, w)
            xa, xb = x_fine[0], x_fine[-1]
            score, score_jvp = score_functions(model, t_star)
            sigma = float(model.sigma(t_star)[0])
            s2 = 1.0 / relative_lam(score, xa, xb, 1.0)  # mean |s|^2 at the ends
            print(f"study seed={seed} t*={t_star}: inverted in {time.perf_counter() - t0:.0f} s, "
                  f"mean |s|^2 = {s2:.4g}", flush=True)
            for name in variants:
                if any(c["seed"] == seed and c["t_star"] == t_star and c["variant"] == name and
                       c.get("clip", False) == clip and c.get("num_steps", num_steps) == num_steps
                       for c in res["cases"]):
                    continue
                v = STUDY_VARIANTS[name]
                n_pts = v.get("n_points", n_points)
                if (n_fine - 1) % (n_pts - 1):
                    raise ValueError(f"variant {name!r}: n_points must divide into {n_fine - 1} segments")
                x_gt = x_fine[:: (n_fine - 1) // (n_pts - 1)]  # (n_pts, C, h, w)
                lam = v["lam"] if "lam" in v else (relative_lam(score, xa, xb, v["lam_rel"]) if "lam_rel" in v
                                                   else 1000.0)
                t0 = time.perf_counter()
                info = {}
                if v["kind"] == "lerp":
                    path = lerp(xa, xb, n_pts)
                elif v["kind"] == "slerp":
                    path = slerp(xa, xb, n_pts)
                elif v["kind"] == "gt":
                    path = x_gt
                else:
                    init = v.get("init", "linear")
                    if init == "gt":
                        kw = {"init_path": x_gt}
                    elif init == "midpoint-geo":
                        kw = {"init_path": geodesic_bvp(score, xa, xb, lam=lam, n_points=n_pts, gradient="autograd",
                                                        max_iter=max_iter).path}
                    else:
                        kw = {"init": init}
                    g = geodesic_bvp(score, xa, xb, lam=lam, n_points=n_pts, gradient="autograd",
                                     max_iter=v.get("max_iter", max_iter), rule=v.get("rule", "midpoint"), **kw)
                    path = g.path
                    info = {"iterations": g.iterations, "converged": g.converged, "reason": g.reason,
                            "energy_initial": g.energy[0], "energy_final": g.energy[-1]}
                t_path = time.perf_counter() - t0
                geom = _path_geometry(score, path, lam, score_jvp, sigma)
                geom_1000 = _path_geometry(score, path, 1000.0) if lam != 1000.0 else geom
                _, dec = decode_path(model, path, t_star=t_star, num_steps=num_steps, clip_x0=clip)
                dec = np.stack(dec).astype(np.float64) / 255
                case = {"seed": seed, "t_star": t_star, "variant": name, "clip": clip, "lam": lam, "s2_ends": s2,
                        "n_points": n_pts, "num_steps": num_steps,
                        **info, **_rmse_to_truth(dec, truth), "geometry": geom,
                        "energy_mid_lam1000": geom_1000["energy_mid"], "seconds_path": t_path,
                        "seconds": time.perf_counter() - t0,
                        "dist_to_gt_path": float((path - x_gt).flatten(1).norm(dim=1)[1:-1].mean())}
                res["cases"].append(case)
                if path_json.is_file():  # another study run may have written cases meanwhile: keep them
                    key = lambda c: (c["seed"], c["t_star"], c["variant"], c.get("clip", False),  # noqa: E731
                                     c.get("num_steps"))
                    mine = {key(c) for c in res["cases"]}
                    res["cases"] += [c for c in json.loads(path_json.read_text())["cases"] if key(c) not in mine]
                print(f"  {name:28s} lam={lam:.3g} nearestGT {case['nearest_gt_rmse']:.4f} "
                      f"own {case['own_frame_rmse']:.4f}"
                      f" E_mid {geom['energy_mid']:.4g} E_end {geom['energy_endpoints']:.4g} euclid "
                      f"{geom['euclid_length']:.2f}/{geom['chord']:.2f} |x|/ends min "
                      f"{min(geom['norm_over_ends']):.3f} |s(m)|/|s| min {min(geom['score_norm_mid_over_pts']):.3f}"
                      f" dGT {case['dist_to_gt_path']:.2f} frames {case['argmin_frame']} {case['seconds']:.0f}s",
                      flush=True)
                path_json.write_text(json.dumps(res, indent=1))
    return res


def _study_rows(res: dict) -> dict:
    """(t*, clip, variant) -> list of cases, over the seeds."""
    out: dict = {}
    for c in res["cases"]:
        out.setdefault((c["t_star"], c.get("clip", False), c["variant"]), []).append(c)
    return out


def _study_mean(cases: list[dict], fn) -> float | None:
    vals = [fn(c) for c in cases]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def study_markdown(res: dict, findings: str = "") -> str:
    rows = _study_rows(res)
    seeds = sorted({c["seed"] for c in res["cases"]})
    t_stars = sorted({c["t_star"] for c in res["cases"]}, reverse=True)
    order = list(STUDY_VARIANTS)
    L = ["# Image geodesics on moving-object scenes: what the score metric rewards, and why it does not move the "
         "object\n",
         f"Exploration on TUNING seeds {seeds} (`pipeline.scenes.scene_path`, the first tuning scenes whose object "
         "visibly moves; the held-out seeds are only used by benchmarks/results/geodesics.md). Model "
         f"`{res['model']}`, {res['n_points']} path points (unless the variant says n=...), {res['num_steps']} DDIM "
         f"steps for inversion and decoding, L-BFGS (autograd gradient) for at most {res['max_iter']} iterations "
         f"(unless iters=...), ground truth = {res['dense_truth_frames']} frames along the motion.\n",
         "Reproduce: " + "; ".join(f"`{c}`" for c in res.get("commands", [])) + "\n" if res.get("commands") else "",
         "Columns: nearest = mean over interior points of the pixel RMSE ([0, 1]) to the nearest ground-truth frame "
         "(the benchmark's figure); own = RMSE to the frame at the same parameter t_i; step CV = evenness of the "
         "decoded steps; E = discrete energy at the variant's lam, E@1000 = at lam = 1000; Euclid/chord = Euclidean "
         "length of the path at t* over |b - a|; norm min = smallest norm of x_i over the mean of the ends' "
         "(1 = norm-typical like "
         "the inverted ends); normal = mean over steps of q = -sigma^2 d.H d / |d|^2 (H = D s: ~1 for a step off "
         "the data, ~0 along it); dGT = mean distance of the interior points to the inverted ground-truth frames "
         "(at t*); lam_rel = lam mean(|s(a)|^2, |s(b)|^2) (`pipeline.geodesic.relative_lam`).\n"]
    for clip in (False, True):
        for t_star in t_stars:
            present = [v for v in order if (t_star, clip, v) in rows]
            if not present:
                continue
            L += [f"## t* = {t_star}{', decoded with x0 clipping' if clip else ''}\n",
                  "| variant | seeds | lam | lam_rel | nearest | own | step CV | E | E@1000 | Euclid/chord | norm min "
                  "| normal | dGT | iters | s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for v in present:
                cs = rows[t_star, clip, v]
                m = functools.partial(_study_mean, cs)
                nf = m(lambda c: None if c['geometry'].get("normal_fraction") is None else float(np.mean(
                    c["geometry"]["normal_fraction"])))
                L.append(f"| {v} | {len(cs)} | {_f(m(lambda c: c['lam']), '.3g')} "
                         f"| {_f(m(lambda c: c['lam'] * c['s2_ends']), '.3g')} "
                         f"| {_f(m(lambda c: c['nearest_gt_rmse']))} | {_f(m(lambda c: c['own_frame_rmse']))} "
                         f"| {_f(m(lambda c: c['step_rmse_cv']), '.2f')} "
                         f"| {_f(m(lambda c: c['geometry']['energy_mid']), '.3g')} "
                         f"| {_f(m(lambda c: c['energy_mid_lam1000']), '.3g')} "
                         f"| {_f(m(lambda c: c['geometry']['euclid_length'] / c['geometry']['chord']), '.2f')} "
                         f"| {_f(m(lambda c: min(c['geometry']['norm_over_ends'])), '.3f')} | {_f(nf, '.3f')} "
                         f"| {_f(m(lambda c: c['dist_to_gt_path']), '.1f')} "
                         f"| {_f(m(lambda c: c.get('iterations')), '.0f')} | {_f(m(lambda c: c['seconds']), '.0f')} |")
            L.append("")
    L += ["## Which ground-truth frame each decoded point is nearest to (a textual figure)\n",
          "Frame indices 0..32 along the motion; a path that moves the object in even steps reads 0, 4, 8, ..., 32 "
          "(n = 9). A cross-fade holds near the ends and jumps in the middle.\n",
          "| seed | t* | variant | nearest frames |", "|---|---|---|---|"]
    for t_star in t_stars:
        for v in order:
            for c in rows.get((t_star, False, v), []):
                L.append(f"| {c['seed']} | {t_star} | {v} | {' '.join(str(k) for k in c['argmin_frame'])} |")
    if res.get("note"):
        L += ["", f"Note: {res['note']}"]
    if findings:
        L += ["", findings]
    return "\n".join(L) + "\n"


def _pixel_ratio(seed: int, size: int, dense: int) -> float:
    """Euclidean length of the ground-truth frame path in pixel space over its chord (no model needed)."""
    from pipeline.scenes import scene_path

    f = np.stack([x.image for x in scene_path(seed, dense, size=size)]).astype(np.float64) / 255
    steps = np.sqrt(((f[1:] - f[:-1]) ** 2).sum(axis=(1, 2, 3)))
    return float(steps.sum() / np.sqrt(((f[-1] - f[0]) ** 2).sum()))


def study_findings(res: dict) -> str:
    """The study's conclusions, with every number read from the study JSON (nothing typed in by hand). Comparisons
    between variants use only the seeds that have all of them."""
    rows = _study_rows(res)
    seeds = sorted({c["seed"] for c in res["cases"]})
    t_stars = sorted({c["t_star"] for c in res["cases"]}, reverse=True)

    def common(t, variants, clip=False):
        sets = [{c["seed"] for c in rows.get((t, clip, v), [])} for v in variants]
        return set.intersection(*sets) if sets else set()

    def mean(t, v, fn, clip=False, on=None):
        cs = [c for c in rows.get((t, clip, v), []) if on is None or c["seed"] in on]
        return _study_mean(cs, fn) if cs else None

    def rng(vals, fmt=".2g"):
        vals = [x for x in vals if x is not None]
        return f"{min(vals):{fmt}}-{max(vals):{fmt}}" if vals else "-"

    eu = lambda c: c["geometry"]["euclid_length"] / c["geometry"]["chord"]  # noqa: E731
    e_mid = lambda c: c["geometry"]["energy_mid"]  # noqa: E731
    e_ratio = lambda c: c["geometry"]["energy_endpoints"] / c["geometry"]["energy_mid"]  # noqa: E731
    near = lambda c: c["nearest_gt_rmse"]  # noqa: E731

    def _pair_line(t, a, b, label):
        on = common(t, (a, b))
        return (f"{label} at t* = {t}: nearest-GT {_f(mean(t, a, near, on=on))} -> {_f(mean(t, b, near, on=on))}, "
                f"E {_f(mean(t, a, e_mid, on=on), '.4g')} -> {_f(mean(t, b, e_mid, on=on), '.4g')}.")
    ratios = [mean(t, "gt", eu) for t in t_stars]
    L = ["## Findings\n",
         "**1. The path that moves the object is long at t*, and G = I + lam s s^T >= I can only lengthen paths.** "
         "Euclidean length of the path through the inverted ground-truth frames over the chord |b - a| (mean over "
         "seeds): " + ", ".join(f"t* = {t}: {_f(r, '.2f')}" for t, r in zip(t_stars, ratios, strict=True) if r)
         + "; in pixel space (the 33 frames themselves): "
         + ", ".join(f"seed {sd}: {_pixel_ratio(sd, 32, res['dense_truth_frames']):.2f}" for sd in seeds)
         + ". DDIM inversion turns a small shift of the object into a large, noise-like change of x_t, so "
         "consecutive inverted frames are further apart than the two ends are from each other. Any "
         "discrete path has E = (N/2) sum (|d_i|^2 + lam (s.d_i)^2) >= (sum |d_i|)^2 / 2, so a path through the "
         "ground truth costs at least (its Euclidean length)^2 / 2 whatever lam is, while the chord-like paths cost "
         "about |b - a|^2 / 2 once the score term is driven to ~0 (same seeds per row):\n",
         "| t* | seeds | E geodesic (lerp init) | E geodesic started on the ground truth | (GT Euclid length)^2 / 2 "
         "| bound / E geodesic |", "|---|---|---|---|---|---|"]
    L_note = ("The solver started on the ground truth moves a little off the exact frames and shortens the path, so "
              "its "
              "energy can fall slightly below the bound computed for the exact frames; it stays far above the "
              "geodesic's.")
    for t in t_stars:
        on = common(t, ("geo lam=1000", "gt"))
        eg = mean(t, "geo lam=1000", e_mid, on=on)
        egt = mean(t, "geo lam=1000 gt-init", e_mid, on=on)
        bound = mean(t, "gt", lambda c: c["geometry"]["euclid_length"] ** 2 / 2, on=on)
        if eg and bound:
            L.append(f"| {t} | {len(on)} | {eg:.4g} | {_f(egt, '.4g')} | {bound:.4g} | {bound / eg:.1f} |")
    L += ["", L_note, "",
          "So no lam, t* or solver setting can make the object-moving path the minimiser: the metric penalises only "
          "the score direction, a cross-fade that keeps log p_t constant has s.d = 0, and it is "
          f"{rng(ratios, '.1f')} times shorter. Started *on* the ground-truth path the solver stays near it (dGT "
          "column: a local minimum whose score term it removes) and that path decodes well, so the gap is in the "
          "objective, not in the optimiser. Nearest-GT RMSE (mean over the seeds that have every column):\n",
          "| t* | seeds | lerp | slerp | geodesic | geodesic from GT | GT path (oracle) |",
          "|---|---|---|---|---|---|---|"]
    for t in t_stars:
        cols = ("lerp", "slerp", "geo lam=1000", "geo lam=1000 gt-init", "gt")
        on = common(t, [v for v in cols if (t, False, v) in rows])
        L.append(f"| {t} | {len(on)} | " + " | ".join(_f(mean(t, v, near, on=on)) for v in cols) + " |")
    lam_rel = [c["lam"] * c["s2_ends"] for c in res["cases"] if c["lam"] == 1000.0]
    dips = [1 - mean(t, "lerp", lambda c: min(c["geometry"]["norm_over_ends"])) for t in t_stars
            if mean(t, "lerp", near) is not None]
    gt_norm = [abs(1 - mean(t, "gt", lambda c: min(c["geometry"]["norm_over_ends"]))) for t in t_stars
               if mean(t, "gt", near) is not None]
    L += ["",
          f"**2. What the metric rewards.** s.d is the change of log p_t along a step; lam = 1000 is lam_rel = "
          f"lam mean|s|^2 = {rng(lam_rel)} here, so the geodesic is the shortest path on which log p_t stays "
          "constant: norm-typical like SLERP (norm min ~ 1, where LERP's middle is "
          f"{rng([100 * d for d in dips], '.0f')}% shorter), and at t* = 400 it often holds near a for half the path "
          "and then crosses to b in one or two steps (nearest frame <= 2 at points 1-4 on "
          f"{sum(max(c['argmin_frame'][1:5]) <= 2 for c in rows.get((400, False, 'geo lam=1000'), []))} of "
          f"{len(rows.get((400, False, 'geo lam=1000'), []))} seeds, against "
          f"{sum(max(c['argmin_frame'][1:5]) <= 2 for c in rows.get((400, False, 'lerp'), []))} of "
          f"{len(rows.get((400, False, 'lerp'), []))} for LERP; nearest-frame table). Pixel RMSE to the nearest "
          "frame rewards hedged, "
          "blended images: LERP's lower-norm middle decodes to a blend, the iso-density path to sharper but wrong "
          "images. Per seed (nearest-GT RMSE, LERP vs geodesic at lam = 1000; 'closer' = lower by more than 0.002):\n",
          "| t* | seed | lerp | slerp | geodesic | geodesic closer? | geodesic Euclid/chord | geodesic E_end/E_mid |",
          "|---|---|---|---|---|---|---|---|"]
    for t in t_stars:
        on = sorted(common(t, ("lerp", "geo lam=1000")))
        wins = losses = 0
        for sd in on:
            vl, vg = mean(t, "lerp", near, on={sd}), mean(t, "geo lam=1000", near, on={sd})
            verdict = "yes" if vg < vl - 0.002 else ("no (farther)" if vg > vl + 0.002 else "tie")
            wins, losses = wins + (verdict == "yes"), losses + verdict.startswith("no")
            L.append(f"| {t} | {sd} | {_f(vl)} | {_f(mean(t, 'slerp', near, on={sd}))} | {_f(vg)} | {verdict} "
                     f"| {_f(mean(t, 'geo lam=1000', eu, on={sd}), '.2f')} "
                     f"| {_f(mean(t, 'geo lam=1000', e_ratio, on={sd}), '.3g')} |")
        if on:
            L.append(f"| {t} | all {len(on)} | {_f(mean(t, 'lerp', near, on=set(on)))} "
                     f"| {_f(mean(t, 'slerp', near, on=set(on)))} | {_f(mean(t, 'geo lam=1000', near, on=set(on)))} "
                     f"| closer on {wins}, farther on {losses} | | |")
    L.append("")
    on400 = common(400, ("geo lam=1000", "geo lam_rel=1", "geo lam_rel=100", "geo lam_rel=1e4"))
    sweep = ", ".join(f"{v.replace('geo ', '')}: {_f(mean(400, v, near, on=on400))}" for v in
                      ("geo lam_rel=1", "geo lam_rel=100", "geo lam_rel=1e4", "geo lam=1000"))
    iters = [c.get("iterations") for c in res["cases"] if c["variant"] == "geo lam=1000"]
    L += ["**3. Settings tried** (tables above). lam relative to the score (t* = 400, nearest-GT RMSE, seeds "
          f"{sorted(on400)}): " + sweep + f"; LERP on the same seeds: {_f(mean(400, 'lerp', near, on=on400))}. The "
          "smaller lam_rel, the nearer the path and its images are to LERP's (lam_rel = 1 is LERP up to a slight "
          "lift of its middle). "
          f"L-BFGS used {rng(iters, '.0f')} iterations at lam = 1000 (max_iter {res['max_iter']} unless the variant "
          "says otherwise). "
          + " ".join(_pair_line(t, a, b, label) for t in t_stars for a, b, label in (
              ("geo lam=1000", "geo lam=1000 iters=200", "max_iter 200 instead of 50"),
              ("geo lam=1000", "geo lam=1000 slerp-init", "SLERP instead of linear initialisation"),
              ("geo lam=1000", "geo lam=1000 n=17", "17 points instead of 9"),
              ("lerp", "lerp n=17", "(LERP, 17 points instead of 9)")) if common(t, (a, b)))
          + " Energy discretisation (E_end = the energy with s.d taken at the points "
          "instead of the segment midpoints): for the geodesic, E_end / E_mid = "
          + ", ".join(f"t* = {t}: {_f(mean(t, 'geo lam=1000', e_ratio), '.3g')}"
                      for t in t_stars if mean(t, 'geo lam=1000', near) is not None)
          + ": at low t* the segments are much longer than sigma and a straight segment between two points of "
          "equal log p has s.d ~ 0 at its midpoint however deep log p dips in between."]
    for t in t_stars:
        on = common(t, ("geo lam=1000 n=33", "lerp n=33"))
        if on:
            L[-1] += (f" Resolving it with 33 points at t* = {t}: geodesic "
                      f"{_f(mean(t, 'geo lam=1000 n=33', near, on=on))}"
                      f" vs LERP {_f(mean(t, 'lerp n=33', near, on=on))} (E_end / E_mid "
                      f"{_f(mean(t, 'geo lam=1000 n=33', e_ratio, on=on), '.3g')}).")
    for t in t_stars:
        on = common(t, ("lerp", "geo lam=1000")) & common(t, ("lerp", "geo lam=1000"), clip=True)
        if on:
            L[-1] += (f" Decoding with x0 clipping at t* = {t}: LERP {_f(mean(t, 'lerp', near, on=on))} -> "
                      f"{_f(mean(t, 'lerp', near, clip=True, on=on))}, geodesic "
                      f"{_f(mean(t, 'geo lam=1000', near, on=on))}"
                      f" -> {_f(mean(t, 'geo lam=1000', near, clip=True, on=on))}.")
    simpson = [c for t in t_stars for v in STUDY_VARIANTS if "simpson" in v for c in rows.get((t, False, v), [])]
    if simpson:
        L[-1] += (" Simpson's rule as the solver's energy (`rule=\"simpson\"`; variant, seed, t*: nearest-GT with "
                  "Simpson vs with the midpoint rule vs LERP, Simpson energy start -> end, iterations): ")
        L[-1] += "; ".join(
            f"{c['variant']}, {c['seed']}, {c['t_star']}: {c['nearest_gt_rmse']:.4f} vs "
            f"{_f(mean(c['t_star'], 'geo lam=1000', near, on={c['seed']}))} vs "
            f"{_f(mean(c['t_star'], 'lerp', near, on={c['seed']}))}, {c['energy_initial']:.3g} -> "
            f"{c['energy_final']:.3g}, {c['iterations']} ({'converged' if c['converged'] else 'not converged'})"
            for c in simpson) + "."
        better = sum(c["nearest_gt_rmse"] < (mean(c["t_star"], "geo lam=1000", near, on={c["seed"]}) or 0)
                     for c in simpson)
        L[-1] += (f" Simpson decoded closer than the midpoint rule in {better} of {len(simpson)} runs and converged in "
                  f"{sum(bool(c['converged']) for c in simpson)}: weighing the points too makes the energy much "
                  "stiffer (every point's score must also be orthogonal to both neighbouring steps), so it is not a "
                  "fix at these budgets, and it stays an option, not the default.")
    geo_all = [c for t in t_stars for c in rows.get((t, False, "geo lam=1000"), [])]
    if geo_all:
        w = max(geo_all, key=near)
        others = [e_ratio(c) for c in geo_all if c is not w and c["t_star"] == w["t_star"]]
        L[-1] += (f"\n\nThe worst geodesic decode (seed {w['seed']}, t* = {w['t_star']}, nearest-GT "
                  f"{near(w):.4f}) has E_end/E_mid = {e_ratio(w):.3g} (median of the other seeds at that t*: "
                  f"{_f(float(np.median(others)) if others else None, '.3g')}) and a Euclidean length of {eu(w):.2f} "
                  "chords: the solver bought its low midpoint energy with a longer, zig-zagging path whose points (not "
                  "midpoints) decode to images far from every ground-truth frame. The midpoint energy "
                  "(docs/maths.md 5.2) cannot see this. (At t* <= 200 the geodesic's E_end/E_mid is large too, "
                  "while its path stays within a few % of the chord's length and decodes like LERP's: the solver "
                  "cancels s.d at the midpoints with small moves. A large ratio flags a bad decode only together "
                  "with a long path.)\n")
    q = {v: [mean(t, v, lambda c: float(np.mean(c["geometry"]["normal_fraction"]))
                  if c["geometry"].get("normal_fraction") else None) for t in t_stars] for v in ("gt", "lerp")}
    L += [f"**4. The inverted frames are norm-typical:** every inverted ground-truth frame has |x| within "
          f"{_f(100 * max(gt_norm) if gt_norm else None, '.1f')}% of the ends' (norm min of the gt rows), so "
          "SLERP-like curves are the norm-preserving family.\n",
          "**5. What would change it.** A metric under which the moving path is *shorter* than a cross-fade, which a "
          "rank-one stretch of the score direction cannot give: the cross-fade would have to cost "
          f"(GT length / chord)^2 = {rng([r * r for r in ratios if r], '.0f')} times its Euclidean energy. A full-rank "
          "normal penalty G = I + lam (-sigma^2 H) (H = D s) would not do it on this model either: the normal "
          "fraction q of the ground-truth steps (" + ", ".join(f"{_f(x, '.2f')}" for x in q["gt"]) + " at t* = "
          + ", ".join(str(t) for t in t_stars) + ") is higher than LERP's (" + ", ".join(f"{_f(x, '.2f')}" for x in
                                                                                  q["lerp"])
          + "), since the posterior at a blend is split between a and b, which flattens log p_t along the blend. "
          "Untested candidates: a conformal factor that penalises unrealistic decoded images (e.g. the denoising "
          "residual of the decoded point at a small t), or measuring the path through the x0-prediction rather than "
          "in x_t, so that the inversion's roughness does not enter."]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------------
def _f(x, fmt=".4f"):
    return "-" if x is None else format(x, fmt)


def _md_spheres(res: dict) -> list[str]:
    """Section 1 of geodesics.md: spheres."""
    L = ["## 1. Spheres: deviation from the great circle\n",
         "radial = max |r/R - 1| over the path; ridge = max |r/r* - 1| over interior points, r* the radius where the "
         "smoothed density peaks (score = 0); out-of-plane = max distance from the plane of the great circle / R; "
         "L/arc = metric length over the true arc length; spacing = max/min segment length.\n",
         "| D | sigma | r* | solver | conv | radial (max) | ridge (max) | out-of-plane | L/arc (mean, [min, max]) "
         "| spacing (max) | iters | energy evals | score pts | JVP pts | VJP pts | seconds |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["spheres"]:
        L.append(f"| {r['D']} | {r['sigma']} | {r['ridge_radius']:.4f} | {r['solver']} | {r['converged']}/{r['pairs']} "
                 f"| {r['radial_dev']['max']:.4f} | {r['ridge_dev']['max']:.4f} | {r['out_of_plane']['max']:.1e} "
                 f"| {r['length_over_arc']['mean']:.4f} [{r['length_over_arc']['min']:.4f}, "
                 f"{r['length_over_arc']['max']:.4f}] | {r['spacing_max_over_min']['max']:.3f} "
                 f"| {r['iterations']['mean']:.0f} | {r['energy_evals']['mean']:.0f} "
                 f"| {r['score_points']['mean']:.0f} | {r['jvp_points']['mean']:.0f} | {r['vjp_points']['mean']:.0f} "
                 f"| {r['seconds']['mean']:.2f} |")
    return L


def _md_peers(res: dict) -> list[str]:
    """Section 2: peer solvers on the same energy."""
    L = ["\n## 2. Peers on the same energy\n",
         "energy / ours: final discrete energy over our L-BFGS's on the same pair (mean, max). scipy's L-BFGS-B "
         "itself costs ~0.08 s of CPU per iteration at 43,008 variables on this machine (R^3072; measured on a "
         "separable quadratic), which dominates its time there.\n",
         "| D | solver | conv | energy / ours (mean) | (max) | radial (max) | L/arc (mean) | energy evals | seconds |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in res["peers"]:
        if "error" in r:
            L.append(f"| {r['D']} | {r['solver']} | - | could not run: {r['error']} | | | | | |")
            continue
        L.append(f"| {r['D']} | {r['solver']} | {r['converged']}/{r['pairs']} | {r['energy_over_ours']['mean']:.4f} "
                 f"| {r['energy_over_ours']['max']:.4f} | {r['radial_dev']['max']:.4f} "
                 f"| {r['length_over_arc']['mean']:.4f} | {r['energy_evals']['mean']:.0f} "
                 f"| {r['seconds']['mean']:.2f} |")
    return L


def _md_shooting(res: dict) -> list[str]:
    """Section 3: shooting and extrapolation."""
    sh = res["shooting"]
    L = ["\n## 3. Shooting\n",
         f"From a with v0 = the great circle's velocity towards b (angle x R; t = 1 is b on the exact circle), "
         f"{sh['n_points'] - 1} recorded RK4 steps with the given substeps; drift = max over the path of "
         "abs(speed / speed_0 - 1); radial / out-of-plane: distance of the shot path from the great circle; "
         "end error = dist(x(1), b) / dist(a, b).\n",
         "| substeps | diverged | speed drift (max) | radial (max) | out-of-plane (max) | end error (max) | seconds |",
         "|---|---|---|---|---|---|---|"]
    for r in sh["conservation"]:
        if "speed_drift" not in r:
            L.append(f"| {r['substeps']} | {r['diverged']}/{r['runs']} | - | - | - | - | - |")
            continue
        L.append(f"| {r['substeps']} | {r['diverged']}/{r['runs']} | {r['speed_drift']['max']:.2e} "
                 f"| {r['radial_dev']['max']:.2e} | {r['out_of_plane']['max']:.1e} "
                 f"| {r['end_error_over_chord']['max']:.2e} | {r['seconds']['mean']:.2f} |")
    ag = sh["agreement"]
    L += [f"\nBVP ({sh['n_points']} points) from a to the end point of the 4-substep shot: max distance between the "
          f"two paths / chord = {ag['max_dev_over_chord']['mean']:.4f} (mean), {ag['max_dev_over_chord']['max']:.4f} "
          f"(max); shot length / BVP length = {ag['shot_length_over_bvp_length']['mean']:.4f} (mean); the BVP's own "
          f"radial deviation {ag['bvp_radial_dev']['max']:.4f} (max).\n"]
    L += ["\nExtrapolation past b by half the a->b length (velocity at b: discrete Legendre transform vs one-sided "
          "difference):\n", "| velocity | radial (max) | out-of-plane (max) | extra length / (L/2) (mean) "
          "| speed drift (max) |", "|---|---|---|---|---|"]
    for vel, r in sh["extrapolation"].items():
        L.append(f"| {vel} | {r['radial_dev']['max']:.4f} | {r['out_of_plane']['max']:.1e} "
                 f"| {r['extra_length_over_half_L']['mean']:.4f} | {r['speed_drift']['max']:.1e} |")
    return L


def _md_images(res: dict) -> list[str]:
    """Section 4: images (moving-object scenes)."""
    im = res["images"]
    L = ["\n## 4. Images (moving-object scenes)\n"]
    if "skipped" in im:
        L.append(im["skipped"])
    else:
        L += [f"Model `{im['model']}` (weights sha256 {im.get('weights_sha256_16', '?')}), "
              f"{im.get('split', 'heldout').replace('heldout', 'held-out')} seeds "
              f"{im['seeds']} (skipped as static: "
              f"{im.get('skipped_static_seeds', [])}), {im['n_points']} points, lam = {im['lam']:g}, "
              f"{im['num_steps']} DDIM steps, geodesic max_iter {im['max_iter']}. Nearest-GT RMSE: pixel RMSE "
              "in [0, 1] "
              f"of each interior decoded image to the nearest of {im['dense_truth_frames']} ground-truth frames; "
              "endpoint RMSE = the DDIM round-trip floor; step CV = std/mean of consecutive image distances "
              "(evenness); "
              "2nd diff / step = mean rms(I_{i+1} - 2 I_i + I_{i-1}) over mean rms step (smoothness, lower is "
              "smoother); own-frame RMSE = RMSE to the frame at the same parameter t_i (a path that moves the object "
              f"in step scores low, a cross-fade does not); energy = discrete score-metric energy at lam = "
              f"{im['lam']:g}; Euclid / chord = Euclidean path length over |b - a| at t*. `{GT_PATH}` is an oracle, "
              "not "
              "a method: the ground-truth frames themselves inverted to t* and decoded, i.e. the path the geodesic "
              "should find. Its energy is far above the geodesic's (its Euclidean length alone is several chords, "
              "and G = I + lam s s^T >= I never makes a path shorter than Euclidean), so no lam makes it the "
              "minimiser; see benchmarks/results/geodesic_image_study.md. Realism (SFD, KID, denoising error) and "
              "step smoothness of the same comparison, for every metric in pipeline.geodesic.METRICS and on "
              "rotated digits too: benchmarks/results/geodesic_metrics.md (benchmarks/geodesic_metrics.py)."
              + ("" if im["model"] == "default" else " Not the embedded default model: the weights "
                 "given by --model.") + "\n",
              "| t* | method | nearest-GT RMSE (mean) | (worst) | own-frame RMSE | endpoint RMSE | step CV "
              "| 2nd diff / step | energy | score-metric length | Euclid / chord | iterations | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        g = lambda r, k, fmt: _f(r[k]["mean"], fmt) if k in r else "-"  # noqa: E731  (older JSON lacks some keys)
        for r in im["rows"]:
            L.append(f"| {r['t_star']} | {r['method']} | {r['nearest_gt_rmse_interior']['mean']:.4f} "
                     f"| {r['nearest_gt_rmse_max']['max']:.4f} | {g(r, 'own_frame_rmse', '.4f')} "
                     f"| {r['endpoint_rmse']['mean']:.4f} | {r['step_rmse_cv']['mean']:.3f} "
                     f"| {r['second_diff_over_step']['mean']:.3f} | {g(r, 'energy_final', '.4g')} "
                     f"| {r['length']['mean']:.4g} | {g(r, 'euclid_over_chord', '.2f')} "
                     f"| {r['iterations']['mean']:.0f} | {r['seconds']['mean']:.1f} |")
    return L


def markdown(res: dict) -> str:
    by_cmd: dict[str, list[str]] = {}
    for part, c in sorted(res.get("commands", {}).items()):
        by_cmd.setdefault(c, []).append(part)
    L = ["# Geodesic benchmark\n", "Reproduce (parts written by separate runs are merged into one JSON):\n",
         *[f"- {', '.join(parts)}: `{c}`" for c, parts in by_cmd.items()], "",
         f"Machine: {res['machine']}. lam = {LAM:g}, {N_POINTS} path points, linear initialisation; S^2 of radius 1 "
         "embedded in R^D by a random orthogonal map; noise-smoothed score in closed form. Wall times on a shared, "
         "loaded CPU: compare evaluations rather than seconds.\n"]
    sections = {"spheres": _md_spheres, "peers": _md_peers, "shooting": _md_shooting, "images": _md_images}
    for part, section in sections.items():
        if part in res:  # a run of some parts into an empty folder has only those
            L += section(res)
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer pairs, seeds and iterations (a smoke run)")
    p.add_argument("--model", default="default", help="model for the image part: 'default' or a pipeline folder")
    p.add_argument("--skip-images", action="store_true", help="skip the image part")
    p.add_argument("--only", default=None, help="comma-separated subset of spheres,peers,shooting,images")
    p.add_argument("--image-seeds", type=int, default=4, help="held-out scene seeds for the image part")
    p.add_argument("--t-stars", default="200,400", help="noise levels t* of the image part (comma-separated)")
    p.add_argument("--image-split", default="heldout", choices=("heldout", "tuning"),
                   help="scene split of the image part (tuning: smoke runs only; reported figures use heldout)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--report-only", action="store_true", help="only rewrite geodesics.md from geodesics.json")
    p.add_argument("--study", default=None, metavar="VARIANTS",
                   help="run the image study on TUNING seeds instead: comma-separated names of STUDY_VARIANTS "
                   "(or 'all'); writes geodesic_image_study.json")
    p.add_argument("--study-steps", type=int, default=50, help="DDIM steps of the study")
    p.add_argument("--study-max-iter", type=int, default=50, help="geodesic iterations of the study")
    p.add_argument("--clip-x0", action="store_true", help="study: decode with x0 clipping")
    p.add_argument("--study-report", action="store_true",
                   help="only rewrite geodesic_image_study.md from geodesic_image_study.json")
    args = p.parse_args(argv)
    study_json, study_md = Path(args.out) / "geodesic_image_study.json", Path(args.out) / "geodesic_image_study.md"
    if args.study:
        torch.set_num_threads(args.threads)
        names = list(STUDY_VARIANTS) if args.study == "all" else args.study.split(",")
        bad = [n for n in names if n not in STUDY_VARIANTS]
        if bad:
            p.error(f"unknown study variants {bad}; known: {', '.join(STUDY_VARIANTS)}")
        image_study(args.model, n_seeds=args.image_seeds, t_stars=tuple(int(t) for t in args.t_stars.split(",")),
                    variants=names, n_points=9, num_steps=args.study_steps, max_iter=args.study_max_iter,
                    out=Path(args.out), clip=args.clip_x0)
        res = json.loads(study_json.read_text())
        cmd = "python benchmarks/geodesics.py " + " ".join(
            f"'{a}'" if " " in a else a for a in (argv if argv is not None else sys.argv[1:]))
        res["commands"] = [*[c for c in res.get("commands", []) if c != cmd], cmd]
        study_json.write_text(json.dumps(res, indent=1))
        args.study_report = True
    if args.study_report:
        res = json.loads(study_json.read_text())
        study_md.write_text(study_markdown(res, study_findings(res)))
        print(f"wrote {study_md}")
        return 0
    if args.report_only:
        res = json.loads((Path(args.out) / "geodesics.json").read_text())
        (Path(args.out) / "geodesics.md").write_text(markdown(res))
        return 0
    torch.set_num_threads(args.threads)
    parts = set(args.only.split(",")) if args.only else {"spheres", "peers", "shooting", "images"}
    if args.skip_images:
        parts.discard("images")
    cmd = "python benchmarks/geodesics.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    n_pairs = 2 if args.quick else 5
    out_json = Path(args.out) / "geodesics.json"
    previous = json.loads(out_json.read_text()) if out_json.is_file() else {}
    res = {"command": cmd, "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
           f"{args.threads} thread(s)", "lam": LAM, "n_points": N_POINTS}
    t0 = time.perf_counter()
    if "spheres" in parts:
        print("spheres:", flush=True)
        solvers = SOLVERS if not args.quick else {k: SOLVERS[k] for k in MAIN_SOLVERS}
        res["spheres"] = bench_spheres((3, 64, 3072), (0.1, 0.05), n_pairs, solvers)
    if "peers" in parts:
        print("peers:", flush=True)
        res["peers"] = bench_peers((3, 64, 3072), 0.1, n_pairs, 200 if args.quick else 1000)
    if "shooting" in parts:
        print("shooting:", flush=True)
        res["shooting"] = bench_shooting((3, 64), 0.1, n_pairs)
    if "images" in parts:
        print("images:", flush=True)
        res["images"] = bench_images(args.model, 1 if args.quick else args.image_seeds, n_points=9,
                                     num_steps=20 if args.quick else 50, max_iter=10 if args.quick else 50,
                                     t_stars=tuple(int(t) for t in args.t_stars.split(",")),
                                     split=args.image_split)
    res["commands"] = {**previous.get("commands", {}), **{k: cmd for k in parts}}
    for key in ("spheres", "peers", "shooting", "images"):  # keep parts not rerun this time
        if key not in res and key in previous:
            res[key] = previous[key]
    res.setdefault("images", {"skipped": "not run (--skip-images)"})
    res["seconds_total"] = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=1))
    (Path(args.out) / "geodesics.md").write_text(markdown(res))
    print(f"wrote {out_json} and geodesics.md in {res['seconds_total']:.0f} s\nreproduce: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
