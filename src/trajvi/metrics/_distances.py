"""Distances between two sets of points (cells as rows): the unbiased energy distance and Wasserstein-1."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def _mean_pairwise(x: np.ndarray, y: np.ndarray | None = None, chunk: int = 2048) -> float:
    """Mean Euclidean distance between rows of ``x`` and ``y``; within ``x`` (pairs i != j) when ``y`` is None."""
    same = y is None
    other = x if y is None else y
    total = 0.0
    for start in range(0, len(x), chunk):
        total += float(cdist(x[start : start + chunk], other, metric="euclidean").sum())
    n_pairs = len(x) * (len(x) - 1) if same else len(x) * len(other)
    return total / n_pairs  # the zero diagonal adds nothing to the sum


def subsample(x: np.ndarray, max_cells: int | None, rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """At most ``max_cells`` rows of ``x``, drawn without replacement (all rows, in order, when there are fewer)."""
    if max_cells is None or len(x) <= max_cells:
        return x
    return x[np.random.default_rng(rng).choice(len(x), int(max_cells), replace=False)]


def energy_distance_unbiased(
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_cells: int | None = 2000,
    seed: np.random.Generator | int | None = 0,
) -> float:
    r"""Unbiased energy distance between two sets of points, with Euclidean distances.

    .. math::

        D(X, Y) = 2\,\mathbb{E}\|X - Y\| - \mathbb{E}\|X - X'\| - \mathbb{E}\|Y - Y'\|

    estimated as a U-statistic: the cross term averages over all ``n m`` pairs, each within-set term over
    the ``n (n - 1)`` pairs of distinct rows (self-pairs left out). Its expectation does not depend on the
    set sizes (methods may predict different numbers of cells, and a larger set is no longer penalised by
    fewer zero self-distances), and it can be slightly negative when both sets come from one distribution.
    This is the squared form (no square root), in the units of the coordinates. It is the one energy
    distance of trajvi: the residual-penalty selection, the demo, the tutorials and the benchmarks use it.

    Parameters
    ----------
    x, y
        ``(n, d)`` and ``(m, d)`` points (for example cells in principal components), at least two rows each.
    max_cells
        Each set with more rows is subsampled (without replacement) to this many rows first, to bound the
        cost (``None``: use every row).
    seed
        Seed or generator of the subsampling.

    Returns
    -------
    The energy distance.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        msg = f"x and y must be (n, d) and (m, d) with the same d; got shapes {x.shape} and {y.shape}."
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    x, y = subsample(x, max_cells, rng), subsample(y, max_cells, rng)
    if len(x) < 2 or len(y) < 2:
        msg = f"the energy distance needs at least two points per set; got {len(x)} and {len(y)}."
        raise ValueError(msg)
    return 2.0 * _mean_pairwise(x, y) - _mean_pairwise(x) - _mean_pairwise(y)


def wasserstein1(x: np.ndarray, y: np.ndarray) -> float:
    """Exact Wasserstein-1 distance between two point clouds, with uniform weights and Euclidean cost (POT)."""
    import ot

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(a, b, ot.dist(x, y, metric="euclidean"), numItermax=10_000_000))
