"""Expression-space scores: log-normalisation, R^2 of mean expression, log-fold change agreement, energy in PCs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from scipy.stats import pearsonr

from ._distances import energy_distance_unbiased

if TYPE_CHECKING:
    from collections.abc import Sequence


def log_normalize(counts: Any, target_sum: float = 1e4) -> np.ndarray | sparse.csr_matrix | sparse.csr_array:
    """``log1p`` of counts scaled to ``target_sum`` per cell, as scanpy's ``normalize_total`` + ``log1p``.

    The array counterpart of ``sc.pp.normalize_total(adata, target_sum=1e4)`` + ``sc.pp.log1p(adata)``, and the
    transform the expression scores of this module are defined on. Use scanpy's functions on an AnnData.

    Parameters
    ----------
    counts
        ``(n_cells, n_genes)`` counts: a dense array, or a scipy sparse matrix or array.
    target_sum
        Total of each cell after scaling.

    Returns
    -------
    ``float32``, of the input's kind: a dense array for dense input; for sparse input a CSR matrix (or CSR
    array for a sparse array) with the same stored entries (``log1p(0) = 0``, so nothing is densified).
    Cells without counts stay at zero. The input is not modified.
    """
    if sparse.issparse(counts):
        x = counts.tocsr().astype(np.float32)  # astype copies: the input is left as it was
        x.sum_duplicates()
        totals = np.asarray(x.sum(axis=1), dtype=np.float32).ravel()
        totals[totals == 0] = 1.0
        x.data *= np.repeat(np.float32(target_sum) / totals, np.diff(x.indptr))
        np.log1p(x.data, out=x.data)
        return x
    dense = np.asarray(counts).astype(np.float32)
    row_totals = dense.sum(axis=1, keepdims=True)
    row_totals[row_totals == 0] = 1.0
    return np.log1p(dense / row_totals * target_sum)


def _dense_log(counts: Any) -> np.ndarray:
    """:func:`log_normalize` as a dense array (for PCA)."""
    out: Any = log_normalize(counts)
    return np.asarray(out.toarray()) if sparse.issparse(out) else np.asarray(out)


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
    return pcc_delta(pred_log, true_log, ctrl_log, genes_idx) ** 2


def pcc_delta(
    pred_log: np.ndarray,
    true_log: np.ndarray,
    ctrl_log: np.ndarray,
    genes_idx: Sequence[int] | np.ndarray | None = None,
) -> float:
    """Pearson correlation of the predicted and the real change of mean expression from the same control cells.

    The PCC-delta of perturbation-prediction benchmarks: how well a prediction gets the direction of the change
    (its size does not count, see :func:`mean_r2` and the energy distance for that), usually over the top
    differentially expressed genes of the real cells and over all genes.

    Parameters
    ----------
    pred_log, true_log, ctrl_log
        Log-normalised cells (:func:`log_normalize`) of the prediction, of the real perturbed cells and of the
        real controls, same gene order.
    genes_idx
        Gene (column) indices to compare over (default: every gene).

    Returns
    -------
    ``pearson(mean(pred) - mean(ctrl), mean(true) - mean(ctrl))`` (``nan`` when either change is constant);
    its square over ``genes_idx`` is :func:`lfc_r2`.
    """
    mc = np.asarray(ctrl_log).mean(axis=0, dtype=np.float64)
    delta_pred = np.asarray(pred_log).mean(axis=0, dtype=np.float64) - mc
    delta_true = np.asarray(true_log).mean(axis=0, dtype=np.float64) - mc
    if genes_idx is not None:
        idx = np.asarray(genes_idx)
        delta_pred, delta_true = delta_pred[idx], delta_true[idx]
    if np.std(delta_pred) == 0 or np.std(delta_true) == 0:
        return float("nan")
    return float(pearsonr(delta_pred, delta_true)[0])


def deg_overlap(pred_log: np.ndarray, ctrl_log: np.ndarray, true_degs: Sequence[int] | np.ndarray) -> float:
    """Share of the real top differentially expressed genes among the genes the prediction moves most.

    Parameters
    ----------
    pred_log, ctrl_log
        Log-normalised cells of the prediction and of the real controls, same gene order.
    true_degs
        Gene (column) indices of the real top DEGs (for example the top 100 of ``scanpy.tl.rank_genes_groups``
        of the real perturbed cells against the controls).

    Returns
    -------
    The fraction of ``true_degs`` among the ``len(true_degs)`` genes whose predicted mean moves most from the
    controls' mean in absolute value (ties broken by gene order). A Wilcoxon test of a deterministic prediction
    (every cell shifted by one vector) would rank every shifted gene alike, so the prediction's genes are ranked
    by the change of the mean instead.
    """
    degs = np.unique(np.asarray(true_degs))
    if len(degs) != len(np.asarray(true_degs)):
        msg = "true_degs has repeated genes; pass each gene index once."
        raise ValueError(msg)
    change = np.abs(np.asarray(pred_log).mean(axis=0) - np.asarray(ctrl_log).mean(axis=0))
    moved = np.argsort(-change, kind="stable")[: len(degs)]
    return len(np.intersect1d(moved, degs)) / len(degs) if len(degs) else float("nan")


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

    ref = _dense_log(observed if reference is None else reference)
    pca = PCA(n_components=min(n_comps, *ref.shape), random_state=seed).fit(ref)
    return energy_distance_unbiased(
        pca.transform(_dense_log(predicted)), pca.transform(_dense_log(observed)), seed=seed
    )
