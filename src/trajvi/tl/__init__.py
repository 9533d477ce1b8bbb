"""Scanpy-style tools over a trained :class:`~trajvi.TrajVI`: each reads an AnnData and writes its result into it.

The array scores (energy distances, kNN accuracy, linear R^2) and :func:`trajvi.metrics.log_normalize` are not
AnnData tools; they live in :mod:`trajvi.metrics`.
"""

from typing import Any

from ._fates import ancestors, fate_probabilities, growth_rates, transition_matrix
from ._latent import latent
from ._trajectories import trajectories
from ._trends import gene_trends

__all__ = [
    "ancestors",
    "fate_probabilities",
    "gene_trends",
    "growth_rates",
    "latent",
    "trajectories",
    "transition_matrix",
]

#: Array utilities that ``tl`` re-exported in 0.1.0, and their one home.
_MOVED = {
    "energy_distance": "trajvi.metrics.energy_distance_unbiased",
    "expression_energy_distance": "trajvi.metrics.expression_energy_distance",
    "knn_accuracy": "trajvi.metrics.knn_accuracy",
    "linear_r2": "trajvi.metrics.linear_r2",
    "log_normalize": "trajvi.metrics.log_normalize",
}


def __getattr__(name: str) -> Any:
    """Name the new home of an array utility that left ``tl``."""
    if name in _MOVED:
        msg = f"trajvi.tl.{name} is not an AnnData tool and has moved: use {_MOVED[name]}."
        raise AttributeError(msg)
    msg = f"module 'trajvi.tl' has no attribute {name!r}"
    raise AttributeError(msg)
