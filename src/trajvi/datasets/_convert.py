"""Conversions from the published files to count AnnData: counts recovered from log-normalised values, HVG flags."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData

#: largest distance to the nearest integer tolerated when recovering counts (float32 storage gives < 1e-3)
MAX_DEVIATION = 0.01


def recover_counts(x: sparse.spmatrix | np.ndarray) -> tuple[sparse.csr_matrix, float]:
    """Raw counts from ``log1p(counts / size * target)``: ``expm1(x)`` per cell divided by its smallest non-zero value.

    The smallest non-zero entry of a cell is taken to be one UMI, which holds when every cell has a gene seen once
    (true of all the files this module builds; checked there by a fingerprint of the result).

    Parameters
    ----------
    x
        Cells x genes, log-normalised (``log1p`` of counts scaled by a per-cell factor).

    Returns
    -------
    The counts (int32 CSR) and the largest distance of a recovered value to the nearest integer before rounding.

    Raises
    ------
    ValueError
        When a cell has no non-zero entry, a value is negative, or a recovered value is further than
        ``MAX_DEVIATION`` from an integer (the matrix is not a scaled count matrix).
    """
    csr = sparse.csr_matrix(x, dtype=np.float64, copy=True)
    csr.eliminate_zeros()
    if csr.nnz and csr.data.min() < 0:
        msg = "the matrix has negative values: it is not log1p of scaled counts."
        raise ValueError(msg)
    counts_per_row = np.diff(csr.indptr)
    if (counts_per_row == 0).any():
        msg = f"{int((counts_per_row == 0).sum())} cells have no non-zero value: their counts cannot be recovered."
        raise ValueError(msg)
    scaled = np.expm1(csr.data)
    smallest = np.minimum.reduceat(scaled, csr.indptr[:-1])
    values = scaled / np.repeat(smallest, counts_per_row)
    rounded = np.rint(values)
    deviation = float(np.abs(values - rounded).max()) if values.size else 0.0
    if deviation > MAX_DEVIATION:
        msg = (
            f"recovered counts are up to {deviation:.3g} from an integer (tolerance {MAX_DEVIATION}): the matrix "
            "is not log1p of counts scaled per cell."
        )
        raise ValueError(msg)
    counts = sparse.csr_matrix((rounded.astype(np.int32), csr.indices.copy(), csr.indptr.copy()), shape=csr.shape)
    return counts, deviation


def add_highly_variable(adata: AnnData, n_top_genes: int) -> None:
    """``var['highly_variable']`` and ``var['hvg_dispersions_norm']`` (scanpy ``flavor='seurat'`` on log1p CP10k)."""
    import scanpy as sc

    work = ad.AnnData(sparse.csr_matrix(adata.X, dtype=np.float32))
    work.var_names = adata.var_names
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    sc.pp.highly_variable_genes(work, flavor="seurat", n_top_genes=n_top_genes)
    adata.var["highly_variable"] = work.var["highly_variable"].to_numpy(dtype=bool)
    adata.var["hvg_dispersions_norm"] = work.var["dispersions_norm"].to_numpy(dtype=np.float32)


def read_h5ad_without(path: Path, drop: tuple[str, ...]) -> AnnData:
    """Read an ``.h5ad`` after deleting the HDF5 groups ``drop`` (entries anndata refuses) from a temporary copy."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as handle:
            for key in drop:
                if key in handle:
                    del handle[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old files: anndata's format-upgrade notices
            return ad.read_h5ad(copy)


def require_obs(adata: AnnData, columns: tuple[str, ...], what: str) -> None:
    """Raise a :class:`KeyError` naming the source when it lacks the obs columns the conversion reads."""
    missing = [c for c in columns if c not in adata.obs.columns]
    if missing:
        msg = f"{what} has no obs column(s) {missing} (found {list(adata.obs.columns)}): it is not the expected file."
        raise KeyError(msg)


def categorical(values: pd.Series | np.ndarray, categories: list[str] | None = None) -> pd.Categorical:
    """String categories (sorted unless given)."""
    strings = np.asarray(values, dtype=str)
    return pd.Categorical(strings, categories=categories if categories is not None else sorted(set(strings)))
