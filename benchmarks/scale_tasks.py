"""Benchmark: every task of the app on the public architectures at full size (CPU, random weights): peak memory and
time, each task in a fresh process.

Each (architecture, task) runs in its own child process, whose peak resident set (``ru_maxrss`` of that child, the
weights included) is the memory figure. At the app's defaults most tasks would run for hours on this CPU at 256 or
512 pixels, so each runs a *reduced* version that makes the same largest calls (the same batch limits, the same
gradient parts, hence the same peak memory) with fewer of them, and the report extrapolates the time to the
defaults by the count of the unit that dominates the cost:

- ``rates``: ``generation_curves`` at 2 timesteps and a 2x2 patch grid; the app's default (20 timesteps, an 8 x 8
  patch grid on any model: ``ui.config.Limits.patch_grids``) costs ``20 x 8^2`` JVP directions against ``2 x 4``
  here;
- ``remove``, ``transfer``, ``saliency``, ``blend``: each task's tuned config at 2 DDIM steps, run twice: without
  gradient steps (inversion and generation: scaled by the default's DDIM steps, ``ui.edit_tab.edit_steps``), then
  with 1 gradient step per active step on at most 4 directions (the extra time per differentiated direction,
  scaled by an upper bound of the default's: every step active, ``max_patches`` directions per gradient step). The
  gradient steps run in parts of ``pipeline.memory.grad_batch`` directions, so their peak does not grow with the
  directions once a part is full (4 directions fill it on the 256-pixel and SD 1.5 models; below the limit the peak
  is under the budget by construction). The app also measures the region's curves before and after (on by default):
  rate JVPs without gradients, the calls of the ``rates`` row, so they add its per-direction cost per region patch
  and timestep, not a larger peak;
- ``gradient``: the edits' costliest call alone, one curve-loss gradient on 4 patch directions at t = 500 (with
  the gradient memory probe of ``pipeline.memory.grad_batch``), for models whose whole edit does not fit the time;
- ``geodesic``: ``interpolate_images`` with the tab's 7 points at t* = 400, 2 DDIM steps and 2 solver iterations
  against the default 20 and 100: the inversion and decoding time scaled by the steps, the solver's by its
  iterations (an upper bound: the solver stops once converged). The row also gives the solver's energy + gradient
  evaluations (the line search makes more than one per iteration) and their cost each. With ``--geo-optimizer adam``
  (one evaluation per iteration: the same energy + gradient call on the same points, so the same peak) the solver's
  time is estimated as that cost times ``APP_SOLVER_EVALS``.

The extrapolations are linear estimates (they say so); the peak memory is measured. With ``--time-limit`` a child
that runs past it is stopped and reported with its time and peak at the stop.

    python -m benchmarks.scale_tasks --folders DIR [--archs cifar10-32,ddpm-256,sd15] [--tasks ...]

``DIR/<arch>`` is the full-size reference folder (``python -m benchmarks.reference --arch A --out DIR/A`` builds it).
Writes ``benchmarks/results/scale_tasks.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARCHS = ("cifar10-32", "ddpm-256", "sd15")
TASKS = ("rates", "remove", "transfer", "saliency", "blend", "geodesic", "gradient")
APP_STEPS = 20  # the Steps setting's default
APP_SOLVER_ITERS = 100  # the geodesic tab's default solver iterations
REDUCED = {"rates_timesteps": 2, "rates_grid": 2, "edit_steps": 2, "edit_iterations": 1, "edit_directions": 4,
           "geo_steps": 2, "geo_iters": 2, "geo_optimizer": None}
#: Energy + gradient evaluations of the geodesic tab's solve at its defaults (7 points, t* = 400, 20 DDIM steps, 100
#: L-BFGS iterations) on the embedded model, which used all 100 iterations: the count the ``--geo-optimizer adam``
#: estimate takes (the small SD 1.5 variant of the tests converged after 27). Measured with
#: ``interpolate_images(load_model("default"), a, b, n_points=7, t_star=400, num_steps=20, max_iter=100)`` on this
#: module's scenes a and b.
APP_SOLVER_EVALS = 126


def _progress(t0: float):
    """A progress callback that writes ``PROGRESS <seconds> <desc> <done>/<total>`` lines to stderr: the parent
    reports the last one when it stops a child at the time limit."""
    def report(done, total, desc):
        print(f"PROGRESS {time.perf_counter() - t0:.0f} s: {desc} {done}/{total}", file=sys.stderr, flush=True)
    return report


def _one(folder: str, task: str, threads: int, reduced: dict | None = None) -> dict:
    """Run one reduced task in this process -> its figures (called in the child); ``reduced`` overrides entries of
    :data:`REDUCED`."""
    red = {**REDUCED, **(reduced or {})}
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from pipeline import edit, load_model, scenes
    from pipeline.interpolate import interpolate_images
    from pipeline.rates import generation_curves
    from ui.config import DEFAULT_PATCH_GRID  # the curves tab's default (patches per side of model space)
    from ui.edit_tab import edit_steps

    t0 = time.perf_counter()
    m = load_model(folder, device="cpu")
    load_s = time.perf_counter() - t0
    n, s = m.image_size, m.sample_size
    a = scenes.make_scene(20_000_003, size=n).image
    b = scenes.make_scene(20_000_005, size=n).image
    mask = np.zeros((n, n), bool)
    mask[n // 4 : n // 2, n // 4 : n // 2] = True
    source = np.zeros((n, n), bool)
    source[n // 2 : 3 * n // 4, n // 2 : 3 * n // 4] = True
    out: dict = {"load_s": load_s, "image": n, "model_space": s}
    t0 = time.perf_counter()
    if task == "rates":
        grid = REDUCED["rates_grid"]
        generation_curves(m, a, num_timesteps=REDUCED["rates_timesteps"], patch_size=s // grid)
        units, default_units = REDUCED["rates_timesteps"] * grid**2, APP_STEPS * DEFAULT_PATCH_GRID**2
        out["unit"] = "JVP directions"
    elif task == "gradient":
        # the edits' costliest call alone: one curve-loss gradient on 4 directions at t = 500 (memory probe included)
        import torch

        from pipeline.ddim import Trajectory
        from pipeline.edit.loop import MatchPlan, _curve_loss_and_grad
        from pipeline.rates import patch_directions

        x = torch.randn(1, m.channels, s, s, generator=torch.Generator().manual_seed(0)).to(m.dtype)
        v = patch_directions((m.channels, s, s), edit.default_patch_size(m), indices=torch.arange(4), dtype=m.dtype)
        traj = Trajectory(torch.tensor([0, 500]), torch.stack([x, x]))
        plan = MatchPlan(traj, traj, torch.ones(s, s), v, torch.ones(2, 4), torch.ones(2, 4))
        _curve_loss_and_grad(m, x, 500, 1, torch.arange(4), plan, edit.EditConfig())
        units = default_units = 4
        out["unit"] = "directions differentiated (one gradient step of an edit; 32 at most)"
    elif task == "geodesic":
        solver = {"optimizer": red["geo_optimizer"]} if red["geo_optimizer"] else {}
        res = interpolate_images(m, a, b, n_points=7, t_star=400, num_steps=red["geo_steps"],
                                 max_iter=red["geo_iters"], progress=_progress(t0), **solver)
        # cost = inversion + decoding (scaled by the DDIM steps) + the solver (scaled by its iterations: an upper
        # bound, the solver stops early once converged)
        ddim_s = res.seconds.get("invert", 0.0) + res.seconds.get("decode", 0.0)
        path_s = res.seconds.get("path", 0.0)
        evals = res.geodesic.evaluations.energy if res.geodesic is not None else 0
        units, default_units = red["geo_steps"] + red["geo_iters"], APP_STEPS + APP_SOLVER_ITERS
        out["unit"] = "DDIM steps + solver iterations"
        per_eval = path_s / max(evals, 1)
        solver_default = (per_eval * APP_SOLVER_EVALS if red["geo_optimizer"] == "adam"
                          else path_s * APP_SOLVER_ITERS / red["geo_iters"])
        out.update(ddim_s=ddim_s, path_s=path_s, energy_evaluations=evals, per_evaluation_s=per_eval,
                   optimizer=red["geo_optimizer"] or "lbfgs",
                   estimate_default_s=ddim_s * APP_STEPS / red["geo_steps"] + solver_default)
    else:
        cfg = {"remove": edit.RemoveConfig(), "transfer": edit.TransferConfig(), "saliency": edit.SaliencyConfig(),
               "blend": edit.BlendConfig()}[task]
        def run(**extra):
            kw = dict(t_edit=cfg.t_edit, num_steps=REDUCED["edit_steps"], iterations=REDUCED["edit_iterations"],
                      measure_curves=False, progress=_progress(t0), **extra)
            if task == "remove":
                return edit.remove_object(m, a, mask, **kw)
            if task == "transfer":
                return edit.transfer(m, a, mask, source, **kw)
            if task == "saliency":
                return edit.adjust_saliency(m, a, mask, 2.0, **kw)
            return edit.blend(m, a, b, mask, **kw)

        plain = run(curve_weight=0.0)  # the same loop without gradient steps: inversion and generation only
        plain_s = time.perf_counter() - t0
        res = run(max_patches=REDUCED["edit_directions"])
        grad_s = time.perf_counter() - t0 - plain_s
        evals = int(res.diagnostics["rate_evaluations_with_grad"])
        steps = edit_steps(cfg, cfg.t_edit, APP_STEPS)
        per_dir = max(grad_s - plain_s, 0.0) / max(evals, 1)
        out.update(plain_s=plain_s, gradient_directions=evals, per_direction_s=per_dir,
                   plain_timing=dict(plain.timing))
        units, default_units = REDUCED["edit_steps"], steps
        # upper bound: every step active, every gradient step on cfg.max_patches directions
        out["estimate_default_s"] = (plain_s * steps / REDUCED["edit_steps"]
                                     + per_dir * steps * cfg.iterations * cfg.max_patches)
        out["unit"] = (f"DDIM steps (gradient steps: {evals} directions here, at most "
                       f"{steps * cfg.iterations * cfg.max_patches} at the defaults)")
    out["seconds"] = time.perf_counter() - t0
    out["units"], out["default_units"] = units, default_units
    out.setdefault("estimate_default_s", out["seconds"] * default_units / units)
    info = getattr(m, "info", {})
    out["batch_limit"] = (info.get("memory") or {}).get("limit")
    out["grad_limit"] = (info.get("grad_memory") or {}).get("limit")
    return out


def _child(folder: str, task: str, threads: int, limit_s: float | None, reduced: dict | None = None) -> dict:
    """Run ``_one`` in a fresh process; its peak RSS from ``wait4``."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.scale_tasks import _one; "
            f"print('RESULT ' + json.dumps(_one({folder!r}, {task!r}, {threads}, {reduced!r})))")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stopped = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if limit_s is not None and time.perf_counter() - t0 > limit_s:
            proc.kill()
            stopped = True
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    row: dict = {"peak_rss_gib": usage.ru_maxrss / 2**20, "process_s": wall}
    if stopped:
        row["error"] = f"stopped at the time limit ({limit_s:.0f} s)"
        done = [ln[len("PROGRESS "):] for ln in stderr.splitlines() if ln.startswith("PROGRESS ")]
        if done:
            row["error"] += f"; last progress at {done[-1]}"
        return row
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if os.waitstatus_to_exitcode(status) != 0 or not lines:
        row["error"] = (stderr.strip().splitlines() or ["no output"])[-1][:300]
        return row
    row.update(json.loads(lines[-1][len("RESULT "):]))
    return row


def markdown(res: dict) -> str:
    commands = list(dict.fromkeys(r.get("command", res["command"]) for r in res["rows"]))
    lines = ["# Every task at full size (CPU, random weights)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in commands) + " (`DIR`: the folder of the full-size "
             "reference models).", "",
             f"Machine: {res['machine']}; {res['threads']} torch thread(s) per task; load average (1 min) "
             f"{res['load_start']:.1f} at start, {res['load_end']:.1f} at end (the cores may be shared: seconds are "
             "noisy, memory is not). Each task runs in a fresh process; peak RSS is that process's, the weights "
             "included. Reduced runs (see `benchmarks/scale_tasks.py`): the same largest calls as the app's "
             "defaults, fewer of them; the estimate scales the measured time by the count of the costly unit "
             "(not a measurement). For the edits it is an upper bound: every DDIM step active and every gradient "
             "step on `max_patches` = 32 directions, where the default patch grid leaves a region of a few "
             "patches (the reduced remove run differentiated 4 directions in all), so expect several times less.", "",
             "| arch | task | peak RSS (GiB) | seconds (reduced) | unit: reduced / default | estimate at the "
             "app's defaults (edits: upper bound) | batch limit (maps / gradients) | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['task']} | {r['peak_rss_gib']:.2f} | {r['process_s']:.0f} (process) "
                         f"| | | | {r['error']} |")
            continue
        est = r["estimate_default_s"]
        est_s = f"{est:.0f} s" if est < 3600 else f"{est / 3600:.1f} h"
        lim = f"{r['batch_limit'] or 'none'} / {r['grad_limit'] or 'none'}"
        notes = f"load {r['load_s']:.1f} s, images {r['image']} px, model space {r['model_space']}"
        if "energy_evaluations" in r:
            notes += (f"; DDIM {r['ddim_s']:.1f} s, solver ({r.get('optimizer', 'lbfgs')}) {r['path_s']:.1f} s for "
                      f"{r['energy_evaluations']} energy + gradient evaluations ({r['per_evaluation_s']:.1f} s each)")
            if r.get("optimizer") == "adam":
                notes += (f"; the estimate takes the DDIM part at the default steps and {APP_SOLVER_EVALS} "
                          "evaluations (the embedded model's solve at the tab's defaults)")
        lines.append(f"| {r['arch']} | {r['task']} | {r['peak_rss_gib']:.2f} | {r['seconds']:.1f} | "
                     f"{r['units']} / {r['default_units']} {r['unit']} | {est_s} | {lim} | {notes} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folders", help="folder of the full-size reference models, one per arch (DIR/A); required "
                                      "unless --render")
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated architectures")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated tasks: {','.join(TASKS)}")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each task's process")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per task process; longer ones stop")
    p.add_argument("--out", default="benchmarks/results/scale_tasks", help="report path without suffix")
    p.add_argument("--render", action="store_true", help="only rewrite the .md from the .json at --out")
    p.add_argument("--geo-iters", type=int, default=REDUCED["geo_iters"],
                   help="geodesic: solver iterations of the reduced run (each makes one or more energy + gradient "
                        "evaluations)")
    p.add_argument("--geo-optimizer", default=None, choices=("lbfgs", "adam"),
                   help="geodesic: the reduced run's solver (default: the app's L-BFGS, whose first iteration's line "
                        "search makes about 8 evaluations); adam makes one evaluation per iteration, the same call, "
                        f"and the estimate then takes {APP_SOLVER_EVALS} evaluations")
    a = p.parse_args(argv)
    if a.render:
        res = json.loads(Path(a.out).with_suffix(".json").read_text())
        Path(a.out).with_suffix(".md").write_text(markdown(res))
        return 0
    if not a.folders:
        p.error("--folders is required (unless --render)")
    archs, tasks = a.archs.split(","), a.tasks.split(",")
    bad = [x for x in archs if x not in ARCHS] + [t for t in tasks if t not in TASKS]
    if bad:
        p.error(f"unknown archs/tasks: {bad}")
    out = Path(a.out)
    prev = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    rows = [r for r in prev.get("rows", []) if (r["arch"], r["task"]) not in {(x, t) for x in archs for t in tasks}]
    load0 = os.getloadavg()[0]
    command = shlex.join(["python", "-m", "benchmarks.scale_tasks", "--folders", "DIR", "--archs", a.archs,
                          "--tasks", a.tasks, "--threads", str(a.threads)]
                         + (["--time-limit", f"{a.time_limit:g}"] if a.time_limit else [])
                         + (["--geo-iters", str(a.geo_iters)] if a.geo_iters != REDUCED["geo_iters"] else [])
                         + (["--geo-optimizer", a.geo_optimizer] if a.geo_optimizer else []))
    reduced = {"geo_iters": a.geo_iters, "geo_optimizer": a.geo_optimizer}
    for arch in archs:
        folder = str(Path(a.folders) / arch)
        if not Path(folder).is_dir():
            p.error(f"{folder} is missing: build it with python -m benchmarks.reference --arch {arch} --out {folder}")
        for task in tasks:
            row = {"arch": arch, "task": task, **_child(folder, task, a.threads, a.time_limit, reduced),
                   "command": command}
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            res = {"rows": sorted(rows, key=lambda r: (ARCHS.index(r["arch"]), TASKS.index(r["task"]))),
                   "command": command,
                   "machine": f"{os.cpu_count()} CPUs", "threads": a.threads, "load_start": load0,
                   "load_end": os.getloadavg()[0]}
            out.with_suffix(".json").write_text(json.dumps(res, indent=1))
            out.with_suffix(".md").write_text(markdown(res))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
