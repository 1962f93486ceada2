"""Writes the photograph examples of ``index.json``: three photographs that ship with scikit-image, each with a
prepared mask over one object (255 inside). Run from the repository root: ``python weights/examples/make_photos.py``.

Licences (from scikit-image's ``skimage.data`` docstrings): astronaut (Eileen Collins, NASA Great Images database):
public domain, no known copyright restrictions; coffee (courtesy of Pikolo Espresso Bar, photographer Rachel
Michetti): CC0; chelsea (the cat Chelsea, photographer Stefan van der Walt): CC0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent

#: name -> (object under the mask, licence, the mask's shapes: ("ellipse", box) or ("polygon", points))
PHOTOS = {
    "astronaut": ("the space shuttle model", "public domain (NASA; no known copyright restrictions)",
                  [("polygon", [(372, 40), (398, 0), (428, 0), (452, 40), (462, 210), (470, 262), (468, 292),
                                (360, 292), (352, 232), (360, 200)])]),
    "coffee": ("the spoon", "CC0 (photographer Rachel Michetti, courtesy of Pikolo Espresso Bar)",
               [("ellipse", (322, 236, 410, 330)), ("polygon", [(396, 66), (426, 72), (392, 252), (362, 246)])]),
    "chelsea": ("the cat's left eye", "CC0 (photographer Stefan van der Walt)",
                [("ellipse", (130, 80, 214, 148))]),
}


def mask_for(shape: tuple[int, int], shapes) -> np.ndarray:
    """A uint8 (H, W) mask, 255 inside the given ellipses and polygons."""
    im = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(im)
    for kind, geom in shapes:
        (draw.ellipse if kind == "ellipse" else draw.polygon)(geom, fill=255)
    return np.asarray(im)


def main() -> None:
    index_path = HERE / "index.json"
    index = json.loads(index_path.read_text())
    entries = [e for e in index["examples"] if e.get("kind") != "photo"]
    photos = []
    for name, (obj, licence, shapes) in PHOTOS.items():
        image = getattr(skimage.data, name)()
        Image.fromarray(image).save(HERE / f"photo_{name}.png", optimize=True)
        Image.fromarray(mask_for(image.shape[:2], shapes)).save(HERE / f"photo_{name}_mask.png", optimize=True)
        photos.append({"kind": "photo", "source": f"skimage.data.{name}()", "licence": licence,
                       "image": f"photo_{name}.png", "mask": f"photo_{name}_mask.png", "mask_object": obj,
                       "size": [int(image.shape[1]), int(image.shape[0])]})
    index["examples"] = photos + entries
    index["note_photos"] = ("photo_*.png: photographs from scikit-image's skimage.data at their own size, with a "
                            "prepared mask over one object (photo_*_mask.png, 255 inside); written by make_photos.py")
    index_path.write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
