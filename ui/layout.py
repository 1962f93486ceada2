"""The page: header, shared settings, the tabs in their order, and the queue (``build_demo``)."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from pipeline import images
from ui import edit_tab, geodesic_tab, lab_tab, rates_tab
from ui.config import AppConfig
from ui.describe import MODEL_NOTE
from ui.examples import example_inputs
from ui.inputs import MAX_SEED
from ui.models import ModelManager
from ui.widgets import VALUE_COMPONENTS, Page, checked_by_handler

#: The page's own CSS (``demo.launch(css=PAGE_CSS)``). On a phone the mask editors' tool bar (30 px wide, 15 px from
#: the left, over the canvas) covered the picture's left edge: there the canvas starts right of it.
PAGE_CSS = """
@media (max-width: 640px) {
  .image-container .pixi-target { left: 50px !important; width: calc(100% - 50px) !important; }
}
"""

#: Runs in the browser when the page loads (``demo.load(js=...)``), before any mask editor starts (the editors' tabs
#: mount when first opened). Gradio's editor (6.31, PixiJS 8) starts a brush stroke only on a press over the image,
#: judged by the last hover move: a stroke that began just off the image painted nothing, even once it crossed onto
#: the picture. For each editor's PixiJS application (announced through PixiJS's ``__PIXI_APP_INIT__`` hook) this
#: tells the tools where every press is (a touch has no hover move before it), and a brush or eraser press off the
#: image starts the stroke where the pointer first crosses onto the image (found by bisecting the move that crossed).
EDITOR_JS = """() => {
  if (globalThis.__diffgeoEditors) return;
  globalThis.__diffgeoEditors = true;
  const hook = (app) => {
    if (!app || app.__diffgeo) return;
    app.__diffgeo = true;
    const stage = app.stage;
    stage.hitArea = app.screen;  // presses on the canvas around the image reach the stage too
    const picture = () => stage.children.find((c) => c.sortableChildren && c.eventMode === "static");
    const inside = (b, p) => p.x >= b.x && p.x <= b.x + b.width && p.y >= b.y && p.y <= b.y + b.height;
    const painting = () => {
      const block = app.canvas && app.canvas.closest(".block");
      return !!(block && block.querySelector(
        'button[aria-label="Brush"].highlight, button[aria-label="Erase"].highlight'));
    };
    const at = (e, p) => { const f = Object.create(e); f.global = p; f.diffgeo = true; return f; };
    let last = null;  // the last point of a brush press that is still off the image
    stage.on("pointerdown", (e) => {
      if (e.diffgeo || !picture()) return;
      const p = {x: e.global.x, y: e.global.y};
      stage.emit("pointermove", at(e, p));  // a touch has no hover: the tools learn where the press is
      last = !inside(picture().getBounds(), p) && painting() ? p : null;
    });
    stage.on("pointermove", (e) => {
      if (!last || e.diffgeo || !picture()) return;
      const b = picture().getBounds(), p = {x: e.global.x, y: e.global.y};
      if (!inside(b, p)) { last = p; return; }
      let lo = 0, hi = 1;
      for (let i = 0; i < 24; i++) {
        const t = (lo + hi) / 2;
        if (inside(b, {x: last.x + t * (p.x - last.x), y: last.y + t * (p.y - last.y)})) hi = t; else lo = t;
      }
      const q = {x: last.x + hi * (p.x - last.x), y: last.y + hi * (p.y - last.y)};
      last = null;
      stage.emit("pointermove", at(e, q));
      stage.emit("pointerdown", at(e, q));  // then this move draws on from q
    });
    const end = () => { last = null; };
    stage.on("pointerup", end);
    stage.on("pointerupoutside", end);
  };
  const before = globalThis.__PIXI_APP_INIT__;
  globalThis.__PIXI_APP_INIT__ = (app, version) => { hook(app); if (before) before(app, version); };
  if (globalThis.__PIXI_APP__) hook(globalThis.__PIXI_APP__);
}"""

#: Label of the settings' model dropdown (browser tests find widgets by their labels: keep them stable).
MODEL_LABEL = "Model"


def settings_row(cfg: AppConfig) -> list[gr.components.Component]:
    """The shared settings, in the order every model-bound handler takes them: model, backend, steps, seed. Their
    ranges and choices are the configuration's limits (``AppConfig.limits``)."""
    limits = cfg.limits
    with gr.Row():
        model = gr.Dropdown(choices=list(cfg.model_choices()), value=cfg.default_choice, label=MODEL_LABEL,
                            allow_custom_value=not cfg.hosted,
                            info="default, or a local diffusers folder / hub id" if not cfg.hosted else None)
        backend = gr.Radio(list(limits.backends), value="auto", label="Backend",
                           info="the one that actually ran is shown under each result")
        steps = gr.Slider(*limits.steps, value=min(max(cfg.steps, limits.steps[0]), limits.steps[1]), step=1,
                          label="Steps", info="timesteps of the curves / DDIM steps")
        seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
    return [model, backend, steps, seed]


def build_demo(config: AppConfig | None = None, models: ModelManager | None = None) -> gr.Blocks:
    """The Blocks app for ``config`` (default: from the environment), computing with ``models`` (default: a new
    manager for ``config``). No model loads here: the first request that needs one loads it."""
    if models is None:
        models = ModelManager(config or AppConfig.from_env())
    elif config is not None and config != models.config:
        raise ValueError("build_demo: config differs from the model manager's config")
    cfg = models.config
    Image.MAX_IMAGE_PIXELS = images.MAX_SIDE**2  # refuse decompression bombs early (2x this raises)
    with gr.Blocks(title="diffgeo: inside diffusion models", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# diffgeo: inside a diffusion model, through its geometry\n"
                    "Generation rates, curve-matching edits and score-metric geodesics. Paint masks with the brush. "
                    "The embedded model knows only 32x32 synthetic scenes, so on photos its edits come back smooth "
                    "and textureless (see *About the model*).")
        with gr.Accordion("About the model", open=False, elem_id="model-note"):
            gr.Markdown(MODEL_NOTE)
        if cfg.hosted:
            gr.Markdown(cfg.limits.describe(), elem_id="hosted-limits")
        with gr.Accordion("Settings", open=False):
            settings = settings_row(cfg)
        # Examples fill the inputs only (cache_examples=False): cached outputs would be keyed by the example image
        # alone, while results also depend on the shared settings (model, backend, steps), so a cached picture could
        # disagree with what the settings say; and caching at start would run every tab's model job before the page
        # comes up (minutes on a CPU). With "lazy" caching the first visitor would still wait, for a result with
        # default settings.
        page = Page(models, settings, example_inputs(),
                    dict(concurrency_id="model", concurrency_limit=cfg.concurrency))
        with gr.Tabs(overflow_behavior="wrap", elem_id="tabs"):  # on a phone the tabs wrap (no hidden menu)
            for tab in (rates_tab, edit_tab, geodesic_tab, lab_tab):
                tab.build(page)
        for block in demo.blocks.values():
            if isinstance(block, VALUE_COMPONENTS):
                checked_by_handler(block)
        demo.load(None, js=EDITOR_JS)  # in the browser only: no server event
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    return demo
