"""``python -m pipeline geodesic``: interpolate two images along a score-metric geodesic (and LERP / SLERP).

Writes ``OUT/strip.png`` (rows: geodesic, lerp, slerp; small images enlarged with nearest neighbours),
``OUT/geodesic.gif`` (the geodesic, played forth and back), ``OUT/extrapolation.png`` when ``--extrapolate`` is given,
and ``OUT/summary.json`` (energies, lengths, solver diagnostics, timings).
"""

from __future__ import annotations

import argparse
import json
import os


def add_parser(sub) -> None:
    from ..ddim import INVERT_METHODS
    from ..geodesic import DEFAULT_METRIC, METRIC_LAMS, METRICS

    p = sub.add_parser(
        "geodesic", help="interpolate two images along a score-metric geodesic (with LERP/SLERP baselines)",
        description="Invert two images by DDIM to noise level t*, join them by the geodesic of a metric built from "
        "the model's score s at t* (--metric score: G = I + lam s s^T, the paper's; --metric denoiser: "
        "G = I + lam (I - J_D)^2, J_D the Jacobian of the Tweedie denoiser) and by LERP and SLERP, and generate "
        "every point back. "
        "Writes OUT/strip.png, OUT/geodesic.gif, OUT/summary.json (and OUT/extrapolation.png with --extrapolate).",
    )
    p.add_argument("--a", required=True, help="first image file")
    p.add_argument("--b", required=True, help="second image file")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--n", type=int, default=9, help="path points including both ends (default: 9)")
    p.add_argument("--model", default="default",
                   help="'default' (embedded model), a local diffusers folder, or a hub id (default: default)")
    p.add_argument("--t-star", type=int, default=400, help="noise level of the path, in train timesteps (default: 400)")
    p.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS,
                   help=f"the geodesic's metric (default: {DEFAULT_METRIC}); extrapolation needs 'score'")
    p.add_argument("--lam", type=float, default=None,
                   help="metric weight lambda (default: " + ", ".join(f"{v:g} for {k}" for k, v in METRIC_LAMS.items())
                   + ")")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps between 0 and t* (default: 50)")
    p.add_argument("--max-iter", type=int, default=100, help="geodesic solver iterations (default: 100)")
    p.add_argument("--optimizer", default="lbfgs", choices=("lbfgs", "torch-lbfgs", "adam"),
                   help="geodesic solver (default: lbfgs)")
    p.add_argument("--gradient", default="auto", choices=("auto", "jvp", "autograd"),
                   help="energy gradient: exact autograd, or assembled from score JVPs (default: auto = autograd "
                   "for the PyTorch model)")
    p.add_argument("--rule", default="midpoint", choices=("midpoint", "simpson"),
                   help="quadrature of the score term per segment: midpoint (docs/maths.md section 5.2) or simpson "
                   "(also the path points; needs the autograd gradient) (default: midpoint)")
    p.add_argument("--methods", default="geodesic,lerp,slerp",
                   help="comma-separated rows of the strip, from geodesic, lerp, slerp (default: all three)")
    p.add_argument("--extrapolate", type=float, default=None, metavar="BEYOND",
                   help="also continue the geodesic past b by BEYOND times the a->b length (e.g. 0.5)")
    p.add_argument("--cell", type=int, default=96, help="strip cell size in pixels (nearest upscaling; default: 96)")
    p.add_argument("--clip-x0", action="store_true",
                   help="clamp each DDIM generation step's x_0 prediction to [-1, 1] (default: off, so the ends are "
                   "exact DDIM round trips)")
    p.add_argument("--inversion", default="corrected", choices=INVERT_METHODS,
                   help="DDIM inversion of the two images: corrected (predict-evaluate-correct) or explicit (plain "
                   "DDIM) (default: corrected)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time
    from dataclasses import asdict

    from .. import viz
    from ..errors import InputError
    from ..geodesic import METRIC_LAMS, check_shoot_metric
    from ..images import load_image
    from ..interpolate import METHODS, extrapolate_images, interpolate_images
    from ..model import load_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InputError(f"--methods takes a comma-separated subset of {', '.join(METHODS)}; got {args.methods!r}")
    if args.extrapolate is not None:
        check_shoot_metric(args.metric)  # before any work: extrapolation shoots the score metric's equation only
    image_a, image_b = load_image(args.a, name="--a"), load_image(args.b, name="--b")
    model = load_model(args.model, device=args.device)
    os.makedirs(args.out, exist_ok=True)

    def progress(done: int, total: int, desc: str) -> None:
        if done == total or done % 10 == 0:
            print(f"  {desc}: {done}/{total}", flush=True)

    lam = METRIC_LAMS[args.metric] if args.lam is None else args.lam
    opts = dict(n_points=args.n, t_star=args.t_star, lam=lam, metric=args.metric, num_steps=args.steps,
                clip_x0=args.clip_x0, inversion=args.inversion, progress=progress)
    solver = dict(max_iter=args.max_iter, optimizer=args.optimizer, gradient=args.gradient, rule=args.rule)
    rows, summary = {}, {"model": args.model, "a": args.a, "b": args.b, **{k: v for k, v in opts.items()
                                                                          if k != "progress"}, "methods": {}}
    for method in methods:
        t0 = time.perf_counter()
        print(f"{method}:", flush=True)
        res = interpolate_images(model, image_a, image_b, method=method, **opts,
                                 **(solver if method == "geodesic" else {"gradient": args.gradient}))
        rows[method] = res.images
        info = {"energy_initial": res.energy[0], "energy_final": res.energy[-1], "length": res.length,
                "euclidean_length": res.euclidean_length, "lam_relative": res.lam_relative,
                "seconds": time.perf_counter() - t0}
        if res.geodesic is not None:
            g = res.geodesic
            info.update(iterations=g.iterations, converged=g.converged, reason=g.reason, gradient=g.gradient,
                        evaluations=asdict(g.evaluations))
            viz.save_gif(res.images, os.path.join(args.out, "geodesic.gif"))
        summary["methods"][method] = info
    viz.save_png(viz.image_strip(rows, cell=args.cell), os.path.join(args.out, "strip.png"))
    if args.extrapolate is not None:
        print("extrapolation:", flush=True)
        ext = extrapolate_images(model, image_a, image_b, beyond=args.extrapolate, **opts, **solver)
        labels = {"geodesic a->b": ext.images[: ext.n_inner], "past b": ext.images[ext.n_inner:]}
        viz.save_png(viz.image_strip(labels, cell=args.cell, label_width=96),
                     os.path.join(args.out, "extrapolation.png"))
        summary["extrapolation"] = {"beyond": args.extrapolate, "extra_points": len(ext.images) - ext.n_inner,
                                    "speed_drift": ext.shoot.speed_drift if ext.shoot is not None else None}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    print(f"wrote {args.out}/strip.png, geodesic.gif, summary.json" +
          (", extrapolation.png" if args.extrapolate is not None else ""))
    return 0
