"""diffgeo pipeline: generation rates and score-metric geodesics of diffusion models.

The public API is re-exported here and imported lazily (``import pipeline`` stays cheap); see README.md for a tour.
"""

from __future__ import annotations

import importlib

from .errors import Cancelled, InputError, ModelLoadError, NumericalError
from .model import DiffusionModel, load_model

#: public name -> submodule that defines it
_LAZY = {
    # DDIM
    "invert": "ddim", "sample": "ddim", "generate": "ddim", "timestep_grid": "ddim", "Trajectory": "ddim",
    # generation rates
    "generation_rate": "rates", "rate_map": "rates", "patch_directions": "rates", "tangent_basis": "rates",
    "projected_rate_map": "rates", "generation_curves": "rates", "saliency_from_curves": "rates",
    "CurveResult": "rates",
    # editing
    "remove_object": "edit", "transfer": "edit", "adjust_saliency": "edit", "blend": "edit",
    "RemoveConfig": "edit", "TransferConfig": "edit", "SaliencyConfig": "edit", "BlendConfig": "edit",
    "EditResult": "edit",
    # geodesics
    "geodesic_bvp": "geodesic", "geodesic_shoot": "geodesic", "extrapolate": "geodesic", "lerp": "geodesic",
    "slerp": "geodesic", "GeodesicResult": "geodesic", "ShootResult": "geodesic",
    "interpolate_images": "interpolate", "extrapolate_images": "interpolate",
    # data
    "make_scene": "scenes", "scene_path": "scenes", "Scene": "scenes",
}

__all__ = ["Cancelled", "DiffusionModel", "InputError", "ModelLoadError", "NumericalError", "load_model", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
