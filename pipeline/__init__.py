"""diffgeo pipeline: generation rates and score-metric geodesics of diffusion models.

The public API is re-exported here; see README.md for a tour.
"""

from .errors import Cancelled, InputError, ModelLoadError
from .model import DiffusionModel, load_model

__all__ = ["Cancelled", "DiffusionModel", "InputError", "ModelLoadError", "load_model"]
