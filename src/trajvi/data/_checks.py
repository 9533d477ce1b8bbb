"""Input checks that run before any training.

Each check raises with a message that names the problem and the fix; none of them modifies the
AnnData it reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from trajvi._logging import logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData


def _available(keys: Sequence[str] | Any) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:20])
    more = f" (and {len(keys) - 20} more)" if len(keys) > 20 else ""
    return f"[{shown}]{more}" if keys else "[] (none)"


def check_obs_key(adata: AnnData, key: str, *, parameter: str) -> pd.Series:
    """Return ``adata.obs[key]``, raising a :class:`KeyError` that lists the columns if it is missing."""
    if key not in adata.obs.columns:
        msg = f"{parameter}={key!r} is not a column of adata.obs. Available columns: {_available(adata.obs.columns)}."
        raise KeyError(msg)
    return adata.obs[key]


def get_counts(adata: AnnData, layer: str | None) -> Any:
    """Return the count matrix (``adata.X`` or ``adata.layers[layer]``), checking that it exists."""
    if layer is None:
        if adata.X is None:
            msg = "adata.X is empty; pass layer=... naming the layer that holds the raw counts."
            raise ValueError(msg)
        return adata.X
    if layer not in adata.layers:
        msg = (
            f"layer={layer!r} is not in adata.layers. Available layers: {_available(adata.layers.keys())}. "
            "Pass layer=None to use adata.X."
        )
        raise KeyError(msg)
    return adata.layers[layer]


def _stored_values(matrix: Any) -> np.ndarray:
    """The explicitly stored values of a dense or sparse matrix (no copy for CSR/CSC data)."""
    if sparse.issparse(matrix):
        return np.asarray(matrix.data)
    if hasattr(matrix, "toarray") and not isinstance(matrix, np.ndarray):
        return np.asarray(matrix.toarray()).ravel()
    return np.asarray(matrix).ravel()


def check_counts(matrix: Any, *, where: str = "adata.X", chunk_size: int = 50_000_000) -> None:
    """Check that a matrix holds raw counts: finite, non-negative integers.

    The whole matrix is read (in chunks of the stored values), not a sample of rows.

    Parameters
    ----------
    matrix
        Dense array or scipy sparse matrix.
    where
        How to name the matrix in the error message.
    chunk_size
        Number of stored values checked at a time.

    Raises
    ------
    TypeError
        The matrix is not numeric.
    ValueError
        It has non-finite, negative or non-integer values.
    """
    values = _stored_values(matrix)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        msg = f"{where} has dtype {values.dtype}; trajvi needs a numeric matrix of raw counts."
        raise TypeError(msg)
    if np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
        if values.size and np.issubdtype(values.dtype, np.signedinteger) and values.min() < 0:
            n = int((values < 0).sum())
            msg = f"{where} has {n} negative values (minimum {values.min()}); trajvi needs raw counts (>= 0)."
            raise ValueError(msg)
        return
    fix = (
        "trajvi models raw UMI counts: pass the layer that holds them (layer=...), "
        "not normalised or log-transformed values."
    )
    for start in range(0, values.size, chunk_size):
        block = values[start : start + chunk_size]
        bad = ~np.isfinite(block)
        if bad.any():
            msg = f"{where} has non-finite values (NaN or Inf) such as {block[bad][0]}. {fix}"
            raise ValueError(msg)
        if (block < 0).any():
            msg = f"{where} has negative values (minimum {block.min()}). {fix}"
            raise ValueError(msg)
        frac = block != np.round(block)
        if frac.any():
            msg = f"{where} has non-integer values such as {block[frac][0]!r}. {fix}"
            raise ValueError(msg)


def warn_empty_cells_and_genes(matrix: Any, *, where: str = "adata.X") -> tuple[int, int]:
    """Log a warning for all-zero cells and genes; return how many of each there are."""
    # counts are checked non-negative first, so an all-zero row or column is one that sums to 0
    cell_sums = np.asarray(matrix.sum(axis=1, dtype=np.float64)).ravel()
    gene_sums = np.asarray(matrix.sum(axis=0, dtype=np.float64)).ravel()
    n_cells = int((cell_sums == 0).sum())
    n_genes = int((gene_sums == 0).sum())
    if n_cells:
        logger.warning(
            "%s has %d cell(s) with no counts; they carry no information and get a library size of 0. "
            "Filter them first, e.g. sc.pp.filter_cells(adata, min_counts=1).",
            where,
            n_cells,
        )
    if n_genes:
        logger.warning(
            "%s has %d gene(s) with no counts in any cell; filter them first, e.g. "
            "sc.pp.filter_genes(adata, min_cells=1).",
            where,
            n_genes,
        )
    return n_cells, n_genes


def check_condition(values: pd.Series, *, key: str, min_categories: int = 2) -> list[str]:
    """Check a condition column: no missing values and at least ``min_categories`` categories. Return them."""
    if values.isna().any():
        msg = (
            f"adata.obs[{key!r}] has {int(values.isna().sum())} missing value(s); every cell needs a "
            "condition. Drop those cells or fill the column."
        )
        raise ValueError(msg)
    cats = (
        [str(c) for c in values.cat.categories if (values == c).any()]
        if isinstance(values.dtype, pd.CategoricalDtype)
        else sorted(str(c) for c in values.unique())
    )
    if len(cats) < min_categories:
        msg = (
            f"adata.obs[{key!r}] has a single category ({cats[0]!r} in every cell); trajvi learns how "
            "cells move between conditions and needs at least two."
        )
        raise ValueError(msg)
    return cats


def check_time(times: pd.Series, conditions: pd.Series, *, key: str, condition_key: str) -> dict[str, float]:
    """Check a numeric time column: finite, and one value per condition. Return condition -> time."""
    if not pd.api.types.is_numeric_dtype(times):
        msg = f"adata.obs[{key!r}] has dtype {times.dtype}; time_key must name a numeric column."
        raise TypeError(msg)
    arr = times.to_numpy(dtype=float)
    if not np.isfinite(arr).all():
        msg = f"adata.obs[{key!r}] has missing or non-finite values; every cell needs a finite time."
        raise ValueError(msg)
    per_condition = pd.Series(arr, index=times.index).groupby(conditions.astype(str).to_numpy()).agg(["min", "max"])
    mixed = per_condition.index[per_condition["min"] != per_condition["max"]].tolist()
    if mixed:
        msg = (
            f"adata.obs[{key!r}] varies within condition(s) {mixed} of {condition_key!r}; time_key gives "
            "the position of each condition on the trajectory axis, so it must be constant within a condition."
        )
        raise ValueError(msg)
    return {str(c): float(v) for c, v in per_condition["min"].items()}


def check_doses(values: pd.Series, *, key: str) -> None:
    """Check doses: numeric, finite and not negative (control cells may have dose 0)."""
    if not pd.api.types.is_numeric_dtype(values):
        msg = f"adata.obs[{key!r}] has dtype {values.dtype}; dose_key must name a numeric column."
        raise TypeError(msg)
    arr = values.to_numpy(dtype=float)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        shown = ", ".join(map(str, values.index[bad][:3]))
        msg = (
            f"adata.obs[{key!r}] has {int(bad.sum())} negative, NaN or infinite dose(s) (cells {shown}, ...); "
            "doses must be finite and >= 0 (use 0 for control cells)."
        )
        raise ValueError(msg)


def check_size_factors(values: pd.Series, *, key: str) -> None:
    """Check size factors: numeric, finite and positive."""
    if not pd.api.types.is_numeric_dtype(values):
        msg = f"adata.obs[{key!r}] has dtype {values.dtype}; size factors must be numeric."
        raise TypeError(msg)
    arr = values.to_numpy(dtype=float)
    if not np.isfinite(arr).all() or (arr <= 0).any():
        msg = f"adata.obs[{key!r}] must hold finite, positive size factors."
        raise ValueError(msg)


def validate_anndata(
    adata: AnnData,
    condition_key: str,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    time_key: str | None = None,
    size_factor_key: str | None = None,
    dose_key: str | None = None,
    min_conditions: int = 2,
) -> dict[str, Any]:
    """Run every input check that :meth:`trajvi.TrajVI.setup_anndata` needs, before anything is registered.

    Parameters
    ----------
    adata
        The AnnData to check (read only).
    condition_key, layer, batch_key, time_key, size_factor_key, dose_key
        As in :meth:`trajvi.TrajVI.setup_anndata`.
    min_conditions
        Fewest conditions the data must hold: 2 for a model's training data, 1 for data set up with a
        trained model's registry (``load``, ``load_query_data``), whose conditions come from that registry.

    Returns
    -------
    dict
        A summary: the condition categories, the time of each condition (or ``None``) and the
        numbers of empty cells and genes.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"adata has shape {adata.shape}; it needs at least one cell and one gene."
        raise ValueError(msg)
    conditions = check_obs_key(adata, condition_key, parameter="condition_key")
    categories = check_condition(conditions, key=condition_key, min_categories=min_conditions)
    if batch_key is not None:
        batches = check_obs_key(adata, batch_key, parameter="batch_key")
        if batches.isna().any():
            msg = f"adata.obs[{batch_key!r}] has missing values; every cell needs a batch."
            raise ValueError(msg)
    times = None
    if time_key is not None:
        times = check_time(
            check_obs_key(adata, time_key, parameter="time_key"),
            conditions,
            key=time_key,
            condition_key=condition_key,
        )
    if size_factor_key is not None:
        check_size_factors(check_obs_key(adata, size_factor_key, parameter="size_factor_key"), key=size_factor_key)
    if dose_key is not None:
        check_doses(check_obs_key(adata, dose_key, parameter="dose_key"), key=dose_key)
    counts = get_counts(adata, layer)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    check_counts(counts, where=where)
    n_empty_cells, n_empty_genes = warn_empty_cells_and_genes(counts, where=where)
    return {
        "categories": categories,
        "times": times,
        "n_empty_cells": n_empty_cells,
        "n_empty_genes": n_empty_genes,
    }
