"""Scores for predicted cells against real held-out cells.

Every function takes cells as rows. Expression is compared in log-normalised space: counts normalised to
10,000 per cell then ``log1p`` (:func:`log_normalize`), the same transform for real and predicted cells.
Generative predictions are scored *as cells*: sampled counts go through the same transform
(:func:`score_as_cells`), never the log of a decoded mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import ot
import scanpy as sc
import scipy.sparse as sp
from scipy.spatial.distance import cdist
from scipy.stats import pearsonr

__all__ = [
    "energy_distance",
    "lfc_r2",
    "log_normalize",
    "mean_r2",
    "score_as_cells",
    "wasserstein1",
]


def log_normalize(counts: np.ndarray | sp.spmatrix, genes_idx: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Normalise counts to 10,000 per cell and take ``log1p``, on a copy.

    Uses ``scanpy.pp.normalize_total(target_sum=1e4)`` then ``scanpy.pp.log1p``. The library size is always
    taken over *all* genes of ``counts``; ``genes_idx`` only selects which columns are returned.

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
    x = counts.astype(np.float32, copy=True) if sp.issparse(counts) else np.array(counts, dtype=np.float32)
    tmp = ad.AnnData(X=x)
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    out = tmp.X.toarray() if sp.issparse(tmp.X) else np.asarray(tmp.X)
    if genes_idx is not None:
        out = out[:, np.asarray(genes_idx)]
    return np.ascontiguousarray(out, dtype=np.float32)


def _squared_pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(pearsonr(a, b)[0] ** 2)


def mean_r2(pred_log: np.ndarray, true_log: np.ndarray, genes_idx: Sequence[int] | np.ndarray | None = None) -> float:
    """Squared Pearson correlation between the per-gene mean expression of two sets of cells.

    Parameters
    ----------
    pred_log, true_log
        ``(n_pred, n_genes)`` and ``(n_true, n_genes)`` log-normalised cells (same gene order).
    genes_idx
        Optional gene (column) indices to restrict the comparison to, e.g. the top DEGs.

    Returns
    -------
    float
        ``pearson(mean(pred_log, axis=0), mean(true_log, axis=0)) ** 2`` over the selected genes
        (``nan`` if either mean vector is constant).
    """
    mp, mt = np.asarray(pred_log).mean(axis=0), np.asarray(true_log).mean(axis=0)
    if genes_idx is not None:
        idx = np.asarray(genes_idx)
        mp, mt = mp[idx], mt[idx]
    return _squared_pearson(mp, mt)


def lfc_r2(
    pred_log: np.ndarray,
    true_log: np.ndarray,
    ctrl_log: np.ndarray,
    genes_idx: Sequence[int] | np.ndarray,
) -> float:
    """Squared Pearson correlation between predicted and real log-fold changes against a control.

    The log-fold change of a set of cells is its per-gene mean log-normalised expression minus the
    per-gene mean of ``ctrl_log`` (the same real control cells for both).

    Parameters
    ----------
    pred_log, true_log, ctrl_log
        Log-normalised cells (rows) of the prediction, the real perturbed cells and the real control cells.
    genes_idx
        Gene (column) indices to compare over, e.g. the top DEGs.

    Returns
    -------
    float
        ``pearson(mean(pred) - mean(ctrl), mean(true) - mean(ctrl)) ** 2`` over ``genes_idx``.
    """
    idx = np.asarray(genes_idx)
    mc = np.asarray(ctrl_log).mean(axis=0)[idx]
    lfc_pred = np.asarray(pred_log).mean(axis=0)[idx] - mc
    lfc_true = np.asarray(true_log).mean(axis=0)[idx] - mc
    return _squared_pearson(lfc_pred, lfc_true)


def _mean_pairwise(x: np.ndarray, y: np.ndarray | None = None, chunk: int = 2048) -> float:
    """Mean Euclidean distance between rows of ``x`` and ``y``; within ``x`` (excluding i == j) when ``y`` is None."""
    same = y is None
    other = x if same else y
    total = 0.0
    for start in range(0, len(x), chunk):
        total += float(cdist(x[start : start + chunk], other, metric="euclidean").sum())
    n_pairs = len(x) * (len(x) - 1) if same else len(x) * len(other)
    return total / n_pairs  # the zero diagonal adds nothing to the sum


def energy_distance(
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_cells: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> float:
    r"""Energy distance between two sets of points with Euclidean distances.

    .. math::

        D(X, Y) = 2\,\mathbb{E}\|X - Y\| - \mathbb{E}\|X - X'\| - \mathbb{E}\|Y - Y'\|

    estimated with the *unbiased* (U-statistic) form: the cross term averages over all ``n * m`` pairs,
    each within-set term over the ``n (n - 1)`` ordered pairs of distinct rows (self-pairs excluded). This
    makes the estimate independent of the set sizes in expectation (methods may predict different numbers
    of cells), at the price that it can be slightly negative when the two sets come from the same
    distribution. This is the squared form (no square root), in the units of the input coordinates.

    Parameters
    ----------
    x, y
        ``(n, d)`` and ``(m, d)`` points (e.g. cells in PCA coordinates), at least two rows each.
    max_cells
        If given, each set with more rows is subsampled (without replacement) to ``max_cells`` rows first.
    rng
        Generator or seed for the subsampling.

    Returns
    -------
    float
        The energy distance.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if max_cells is not None:
        gen = np.random.default_rng(rng)
        if len(x) > max_cells:
            x = x[gen.choice(len(x), max_cells, replace=False)]
        if len(y) > max_cells:
            y = y[gen.choice(len(y), max_cells, replace=False)]
    if len(x) < 2 or len(y) < 2:
        msg = "energy_distance needs at least two points per set"
        raise ValueError(msg)
    return 2.0 * _mean_pairwise(x, y) - _mean_pairwise(x) - _mean_pairwise(y)


def wasserstein1(x: np.ndarray, y: np.ndarray) -> float:
    """Exact Wasserstein-1 distance between two point clouds with uniform weights and Euclidean cost.

    Computed with POT as ``ot.emd2(a, b, ot.dist(x, y, metric="euclidean"))`` where ``a`` and ``b`` are
    uniform weights over the rows of ``x`` and ``y``.

    Parameters
    ----------
    x, y
        ``(n, d)`` and ``(m, d)`` points.

    Returns
    -------
    float
        The optimal transport cost.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(y), 1.0 / len(y))
    cost = ot.dist(x, y, metric="euclidean")
    return float(ot.emd2(a, b, cost, numItermax=10_000_000))


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
