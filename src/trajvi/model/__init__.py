"""The scvi-tools model class."""

from ._inference import TrajectoryResult
from ._model import TrajVI

__all__ = ["TrajVI", "TrajectoryResult"]
