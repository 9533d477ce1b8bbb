"""Scores of a latent representation against known labels or a known latent."""

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


def linear_r2(latent: np.ndarray, truth: np.ndarray) -> float:
    """Held-out R^2 of a ridge regression from ``latent`` to ``truth`` (how much of a known latent is kept)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 3, 7)), latent, truth, cv=5)
    resid = ((truth - pred) ** 2).sum(axis=0)
    total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    return float(1.0 - resid.sum() / total.sum())
