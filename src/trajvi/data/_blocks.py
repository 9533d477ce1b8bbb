"""Reading a count matrix in blocks, whatever holds it: memory, an h5ad file opened backed, dask, zarr.

The input checks read every value once; for a matrix that is not in memory (``anndata.read_h5ad(...,
backed="r")``, an AnnCollection seen through scvi-tools' ``CollectionAdapter``, a dask array) they read
it in blocks of rows (of columns for a backed CSC matrix, which is stored by column), so that memory is
bounded by the block size and not by the matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from scipy import sparse

from trajvi._constants import REGISTRY_KEYS

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Values (dense-equivalent) read per block: 16 M values are 64 MB of float32.
DEFAULT_BLOCK_VALUES = 16_000_000


class Block(NamedTuple):
    """A block of a matrix: rows (``axis=0``) or columns (``axis=1``) ``start:stop``, in memory."""

    axis: int
    start: int
    stop: int
    values: Any  # numpy array or scipy sparse matrix


def is_in_memory(matrix: Any) -> bool:
    """Whether ``matrix`` is a numpy array or a scipy sparse matrix held in memory.

    scvi-tools' ``CollectionAdapter`` hands out a ``csr_matrix`` subclass that reads from the collection's
    files and whose ``data`` is only a sample: it has no ``indptr`` of its own, so it counts as not in memory.
    """
    if isinstance(matrix, np.ndarray):
        return True
    if sparse.issparse(matrix):
        return hasattr(matrix, "indptr") or hasattr(matrix, "row") or hasattr(matrix, "offsets")
    return False


def _materialize(block: Any) -> Any:
    """A block read from a lazy matrix, as numpy or scipy sparse."""
    if hasattr(block, "compute"):  # dask
        block = block.compute()
    if sparse.issparse(block):
        return block
    if hasattr(block, "to_memory"):  # a backed anndata view
        block = block.to_memory()
    return block if sparse.issparse(block) else np.asarray(block)


def iter_blocks(matrix: Any, shape: tuple[int, int], *, max_values: int = DEFAULT_BLOCK_VALUES) -> Iterator[Block]:
    """Yield ``matrix`` in blocks of whole rows (or whole columns for a CSC matrix).

    Parameters
    ----------
    matrix
        Anything that slices like an array: numpy, scipy sparse, an h5py dataset, anndata's backed sparse
        datasets, dask or zarr arrays, scvi-tools' AnnCollection layers.
    shape
        ``(n_rows, n_cols)`` (passed in: an AnnCollection's layers do not know their shape).
    max_values
        Dense-equivalent number of values per block; a block has at least one row.
    """
    n_rows, n_cols = shape
    by_column = getattr(matrix, "format", None) == "csc"  # stored by column: read whole columns
    length, width = (n_cols, n_rows) if by_column else (n_rows, n_cols)
    step = max(1, int(max_values) // max(1, width))
    for start in range(0, length, step):
        stop = min(length, start + step)
        block = matrix[:, start:stop] if by_column else matrix[start:stop]
        yield Block(1 if by_column else 0, start, stop, _materialize(block))


def stored_values(block: Any) -> np.ndarray:
    """The explicitly stored values of an in-memory block (no copy for CSR/CSC data or a contiguous array)."""
    if sparse.issparse(block):
        return np.asarray(block.data)
    return np.asarray(block).ravel()


def row_sums(matrix: Any, rows: np.ndarray, *, max_rows: int = 4096) -> np.ndarray:
    """Float64 sums of ``rows`` of ``matrix`` (in any order, repeats allowed), read ``max_rows`` rows at a time.

    A lazy matrix is read in increasing row order without repeats (what h5py needs), and the sums are put
    back in the order asked for.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.float64)
    for i in range(0, len(rows), max_rows):
        chunk = rows[i : i + max_rows]
        unique, inverse = np.unique(chunk, return_inverse=True)
        block = _materialize(matrix[unique])
        out[i : i + len(chunk)] = np.asarray(block.sum(axis=1, dtype=np.float64)).reshape(-1)[inverse]
    return out


def read_rows(matrix: Any, rows: np.ndarray) -> np.ndarray:
    """Dense float32 ``rows`` of ``matrix`` in the order asked for (a lazy matrix is read in increasing order)."""
    rows = np.asarray(rows, dtype=np.int64)
    unique, inverse = np.unique(rows, return_inverse=True)
    block = _materialize(matrix[unique])
    dense = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return np.asarray(dense, dtype=np.float32)[inverse]


def counts_in_memory(adata_manager: Any) -> bool:
    """Whether the registered counts are held in memory (not a backed file, an AnnCollection, a lazy array)."""
    counts = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    return is_in_memory(counts) and not getattr(adata_manager.adata, "isbacked", False)
