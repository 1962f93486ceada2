"""The four editing tabs (``/remove``, ``/transfer``, ``/saliency``, ``/blend``): curve-matching edits of a painted
region. Each has a request built from its Gradio values, a handler, and the shared layout of :func:`edit_tab`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from pipeline import edit, viz
from ui.config import LOCAL_LIMITS, Limits
from ui.errors import ui_errors
from ui.inputs import Settings, flag, number, read_editor, read_image, whole_number
from ui.models import ModelManager, Run
from ui.outputs import as_array, image_file, output_dir
from ui.widgets import PROGRESS, Page, image_input, mask_editor, output_image, run_stop, stop_event

#: Range of the edit depth sliders (the library also checks t_edit against the model's training timesteps).
EDIT_DEPTH_RANGE = (50, 900)
#: Range of the saliency factor slider.
FACTOR_RANGE = (0.1, 4.0)


@dataclass(frozen=True)
class EditOptions:
    """What every edit takes besides its images: depth ``t_edit``, gradient steps per timestep, measure curves."""

    t_edit: int
    iterations: int
    measure: bool

    @classmethod
    def from_gradio(cls, t_edit: Any, iterations: Any, measure: Any, limits: Limits = LOCAL_LIMITS) -> EditOptions:
        """The depth slider, gradient-step slider and measure checkbox, checked (the library checks ``t_edit``
        against the model's training timesteps)."""
        return cls(whole_number(t_edit, "edit depth t_edit", *EDIT_DEPTH_RANGE),
                   whole_number(iterations, "gradient steps per timestep", *limits.edit_iterations),
                   flag(measure, "measure curves"))

    def library_kwargs(self, run: Run) -> dict[str, Any]:
        """Keyword arguments of every edit call: config overrides, seed, progress and cancel flag."""
        return dict(num_steps=min(run.steps, self.t_edit), t_edit=self.t_edit, iterations=self.iterations,
                    measure_curves=self.measure, seed=run.seed, progress=run.progress, cancel=run.cancel)


@dataclass(frozen=True, eq=False)
class RemoveRequest:
    """Remove object: the image and the mask over the object."""

    image: np.ndarray
    mask: np.ndarray
    options: EditOptions
    settings: Settings

    @classmethod
    def from_gradio(cls, editor, t_edit, iterations, measure, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS) -> RemoveRequest:
        """The ``/remove`` event's values in the order Gradio passes them, checked (numbers first)."""
        options, settings = EditOptions.from_gradio(t_edit, iterations, measure, limits), \
            Settings.from_gradio(model, backend, steps, seed, limits)
        image, mask = read_editor(editor, "image")
        return cls(image, mask, options, settings)


@dataclass(frozen=True, eq=False)
class TransferRequest:
    """Transfer: the image with its target mask, and the source mask on the same image (``reference`` None) or on
    a reference image."""

    image: np.ndarray
    target_mask: np.ndarray
    reference: np.ndarray | None
    source_mask: np.ndarray
    options: EditOptions
    settings: Settings

    @classmethod
    def from_gradio(cls, target, source, t_edit, iterations, measure, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS) -> TransferRequest:
        """The ``/transfer`` event's values in the order Gradio passes them, checked (numbers first)."""
        options, settings = EditOptions.from_gradio(t_edit, iterations, measure, limits), \
            Settings.from_gradio(model, backend, steps, seed, limits)
        image, target_mask = read_editor(target, "image")
        ref, source_mask = read_editor(source, "source image")
        same = ref.shape == image.shape and np.array_equal(ref, image)
        return cls(image, target_mask, None if same else ref, source_mask, options, settings)


@dataclass(frozen=True, eq=False)
class SaliencyRequest:
    """Saliency: the image, the mask over the region, and the factor (above 1: more salient; below 1: less)."""

    image: np.ndarray
    mask: np.ndarray
    factor: float
    options: EditOptions
    settings: Settings

    @classmethod
    def from_gradio(cls, editor, factor, t_edit, iterations, measure, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS) -> SaliencyRequest:
        """The ``/saliency`` event's values in the order Gradio passes them, checked (numbers first)."""
        factor = number(factor, "saliency factor", *FACTOR_RANGE)
        options, settings = EditOptions.from_gradio(t_edit, iterations, measure, limits), \
            Settings.from_gradio(model, backend, steps, seed, limits)
        image, mask = read_editor(editor, "image")
        return cls(image, mask, factor, options, settings)


@dataclass(frozen=True, eq=False)
class BlendRequest:
    """Blend: the background image, and the object image with the mask over the object."""

    background: np.ndarray
    foreground: np.ndarray
    mask: np.ndarray
    options: EditOptions
    settings: Settings

    @classmethod
    def from_gradio(cls, background, foreground, t_edit, iterations, measure, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS) -> BlendRequest:
        """The ``/blend`` event's values in the order Gradio passes them, checked (numbers first)."""
        options, settings = EditOptions.from_gradio(t_edit, iterations, measure, limits), \
            Settings.from_gradio(model, backend, steps, seed, limits)
        bg = read_image(background, "background image")
        fg, mask = read_editor(foreground, "object image")
        return cls(bg, fg, mask, options, settings)


def edit_outputs(run: Run, before: list[np.ndarray], result, name: str, extra: str = "", session: Any = None):
    """(result file, before | after strip file, curves figure, loss figure, status, downloads) from an
    ``EditResult``."""
    edited = np.asarray(result.image)
    strip = viz.side_by_side([*before, edited])
    measured = lambda which: {"target region": result.mean_curve(which)} \
        if getattr(result, f"curves_{which}") is not None else {}
    curves = viz.before_after_figure(as_array(result.timesteps), measured("before"), measured("after"),
                                     reference={"reference r*": result.mean_curve("reference")}, title="")
    losses = None
    if len(result.loss_history):
        losses = viz.history_figure({"curve loss": as_array(result.loss_history)}, title="", ylabel="loss")
    out = output_dir(session)
    files = [image_file(edited, out, name), image_file(strip, out, f"{name}_before_after")]
    diag = result.diagnostics or {}
    before_err, after_err = diag.get("curve_error_before"), diag.get("curve_error_after")
    loss_note = f"; curve error {before_err:.3g} → {after_err:.3g}" if None not in (before_err, after_err) else ""
    return files[0], files[1], curves, losses, run.status(f"{extra}{loss_note}"), files


def run_remove(req: RemoveRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """Remove the painted object: its generation curves are matched to the surrounding background's."""
    with models.run(req.settings, progress, session, gradients=True) as run:
        res = edit.remove_object(run.model, req.image, req.mask, **req.options.library_kwargs(run))
    return edit_outputs(run, [req.image], res, "removed", f"mask: {int(req.mask.sum())} px", session)


def run_transfer(req: TransferRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """The target region takes on the content of the source region (same image, or a reference image)."""
    with models.run(req.settings, progress, session, gradients=True) as run:
        res = edit.transfer(run.model, req.image, req.target_mask, req.source_mask, reference=req.reference,
                            **req.options.library_kwargs(run))
    same = req.reference is None
    before = [req.image] if same else [req.reference, req.image]
    return edit_outputs(run, before, res, "transferred",
                        f"source: {'same image' if same else 'reference image'}, {int(req.source_mask.sum())} px",
                        session)


def run_saliency(req: SaliencyRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """Make the painted region more (factor > 1) or less (factor < 1) salient."""
    with models.run(req.settings, progress, session, gradients=True) as run:
        res = edit.adjust_saliency(run.model, req.image, req.mask, req.factor, **req.options.library_kwargs(run))
    return edit_outputs(run, [req.image], res, "saliency", f"factor {req.factor:g}", session)


def run_blend(req: BlendRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """Paste the painted object of the object image into the background and harmonise it through its curves."""
    with models.run(req.settings, progress, session, gradients=True) as run:
        res = edit.blend(run.model, req.background, req.foreground, req.mask, **req.options.library_kwargs(run))
    return edit_outputs(run, [req.background, req.foreground], res, "blended", f"object: {int(req.mask.sum())} px",
                        session)


def remove_event(models: ModelManager):
    """The ``/remove`` handler Gradio calls: its positional values -> :class:`RemoveRequest` -> :func:`run_remove`."""

    @ui_errors(hosted=models.config.hosted)
    def remove(editor, t_edit, iterations, measure, model, backend, steps, seed, progress=PROGRESS,
               request: gr.Request = None):
        """Remove the painted object: its generation curves are matched to the surrounding background's."""
        req = RemoveRequest.from_gradio(editor, t_edit, iterations, measure, model, backend, steps, seed,
                                        models.config.limits)
        return run_remove(req, models, progress, request)

    return remove


def transfer_event(models: ModelManager):
    """The ``/transfer`` handler: positional values -> :class:`TransferRequest` -> :func:`run_transfer`."""

    @ui_errors(hosted=models.config.hosted)
    def transfer(target, source, t_edit, iterations, measure, model, backend, steps, seed, progress=PROGRESS,
                 request: gr.Request = None):
        """The target region takes on the content of the source region (same image, or a reference image)."""
        req = TransferRequest.from_gradio(target, source, t_edit, iterations, measure, model, backend, steps, seed,
                                          models.config.limits)
        return run_transfer(req, models, progress, request)

    return transfer


def saliency_event(models: ModelManager):
    """The ``/saliency`` handler: positional values -> :class:`SaliencyRequest` -> :func:`run_saliency`."""

    @ui_errors(hosted=models.config.hosted)
    def saliency(editor, factor, t_edit, iterations, measure, model, backend, steps, seed, progress=PROGRESS,
                 request: gr.Request = None):
        """Make the painted region more (factor > 1) or less (factor < 1) salient."""
        req = SaliencyRequest.from_gradio(editor, factor, t_edit, iterations, measure, model, backend, steps, seed,
                                          models.config.limits)
        return run_saliency(req, models, progress, request)

    return saliency


def blend_event(models: ModelManager):
    """The ``/blend`` handler: positional values -> :class:`BlendRequest` -> :func:`run_blend`."""

    @ui_errors(hosted=models.config.hosted)
    def blend(background, foreground, t_edit, iterations, measure, model, backend, steps, seed, progress=PROGRESS,
              request: gr.Request = None):
        """Paste the painted object of the object image into the background and harmonise it through its curves."""
        req = BlendRequest.from_gradio(background, foreground, t_edit, iterations, measure, model, backend, steps,
                                       seed, models.config.limits)
        return run_blend(req, models, progress, request)

    return blend


#: When an image is uploaded for transfer, it is offered as the source canvas too (draw the source region on it).
#: Runs in the browser: no server endpoint (an API client could otherwise call it with any value).
COPY_TO_SOURCE_JS = """(target, source) => (target && target.background)
    ? {background: target.background, layers: [], composite: target.background}
    : source"""


# ====================================================================================================================
# Layout
# ====================================================================================================================
def edit_result_column(name: str, api: str) -> list[gr.components.Component]:
    """Outputs shared by the editing tabs, in the order :func:`edit_outputs` returns them."""
    result = output_image(f"{name} result", f"{api}-result", buttons=["download", "fullscreen"])
    before_after = output_image(f"{name} before | after")
    with gr.Row():
        curves = gr.Plot(label=f"{name} curves before/after")
        losses = gr.Plot(label=f"{name} loss")
    status = gr.Markdown(elem_id=f"{api}-status")
    files = gr.File(label=f"{name} downloads", file_count="multiple")
    return [result, before_after, curves, losses, status, files]


def edit_tab(page: Page, title: str, api: str, text: str, handler: Callable, run_label: str,
             build_inputs: Callable[[Page], list], defaults) -> list:
    """One editing tab: inputs built by ``build_inputs`` (the handler's leading inputs), then the edit depth, the
    Run/Stop buttons, and the shared outputs. The depth and gradient-step sliders start at ``defaults``, the task's
    tuned config (``pipeline.edit.<Task>Config()``)."""
    with gr.Tab(title, id=api):
        gr.Markdown(text)
        with gr.Row():
            with gr.Column():
                inputs = build_inputs(page)
                depth = gr.Slider(*EDIT_DEPTH_RANGE, value=defaults.t_edit, step=10,
                                  label=f"{title}: edit depth t_edit",
                                  info="how far the image is inverted: deeper = freer edit, less faithful")
                with gr.Accordion("Advanced", open=False, elem_id=f"{api}-advanced"):
                    iters = gr.Slider(*page.limits.edit_iterations, value=defaults.iterations, step=1,
                                      label=f"{title}: gradient steps per timestep",
                                      info="0 switches the curve matching off (the ablation)")
                    measure = gr.Checkbox(value=True, label=f"{title}: measure curves before/after",
                                          info="one more inversion and two rate passes")
                run, stop = run_stop(run_label)
            with gr.Column():
                outs = edit_result_column(title, api)
        ev = run.click(handler, [*inputs, depth, iters, measure, *page.settings], outs, api_name=api, **page.queue_kw)
        stop.click(stop_event(page.models), None, outs[4], cancels=[ev], api_name=f"cancel_{api}", queue=False)
    return inputs


def _editor_examples(page: Page, editor: gr.ImageEditor) -> None:
    if page.examples:
        gr.Examples([[e.editor()] for e in page.examples], inputs=[editor], label="Example scenes (with masks)",
                    cache_examples=False)


def _remove_inputs(page: Page) -> list:
    editor = mask_editor("Remove object: image and mask", "remove-editor")
    _editor_examples(page, editor)
    return [editor]


def _transfer_inputs(page: Page) -> list:
    target = mask_editor("Transfer: image and target mask", "transfer-editor")
    source = mask_editor("Transfer: source image and source mask", "transfer-source")
    _editor_examples(page, target)
    target.upload(None, [target, source], source, js=COPY_TO_SOURCE_JS, queue=False)
    return [target, source]


def _saliency_inputs(page: Page) -> list:
    editor = mask_editor("Saliency: image and mask", "saliency-editor")
    factor = gr.Slider(*FACTOR_RANGE, value=2.0, step=0.1, label="Saliency factor",
                       info="above 1: more salient; below 1: less")
    _editor_examples(page, editor)
    return [editor, factor]


def _blend_inputs(page: Page) -> list:
    bg = image_input("Blend: background image", "blend-background")
    fg = mask_editor("Blend: object image and mask", "blend-editor")
    ex = page.examples
    if len(ex) >= 2:
        gr.Examples([[ex[i + 1].image, ex[i].editor()] for i in range(0, len(ex) - 1, 2)], inputs=[bg, fg],
                    label="Example pairs", cache_examples=False)
    return [bg, fg]


def build(page: Page) -> None:
    """The four editing tabs, in the page's order."""
    models = page.models
    edit_tab(page, "Remove object", "remove", "Paint over the object to remove; the background fills in.",
             remove_event(models), "Remove object", _remove_inputs, edit.RemoveConfig())
    edit_tab(page, "Transfer", "transfer", "Paint the target region on the image, and the source region on the "
             "second canvas (the same image by default; upload a reference image there to take content from it).",
             transfer_event(models), "Transfer content", _transfer_inputs, edit.TransferConfig())
    edit_tab(page, "Saliency", "saliency", "Paint a region to make more (factor > 1) or less (factor < 1) salient.",
             saliency_event(models), "Adjust saliency", _saliency_inputs, edit.SaliencyConfig())
    edit_tab(page, "Blend", "blend", "Paint the object on the object image; it is pasted into the background at the "
             "same place and harmonised.", blend_event(models), "Blend images", _blend_inputs, edit.BlendConfig())
