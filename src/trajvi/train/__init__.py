"""Training: one plan with manual optimization for both phases, and a history-merging runner."""

from ._callbacks import (
    GradientCheckCallback,
    GradientNormMonitor,
    LossCurveWriter,
    ParameterMonitor,
    monitor_callbacks,
)
from ._device_data import DeviceDataSplitter
from ._gradients import GradientCheck, check_gradients, parameter_groups
from ._pairs import PairDataModule, Segment, draw_pairs
from ._plan import NonFiniteTrainingError, TrajVITrainingPlan, check_precision
from ._runner import TrajVITrainRunner

__all__ = [
    "DeviceDataSplitter",
    "GradientCheck",
    "GradientCheckCallback",
    "GradientNormMonitor",
    "LossCurveWriter",
    "NonFiniteTrainingError",
    "PairDataModule",
    "ParameterMonitor",
    "Segment",
    "TrajVITrainRunner",
    "TrajVITrainingPlan",
    "check_gradients",
    "check_precision",
    "draw_pairs",
    "monitor_callbacks",
    "parameter_groups",
]
