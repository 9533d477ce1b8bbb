"""Checks on a set of latent cell states, and the per-set z-scoring applied before coupling."""

from __future__ import annotations

import numpy as np

from trajvi._logging import logger


def check_point_set(z: np.ndarray, *, name: str) -> np.ndarray:
    """Return ``z`` as a float64 ``(n_cells, n_dims)`` array, or raise a ``ValueError`` that names the set.

    Parameters
    ----------
    z
        Points of one set, one row per cell.
    name
        How the set is called in error messages, e.g. ``"condition 'stimulated'"``.

    Returns
    -------
    The points as a float64 array.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        msg = f"The {name} must be a 2-D array (n_cells, n_dims); got an array with {z.ndim} dimension(s)."
        raise ValueError(msg)
    if z.shape[0] == 0:
        msg = f"The {name} is empty (0 cells): there is nothing to couple. Check the condition labels and filters."
        raise ValueError(msg)
    if z.shape[1] == 0:
        msg = f"The {name} has 0 dimensions: there is nothing to couple."
        raise ValueError(msg)
    n_bad = int(np.count_nonzero(~np.isfinite(z)))
    if n_bad:
        msg = (
            f"The latent of the {name} has {n_bad} NaN/Inf value(s) out of {z.size}. "
            "Check the model's training history: a diverged training gives non-finite latents."
        )
        raise ValueError(msg)
    return z


def standardize(
    z: np.ndarray, *, name: str = "latent set", min_std: float = 1e-8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-score each column of one set separately.

    Parameters
    ----------
    z
        Points of one set, ``(n_cells, n_dims)``.
    name
        How the set is called in messages, e.g. ``"condition 'stimulated'"``.
    min_std
        Lower bound on each column's standard deviation, so constant columns (and a set of one cell)
        become zeros instead of dividing by zero.

    Returns
    -------
    tuple
        ``(z_standardized, mean, std)``: the standardized points, the column means and the (clamped)
        column standard deviations, so that ``z == z_standardized * std + mean`` up to the clamping.
    """
    if not min_std > 0:
        msg = f"min_std must be > 0; got {min_std}."
        raise ValueError(msg)
    z = check_point_set(z, name=name)
    if z.shape[0] == 1:
        logger.warning("The %s has a single cell: standardizing maps it to the origin (all zeros).", name)
    mean = z.mean(axis=0)
    std = np.maximum(z.std(axis=0), min_std)
    return (z - mean) / std, mean, std
