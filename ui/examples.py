"""Example inputs of the tabs: the shipped photographs and scenes of ``weights/examples`` (with their object masks as
brush layers; ``index.json`` lists them, photographs first), or, without them, a few procedural scenes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import scenes, viz
from ui.outputs import output_root

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "weights" / "examples"
#: Seeds of the procedural scenes used as examples when ``weights/examples/`` has none (tuning split).
FALLBACK_EXAMPLE_SEEDS = (10_000_001, 10_000_002, 10_000_003, 10_000_004)


@dataclass(frozen=True)
class Example:
    """An example input: an image file and, when the scene ships one, an object mask as an RGBA brush layer."""

    image: str
    layer: str | None = None

    def editor(self) -> dict:
        """The example as a mask-editor value (the mask pre-painted when there is one)."""
        return {"background": self.image, "layers": [self.layer] if self.layer else [], "composite": self.image}


def _brush_layer(mask: Path, out: Path) -> str:
    """A mask file as the editor's brush layer: see-through magenta where the mask is set, transparent elsewhere (made
    once)."""
    out.mkdir(parents=True, exist_ok=True)
    layer = out / f"mask_layer_{mask.name}"
    if not layer.exists():
        alpha = np.asarray(Image.open(mask).convert("L"))
        rgba = np.zeros((*alpha.shape, 4), np.uint8)
        rgba[alpha > 0] = (255, 0, 255, 170)  # the object shows through (any alpha > 0 is the mask)
        Image.fromarray(rgba, "RGBA").save(layer)
    return str(layer)


def example_inputs(limit: int = 8, examples_dir: Path = EXAMPLES_DIR) -> list[Example]:
    """Examples from ``examples_dir/index.json`` (photographs at their own size, scenes as their 256-pixel display
    copies; masks as brush layers; in the index's order, the ones with masks first), or, without it, a few
    procedural scenes written to a temporary folder."""
    out = output_root() / "examples"
    index = examples_dir / "index.json"
    examples = []
    if index.is_file():
        for entry in json.loads(index.read_text()).get("examples", []):
            image = examples_dir / entry.get("image_256", entry["image"])
            mask_name = entry.get("mask_256") if entry.get("image_256") else entry.get("mask")
            mask = examples_dir / mask_name if mask_name else None
            if not image.is_file():
                continue
            layer = _brush_layer(mask, out) if mask is not None and mask.is_file() else None
            examples.append(Example(str(image), layer))
        examples.sort(key=lambda e: e.layer is None)
        return examples[:limit]
    out.mkdir(parents=True, exist_ok=True)
    for seed in FALLBACK_EXAMPLE_SEEDS:
        p = out / f"scene_{seed}.png"
        if not p.exists():
            scene = Image.fromarray(scenes.make_scene(seed, size=32).image).resize((256, 256), Image.NEAREST)
            viz.save_png(np.asarray(scene), p)
        examples.append(Example(str(p)))
    return examples[:limit]
