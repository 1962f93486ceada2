"""Tab "Geometry lab" (``/lab``): noise-smoothed data on a sphere or a torus, whose score is known in closed form, so
the score-metric geodesic can be drawn against the chord and the true geodesic. No model: it runs live."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import gradio as gr
import numpy as np
import torch

from pipeline import geodesic, synthetic, viz
from pipeline.errors import InputError
from ui.errors import ui_errors
from ui.inputs import whole_number
from ui.outputs import as_array
from ui.widgets import Page

MANIFOLDS = ("sphere", "torus")


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

    @classmethod
    def from_gradio(cls, manifold, lam, sigma, angle_1, angle_2, n_points, iterations) -> LabRequest:
        """The ``/lab`` event's values in the order Gradio passes them, checked."""
        n_points = whole_number(n_points, "points", 3, 128)
        iterations = whole_number(iterations, "iterations", 1, 2000)
        try:
            lam, sigma, angle_1, angle_2 = float(lam), float(sigma), float(angle_1), float(angle_2)
        except (TypeError, ValueError):
            raise InputError("lambda, sigma and the angles must be numbers") from None
        if manifold not in MANIFOLDS:
            raise InputError(f"manifold must be 'sphere' or 'torus', got {manifold!r}")
        return cls(manifold, lam, sigma, angle_1, angle_2, n_points, iterations)


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


def run_lab(req: LabRequest):
    """Score-metric geodesic on the smoothed manifold, with the chord and the true geodesic -> (3D figure, energy
    figure, Markdown table of lengths)."""
    m, a, b = lab_manifold(req.manifold, req.sigma, req.angle_1, req.angle_2)
    res = geodesic.geodesic_bvp(m.score, a, b, lam=req.lam, n_points=req.n_points, score_jvp=m.score_jvp,
                                max_iter=req.iterations)
    path = as_array(res.path)
    true_path = true_geodesic(req.manifold, req.angle_1, req.angle_2)
    chord = np.stack([path[0], path[-1]])
    mesh = viz.sphere_mesh(1.0) if req.manifold == "sphere" else viz.torus_mesh(1.0, 0.4)
    fig = viz.surface_figure(mesh, {"score-metric geodesic": path, "true geodesic": true_path, "chord": chord},
                             points={"a": path[0], "b": path[-1]},
                             title=f"{req.manifold}: λ = {req.lam:g}, σ = {req.sigma:g}")
    energy = viz.history_figure({"energy": res.energy}) if len(res.energy) > 1 else None
    length = lambda p: float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())
    table = (f"| path | Euclidean length |\n|---|---|\n| score-metric geodesic | {length(path):.4f} |\n"
             f"| true geodesic | {length(true_path):.4f} |\n| chord | {length(chord):.4f} |\n\n"
             f"{res.iterations} iterations ({res.reason}), metric length {res.length:.4g} "
             f"(start {res.initial_length:.4g}), {res.seconds:.2f} s")
    return fig, energy, table


@ui_errors
def lab_event(manifold, lam, sigma, angle_1, angle_2, n_points, iterations):
    """Score-metric geodesic on a noise-smoothed sphere or torus, with the chord and the true geodesic, in 3D."""
    # Gradio shows this docstring as the /lab endpoint's description: positional values -> LabRequest -> run_lab.
    return run_lab(LabRequest.from_gradio(manifold, lam, sigma, angle_1, angle_2, n_points, iterations))


def build(page: Page) -> None:
    """The tab's widgets and events. Runs on its own small queue, so it stays live while model jobs run."""
    with gr.Tab("Geometry lab", id="lab") as tab:
        gr.Markdown("Noise-smoothed data on a sphere or a torus, whose score is known in closed form. The "
                    "score-metric geodesic (solid) bends from the chord (dotted) towards the true geodesic "
                    "(dashed) as λ grows and σ shrinks.")
        with gr.Row():
            with gr.Column(scale=1):
                kind = gr.Radio(list(MANIFOLDS), value="sphere", label="Manifold")
                lam = gr.Slider(0, 2000, value=200, step=10, label="Lambda")
                sigma = gr.Slider(0.08, 0.5, value=0.15, step=0.01, label="Noise level sigma",
                                  info="smaller: sharper manifold, slower torus (finer quadrature)")
                a1 = gr.Slider(-180, 180, value=120, step=5, label="Endpoint b: angle 1 (deg)")
                a2 = gr.Slider(-90, 90, value=30, step=5, label="Endpoint b: angle 2 (deg)")
                n = gr.Slider(5, 33, value=13, step=1, label="Path points (lab)")
                iters = gr.Slider(10, 500, value=100, step=10, label="Iterations")
            with gr.Column(scale=2):
                plot = gr.Plot(label="Manifold and paths", elem_id="lab-plot")
                with gr.Row():
                    energy = gr.Plot(label="Lab energy")
                    table = gr.Markdown()
        inputs, outputs = [kind, lam, sigma, a1, a2, n, iters], [plot, energy, table]
        # No model: its own small queue, so it stays live while model jobs run; only the latest slider value runs.
        lab_kw = dict(concurrency_id="lab", concurrency_limit=4, trigger_mode="always_last")
        tab.select(lab_event, inputs, outputs, api_name="lab", **lab_kw)
        for widget in (lam, sigma, a1, a2, n, iters):
            widget.release(lab_event, inputs, outputs, api_visibility="private", **lab_kw)
        kind.change(lab_event, inputs, outputs, api_visibility="private", **lab_kw)
