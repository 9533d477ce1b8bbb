"""Diagnostics: gradient checks, training monitors and the records of the numerical guards.

- :func:`check_gradients` after a backward pass, or every N epochs of training
  (``train(check_gradients_every_n_epochs=N)``);
- monitors as Lightning callbacks, switched on by arguments of ``train`` and ``train_trajectories``
  (:class:`GradientNormMonitor`, :class:`GradientCheckCallback`, :class:`ParameterMonitor`,
  :class:`LossCurveWriter`); their figures land in ``model.history``;
- the guards of the losses and of the training plans: :class:`Repair` records, the ``n_repaired_train``,
  ``n_skipped_steps_train`` and ``n_discriminator_skips_train`` counters in the history, and
  :class:`NonFiniteTrainingError`.

Everything here works on a :class:`torch.nn.Module` (and, for the callbacks, on the training plans'
``module``); nothing imports the model class. See ``docs/numerical_stability.md`` and the troubleshooting page.
"""

from trajvi.module import Repair, repair_nonfinite

from ._callbacks import (
    GradientCheckCallback,
    GradientNormMonitor,
    LossCurveWriter,
    ParameterMonitor,
    monitor_callbacks,
)
from ._errors import NonFiniteTrainingError
from ._gradients import GradientCheck, block_of, check_gradients, parameter_groups

__all__ = [
    "GradientCheck",
    "GradientCheckCallback",
    "GradientNormMonitor",
    "LossCurveWriter",
    "NonFiniteTrainingError",
    "ParameterMonitor",
    "Repair",
    "block_of",
    "check_gradients",
    "monitor_callbacks",
    "parameter_groups",
    "repair_nonfinite",
]
