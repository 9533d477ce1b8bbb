"""Training: one plan with manual optimization for both phases, and a history-merging runner."""

from ._plan import NonFiniteTrainingError, TrajVITrainingPlan
from ._runner import TrajVITrainRunner

__all__ = ["NonFiniteTrainingError", "TrajVITrainRunner", "TrajVITrainingPlan"]
