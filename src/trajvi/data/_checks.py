"""Input checks that run before any training.

Each check raises with a message that names the problem and the fix; none of them modifies the
AnnData it reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trajvi._logging import logger

from ._blocks import DEFAULT_BLOCK_VALUES, is_in_memory, iter_blocks, stored_values

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
    """Return the count matrix (``adata.X`` or ``adata.layers[layer]``), checking that it exists.

    Works on backed AnnData and on an AnnCollection seen through scvi-tools' ``CollectionAdapter``
    (which has layers but no ``X``).
    """
    if layer is None:
        x = _attribute_or_none(adata, "X")
        if x is None:
            msg = "adata.X is empty; pass layer=... naming the layer that holds the raw counts."
            raise ValueError(msg)
        return x
    names = list(adata.layers.keys())
    if layer not in names:
        msg = (
            f"layer={layer!r} is not in adata.layers. Available layers: {_available(names)}. "
            "Pass layer=None to use adata.X."
        )
        raise KeyError(msg)
    return adata.layers[layer]


def _attribute_or_none(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:  # an AnnCollection has no X
        return None


#: Largest count accepted: 2**24 = 16,777,216 is the largest integer up to which float32 (what the model
#: computes in) holds every integer exactly.
MAX_COUNT = 2**24

_FIX = (
    "trajvi models raw UMI counts: pass the layer that holds them (layer=...), "
    "not normalised or log-transformed values."
)


def _check_values(values: np.ndarray, *, where: str, chunk_size: int, rows: str = "") -> None:
    """Check one array of stored values (a whole in-memory matrix, or one block of a lazy one)."""
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        msg = f"{where} has dtype {values.dtype}; trajvi needs a numeric matrix of raw counts."
        raise TypeError(msg)
    if values.dtype == bool or values.size == 0:
        return
    for start in range(0, values.size, chunk_size):
        block = values[start : start + chunk_size]
        if np.issubdtype(values.dtype, np.integer):
            if np.issubdtype(values.dtype, np.signedinteger) and block.min() < 0:
                n = int((values < 0).sum())  # the whole array: the count is exact
                msg = f"{where} has {n} negative values{rows} (minimum {values.min()}); trajvi needs raw counts (>= 0)."
                raise ValueError(msg)
        else:
            bad = ~np.isfinite(block)
            if bad.any():
                msg = f"{where} has non-finite values (NaN or Inf) such as {block[bad][0]}{rows}. {_FIX}"
                raise ValueError(msg)
            if (block < 0).any():
                msg = f"{where} has negative values (minimum {block.min()}){rows}. {_FIX}"
                raise ValueError(msg)
            frac = block != np.round(block)
            if frac.any():
                msg = f"{where} has non-integer values such as {block[frac][0]!r}{rows}. {_FIX}"
                raise ValueError(msg)
        if block.max() > MAX_COUNT:
            n = int((values > MAX_COUNT).sum())
            msg = (
                f"{where} has {n} count(s) above {MAX_COUNT:,} (maximum {values.max():.4g}){rows}: far more "
                "molecules than a cell holds, and beyond the integers float32 (what the model computes in) "
                "holds exactly. These are not raw UMI counts, or the file is corrupt: check the matrix and "
                "pass the layer with the raw counts (layer=...)."
            )
            raise ValueError(msg)


def scan_counts(
    matrix: Any,
    shape: tuple[int, int],
    *,
    where: str = "adata.X",
    chunk_size: int = 50_000_000,
    block_values: int = DEFAULT_BLOCK_VALUES,
) -> tuple[np.ndarray, np.ndarray]:
    """Check that a matrix holds raw counts and return its cell and gene sums, in one pass.

    An in-memory matrix is checked in chunks of its stored values (and a CSR or CSC one summed in blocks);
    any other (backed h5ad, dask, zarr, an AnnCollection layer) is read in blocks of rows (columns for a
    CSC matrix), so the memory added stays bounded by ``block_values`` whatever the size of the matrix.

    Parameters
    ----------
    matrix
        The counts.
    shape
        ``(n_cells, n_genes)``.
    where
        How to name the matrix in the error message.
    chunk_size
        Number of stored values checked at a time.
    block_values
        Dense-equivalent number of values read per block from a matrix that is not in memory.

    Returns
    -------
    tuple
        Float64 sums per cell and per gene.

    Raises
    ------
    TypeError
        The matrix is not numeric.
    ValueError
        It has non-finite, negative or non-integer values, or counts above :data:`MAX_COUNT`.
    """
    in_memory = is_in_memory(matrix)
    if in_memory:
        _check_values(stored_values(matrix), where=where, chunk_size=chunk_size)
        if getattr(matrix, "format", None) not in ("csr", "csc"):
            # numpy sums with a dtype cast in buffers; scipy would cast all the stored values at once
            cell_sums = np.asarray(matrix.sum(axis=1, dtype=np.float64)).ravel()
            gene_sums = np.asarray(matrix.sum(axis=0, dtype=np.float64)).ravel()
            return cell_sums, gene_sums
    sums = [np.zeros(shape[0]), np.zeros(shape[1])]
    for block in iter_blocks(matrix, shape, max_values=block_values):
        label = "rows" if block.axis == 0 else "columns"
        if not in_memory:
            _check_values(
                stored_values(block.values),
                where=where,
                chunk_size=chunk_size,
                rows=f" in {label} {block.start}:{block.stop}",
            )
        sums[block.axis][block.start : block.stop] = np.asarray(
            block.values.sum(axis=1 - block.axis, dtype=np.float64)
        ).ravel()
        sums[1 - block.axis] += np.asarray(block.values.sum(axis=block.axis, dtype=np.float64)).ravel()
    return sums[0], sums[1]


def check_counts(matrix: Any, *, where: str = "adata.X", chunk_size: int = 50_000_000) -> None:
    """Check that a matrix holds raw counts: finite, non-negative integers no larger than :data:`MAX_COUNT`.

    The whole matrix is read (in chunks of the stored values, or in blocks of rows when it is not in
    memory), not a sample of rows. Counts above ``2**24`` are refused: no cell holds that many molecules
    of one gene, and float32, which the model computes in, stops holding every integer exactly there.

    Parameters
    ----------
    matrix
        Dense array, scipy sparse matrix, or a matrix read lazily (h5py or backed anndata dataset, dask).
    where
        How to name the matrix in the error message.
    chunk_size
        Number of stored values checked at a time.

    Raises
    ------
    TypeError
        The matrix is not numeric.
    ValueError
        It has non-finite, negative or non-integer values, or implausibly large counts.
    """
    scan_counts(matrix, tuple(matrix.shape), where=where, chunk_size=chunk_size)


def warn_empty_cells(cell_sums: np.ndarray, gene_sums: np.ndarray, *, where: str = "adata.X") -> tuple[int, int]:
    """Log a warning for all-zero cells and genes, from the sums of :func:`scan_counts`; return how many."""
    # counts are checked non-negative first, so an all-zero row or column is one that sums to 0
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


def check_unique_names(adata: AnnData) -> None:
    """Refuse duplicate cell or gene names: results are written back by name, and genes matched by name."""
    for axis, names, fix in (
        ("obs_names", adata.obs_names, "adata.obs_names_make_unique()"),
        ("var_names", adata.var_names, "adata.var_names_make_unique()"),
    ):
        index = pd.Index(names)
        if not index.is_unique:
            dup = index[index.duplicated()].unique()
            shown = ", ".join(repr(str(d)) for d in dup[:3])
            msg = (
                f"adata.{axis} has {int(index.duplicated().sum())} duplicate(s) (such as {shown}); trajvi "
                f"writes results back by name and needs unique names. Call {fix} first (it changes the "
                "names in place), or drop the duplicates."
            )
            raise ValueError(msg)


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
    check_unique_names(adata)
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
    cell_sums, gene_sums = scan_counts(counts, (adata.n_obs, adata.n_vars), where=where)
    n_empty_cells, n_empty_genes = warn_empty_cells(cell_sums, gene_sums, where=where)
    return {
        "categories": categories,
        "times": times,
        "n_empty_cells": n_empty_cells,
        "n_empty_genes": n_empty_genes,
    }
