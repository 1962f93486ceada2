"""The four editing tabs (``/remove``, ``/transfer``, ``/saliency``, ``/blend``): curve-matching edits of a painted
region. Each has a request built from its Gradio values, a handler, and the shared layout of :func:`edit_tab`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from pipeline import edit, viz
from pipeline.errors import InputError
from pipeline.images import resize_uint8
from ui.config import LOCAL_LIMITS, Limits
from ui.describe import edit_details, edit_summary
from ui.errors import ui_errors
from ui.inputs import Settings, choice, flag, number, read_editor, read_image, whole_number
from ui.models import ModelManager, Run
from ui.outputs import as_array, image_file, output_dir, plot_or_hidden
from ui.photos import (
    WORKING_SIDE,
    Original,
    Photo,
    editor_photo,
    full_size,
    prepare_file,
    prepare_upload,
    shrink_mask,
    size_note,
    working_copy,
    working_size,
)
from ui.widgets import (
    PROGRESS,
    Page,
    image_input,
    mask_editor,
    output_image,
    run_stop,
    sized_canvas,
    stop_event,
)

#: Range of the edit depth sliders (the library also checks t_edit against the model's training timesteps).
EDIT_DEPTH_RANGE = (50, 900)
#: Range of the saliency factor slider.
FACTOR_RANGE = (0.1, 4.0)
#: The removal tab's fills: "smooth", the tuned curve-matching removal from the harmonic fill of the surroundings
#: (best on smooth backgrounds); "generative", :data:`pipeline.edit.GENERATIVE_REMOVAL`'s mean of fills regenerated
#: from fresh noise (best where the hole must continue a texture: stripes, checks, dots).
REMOVE_FILLS = ("smooth", "generative")


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

    def library_kwargs(self, run: Run, tuned: edit.EditConfig) -> dict[str, Any]:
        """Keyword arguments of every edit call: config overrides (the DDIM steps from :func:`edit_steps` with the
        task's tuned config ``tuned``), seed, progress and cancel flag."""
        return dict(num_steps=edit_steps(tuned, self.t_edit, run.steps), t_edit=self.t_edit,
                    iterations=self.iterations, measure_curves=self.measure, seed=run.seed, progress=run.progress,
                    cancel=run.cancel)


#: The Steps setting at which every edit runs its task's tuned DDIM step size (``ui.config.AppConfig.steps``).
TUNED_AT_STEPS = 20


def edit_steps(tuned: edit.EditConfig, t_edit: int, steps: int) -> int:
    """DDIM steps of an edit to depth ``t_edit`` under the Steps setting ``steps``: the task's tuned step size
    (``tuned.t_edit / tuned.num_steps`` timesteps, e.g. 20 for removal, 25 for transfer) scaled by
    ``TUNED_AT_STEPS / steps``, so the default setting runs each task as it was tuned, a deeper edit takes
    proportionally more steps, and doubling the setting halves the step size. At least 1, at most ``t_edit``."""
    size = tuned.t_edit / tuned.num_steps * TUNED_AT_STEPS / steps
    return int(min(max(round(t_edit / size), 1), t_edit))


@dataclass(frozen=True, eq=False)
class RemoveRequest:
    """Remove object: the photo (full size and working copy) with the mask over the object."""

    photo: Photo
    options: EditOptions
    settings: Settings
    fill: str = "smooth"  # one of REMOVE_FILLS

    @property
    def image(self) -> np.ndarray:
        """The working copy the edit computes on (uint8 (h, w, 3))."""
        return self.photo.work

    @property
    def tuned(self) -> edit.RemoveConfig:
        """The tuned config of the chosen fill (its DDIM step size sets the steps at the Steps setting)."""
        return edit.RemoveConfig(**edit.GENERATIVE_REMOVAL) if self.fill == "generative" else edit.RemoveConfig()

    def library_kwargs(self, run: Run) -> dict[str, Any]:
        """Keyword arguments of ``remove_object``: the options', and for the generative fill its fresh noise and
        number of fills (the depth stays the slider's)."""
        kw = self.options.library_kwargs(run, self.tuned)
        if self.fill == "generative":
            kw.update(init_noise=edit.GENERATIVE_REMOVAL["init_noise"], samples=edit.GENERATIVE_REMOVAL["samples"])
        return kw

    @property
    def mask(self) -> np.ndarray:
        """The mask on the working copy ((h, w) bool)."""
        return self.photo.work_mask

    @classmethod
    def from_gradio(cls, editor, fill, t_edit, iterations, measure, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS, original: Original | None = None) -> RemoveRequest:
        """The ``/remove`` event's values in the order Gradio passes them, checked (numbers first); ``fill``: one
        of :data:`REMOVE_FILLS`; ``original``: the kept full-size photo of the canvas's working copy
        (``ui.photos``)."""
        fill = choice(fill, "fill", REMOVE_FILLS)
        options, settings = EditOptions.from_gradio(t_edit, iterations, measure, limits), \
            Settings.from_gradio(model, backend, steps, seed, limits)
        return cls(editor_photo(editor, original, "image"), options, settings, fill)


@dataclass(frozen=True, eq=False)
class TransferRequest:
    """Transfer: the photo with its target mask, and the source mask on the same image (``reference`` None) or on
    a reference image (both at the working size)."""

    photo: Photo
    reference: np.ndarray | None
    source_mask: np.ndarray
    options: EditOptions
    settings: Settings

    @property
    def image(self) -> np.ndarray:
        return self.photo.work

    @property
    def target_mask(self) -> np.ndarray:
        return self.photo.work_mask

    @classmethod
    def from_gradio(cls, target, source, t_edit, iterations, measure, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS, original: Original | None = None) -> TransferRequest:
        """The ``/transfer`` event's values in the order Gradio passes them, checked (numbers first)."""
        options, settings = EditOptions.from_gradio(t_edit, iterations, measure, limits), \
            Settings.from_gradio(model, backend, steps, seed, limits)
        photo = editor_photo(target, original, "image")
        ref, source_mask = read_editor(source, "source image")
        if ref.shape != photo.work.shape and ref.shape == photo.full.shape:  # a full-size source canvas
            source_mask = shrink_mask(source_mask, photo.work.shape[:2])
            ref = photo.work if np.array_equal(ref, photo.full) else working_copy(ref)
        elif max(ref.shape[:2]) > WORKING_SIDE:  # a large reference image: its working copy
            source_mask = shrink_mask(source_mask, working_size(ref.shape))
            ref = working_copy(ref)
        same = ref.shape == photo.work.shape and np.array_equal(ref, photo.work)
        return cls(photo, None if same else ref, source_mask, options, settings)


@dataclass(frozen=True, eq=False)
class SaliencyRequest:
    """Saliency: the photo, the mask over the region, and the factor (above 1: more salient; below 1: less)."""

    photo: Photo
    factor: float
    options: EditOptions
    settings: Settings

    @property
    def image(self) -> np.ndarray:
        return self.photo.work

    @property
    def mask(self) -> np.ndarray:
        return self.photo.work_mask

    @classmethod
    def from_gradio(cls, editor, factor, t_edit, iterations, measure, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS, original: Original | None = None) -> SaliencyRequest:
        """The ``/saliency`` event's values in the order Gradio passes them, checked (numbers first)."""
        factor = number(factor, "saliency factor", *FACTOR_RANGE)
        options, settings = EditOptions.from_gradio(t_edit, iterations, measure, limits), \
            Settings.from_gradio(model, backend, steps, seed, limits)
        return cls(editor_photo(editor, original, "image"), factor, options, settings)


@dataclass(frozen=True, eq=False)
class BlendRequest:
    """Blend: the background photo (full size and working copy), and the object image with the mask over the object
    (at its working size)."""

    photo: Photo
    foreground: np.ndarray
    mask: np.ndarray
    options: EditOptions
    settings: Settings

    @property
    def background(self) -> np.ndarray:
        return self.photo.work

    @classmethod
    def from_gradio(cls, background, foreground, t_edit, iterations, measure, model, backend, steps, seed,
                    limits: Limits = LOCAL_LIMITS, original: Original | None = None) -> BlendRequest:
        """The ``/blend`` event's values in the order Gradio passes them, checked (numbers first)."""
        options, settings = EditOptions.from_gradio(t_edit, iterations, measure, limits), \
            Settings.from_gradio(model, backend, steps, seed, limits)
        bg = Photo.of(read_image(background, "background image"))
        fg, mask = read_editor(foreground, "object image")
        if max(fg.shape[:2]) > WORKING_SIDE:
            mask = shrink_mask(mask, working_size(fg.shape))
            fg = working_copy(fg)
        return cls(bg, fg, mask, options, settings)


def edit_outputs(run: Run, photo: Photo, before: list[np.ndarray], result, name: str, extra: str = "",
                 session: Any = None):
    """(result file, before | after strip file, curves figure, loss plot (hidden when the loss says nothing), status,
    downloads, details, kept result) from an ``EditResult`` computed on ``photo.work``: the result is composited on
    the full-size ``photo.full``."""
    full, changed = full_size(photo, np.asarray(result.image), np.asarray(result.changed))
    strip = viz.side_by_side([*before, np.asarray(result.image)])
    measured = lambda which: {"target region": result.mean_curve(which)} \
        if getattr(result, f"curves_{which}") is not None else {}
    curves = viz.before_after_figure(as_array(result.timesteps), measured("before"), measured("after"),
                                     reference={"reference curve r*": result.mean_curve("reference")}, title="")
    summary, show_loss = edit_summary(result.task, result, size_note=photo.size_note(), model=run.model,
                                      work_shape=photo.work.shape, changed_full=changed, extra=extra)
    losses = None
    if show_loss:
        losses = viz.history_figure({"curve loss": as_array(result.loss_history)}, title="", ylabel="curve loss")
        losses.axes[0].set_xlabel("gradient step (generating from t_edit down to 0)")
    out = output_dir(session)
    files = [image_file(full, out, name), image_file(strip, out, f"{name}_before_after")]
    work = np.asarray(result.image)  # the edited working copy (the full size when the photo was not shrunk)
    kept = Original.keep(full, work, out)
    work_file = image_file(work, out, f"{name}_working_copy")
    return (files[0], files[1], curves, plot_or_hidden(losses), run.status(summary), files, edit_details(result),
            (kept, work_file))


def run_remove(req: RemoveRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """Remove the painted object: its generation curves are matched to the surrounding background's (from the
    harmonic fill, or from fresh noise with the mean of several fills: ``req.fill``)."""
    with models.run(req.settings, progress, session, gradients=True) as run:
        res = edit.remove_object(run.model, req.image, req.mask, **req.library_kwargs(run))
    fills = f", {res.diagnostics['samples']} generative fills averaged" if req.fill == "generative" else ""
    return edit_outputs(run, req.photo, [req.image], res, "removed", f"mask: {int(req.mask.sum())} px{fills}",
                        session)


def run_transfer(req: TransferRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """The target region takes on the content of the source region (same image, or a reference image)."""
    with models.run(req.settings, progress, session, gradients=True) as run:
        res = edit.transfer(run.model, req.image, req.target_mask, req.source_mask, reference=req.reference,
                            **req.options.library_kwargs(run, edit.TransferConfig()))
    same = req.reference is None
    before = [req.image] if same else [req.reference, req.image]
    return edit_outputs(run, req.photo, before, res, "transferred",
                        f"source: {'same image' if same else 'reference image'}, {int(req.source_mask.sum())} px",
                        session)


def run_saliency(req: SaliencyRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """Make the painted region more (factor > 1) or less (factor < 1) salient."""
    with models.run(req.settings, progress, session, gradients=True) as run:
        res = edit.adjust_saliency(run.model, req.image, req.mask, req.factor,
                                   **req.options.library_kwargs(run, edit.SaliencyConfig()))
    return edit_outputs(run, req.photo, [req.image], res, "saliency", f"factor {req.factor:g}", session)


def run_blend(req: BlendRequest, models: ModelManager, progress: Any = None, session: Any = None):
    """Paste the painted object of the object image into the background and harmonise it through its curves."""
    with models.run(req.settings, progress, session, gradients=True) as run:
        res = edit.blend(run.model, req.background, req.foreground, req.mask,
                         **req.options.library_kwargs(run, edit.BlendConfig()))
    fg = req.foreground if req.foreground.shape == req.background.shape else \
        resize_uint8(req.foreground, req.background.shape[:2])
    return edit_outputs(run, req.photo, [req.background, fg], res, "blended", f"object: {int(req.mask.sum())} px",
                        session)


def remove_event(models: ModelManager):
    """The ``/remove`` handler Gradio calls: its positional values -> :class:`RemoveRequest` -> :func:`run_remove`."""

    @ui_errors(hosted=models.config.hosted)
    def remove(editor, fill, t_edit, iterations, measure, model, backend, steps, seed, original=None,
               progress=PROGRESS, request: gr.Request = None):
        """Remove the painted object: its generation curves are matched to the surrounding background's (``fill``:
        "smooth" from the harmonic fill, "generative" the mean of fills from fresh noise)."""
        req = RemoveRequest.from_gradio(editor, fill, t_edit, iterations, measure, model, backend, steps, seed,
                                        models.config.limits, original)
        return run_remove(req, models, progress, request)

    return remove


def transfer_event(models: ModelManager):
    """The ``/transfer`` handler: positional values -> :class:`TransferRequest` -> :func:`run_transfer`."""

    @ui_errors(hosted=models.config.hosted)
    def transfer(target, source, t_edit, iterations, measure, model, backend, steps, seed, original=None,
                 progress=PROGRESS, request: gr.Request = None):
        """The target region takes on the content of the source region (same image, or a reference image)."""
        req = TransferRequest.from_gradio(target, source, t_edit, iterations, measure, model, backend, steps, seed,
                                          models.config.limits, original)
        return run_transfer(req, models, progress, request)

    return transfer


def saliency_event(models: ModelManager):
    """The ``/saliency`` handler: positional values -> :class:`SaliencyRequest` -> :func:`run_saliency`."""

    @ui_errors(hosted=models.config.hosted)
    def saliency(editor, factor, t_edit, iterations, measure, model, backend, steps, seed, original=None,
                 progress=PROGRESS, request: gr.Request = None):
        """Make the painted region more (factor > 1) or less (factor < 1) salient."""
        req = SaliencyRequest.from_gradio(editor, factor, t_edit, iterations, measure, model, backend, steps, seed,
                                          models.config.limits, original)
        return run_saliency(req, models, progress, request)

    return saliency


def blend_event(models: ModelManager):
    """The ``/blend`` handler: positional values -> :class:`BlendRequest` -> :func:`run_blend`."""

    @ui_errors(hosted=models.config.hosted)
    def blend(background, foreground, t_edit, iterations, measure, model, backend, steps, seed, original=None,
              progress=PROGRESS, request: gr.Request = None):
        """Paste the painted object of the object image into the background and harmonise it through its curves."""
        req = BlendRequest.from_gradio(background, foreground, t_edit, iterations, measure, model, backend, steps,
                                       seed, models.config.limits, original)
        return run_blend(req, models, progress, request)

    return blend


def upload_event(keep: bool, name: str = "image"):
    """An editor's upload handler: the working copy on the canvas, the full-size original kept (``keep``), a note on
    the sizes (``ui.photos.prepare_upload``)."""

    @ui_errors
    def upload(editor, original=None, request: gr.Request = None):
        value, kept, note = prepare_upload(editor, request, keep=keep, name=name, original=original)
        background = editor.get("background") if isinstance(editor, dict) else None
        if background is None or isinstance(note, dict):  # the server's own working copy is back on the canvas
            return value, kept, note  # (its brush was sized when it was sent)
        return sized_canvas(value, working_size(np.shape(background))), kept, note

    return upload


def upload_file_event(keep: bool, name: str = "image"):
    """The "Upload a photo" button's handler: the photo's working copy on the canvas (the browser never draws the
    full-size photo), the original kept (``keep``), a note on the sizes (``ui.photos.prepare_file``)."""

    @ui_errors
    def upload_file(path, request: gr.Request = None):
        value, kept, note = prepare_file(path, request, keep=keep, name=name)
        with Image.open(value["background"]) as work:  # the working copy's file (its header only)
            return sized_canvas(value, (work.height, work.width)), kept, note

    return upload_file


@ui_errors
def send_back(kept):
    """"Edit this result further": the last result's working copy on the canvas, its full-size picture kept."""
    if not kept:
        raise InputError("there is no result to edit yet: run the edit first")
    original, work_file = kept
    value = {"background": work_file, "layers": [], "composite": work_file}
    return (sized_canvas(value, original.working_shape), original,
            size_note(original.full_shape, original.working_shape))


@ui_errors
def send_back_file(kept):
    """"Edit this result further" for a plain image input (the blend background): the full-size result's file."""
    if not kept:
        raise InputError("there is no result to edit yet: run the edit first")
    return str(Path(kept[0].path).with_name("blended.png"))


#: When an image is uploaded for transfer, it is offered as the source canvas too (draw the source region on it).
#: Runs in the browser: no server endpoint (an API client could otherwise call it with any value).
COPY_TO_SOURCE_JS = """(target, source) => (target && target.background)
    ? {background: target.background, layers: [], composite: target.background}
    : source"""


# ====================================================================================================================
# Layout
# ====================================================================================================================
def edit_result_column(name: str, api: str) -> tuple[list[gr.components.Component], gr.Button]:
    """Outputs shared by the editing tabs, in the order :func:`edit_outputs` returns them (the status first on the
    page, next to the Run button on a phone), and the "Edit this result further" button."""
    status = gr.Markdown(elem_id=f"{api}-status")
    result = output_image(f"{name} result", f"{api}-result", buttons=["download", "fullscreen"])
    again = gr.Button("Edit this result further", size="sm", elem_id=f"{api}-again")
    with gr.Accordion("Details (configuration, diagnostics, time per stage)", open=False, elem_id=f"{api}-details"):
        details = gr.Markdown()
    before_after = output_image(f"{name} before | after (working size)")
    with gr.Row():
        curves = gr.Plot(label=f"{name}: generation curves before/after")
        losses = gr.Plot(label=f"{name}: curve loss")
    files = gr.File(label=f"{name} downloads", file_count="multiple")
    kept = gr.State(None)
    return [result, before_after, curves, losses, status, files, details, kept], again


@dataclass
class EditInputs:
    """What a tab's ``build_inputs`` makes: the handler's leading inputs, the canvas that keeps a full-size original
    (with its state and size note), and a function that adds the examples (called below the inputs)."""

    inputs: list
    canvas: Any
    original: gr.State
    examples: Callable[[], None]
    note: Any = None
    wire: Callable[[gr.Slider, gr.Slider], None] | None = None  # connects inputs that reset depth and steps


def edit_tab(page: Page, title: str, api: str, text: str, handler: Callable, run_label: str,
             build_inputs: Callable[[Page], EditInputs], defaults) -> list:
    """One editing tab: inputs built by ``build_inputs`` (the handler's leading inputs) with their examples, then the
    edit depth, the Run/Stop buttons, and the shared outputs. The depth and gradient-step sliders start at
    ``defaults``, the task's tuned config (``pipeline.edit.<Task>Config()``)."""
    with gr.Tab(title, id=api):
        gr.Markdown(text + f" Large photos are edited on a working copy (at most {WORKING_SIDE} px a side) and the "
                    "result is composited on the full-size original; the *Upload a photo* button sends a large "
                    "photo straight to the server, so the page only ever draws its working copy. The brush starts "
                    "sized for the picture; its size button (under the colour, in the editor's tool bar) changes it, "
                    "and a stroke may begin just off the picture.")
        with gr.Row(equal_height=False):
            with gr.Column():
                made = build_inputs(page)
                made.examples()
                depth = gr.Slider(*EDIT_DEPTH_RANGE, value=defaults.t_edit, step=10,
                                  label=f"{title}: edit depth (t_edit)",
                                  info="how far the image is turned towards noise before it is generated back: "
                                       "deeper = freer edit, less faithful")
                with gr.Accordion("Advanced", open=False, elem_id=f"{api}-advanced"):
                    iters = gr.Slider(*page.limits.edit_iterations, value=defaults.iterations, step=1,
                                      label=f"{title}: gradient steps per timestep",
                                      info="0 switches the curve matching off (the ablation)")
                    measure = gr.Checkbox(value=True, label=f"{title}: measure curves before/after",
                                          info="one more inversion and two curve measurements")
                if made.wire is not None:
                    made.wire(depth, iters)
                run, stop = run_stop(run_label, api)
            with gr.Column():
                outs, again = edit_result_column(title, api)
        ev = run.click(handler, [*made.inputs, depth, iters, measure, *page.settings, made.original], outs,
                       api_name=api, **page.queue_kw)
        stop.click(stop_event(page.models), None, outs[4], cancels=[ev], api_name=f"cancel_{api}", queue=False)
        if isinstance(made.canvas, gr.ImageEditor):
            again.click(send_back, outs[-1], [made.canvas, made.original, made.note], api_visibility="private",
                        queue=False)
        else:  # a plain image input (the blend background): the full-size result file
            again.click(send_back_file, outs[-1], made.canvas, api_visibility="private", queue=False)
    return made.inputs


def _editor(page: Page, label: str, elem_id: str, *, keep: bool = True):
    """A mask editor whose uploads become working copies (the original kept when ``keep``), with its size note:
    -> (editor, original state, note, the upload event)."""
    canvas = mask_editor(label, elem_id)
    with gr.Row():
        note = gr.Markdown(elem_id=f"{elem_id}-note")
        button = gr.UploadButton("Upload a photo (any size)", file_types=["image"], type="filepath", size="sm",
                                 variant="secondary", elem_id=f"{elem_id}-photo", scale=0, min_width=200)
    original = gr.State(None)
    outputs = [canvas, original, note]
    # the editor reports an upload also when the server puts a working copy on it: show_progress "minimal" keeps the
    # canvas paintable meanwhile (a full overlay swallowed the first stroke)
    uploaded = canvas.upload(upload_event(keep), [canvas, original], outputs, api_visibility="private",
                             concurrency_id="uploads", concurrency_limit=2, show_progress="minimal")
    button.upload(upload_file_event(keep), button, outputs, api_visibility="private", concurrency_id="uploads",
                  concurrency_limit=2)
    return canvas, original, note, uploaded


def _editor_examples(page: Page, editor: gr.ImageEditor, api: str) -> Callable[[], None]:
    def add() -> None:
        if page.examples:
            gr.Examples([[e.editor()] for e in page.examples], inputs=[editor],
                        label="Examples: photographs and scenes (the first ones with a prepared mask)",
                        cache_examples=False, examples_per_page=12, elem_id=f"{api}-examples")
    return add


def remove_fill_defaults(fill: str) -> tuple[int, int]:
    """(depth, gradient steps per timestep) the sliders take when a removal fill is chosen (the browser sets them: no
    server endpoint). Smooth: ``RemoveConfig``'s. Generative: ``GENERATIVE_REMOVAL``'s depth without the curve loss,
    the better and 6 times faster choice on held-out textured scenes (20.01 dB against 19.70 with the loss,
    ``benchmarks/results/edit_quality_textured_model-textured.md``)."""
    if fill == "generative":
        return edit.GENERATIVE_REMOVAL["t_edit"], 0
    return edit.RemoveConfig().t_edit, edit.RemoveConfig().iterations


def _remove_inputs(page: Page) -> EditInputs:
    editor, original, note, _ = _editor(page, "Remove object: image and mask", "remove-editor")
    fill = gr.Radio([("Smooth: curve matching from the surroundings' smooth fill", "smooth"),
                     (f"Generative: mean of {edit.GENERATIVE_REMOVAL['samples']} fills from fresh noise "
                      f"({edit.GENERATIVE_REMOVAL['samples']}x the time)", "generative")],
                    value="smooth", label="Remove object: fill", elem_id="remove-fill",
                    info="smooth suits plain backgrounds; generative continues textures (stripes, checks, dots), "
                         "best with the textured model")

    def wire(depth: gr.Slider, iters: gr.Slider) -> None:  # choosing a fill sets the depth and steps it was tuned at
        gen, smooth = list(remove_fill_defaults("generative")), list(remove_fill_defaults("smooth"))
        fill.change(None, fill, [depth, iters], js=f"(f) => f === 'generative' ? {gen} : {smooth}", queue=False)

    return EditInputs([editor, fill], editor, original, _editor_examples(page, editor, "remove"), note, wire)


def _transfer_inputs(page: Page) -> EditInputs:
    target, original, note, uploaded = _editor(page, "Transfer: image and target mask", "transfer-editor")
    source = mask_editor("Transfer: source image and source mask", "transfer-source")
    source_note = gr.Markdown(elem_id="transfer-source-note")
    # a large source image gets its working copy too (no original kept: it enters the result through the model)
    source.upload(upload_event(False, "source image"), source, [source, gr.State(None), source_note],
                  api_visibility="private", concurrency_id="uploads", concurrency_limit=2, show_progress="minimal")
    # then the target's working copy is offered as the source canvas too (in the browser: no server endpoint)
    uploaded.then(None, [target, source], source, js=COPY_TO_SOURCE_JS, queue=False)
    return EditInputs([target, source], target, original, _editor_examples(page, target, "transfer"), note)


def _saliency_inputs(page: Page) -> EditInputs:
    editor, original, note, _ = _editor(page, "Saliency: image and mask", "saliency-editor")
    factor = gr.Slider(*FACTOR_RANGE, value=2.0, step=0.1, label="Saliency factor",
                       info="above 1: more salient; below 1: less")
    return EditInputs([editor, factor], editor, original, _editor_examples(page, editor, "saliency"), note)


def _blend_inputs(page: Page) -> EditInputs:
    bg = image_input("Blend: background image", "blend-background")
    fg, _, note, _ = _editor(page, "Blend: object image and mask", "blend-editor", keep=False)
    ex = page.examples

    def add() -> None:
        if len(ex) >= 2:
            gr.Examples([[ex[i + 1].image, ex[i].editor()] for i in range(0, len(ex) - 1, 2)], inputs=[bg, fg],
                        label="Example pairs", cache_examples=False, elem_id="blend-examples")

    return EditInputs([bg, fg], bg, gr.State(None), add, note)


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
