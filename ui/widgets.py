"""Widgets the tabs share (guarded image inputs, mask editors, Run/Stop rows) and ``Page``, what every tab is built
from. Browser tests and API clients find widgets by their labels, element ids and API names: keep them stable."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ui.config import Limits
from ui.examples import Example
from ui.models import ModelManager

#: Default of every long handler's ``progress`` argument: Gradio sees it and passes a fresh tracker per call.
PROGRESS = gr.Progress()


@dataclass(frozen=True)
class Page:
    """What each tab's ``build`` needs: the model manager, the shared settings widgets (model, backend, steps, seed,
    in the order the handlers take them), the example inputs, and the queue keywords of model-bound events."""

    models: ModelManager
    settings: list[gr.components.Component]
    examples: list[Example] = field(default_factory=list)
    queue_kw: dict[str, Any] = field(default_factory=dict)

    @property
    def limits(self) -> Limits:
        """What one request may ask for (the sliders' ranges and choices come from here)."""
        return self.models.config.limits


#: Components whose values the handlers check themselves (:func:`checked_by_handler`).
VALUE_COMPONENTS = (gr.Number, gr.Slider, gr.Radio, gr.Dropdown, gr.Checkbox)


def checked_by_handler(component: gr.components.Component) -> gr.components.Component:
    """Hand ``component``'s value to the handler as it arrived, for the request's checks to name the field.

    Gradio's own preprocessing of numbers and choices fails on text or None with a generic error
    ("upstream Gradio app has raised an exception"), lets NaN through (NaN is neither below nor above a range),
    and refuses an out-of-range value without saying which field. The request dataclasses (``from_gradio``) check
    every value with ``ui.inputs`` (NaN, infinity, range, type, choices) and name the field and its range.
    Like :func:`guard_uploads`, this replaces ``preprocess`` on this instance only.
    """
    component.preprocess = lambda payload: payload
    return component


def guard_uploads(component: gr.components.Component) -> gr.components.Component:
    """Make ``component`` report an unreadable upload (not an image, a decompression bomb) as a clear ``gr.Error``.

    Gradio decodes uploads in the component's ``preprocess`` before any handler runs, so the guard wraps that method
    on this instance (a subclass would make Gradio write a ``.pyi`` stub beside this file).
    """
    inner = component.preprocess
    label = component.label or "image"

    @functools.wraps(inner)
    def preprocess(payload):
        try:
            return inner(payload)
        except gr.Error:
            raise
        except Exception:
            raise gr.Error(f"{label}: not a readable image file (PNG, JPEG, WebP, BMP, TIFF), or larger than "
                           f"the accepted size", title="Invalid input") from None

    component.preprocess = preprocess
    return component


#: The editors' initial canvas (pixels). Gradio's editor centres a mask layer that arrives with an image (an example's
#: prepared mask) in the larger of this canvas and the image: with the default 800 x 800 an example's mask on a 512 px
#: photo landed 144 px right of and below its object. A canvas smaller than any accepted image keeps it in place.
CANVAS_SIZE = (64, 64)


#: The mask brush's colour (magenta, see-through).
MASK_COLOR = ("#ff00ff", 0.6)

#: The brush's default radius as a fraction of the image's longer side: 20 px on a 512 px photo, 41 px on a
#: 1024 px working copy, so it looks the same size on the canvas whatever the image's size (gradio 6.31's "auto"
#: is a fixed 25 px: a hairline on a large photo shown at 10 %). The tool bar's brush-size button changes it (1-100).
BRUSH_FRACTION = 1 / 25

#: The image size the editors' brush is sized for before anything is uploaded (the examples are at most 512 px).
DEFAULT_BRUSH_SIDE = 512


def brush_radius(shape: tuple[int, ...]) -> int:
    """The default brush radius (image pixels) for an image of ``shape`` (H, W, ...): :data:`BRUSH_FRACTION` of its
    longer side, between 2 and 100 (the range of the editor's brush-size slider)."""
    return int(min(100, max(2, round(BRUSH_FRACTION * max(int(shape[0]), int(shape[1]))))))


def mask_brush(shape: tuple[int, ...] = (DEFAULT_BRUSH_SIDE, DEFAULT_BRUSH_SIDE)) -> gr.Brush:
    """The fixed magenta mask brush, its default radius sized for an image of ``shape`` (:func:`brush_radius`)."""
    return gr.Brush(default_size=brush_radius(shape), colors=[MASK_COLOR], color_mode="fixed")


def mask_editor(label: str, elem_id: str) -> gr.ImageEditor:
    """An image upload with a fixed magenta brush for painting the mask (its size follows each upload's size, see
    :func:`sized_canvas`)."""
    return guard_uploads(gr.ImageMask(
        label=label, type="numpy", image_mode=None, format="png", sources=("upload", "clipboard"), layers=False,
        transforms=(), brush=mask_brush(), height=360, elem_id=elem_id, canvas_size=CANVAS_SIZE))


def sized_canvas(value: Any, shape: tuple[int, ...]) -> dict:
    """A mask editor's update: ``value`` (an editor value, or ``gr.skip()`` to leave the picture as it is) with the
    brush sized for the image of ``shape`` now on the canvas (the new value under ``"value"``)."""
    if isinstance(value, dict) and value.get("__type__") == "update":  # gr.skip(): the picture stays
        return gr.update(brush=mask_brush(shape))
    return gr.update(value=value, brush=mask_brush(shape))


def image_input(label: str, elem_id: str | None = None) -> gr.Image:
    """An image upload handed to the handler as a file path (read by ``ui.inputs.read_image``)."""
    return guard_uploads(gr.Image(label=label, type="filepath", image_mode=None, sources=("upload", "clipboard"),
                                  height=300, elem_id=elem_id))


def output_image(label: str, elem_id: str | None = None, **kwargs: Any) -> gr.Image:
    """A result picture: lossless PNG, not editable; handlers return it as a file path (see ``ui.outputs``)."""
    return gr.Image(label=label, format="png", interactive=False, elem_id=elem_id, **kwargs)


def run_stop(run_label: str, api: str | None = None) -> tuple[gr.Button, gr.Button]:
    """A row with the tab's Run button and its Stop button (element ids ``<api>-run`` and ``<api>-stop``)."""
    with gr.Row():
        run = gr.Button(run_label, variant="primary", elem_id=f"{api}-run" if api else None)
        stop = gr.Button("Stop", variant="stop", elem_id=f"{api}-stop" if api else None)
    return run, stop


def stop_event(models: ModelManager):
    """The handler of a Stop button: sets the cancel flags of the session's running jobs."""

    def cancel(request: gr.Request = None) -> str:
        """Stop this session's running jobs and wait until they have ended: the final state ("Stopped: ...")."""
        return models.stop(request)

    return cancel
