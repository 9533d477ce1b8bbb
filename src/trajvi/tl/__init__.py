"""Scanpy-style tools over a trained :class:`~trajvi.TrajVI`."""

from ._latent import latent
from ._scores import energy_distance, expression_energy_distance, knn_accuracy, linear_r2, log_normalize
from ._trajectories import trajectories
from ._trends import gene_trends

__all__ = [
    "energy_distance",
    "expression_energy_distance",
    "gene_trends",
    "knn_accuracy",
    "latent",
    "linear_r2",
    "log_normalize",
    "trajectories",
]
