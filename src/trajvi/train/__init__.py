"""Training: a guarded base plan and one plan per regime on it, phase-2 pair data, and a history-merging runner.

- :class:`GuardedTrainingPlan`: manual optimization with guarded steps, accumulation, per-epoch sums,
  guard reports and CUDA-graph capture, shared by both regimes;
- :class:`TrajVITrainingPlan`: phase 1, the count model and its adversary; :class:`QueryTrainingPlan`: phase 1
  of a model mapped onto a reference (scArches), only the new batches' weights;
- :class:`VelocityTrainingPlan`: phase 2, the velocity field by flow matching; :func:`fit_velocity_field`
  runs the same step, optimizer and guards in a plain loop (the validation fits);
- :class:`PairDataModule`: pairs drawn from the couplings every epoch; :class:`DeviceDataSplitter`: phase-1
  minibatches cut on the device; :class:`DiskDataSplitter`: phase-1 minibatches read from disk in blocks.

The gradient checks and monitors live in :mod:`trajvi.diagnostics` and are re-exported here.
"""

from trajvi.diagnostics import (
    GradientCheck,
    GradientCheckCallback,
    GradientNormMonitor,
    LossCurveWriter,
    NonFiniteTrainingError,
    ParameterMonitor,
    check_gradients,
    monitor_callbacks,
    parameter_groups,
)

from ._base import GuardedTrainingPlan, check_plan_kwargs, check_precision, report_guards
from ._device_data import DeviceDataSplitter, choose_data_on_device
from ._disk_data import DiskBatches, DiskDataSplitter, select_data_splitter
from ._pairs import PairDataModule, Segment, draw_pairs
from ._query import QueryTrainingPlan
from ._runner import TrajVISaveCheckpoint, TrajVITrainRunner
from ._vae import TrajVITrainingPlan
from ._velocity import VelocityFitResult, VelocityFitSettings, VelocityTrainingPlan, fit_velocity_field

__all__ = [
    "DeviceDataSplitter",
    "DiskBatches",
    "DiskDataSplitter",
    "GradientCheck",
    "GradientCheckCallback",
    "GradientNormMonitor",
    "GuardedTrainingPlan",
    "LossCurveWriter",
    "NonFiniteTrainingError",
    "PairDataModule",
    "ParameterMonitor",
    "QueryTrainingPlan",
    "Segment",
    "TrajVISaveCheckpoint",
    "TrajVITrainRunner",
    "TrajVITrainingPlan",
    "VelocityFitResult",
    "VelocityFitSettings",
    "VelocityTrainingPlan",
    "check_gradients",
    "check_plan_kwargs",
    "check_precision",
    "choose_data_on_device",
    "draw_pairs",
    "fit_velocity_field",
    "monitor_callbacks",
    "parameter_groups",
    "report_guards",
    "select_data_splitter",
]
