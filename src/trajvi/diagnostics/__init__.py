"""Diagnostics: gradient checks, training monitors and the records of the numerical guards.

- :func:`check_gradients` after a backward pass, or every N epochs of training
  (``train(check_gradients_every_n_epochs=N)``);
- monitors as Lightning callbacks, switched on by arguments of ``train`` and ``train_trajectories``
  (:class:`GradientNormMonitor`, :class:`GradientCheckCallback`, :class:`ParameterMonitor`,
  :class:`LossCurveWriter`); their figures land in ``model.history``;
- the guards of the losses and of the training plan: :class:`Repair` records, the ``n_repaired_train``,
  ``n_skipped_steps_train`` and ``n_discriminator_skips_train`` counters in the history, and
  :class:`NonFiniteTrainingError`.

See ``docs/numerical_stability.md`` and the troubleshooting page.
"""

from trajvi.module import Repair, repair_nonfinite
from trajvi.train import (
    GradientCheck,
    GradientCheckCallback,
    GradientNormMonitor,
    LossCurveWriter,
    NonFiniteTrainingError,
    ParameterMonitor,
    check_gradients,
    parameter_groups,
)

__all__ = [
    "GradientCheck",
    "GradientCheckCallback",
    "GradientNormMonitor",
    "LossCurveWriter",
    "NonFiniteTrainingError",
    "ParameterMonitor",
    "Repair",
    "check_gradients",
    "parameter_groups",
    "repair_nonfinite",
]
