"""Diagnostics: numerical-guard records and what they mean.

The loss repairs and skipped steps of phase 1 are counted by the training plan and recorded in
``model.history`` (``n_repaired_train``, ``n_skipped_steps_train``, ``n_discriminator_skips_train``).
"""

from trajvi.module import Repair, repair_nonfinite
from trajvi.train import NonFiniteTrainingError

__all__ = ["NonFiniteTrainingError", "Repair", "repair_nonfinite"]
