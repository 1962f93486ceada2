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
   LERP and SLERP; distance of each decoded interpolant to the nearest ground-truth frame of a dense path, and path
   smoothness.

Wall times come from whatever machine runs it (the committed numbers: a shared 2-core CPU, see ``machine`` in the JSON).

Usage:  python benchmarks/geodesics.py [--quick] [--model default|PATH] [--skip-images] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
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
def bench_images(model_source: str, n_seeds: int, n_points: int, num_steps: int, max_iter: int,
                 t_stars: tuple[int, ...] = (400,)) -> dict:
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
    for seed in split_seeds("heldout", 200):  # the first held-out scenes whose object visibly moves
        frames = scene_path(seed, 2, size=model.image_size)
        if np.abs(frames[0].image.astype(int) - frames[1].image.astype(int)).mean() < 1.0:
            degenerate.append(seed)  # e.g. a rotating ring: all frames identical
            continue
        seeds.append(seed)
        if len(seeds) == n_seeds:
            break
    per = {(t, m): [] for t in t_stars for m in ("geodesic", "lerp", "slerp")}
    for seed in seeds:
        frames = scene_path(seed, dense, size=model.image_size)
        truth = np.stack([f.image for f in frames]).astype(np.float64) / 255  # (dense, H, W, 3)
        a, b = frames[0].image, frames[-1].image
        for t_star, method in per:
            t0 = time.perf_counter()
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
                "step_rmse_cv": float(steps.std() / max(steps.mean(), 1e-12)),
                "second_diff_over_step": float(second.mean() / max(steps.mean(), 1e-12)),
                "energy_final": res.energy[-1], "energy_initial": res.energy[0], "length": res.length,
                "iterations": res.geodesic.iterations if res.geodesic else 0,
                "seconds": time.perf_counter() - t0})
            last = per[t_star, method][-1]
            print(f"  images seed={seed} t*={t_star} {method}: nearest-GT RMSE {last['nearest_gt_rmse_interior']:.4f}"
                  f" smooth {last['second_diff_over_step']:.3f}", flush=True)
    keys = ["nearest_gt_rmse_interior", "nearest_gt_rmse_max", "endpoint_rmse", "step_rmse_cv",
            "second_diff_over_step", "energy_final", "length", "iterations", "seconds"]
    return {"model": model_source, "weights_sha256_16": weights_sha, "seeds": seeds,
            "skipped_static_seeds": degenerate, "n_points": n_points,
            "num_steps": num_steps, "t_stars": list(t_stars), "lam": LAM, "max_iter": max_iter,
            "dense_truth_frames": dense,
            "rows": [{"t_star": t, "method": m, **summarize(v, keys)} for (t, m), v in per.items()],
            "per_seed": {f"t{t}/{m}": v for (t, m), v in per.items()}}


# --------------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------------
def _f(x, fmt=".4f"):
    return "-" if x is None else format(x, fmt)


def markdown(res: dict) -> str:
    by_cmd: dict[str, list[str]] = {}
    for part, c in sorted(res.get("commands", {}).items()):
        by_cmd.setdefault(c, []).append(part)
    L = ["# Geodesic benchmark\n", "Reproduce (parts written by separate runs are merged into one JSON):\n",
         *[f"- {', '.join(parts)}: `{c}`" for c, parts in by_cmd.items()], "",
         f"Machine: {res['machine']}. lam = {LAM:g}, {N_POINTS} path points, linear initialisation; S^2 of radius 1 "
         "embedded in R^D by a random orthogonal map; noise-smoothed score in closed form. Wall times on a shared, "
         "loaded CPU: compare evaluations rather than seconds.\n",
         "## 1. Spheres: deviation from the great circle\n",
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
    L += ["\n## 2. Peers on the same energy\n",
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
    sh = res["shooting"]
    L += ["\n## 3. Shooting\n",
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
    im = res["images"]
    L.append("\n## 4. Images (moving-object scenes)\n")
    if "skipped" in im:
        L.append(im["skipped"])
    else:
        L += [f"Model `{im['model']}` (weights sha256 {im.get('weights_sha256_16', '?')}), held-out seeds "
              f"{im['seeds']} (skipped as static: "
              f"{im.get('skipped_static_seeds', [])}), {im['n_points']} points, lam = {im['lam']:g}, "
              f"{im['num_steps']} DDIM steps, geodesic max_iter {im['max_iter']}. Nearest-GT RMSE: pixel RMSE "
              "in [0, 1] "
              f"of each interior decoded image to the nearest of {im['dense_truth_frames']} ground-truth frames; "
              "endpoint RMSE = the DDIM round-trip floor; step CV = std/mean of consecutive image distances "
              "(evenness); "
              "2nd diff / step = mean rms(I_{i+1} - 2 I_i + I_{i-1}) over mean rms step (smoothness, lower is "
              "smoother)."
              + ("" if im["model"] == "default" else " Not the embedded default model: an intermediate checkpoint "
                 "given by --model; rerun with the default weights once they exist.") + "\n",
              "| t* | method | nearest-GT RMSE (mean) | (worst) | endpoint RMSE | step CV | 2nd diff / step "
              "| score-metric length | iterations | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in im["rows"]:
            L.append(f"| {r['t_star']} | {r['method']} | {r['nearest_gt_rmse_interior']['mean']:.4f} "
                     f"| {r['nearest_gt_rmse_max']['max']:.4f} "
                     f"| {r['endpoint_rmse']['mean']:.4f} | {r['step_rmse_cv']['mean']:.3f} "
                     f"| {r['second_diff_over_step']['mean']:.3f} | {r['length']['mean']:.4g} "
                     f"| {r['iterations']['mean']:.0f} | {r['seconds']['mean']:.1f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer pairs, seeds and iterations (a smoke run)")
    p.add_argument("--model", default="default", help="model for the image part: 'default' or a pipeline folder")
    p.add_argument("--skip-images", action="store_true", help="skip the image part")
    p.add_argument("--only", default=None, help="comma-separated subset of spheres,peers,shooting,images")
    p.add_argument("--image-seeds", type=int, default=4, help="held-out scene seeds for the image part")
    p.add_argument("--t-stars", default="200,400", help="noise levels t* of the image part (comma-separated)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--report-only", action="store_true", help="only rewrite geodesics.md from geodesics.json")
    args = p.parse_args(argv)
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
                                     t_stars=tuple(int(t) for t in args.t_stars.split(",")))
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
