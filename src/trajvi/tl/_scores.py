"""Scores of a latent against known labels or a known latent (used by the demo, tests and benchmarks)."""

from __future__ import annotations

import numpy as np


def knn_accuracy(
    latent: np.ndarray, labels: np.ndarray, *, n_neighbors: int = 15, n_splits: int = 5, seed: int = 0
) -> float:
    """Cross-validated accuracy of a k-nearest-neighbour classifier of ``labels`` on ``latent``.

    Parameters
    ----------
    latent
        ``(n_cells, d)`` representation.
    labels
        ``(n_cells,)`` labels.
    n_neighbors, n_splits, seed
        Classifier size and stratified k-fold split.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels).astype(str)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=n_neighbors), latent, labels, cv=folds)
    return float(np.mean(scores))


def linear_r2(latent: np.ndarray, truth: np.ndarray, *, seed: int = 0) -> float:
    """Held-out R^2 of a ridge regression from ``latent`` to ``truth`` (how much of a known latent is kept)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 3, 7)), latent, truth, cv=5)
    resid = ((truth - pred) ** 2).sum(axis=0)
    total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    return float(1.0 - resid.sum() / total.sum())


def energy_distance(x: np.ndarray, y: np.ndarray, *, max_cells: int | None = 2000, seed: int = 0) -> float:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (Euclidean) between two sets of points.

    Sets larger than ``max_cells`` are subsampled (seeded) to bound the cost.
    """
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(seed)
    if max_cells is not None:
        x = x[rng.choice(len(x), max_cells, replace=False)] if len(x) > max_cells else x
        y = y[rng.choice(len(y), max_cells, replace=False)] if len(y) > max_cells else y
    return float(2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean())


def log_normalize(counts: object, target_sum: float = 1e4) -> np.ndarray:
    """``log1p`` of counts scaled to ``target_sum`` per cell (dense float32), as scanpy's normalize_total + log1p."""
    from scipy import sparse

    x = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    x = x.astype(np.float32)
    totals = x.sum(axis=1, keepdims=True)
    totals[totals == 0] = 1.0
    return np.log1p(x / totals * target_sum)


def expression_energy_distance(
    predicted: object, observed: object, *, reference: object | None = None, n_comps: int = 20, seed: int = 0
) -> float:
    """Energy distance between two sets of cells' counts, in principal components of log-normalised expression.

    Parameters
    ----------
    predicted, observed
        Count matrices (cells x genes, dense or sparse) with the same genes.
    reference
        Counts the PCA is fit on (default: ``observed``).
    n_comps
        Number of principal components.
    seed
        Seed of the PCA and of the subsampling.
    """
    from sklearn.decomposition import PCA

    ref = log_normalize(observed if reference is None else reference)
    pca = PCA(n_components=min(n_comps, *ref.shape), random_state=seed).fit(ref)
    return energy_distance(pca.transform(log_normalize(predicted)), pca.transform(log_normalize(observed)), seed=seed)
