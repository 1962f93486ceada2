"""Benchmark: the app's four editing tabs at the page's defaults, through the handlers the page wires.

The remove tab runs twice: with the smooth fill (the page's default) and with the generative fill at the depth and
gradient steps choosing it sets (``ui.edit_tab.remove_fill_defaults``).

Each tab's event function (``ui.edit_tab.*_event``) is called as the page calls it, with the page's default settings
(model ``default``, backend ``auto``, the Steps setting's default, seed 0, each task's tuned edit depth and gradient
steps, "measure curves" on) on two inputs from ``weights/examples``: a procedural scene (32x32) and a photograph (the
coffee cup, 600x400, edited on its working copy). The first call of each process loads the model and prepares the
backend; it is reported on its own. Then each (input, tab) runs ``--repeats`` times; the table gives the median wall
and process CPU seconds, and the load average of the machine before and after (the cores may be shared: wall seconds
of one run are noisy, the medians and the CPU seconds less so).

    python -m benchmarks.app_edits [--repeats 3] [--threads N] [--out benchmarks/results/app_edits]

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import cpu_model  # noqa: E402
from pipeline import edit  # noqa: E402
from ui import edit_tab  # noqa: E402
from ui.config import AppConfig  # noqa: E402
from ui.models import ModelManager  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "weights" / "examples"
#: (name, image, mask, second image, its mask) of each input: the second image is the transfer source and the
#: blend's object image.
INPUTS = {
    "scene 32x32": ("scene_20000018.png", "scene_20000018_mask1.png", "scene_20000028.png",
                    "scene_20000028_mask1.png"),
    "photo 600x400": ("photo_coffee.png", "photo_coffee_mask.png", "photo_chelsea.png", "photo_chelsea_mask.png"),
}
TASKS = ("remove", "remove-generative", "transfer", "saliency", "blend")
#: The target of the benchmark's done-when check (seconds per edit, median, at the page's defaults).
TARGET_S = 20.0


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / name).convert("RGB"))


def _mask(name: str, shape: tuple[int, int]) -> np.ndarray:
    m = Image.open(EXAMPLES / name).convert("L")
    if m.size != (shape[1], shape[0]):
        m = m.resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(m) > 0


def editor(image: np.ndarray, mask: np.ndarray) -> dict:
    """A mask-editor value as the page sends it (type="numpy"): RGBA background and one RGBA brush layer."""
    layer = np.zeros((*mask.shape, 4), np.uint8)
    layer[mask] = (255, 0, 255, 255)
    bg = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    return {"background": bg, "layers": [layer], "composite": bg}


def calls(models: ModelManager, cfg: AppConfig, files: tuple[str, str, str, str]) -> dict:
    """The four tabs' calls on one input, with the page's defaults: name -> zero-argument callable."""
    a, am, b, bm = files
    img, img2 = _rgb(a), _rgb(b)
    m, m2 = _mask(am, img.shape[:2]), _mask(bm, img2.shape[:2])
    settings = (cfg.model, "auto", cfg.steps, 0)

    def opts(c: edit.EditConfig) -> tuple:
        return (c.t_edit, c.iterations, True)

    return {
        "remove": lambda: edit_tab.remove_event(models)(editor(img, m), "smooth", *opts(edit.RemoveConfig()),
                                                        *settings),
        "remove-generative": lambda: edit_tab.remove_event(models)(
            editor(img, m), "generative", *edit_tab.remove_fill_defaults("generative"), True, *settings),
        "transfer": lambda: edit_tab.transfer_event(models)(editor(img, m), editor(img2, m2),
                                                            *opts(edit.TransferConfig()), *settings),
        "saliency": lambda: edit_tab.saliency_event(models)(editor(img, m), 2.0, *opts(edit.SaliencyConfig()),
                                                            *settings),
        "blend": lambda: edit_tab.blend_event(models)(img, editor(img2, m2), *opts(edit.BlendConfig()), *settings),
    }


def _timed(fn) -> tuple[float, float, str]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    status = str(out[4]) if isinstance(out, (list, tuple)) and len(out) > 4 else ""
    return time.perf_counter() - w, time.process_time() - c, status


def run(repeats: int, inputs: list[str], tasks: list[str]) -> dict:
    cfg = AppConfig()
    models = ModelManager(cfg)
    load0 = os.getloadavg()[0]
    first = {}
    rows = []
    for name in inputs:
        fns = calls(models, cfg, INPUTS[name])
        for task in tasks:
            if not first:  # the process's first edit: model load and backend preparation included
                w, c, _ = _timed(fns[task])
                first = {"input": name, "task": task, "wall_s": w, "cpu_s": c}
                print(f"first call ({name}, {task}): {w:.1f} s wall", flush=True)
            walls, cpus = [], []
            for _ in range(repeats):
                w, c, status = _timed(fns[task])
                walls.append(w)
                cpus.append(c)
                if "error" in status.lower():
                    raise RuntimeError(f"{task} on {name} failed: {status}")
            rows.append({"input": name, "task": task, "wall_s": statistics.median(walls),
                         "cpu_s": statistics.median(cpus), "walls": walls})
            print(f"{name} {task}: median {rows[-1]['wall_s']:.1f} s wall, {rows[-1]['cpu_s']:.1f} s CPU "
                  f"({', '.join(f'{x:.1f}' for x in walls)})", flush=True)
    return {"first": first, "rows": rows, "load_start": load0, "load_end": os.getloadavg()[0],
            "steps_setting": cfg.steps,
            "num_steps": {t: edit_tab.edit_steps(c, c.t_edit, cfg.steps) for t, c in
                          (("remove", edit.RemoveConfig()),
                           ("remove-generative", edit.RemoveConfig(**edit.GENERATIVE_REMOVAL)),
                           ("transfer", edit.TransferConfig()),
                           ("saliency", edit.SaliencyConfig()), ("blend", edit.BlendConfig()))}}


def markdown(res: dict) -> str:
    commands = list(dict.fromkeys(r.get("command") or res["command"] for r in res["rows"]))
    lines = ["# The app's editing tabs at the page's defaults", "",
             "Command" + ("s" if len(commands) > 1 else "") + ": " + "; ".join(f"`{c}`" for c in commands)
             + (" (each row's own; the machine line and the first call are the last run's)" if len(commands) > 1
                else ""), "",
             f"Machine: {res['cpu']} ({res['cores']} CPUs), torch {res['torch']}, {res['threads']} thread(s); load "
             f"average (1 min) {res['load_start']:.1f} at start, {res['load_end']:.1f} at end (the cores may be "
             "shared: wall seconds are noisy). Handlers of `ui.edit_tab` called as the page calls them: model "
             "`default`, backend `auto`, Steps "
             f"{res['steps_setting']}, seed 0, each task's tuned depth and gradient steps, curves measured before "
             "and after. DDIM steps per task (`ui.edit_tab.edit_steps`): "
             + ", ".join(f"{k} {v}" for k, v in res["num_steps"].items()) + ".", "",
             f"First call of the process ({res['first']['task']} on the {res['first']['input']}, model load and "
             f"backend preparation included): {res['first']['wall_s']:.1f} s wall.", "",
             f"| input | tab | median wall (s) | median CPU (s) | runs (wall s) | under {TARGET_S:.0f} s |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['input']} | {r['task']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{', '.join(f'{x:.1f}' for x in r['walls'])} | {'yes' if r['wall_s'] < TARGET_S else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each (input, tab) after the first call")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, as the app)")
    p.add_argument("--inputs", default=",".join(INPUTS), help=f"comma-separated inputs: {', '.join(INPUTS)}")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated tabs: {','.join(TASKS)} "
                   "(remove-generative: the remove tab with the generative fill and the sliders it sets)")
    p.add_argument("--out", default="benchmarks/results/app_edits", help="report path without suffix")
    a = p.parse_args(argv)
    inputs, tasks = a.inputs.split(","), a.tasks.split(",")
    bad = [i for i in inputs if i not in INPUTS] + [t for t in tasks if t not in TASKS]
    if bad or a.repeats < 1:
        p.error(f"unknown inputs/tabs {bad} or --repeats below 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    cmd = ["python", "-m", "benchmarks.app_edits", "--repeats", str(a.repeats)]
    cmd += ["--threads", str(a.threads)] if a.threads else []
    cmd += ["--inputs", a.inputs] if a.inputs != ",".join(INPUTS) else []
    cmd += ["--tasks", a.tasks] if a.tasks != ",".join(TASKS) else []
    res = run(a.repeats, inputs, tasks)
    res.update(command=shlex.join(cmd), cpu=cpu_model(), cores=os.cpu_count(), torch=torch.__version__,
               threads=torch.get_num_threads(), machine=platform.machine())
    out = Path(a.out)
    for r in res["rows"]:
        r["command"] = res["command"]
    if out.with_suffix(".json").exists():  # rows of other (input, tab) pairs from earlier runs are kept
        prev = json.loads(out.with_suffix(".json").read_text())
        done = {(r["input"], r["task"]) for r in res["rows"]}
        kept = [{"command": prev.get("command"), **r} for r in prev.get("rows", [])
                if (r["input"], r["task"]) not in done]
        order = {(i, t): n for n, (i, t) in enumerate((i, t) for i in INPUTS for t in TASKS)}
        res["rows"] = sorted(kept + res["rows"], key=lambda r: order.get((r["input"], r["task"]), len(order)))
        res["num_steps"] = {**prev.get("num_steps", {}), **res["num_steps"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
