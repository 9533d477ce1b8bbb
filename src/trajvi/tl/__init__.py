"""Scanpy-style tools over a trained :class:`~trajvi.TrajVI`.

The scores ``energy_distance`` (the unbiased energy distance, :func:`trajvi.metrics.energy_distance_unbiased`),
``expression_energy_distance``, ``knn_accuracy``, ``linear_r2`` and ``log_normalize`` are re-exported from
:mod:`trajvi.metrics`, where they live.
"""

from trajvi.metrics import energy_distance_unbiased as energy_distance
from trajvi.metrics import expression_energy_distance, knn_accuracy, linear_r2, log_normalize

from ._fates import ancestors, fate_probabilities, growth_rates, transition_matrix
from ._latent import latent
from ._trajectories import trajectories
from ._trends import gene_trends

__all__ = [
    "ancestors",
    "energy_distance",
    "expression_energy_distance",
    "fate_probabilities",
    "gene_trends",
    "growth_rates",
    "knn_accuracy",
    "latent",
    "linear_r2",
    "log_normalize",
    "trajectories",
    "transition_matrix",
]
