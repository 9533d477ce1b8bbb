"""Training: one plan with manual optimization for both phases, and a history-merging runner."""

from ._pairs import PairDataModule, Segment, draw_pairs
from ._plan import NonFiniteTrainingError, TrajVITrainingPlan
from ._runner import TrajVITrainRunner

__all__ = [
    "NonFiniteTrainingError",
    "PairDataModule",
    "Segment",
    "TrajVITrainRunner",
    "TrajVITrainingPlan",
    "draw_pairs",
]
