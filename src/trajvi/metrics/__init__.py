"""Scores, one implementation each: used by the residual-penalty selection, ``tl``, the demo and the benchmarks.

- distances between sets of cells: :func:`energy_distance_unbiased`, :func:`wasserstein1`;
- expression: :func:`log_normalize`, :func:`mean_r2`, :func:`lfc_r2`, :func:`pcc_delta`, :func:`deg_overlap`,
  :func:`expression_energy_distance`;
- latents: :func:`knn_accuracy`, :func:`linear_r2`.
"""

from ._distances import energy_distance_unbiased, subsample, wasserstein1
from ._expression import deg_overlap, expression_energy_distance, lfc_r2, log_normalize, mean_r2, pcc_delta
from ._latent import knn_accuracy, linear_r2

__all__ = [
    "deg_overlap",
    "energy_distance_unbiased",
    "expression_energy_distance",
    "knn_accuracy",
    "lfc_r2",
    "linear_r2",
    "log_normalize",
    "mean_r2",
    "pcc_delta",
    "subsample",
    "wasserstein1",
]
