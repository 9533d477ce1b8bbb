"""Cell selections given by users (``indices=``): checked once, the same way for every method that takes one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence


def cell_positions(indices: Sequence[int] | np.ndarray | Any, n_obs: int, *, parameter: str = "indices") -> np.ndarray:
    """Positions of the cells that ``indices`` selects among ``n_obs`` cells, in the order given.

    ``indices`` is a boolean mask of length ``n_obs`` or integer positions in ``[0, n_obs)``, each at most
    once. Negative positions (counted from the end, as numpy would) are refused: a negative number in a
    cell selection is more often a mistake than a wish.

    Raises
    ------
    ValueError
        A mask of another length, positions out of range, negative or repeated, or values that are neither
        integers nor booleans (for example ``obs_names``: give their positions,
        ``adata.obs_names.get_indexer(names)``).
    """
    values = np.asarray(indices)
    if values.ndim != 1:
        msg = f"{parameter} has shape {values.shape}; give a 1-d boolean mask or integer positions of cells."
        raise ValueError(msg)
    if values.dtype == bool:
        if len(values) != n_obs:
            msg = (
                f"{parameter} is a boolean mask of length {len(values)}, but adata has {n_obs} cells; "
                "give one value per cell."
            )
            raise ValueError(msg)
        return np.flatnonzero(values)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(values.dtype, np.integer):
        integral = np.issubdtype(values.dtype, np.floating) and bool(
            np.all(np.isfinite(values)) and np.all(values == np.round(values))
        )
        if not integral:
            msg = (
                f"{parameter} holds {values.dtype} values; give integer positions of cells or a boolean mask "
                "(for cell names: adata.obs_names.get_indexer(names))."
            )
            raise ValueError(msg)
    positions = values.astype(np.int64)
    bad = (positions < 0) | (positions >= n_obs)
    if bad.any():
        shown = positions[bad][:5].tolist()
        msg = (
            f"{parameter} has {int(bad.sum())} position(s) outside [0, {n_obs}) (e.g. {shown}); adata has {n_obs} "
            "cells, and negative positions are not accepted."
        )
        raise ValueError(msg)
    unique, counts = np.unique(positions, return_counts=True)
    if (counts > 1).any():
        shown = unique[counts > 1][:5].tolist()
        msg = f"{parameter} repeats cells (e.g. positions {shown}); give each cell once."
        raise ValueError(msg)
    return positions
