"""Expression-space scores: log-normalisation, R^2 of mean expression and of log-fold changes, energy in PCs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from scipy.stats import pearsonr

from ._distances import energy_distance_unbiased

if TYPE_CHECKING:
    from collections.abc import Sequence


def log_normalize(counts: Any, target_sum: float = 1e4) -> np.ndarray:
    """``log1p`` of counts scaled to ``target_sum`` per cell, as scanpy's ``normalize_total`` + ``log1p``.

    Returns a dense float32 array; cells without counts stay at zero. The input is not modified.
    """
    x = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    x = x.astype(np.float32)
    totals = x.sum(axis=1, keepdims=True)
    totals[totals == 0] = 1.0
    return np.log1p(x / totals * target_sum)


def _squared_pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(pearsonr(a, b)[0] ** 2)


def mean_r2(pred_log: np.ndarray, true_log: np.ndarray, genes_idx: Sequence[int] | np.ndarray | None = None) -> float:
    """Squared Pearson correlation of the per-gene mean expression of two sets of log-normalised cells.

    Parameters
    ----------
    pred_log, true_log
        ``(n_pred, n_genes)`` and ``(n_true, n_genes)`` log-normalised cells, same gene order.
    genes_idx
        Gene (column) indices to compare over, such as the top differentially expressed genes.

    Returns
    -------
    ``pearson(mean(pred), mean(true)) ** 2`` (``nan`` when either mean vector is constant).
    """
    mp, mt = np.asarray(pred_log).mean(axis=0), np.asarray(true_log).mean(axis=0)
    if genes_idx is not None:
        idx = np.asarray(genes_idx)
        mp, mt = mp[idx], mt[idx]
    return _squared_pearson(mp, mt)


def lfc_r2(
    pred_log: np.ndarray, true_log: np.ndarray, ctrl_log: np.ndarray, genes_idx: Sequence[int] | np.ndarray
) -> float:
    """Squared Pearson correlation of predicted and real log-fold changes against the same control cells.

    Parameters
    ----------
    pred_log, true_log, ctrl_log
        Log-normalised cells of the prediction, of the real perturbed cells and of the real controls.
    genes_idx
        Gene (column) indices to compare over.

    Returns
    -------
    ``pearson(mean(pred) - mean(ctrl), mean(true) - mean(ctrl)) ** 2`` over ``genes_idx``.
    """
    idx = np.asarray(genes_idx)
    mc = np.asarray(ctrl_log).mean(axis=0)[idx]
    return _squared_pearson(np.asarray(pred_log).mean(axis=0)[idx] - mc, np.asarray(true_log).mean(axis=0)[idx] - mc)


def expression_energy_distance(
    predicted: Any, observed: Any, *, reference: Any | None = None, n_comps: int = 20, seed: int = 0
) -> float:
    """Unbiased energy distance between two sets of cells' counts, in principal components of log-expression.

    Parameters
    ----------
    predicted, observed
        Count matrices (cells x genes, dense or sparse) with the same genes.
    reference
        Counts the PCA is fit on (default: ``observed``).
    n_comps
        Number of principal components.
    seed
        Seed of the PCA and of the subsampling (:func:`energy_distance_unbiased`, 2,000 cells per set).
    """
    from sklearn.decomposition import PCA

    ref = log_normalize(observed if reference is None else reference)
    pca = PCA(n_components=min(n_comps, *ref.shape), random_state=seed).fit(ref)
    return energy_distance_unbiased(
        pca.transform(log_normalize(predicted)), pca.transform(log_normalize(observed)), seed=seed
    )
