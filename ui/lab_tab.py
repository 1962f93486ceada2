"""Tab "Geometry lab" (``/lab``): noise-smoothed data on a sphere or a torus, whose score is known in closed form, so
the geodesic of a score-built metric (the paper's, or the denoiser metric) can be drawn against the chord and the
true geodesic. No model: it runs live."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import torch

from pipeline import geodesic, synthetic, viz
from pipeline.errors import InputError
from ui.config import LOCAL_LIMITS, Limits
from ui.errors import ui_errors
from ui.inputs import choice, number, whole_number
from ui.models import ModelManager
from ui.outputs import as_array
from ui.widgets import Page

MANIFOLDS = ("sphere", "torus")
#: Ranges of the lab's sliders (its points and iterations are in ``ui.config.Limits``).
LAM_RANGE = (0.0, 2000.0)
SIGMA_RANGE = (0.08, 0.5)
ANGLE_1_RANGE = (-180.0, 180.0)
ANGLE_2_RANGE = (-90.0, 90.0)


@dataclass(frozen=True)
class LabRequest:
    """The lab's inputs: manifold, metric weight lambda, noise level sigma, endpoint b's two angles (degrees; a sits
    at (0, 0)), path points and solver iterations."""

    manifold: str
    lam: float
    sigma: float
    angle_1: float
    angle_2: float
    n_points: int
    iterations: int
    metric: str = geodesic.DEFAULT_METRIC

    @classmethod
    def from_gradio(cls, manifold, lam, sigma, angle_1, angle_2, n_points, iterations,
                    limits: Limits = LOCAL_LIMITS, metric: str = geodesic.DEFAULT_METRIC) -> LabRequest:
        """The ``/lab`` event's values in the order Gradio passes them, checked."""
        req = cls(choice(manifold, "manifold", MANIFOLDS), number(lam, "lambda", *LAM_RANGE),
                  number(sigma, "noise level sigma", *SIGMA_RANGE), number(angle_1, "angle 1", *ANGLE_1_RANGE),
                  number(angle_2, "angle 2", *ANGLE_2_RANGE), whole_number(n_points, "points", *limits.lab_points),
                  whole_number(iterations, "iterations", *limits.lab_iterations),
                  choice(metric, "metric", geodesic.METRICS))
        if req.angle_1 == 0 and req.angle_2 == 0:  # the endpoint a: (0, 0) on both manifolds
            raise InputError("angle 1 and angle 2 must not both be 0: endpoint b would be endpoint a")
        return req


def lab_manifold(manifold: str, sigma: float, angle_1: float, angle_2: float):
    """(smoothed manifold, a, b): endpoint a at angles (0, 0), b at the given angles (degrees)."""
    t1, t2 = (torch.tensor([np.deg2rad(v)], dtype=torch.float64) for v in (angle_1, angle_2))
    zero = torch.zeros(1, dtype=torch.float64)
    if manifold == "sphere":  # S^2 in R^3; angles are longitude and latitude
        m = synthetic.sphere(2, 3, radius=1.0, sigma=sigma, seed=None)
        point = lambda lon, lat: torch.stack((lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()), dim=-1)[0]
        return m, point(zero, zero), point(t1, t2)
    if manifold == "torus":  # angles around the centre circle and around the tube
        m = synthetic.torus(3, major=1.0, minor=0.4, sigma=sigma, seed=None)
        return m, m.embed(zero, zero)[0], m.embed(t1, t2)[0]
    raise InputError(f"manifold must be 'sphere' or 'torus', got {manifold!r}")


@functools.lru_cache(maxsize=64)
def true_geodesic(manifold: str, angle_1: float, angle_2: float) -> np.ndarray:
    """The closed-form (sphere) or numerical (torus) geodesic; independent of lambda and sigma, so cached."""
    m, a, b = lab_manifold(manifold, 0.1, angle_1, angle_2)
    return as_array(m.geodesic(a, b, 64))


def run_lab(req: LabRequest, cancel: Any = None):
    """Score-metric geodesic on the smoothed manifold, with the chord and the true geodesic -> (3D figure, energy
    figure, Markdown table of lengths). ``cancel``: the library's stop flag."""
    m, a, b = lab_manifold(req.manifold, req.sigma, req.angle_1, req.angle_2)
    res = geodesic.geodesic_bvp(m.score, a, b, lam=req.lam, n_points=req.n_points, score_jvp=m.score_jvp,
                                max_iter=req.iterations, cancel=cancel, metric=req.metric, sigma=req.sigma)
    name = f"{req.metric}-metric geodesic"
    path = as_array(res.path)
    true_path = true_geodesic(req.manifold, req.angle_1, req.angle_2)
    chord = np.stack([path[0], path[-1]])
    mesh = viz.sphere_mesh(1.0) if req.manifold == "sphere" else viz.torus_mesh(1.0, 0.4)
    fig = viz.surface_figure(mesh, {name: path, "true geodesic": true_path, "chord": chord},
                             points={"a": path[0], "b": path[-1]},
                             title=f"{req.manifold}, {req.metric} metric: λ = {req.lam:g}, σ = {req.sigma:g}")
    energy = viz.history_figure({"energy": res.energy}) if len(res.energy) > 1 else None
    length = lambda p: float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())
    table = (f"| path | Euclidean length |\n|---|---|\n| {name} | {length(path):.4f} |\n"
             f"| true geodesic | {length(true_path):.4f} |\n| chord | {length(chord):.4f} |\n\n"
             f"{res.iterations} iterations ({res.reason}), metric length {res.length:.4g} "
             f"(start {res.initial_length:.4g}), {res.seconds:.2f} s")
    return fig, energy, table


def lab_handler(models: ModelManager | None = None):
    """The ``/lab`` handler Gradio calls: positional values -> :class:`LabRequest` (against ``models``' limits) ->
    :func:`run_lab`, with a cancel flag that is set when the client cancels or leaves."""
    limits = models.config.limits if models is not None else LOCAL_LIMITS

    @ui_errors
    def lab(manifold, lam, sigma, angle_1, angle_2, n_points, iterations, metric=geodesic.DEFAULT_METRIC,
            request: gr.Request = None):
        """Geodesic under the score metric (or the denoiser metric) on a noise-smoothed sphere or torus, with the
        chord and the true geodesic, in 3D."""
        # Gradio shows this docstring as the /lab endpoint's description.
        req = LabRequest.from_gradio(manifold, lam, sigma, angle_1, angle_2, n_points, iterations, limits, metric)
        if models is None:
            return run_lab(req)
        with models.job(request) as cancel:
            return run_lab(req, cancel)

    return lab


#: The lab's handler without a model manager (local limits, no cancel flag): for scripts and tests.
lab_event = lab_handler()


def build(page: Page) -> None:
    """The tab's widgets and events. Runs on its own small queue, so it stays live while model jobs run."""
    with gr.Tab("Geometry lab", id="lab") as tab:
        gr.Markdown("Noise-smoothed data on a sphere or a torus, whose score is known in closed form. The "
                    "geodesic of the chosen metric (solid) bends from the chord (dotted) towards the true geodesic "
                    "(dashed) as λ grows and σ shrinks; the denoiser metric keeps it nearer the surface.")
        with gr.Row():
            with gr.Column(scale=1):
                kind = gr.Radio(list(MANIFOLDS), value="sphere", label="Manifold")
                metric = gr.Radio(list(geodesic.METRICS), value=geodesic.DEFAULT_METRIC, label="Metric",
                                  info="score: G = I + λ s sᵀ (the paper's); denoiser: G = I + λ (I - J_D)ᵀ(I - J_D),"
                                       " every direction off the data costs")
                lam = gr.Slider(*LAM_RANGE, value=200, step=10, label="Metric weight (λ)",
                                info="0: the straight chord; larger: the path follows the data more closely")
                sigma = gr.Slider(*SIGMA_RANGE, value=0.15, step=0.01, label="Noise level (σ)",
                                  info="smaller: sharper manifold, slower torus (finer quadrature)")
                a1 = gr.Slider(*ANGLE_1_RANGE, value=120, step=5, label="Endpoint b: angle 1 (deg)")
                a2 = gr.Slider(*ANGLE_2_RANGE, value=30, step=5, label="Endpoint b: angle 2 (deg)")
                n = gr.Slider(*page.limits.lab_points, value=13, step=1, label="Path points (lab)")
                iters = gr.Slider(*page.limits.lab_iterations, value=100, step=10, label="Iterations")
            with gr.Column(scale=2):
                plot = gr.Plot(label="Manifold and paths", elem_id="lab-plot")
                with gr.Row():
                    energy = gr.Plot(label="Lab energy")
                    table = gr.Markdown()
        inputs, outputs = [kind, lam, sigma, a1, a2, n, iters, metric], [plot, energy, table]
        # No model: its own small queue, so it stays live while model jobs run; only the latest value runs. "change"
        # fires on a drag, on a typed value + Enter, and on the arrows (release would wait for the field to lose focus).
        lab_kw = dict(concurrency_id="lab", concurrency_limit=4, trigger_mode="always_last")
        handler = lab_handler(page.models)
        tab.select(handler, inputs, outputs, api_name="lab", **lab_kw)
        for widget in (lam, sigma, a1, a2, n, iters, kind, metric):
            widget.change(handler, inputs, outputs, api_visibility="private", **lab_kw)
