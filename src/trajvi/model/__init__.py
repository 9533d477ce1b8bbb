"""The scvi-tools model class, and the average of several of its fits."""

from ._ensemble import predict_ensemble
from ._inference import TrajectoryResult
from ._model import TrajVI

__all__ = ["TrajVI", "TrajectoryResult", "predict_ensemble"]
