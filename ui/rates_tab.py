"""Tab "Generation curves" (``/rates``): an image -> saliency map, rate map at a timestep, curves of clicked points.

The result stays in the session (``gr.State``), so new points or a new timestep redraw without the model
(``/rates_replot``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from pipeline import rates, viz
from pipeline.errors import InputError
from ui.config import DEFAULT_PATCH_GRID, LOCAL_LIMITS, Limits
from ui.describe import model_resolution
from ui.errors import ui_errors
from ui.inputs import Point, Settings, choice, format_points, number, parse_points, read_image, whole_number
from ui.models import ModelManager
from ui.outputs import as_array, image_file, output_dir
from ui.photos import WORKING_SIDE, working_copy
from ui.widgets import PROGRESS, Page, image_input, output_image, run_stop, stop_event

#: The statistic dropdown's choices (shown words, value), in the order shown (``pipeline.rates.STATISTICS`` is the
#: accepted set of values).
STATISTIC_CHOICES = (("total variation (tv)", "tv"), ("standard deviation (std)", "std"), ("mean", "mean"),
                     ("peak", "peak"))
STATISTICS = tuple(v for _, v in STATISTIC_CHOICES)
#: Range of the rate-map timestep slider (the view picks the computed timestep nearest to it).
TIMESTEP_RANGE = (0, 999)


@dataclass(frozen=True)
class RatesView:
    """What the views show of a result: the rate map's timestep and up to two points (input-image pixels)."""

    timestep: float
    points: tuple[Point, ...]

    @classmethod
    def from_gradio(cls, timestep: Any, points: Any) -> RatesView:
        """The timestep slider's and the points box's values, checked."""
        return cls(number(timestep, "rate-map timestep t", *TIMESTEP_RANGE), tuple(parse_points(points)))


@dataclass(frozen=True, eq=False)
class RatesRequest:
    """The tab's inputs: the image (uint8 (H, W, 3); a large photo's working copy, ``ui.photos``), the patch grid
    (patches per side of model space: :func:`pipeline.rates.patch_size_for_grid` turns it into the model's patch size),
    saliency statistic, view, and shared settings."""

    image: np.ndarray
    grid: int
    statistic: str
    view: RatesView
    settings: Settings

    @classmethod
    def from_gradio(cls, image, grid, statistic, timestep, points, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS) -> RatesRequest:
        """The ``/rates`` event's values in the order Gradio passes them, checked (against ``limits``) before any
        image is decoded."""
        settings = Settings.from_gradio(model, backend, steps, seed, limits)
        view = RatesView.from_gradio(timestep, points)
        grid = choice(whole_number(grid, "patch grid", 1, max(limits.patch_grids)), "patch grid",
                      limits.patch_grids)
        statistic = choice(rates.DEFAULT_STATISTIC if statistic is None else statistic, "statistic",
                           tuple(s for s in STATISTICS if s in rates.STATISTICS))
        return cls(working_copy(read_image(image)), grid, statistic, view, settings)


@dataclass(frozen=True, eq=False)
class RatesState:
    """A computed result kept in the session: the input image and the library's ``generation_curves`` result."""

    image: np.ndarray
    result: Any


def rates_views(state: RatesState, view: RatesView):
    """(saliency overlay with the points marked, rate map at the grid timestep nearest the view's, curves figure,
    that grid timestep)."""
    image, res = state.image, state.result
    h, w = image.shape[:2]
    points = [(min(max(x, 0), w - 1), min(max(y, 0), h - 1)) for x, y in view.points[-2:]]
    names = [f"P{i + 1}" for i in range(len(points))]
    labels = [f"P{i + 1} ({x:.0f},{y:.0f})" for i, (x, y) in enumerate(points)]
    saliency = viz.mark_points(viz.overlay(image, as_array(res.saliency)), points, labels=names)
    ts = as_array(res.timesteps)
    k = int(np.argmin(np.abs(ts - view.timestep)))
    rate = viz.mark_points(viz.heatmap(as_array(res.curves[k]), (h, w)), points, labels=names)
    cells = [res.patch_index(x, y) for x, y in points]
    fig = viz.curves_figure(
        ts, {lab: as_array(res.curves[:, r, c]) for lab, (r, c) in zip(labels, cells, strict=True)},
        accumulated={lab: as_array(res.accumulated[:, r, c]) for lab, (r, c) in zip(labels, cells, strict=True)},
        title="Curves of the clicked points" if points else "Click the saliency map to add points",
    )
    return saliency, rate, fig, int(ts[k])


def run_rates(req: RatesRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """Curves, saliency and rate map for the request -> (saliency file, rate-map file, curves figure, status,
    downloads, session state)."""
    with models.run(req.settings, progress, session) as run:
        patch_size = rates.patch_size_for_grid(run.model.sample_size, req.grid)
        res = rates.generation_curves(run.model, req.image, num_timesteps=run.steps, patch_size=patch_size,
                                      statistic=req.statistic, seed=run.seed, progress=run.progress,
                                      cancel=run.cancel)
    state = RatesState(req.image, res)
    saliency, rate, fig, t_shown = rates_views(state, req.view)
    out = output_dir(session)
    np.savez_compressed(out / "curves.npz", timesteps=as_array(res.timesteps), curves=as_array(res.curves),
                        accumulated=as_array(res.accumulated), saliency=as_array(res.saliency))
    saliency_file = image_file(saliency, out, "saliency")
    files = [str(out / "curves.npz"), saliency_file]
    grid = "x".join(str(n) for n in res.curves.shape[1:])
    h, w = req.image.shape[:2]
    stat = {v: k for k, v in STATISTIC_CHOICES}.get(res.statistic, res.statistic)
    summary = (f"**Saliency** of your image, shown at {w}x{h}"
               f"{' (a working copy of a larger photo; points are in its pixels)' if max(h, w) >= WORKING_SIDE else ''}"
               f".  \n**Worked at:** the model's {model_resolution(run.model, req.image.shape)}: a {grid} grid of "
               f"patches ({res.pixels_per_patch} pixels of the model's image each), generation curves at "
               f"{len(res.timesteps)} timesteps; saliency = {stat} of each patch's "
               f"curve. Rate map at t = {t_shown}.  \n*Internals:* {res.jvp_evaluations} Jacobian-vector products "
               f"({res.batching}).")
    status = run.status(summary)
    return saliency_file, image_file(rate, out, "rate_map"), fig, status, files, state


def replot_rates(state: RatesState | None, view: RatesView, session: Any = None):
    """Redraw the views from the session's last result (no model call) -> (saliency file, rate-map file, figure)."""
    if not isinstance(state, RatesState):
        raise InputError("compute the curves first (press Compute curves)")
    saliency, rate, fig, _ = rates_views(state, view)
    out = output_dir(session)
    return image_file(saliency, out, "saliency"), image_file(rate, out, "rate_map"), fig


@ui_errors
def select_point(points: str, evt: gr.SelectData):
    """A click on the saliency map adds a point; the last two are kept."""
    pts = parse_points(points) if points else []
    try:
        x, y = (float(v) for v in evt.index)
    except (TypeError, ValueError):
        return points
    if not (math.isfinite(x) and math.isfinite(y)):
        return points
    return format_points((pts + [(x, y)])[-2:])


def rates_event(models: ModelManager):
    """The ``/rates`` handler Gradio calls: its positional values -> :class:`RatesRequest` -> :func:`run_rates`."""

    @ui_errors(hosted=models.config.hosted)
    def rates(image, grid, statistic, timestep, points, model, backend, steps, seed, progress=PROGRESS,
              request: gr.Request = None):
        """Image -> saliency map, rate map at a timestep, and the curves of up to two points; plus downloads."""
        req = RatesRequest.from_gradio(image, grid, statistic, timestep, points, model, backend, steps, seed,
                                       models.config.limits)
        return run_rates(req, models, progress, request)

    return rates


@ui_errors
def replot_event(state, timestep, points, request: gr.Request = None):
    """Redraw the views from the last result for a new timestep or new points (no model call)."""
    return replot_rates(state, RatesView.from_gradio(timestep, points), request)


def build(page: Page) -> None:
    """The tab's widgets and events."""
    with gr.Tab("Generation curves", id="rates"):
        gr.Markdown("How fast each part of the image appears during generation. Click the saliency map to "
                    "plot the curves of up to two points.")
        with gr.Row():
            with gr.Column():
                image = image_input("Image", "rates-image")
                with gr.Row():
                    patch = gr.Radio([(f"{g} x {g}", g) for g in page.limits.patch_grids],
                                     value=DEFAULT_PATCH_GRID,
                                     label="Patch grid", info="patches per side of the model's space, on any model; "
                                     "a finer grid shows more detail and costs more (32 x 32 is 16 times 8 x 8)")
                    stat = gr.Dropdown(list(STATISTIC_CHOICES), value="tv", label="Saliency statistic",
                                       info="how each patch's time-normalised curve becomes one number: its total "
                                            "variation (the paper's) or standard deviation; or its mean or peak")
                run, stop = run_stop("Compute curves", "rates")
                if page.examples:
                    gr.Examples([[e.image] for e in page.examples], inputs=[image], label="Example scenes",
                                cache_examples=False)
            with gr.Column():
                saliency = output_image("Saliency (click to pick points)", "rates-saliency")
                points = gr.Textbox(label="Points (x,y; x,y)", placeholder="e.g. 10,12; 40,30")
                t = gr.Slider(*TIMESTEP_RANGE, value=500, step=1, label="Rate map at timestep (t)",
                              info="0 = the clean image, 999 = pure noise")
                rate = output_image("Rate map")
        curves = gr.Plot(label="Curves")
        status = gr.Markdown(elem_id="rates-status")
        files = gr.File(label="Curves downloads", file_count="multiple")
        state = gr.State(None)
        ev = run.click(rates_event(page.models), [image, patch, stat, t, points, *page.settings],
                       [saliency, rate, curves, status, files, state], api_name="rates", **page.queue_kw)
        stop.click(stop_event(page.models), None, status, cancels=[ev], api_name="cancel_rates", queue=False)
        views = [saliency, rate, curves]
        saliency.select(select_point, points, points, api_name="rates_select", api_visibility="undocumented").then(
            replot_event, [state, t, points], views, api_name="rates_replot")
        t.release(replot_event, [state, t, points], views, api_name="rates_timestep", api_visibility="undocumented")
