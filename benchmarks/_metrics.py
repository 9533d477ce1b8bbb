"""Scores for predicted cells against real held-out cells.

Every function takes cells as rows. Expression is compared in log-normalised space: counts normalised to
10,000 per cell then ``log1p`` (:func:`log_normalize`), the same transform for real and predicted cells.
Generative predictions are scored *as cells*: sampled counts go through the same transform
(:func:`score_as_cells`), never the log of a decoded mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from trajvi import metrics
from trajvi.metrics import lfc_r2, mean_r2, wasserstein1

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "energy_distance",
    "lfc_r2",
    "log_normalize",
    "mean_r2",
    "score_as_cells",
    "wasserstein1",
]


def log_normalize(counts: np.ndarray | sp.spmatrix, genes_idx: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """:func:`trajvi.metrics.log_normalize` (10,000 per cell, ``log1p``, over *all* genes), then ``genes_idx``.

    Parameters
    ----------
    counts
        ``(n_cells, n_genes)`` raw (or sampled) counts, dense or sparse. Not modified.
    genes_idx
        Optional column indices to return (after normalising on all genes).

    Returns
    -------
    np.ndarray
        Dense ``float32`` array ``(n_cells, len(genes_idx) or n_genes)``.
    """
    out = metrics.log_normalize(counts)  # sparse for sparse counts
    if genes_idx is not None:
        out = out[:, np.asarray(genes_idx)]
    if sp.issparse(out):
        out = out.toarray()
    return np.ascontiguousarray(out, dtype=np.float32)


def energy_distance(
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_cells: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> float:
    """:func:`trajvi.metrics.energy_distance_unbiased` on every cell by default (the benchmarks' protocol)."""
    return metrics.energy_distance_unbiased(x, y, max_cells=max_cells, seed=rng)


def score_as_cells(
    sampled_counts_list: Sequence[np.ndarray | sp.spmatrix],
    genes_idx: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Log-normalise several sampled count matrices of the same predicted cells and stack them.

    Each sample is normalised with :func:`log_normalize`, exactly like the real cells, and the results are
    stacked along the rows (sample 0's cells first). Consequences for the metrics:

    - per-gene means over the stacked rows are the average over samples of each sample's means (every
      sample has the same cells), i.e. Monte-Carlo estimates of E[log1p(normalised counts)];
    - the distribution metrics (energy distance, Wasserstein-1) use **all samples** stacked: the stack
      is a draw from the predicted distribution with ``n_samples`` draws per source cell. Pairs of draws
      of the same source cell are correlated, but they are a fraction ``1 / n_cells`` of all pairs.

    Parameters
    ----------
    sampled_counts_list
        One ``(n_cells, n_genes)`` count matrix per sample, all of the same shape.
    genes_idx
        Optional columns to keep (normalisation always uses all genes).

    Returns
    -------
    np.ndarray
        ``(n_samples * n_cells, n_genes)`` float32 log-normalised cells.
    """
    if len(sampled_counts_list) == 0:
        msg = "score_as_cells needs at least one sample"
        raise ValueError(msg)
    shapes = {tuple(m.shape) for m in sampled_counts_list}
    if len(shapes) != 1:
        msg = f"all samples must have the same shape, got {sorted(shapes)}"
        raise ValueError(msg)
    return np.vstack([log_normalize(m, genes_idx) for m in sampled_counts_list])
