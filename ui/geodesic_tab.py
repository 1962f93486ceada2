"""Tab "Geodesics" (``/geodesic``): two images -> the score-metric geodesic between them, above linear (LERP) and
spherical (SLERP) interpolation, its continuation beyond the second image, the energy curve and a GIF."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from pipeline import interpolate, viz
from pipeline.errors import InputError
from pipeline.geodesic import DEFAULT_LAM, DEFAULT_METRIC, METRIC_LAMS, METRICS, SHOOT_METRICS
from ui.config import LOCAL_LIMITS, Limits
from ui.describe import model_resolution
from ui.errors import ui_errors
from ui.inputs import Settings, choice, number, read_image, whole_number
from ui.models import ModelManager
from ui.outputs import image_file, output_dir
from ui.photos import working_copy
from ui.widgets import PROGRESS, Page, image_input, output_image, run_stop, stop_event

#: Side, in pixels, of each picture in the geodesic strips (model outputs are small, enlarged to be readable).
STRIP_CELL = 160
#: Shorter side, in pixels, of the animation (its frames are enlarged by a whole factor, nearest neighbour).
GIF_SIDE = 256
#: Default extrapolation past the second image: off. With the embedded model, continuing the geodesic by half of the
#: a -> b length (the former default, 0.5) ran into saturated noise; the user can still ask for it.
DEFAULT_BEYOND = 0.0
#: Ranges of the noise level, lambda and extrapolation inputs (the cost-setting ones are in ``ui.config.Limits``).
NOISE_LEVEL_RANGE = (50, 900)
LAM_RANGE = (0.0, 1e5)
BEYOND_RANGE = (0.0, 1.0)


@dataclass(frozen=True, eq=False)
class GeodesicRequest:
    """The tab's inputs: the two images, path points, noise level t*, metric weight lambda, extrapolation length
    past the second image (a fraction of a -> b; 0: none), solver iterations, and the shared settings."""

    image_a: np.ndarray
    image_b: np.ndarray
    n_points: int
    t_star: int
    lam: float
    beyond: float
    max_iter: int
    settings: Settings
    metric: str = DEFAULT_METRIC

    @classmethod
    def from_gradio(cls, image_a, image_b, n_points, t_star, lam, beyond, max_iter, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS, metric: str = DEFAULT_METRIC) -> GeodesicRequest:
        """The ``/geodesic`` event's values in the order Gradio passes them, checked (numbers first, against
        ``limits``)."""
        n_points = whole_number(n_points, "path points", *limits.path_points)
        t_star = whole_number(t_star, "noise level t*", *NOISE_LEVEL_RANGE)
        lam = number(lam, "lambda", *LAM_RANGE)
        beyond = number(beyond, "extrapolation beyond b", *BEYOND_RANGE)
        max_iter = whole_number(max_iter, "solver iterations", *limits.solver_iterations)
        metric = choice(metric, "metric", METRICS)
        if beyond > 0 and metric not in SHOOT_METRICS:
            raise InputError(f"extrapolation beyond b needs the {' or '.join(SHOOT_METRICS)} metric (the "
                             f"{metric} metric has no geodesic equation to shoot with): set it to 0 or change metric")
        settings = Settings.from_gradio(model, backend, steps, seed, limits)
        a, b = read_image(image_a, "first image"), read_image(image_b, "second image")
        return cls(a, b, n_points, t_star, lam, beyond, max_iter, settings, metric)

    def crop_note(self) -> str:
        """How the inputs were made square (empty when both already are)."""
        notes = [f"{name} {im.shape[1]}x{im.shape[0]} → its central {min(im.shape[:2])}x{min(im.shape[:2])} square"
                 for name, im in (("first image", self.image_a), ("second image", self.image_b))
                 if im.shape[0] != im.shape[1]]
        return ("The model works on square images, so non-square inputs were cropped (not squashed): "
                + "; ".join(notes) + ".") if notes else ""


def central_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of ``image`` (uint8 (H, W, 3)); a square image unchanged."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top : top + s, left : left + s]


def run_geodesic(req: GeodesicRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """Geodesic, LERP and SLERP paths -> (strip file, extrapolation file, energy figure, GIF, status, downloads)."""
    a, b = working_copy(central_square(req.image_a)), working_copy(central_square(req.image_b))
    paths = {}
    with models.run(req.settings, progress, session) as run:
        common = dict(n_points=req.n_points, t_star=req.t_star, lam=req.lam, num_steps=min(run.steps, req.t_star),
                      cancel=run.cancel, metric=req.metric)
        solver = dict(max_iter=req.max_iter)
        for method in ("geodesic", "lerp", "slerp"):
            stage = lambda d, t, desc, m=method: run.progress(d, t, f"{m}: {desc}")
            if method == "geodesic" and req.beyond > 0:  # the BVP a -> b, then shooting past b, in one call
                paths[method] = interpolate.extrapolate_images(run.model, a, b, beyond=req.beyond, method=method,
                                                               progress=stage, **common, **solver)
            elif method == "geodesic":
                paths[method] = interpolate.interpolate_images(run.model, a, b, method=method, progress=stage,
                                                               **common, **solver)
            else:
                paths[method] = interpolate.interpolate_images(run.model, a, b, method=method, progress=stage,
                                                               **common)
    geo = paths["geodesic"]
    rows = {m: [np.asarray(im) for im in p.images[: p.n_inner]] for m, p in paths.items()}
    out = output_dir(session)
    strip = image_file(viz.image_strip(rows, cell=STRIP_CELL), out, "strip")
    gif = viz.save_gif(rows["geodesic"], out / "geodesic.gif", min_side=GIF_SIDE)
    files = [gif, strip]
    extrapolated = None
    if len(geo.images) > geo.n_inner:
        beyond = [np.asarray(im) for im in geo.images[geo.n_inner - 1:]]
        extrapolated = image_file(viz.image_strip({"inputs": [a, b], "b, beyond": beyond}, cell=STRIP_CELL), out,
                                  "extrapolation")
        files.append(extrapolated)
    fig = viz.history_figure({"geodesic": geo.energy},
                             references={f"{m} (fixed path)": p.energy[0] for m, p in paths.items() if m != "geodesic"})
    table = " · ".join(f"{m}: {p.length:.4g}" for m, p in paths.items())
    solver_note = f"; solver {geo.geodesic.iterations} iterations ({geo.geodesic.reason})" if geo.geodesic else ""
    shorter = min(paths, key=lambda m: paths[m].length)
    summary = (f"**Paths between the two images** with {req.n_points} points, at noise level (t*) {req.t_star}, "
               f"metric weight (λ) {req.lam:g}.  \n**Worked at:** the model's "
               f"{model_resolution(run.model, a.shape)}; the pictures are the model's outputs, enlarged.  \n"
               f"**Length under the {req.metric} metric** (shorter = a more direct path through likely images): "
               f"{table}; "
               f"the shortest is {shorter}. {req.crop_note()}  \n*Internals:* {req.n_points} points, "
               f"t* = {req.t_star}, λ = {req.lam:g}, metric {req.metric}{solver_note}.")
    status = run.status(summary)
    return strip, extrapolated, fig, gif, status, files


def geodesic_event(models: ModelManager):
    """The ``/geodesic`` handler Gradio calls: positional values -> :class:`GeodesicRequest` -> :func:`run_geodesic`."""

    @ui_errors(hosted=models.config.hosted)
    def geodesic(image_a, image_b, n_points, t_star, lam, beyond, max_iter, model, backend, steps, seed,
                 metric=DEFAULT_METRIC, progress=PROGRESS, request: gr.Request = None):
        """Two images -> the geodesic between them under the score metric (or the denoiser metric), above LERP and
        SLERP, its extrapolation, a GIF."""
        req = GeodesicRequest.from_gradio(image_a, image_b, n_points, t_star, lam, beyond, max_iter, model, backend,
                                          steps, seed, models.config.limits, metric)
        return run_geodesic(req, models, progress, request)

    return geodesic


def build(page: Page) -> None:
    """The tab's widgets and events."""
    with gr.Tab("Geodesics", id="geodesic"):
        gr.Markdown("Shortest paths between two images under the score metric G = I + λ s sᵀ (or the denoiser "
                    "metric) at noise level t*, above linear (LERP) and spherical (SLERP) interpolation; optionally "
                    "continued beyond the second image. Non-square images are cropped to their central square.")
        with gr.Row():
            a = image_input("First image", "geodesic-a")
            b = image_input("Second image", "geodesic-b")
        with gr.Row():
            limits = page.limits
            n = gr.Slider(*limits.path_points, value=min(7, limits.path_points[1]), step=1, label="Path points")
            t = gr.Slider(*NOISE_LEVEL_RANGE, value=400, step=10, label="Noise level (t*)",
                          info="how far both images are turned towards noise before the path is drawn")
            lam = gr.Number(value=DEFAULT_LAM, label="Metric weight (λ)", minimum=LAM_RANGE[0],
                            maximum=LAM_RANGE[1], info=f"weight of the score term, in [{LAM_RANGE[0]:g}, "
                                                       f"{LAM_RANGE[1]:g}]")
            extra = gr.Slider(*BEYOND_RANGE, value=DEFAULT_BEYOND, step=0.05, label="Extrapolate beyond b",
                              info="continue past the second image by this fraction of a → b (0: off; with the "
                                   "embedded model 0.5 runs into noise)")
            iters = gr.Slider(*limits.solver_iterations, value=min(100, limits.solver_iterations[1]), step=1,
                              label="Solver iterations",
                              info="L-BFGS iterations of the boundary value problem")
            metric = gr.Dropdown(list(METRICS), value=DEFAULT_METRIC, label="Metric",
                                 info="score: G = I + λ s sᵀ (the paper's); denoiser: G = I + λ (I - J_D)ᵀ(I - J_D), "
                                      "every direction off the data costs (no extrapolation)")
        # The metric's own default λ, set in the browser (no server event).
        metric.change(None, metric, lam, js=f"(m) => ({json.dumps(METRIC_LAMS)})[m]")
        run, stop = run_stop("Compute geodesic", "geodesic")
        ex = page.examples
        if len(ex) >= 2:
            gr.Examples([[ex[i].image, ex[i + 1].image] for i in range(0, len(ex) - 1, 2)], inputs=[a, b],
                        label="Example pairs", cache_examples=False)
        strip = output_image("Geodesic / LERP / SLERP", "geodesic-strip")
        extrapolation = output_image("Extrapolation")
        with gr.Row():
            energy = gr.Plot(label="Energy")
            gif = gr.Image(label="Animation", type="filepath", interactive=False, height=GIF_SIDE + 40)
        status = gr.Markdown(elem_id="geodesic-status")
        files = gr.File(label="Geodesic downloads", file_count="multiple")
        ev = run.click(geodesic_event(page.models), [a, b, n, t, lam, extra, iters, *page.settings, metric],
                       [strip, extrapolation, energy, gif, status, files], api_name="geodesic", **page.queue_kw)
        stop.click(stop_event(page.models), None, status, cancels=[ev], api_name="cancel_geodesic", queue=False)
