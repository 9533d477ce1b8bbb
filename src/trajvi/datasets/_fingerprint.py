"""A content fingerprint of a count AnnData: what a built or cached file is checked against.

The fingerprint does not depend on the order of cells or genes, nor on how the ``.h5ad`` was written
(compression, anndata version), so a file built on another machine compares equal to the reference copy when its
names, counts and labels are the same.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from anndata import AnnData


def _md5_lines(values: Iterable[Any]) -> str:
    return hashlib.md5("\n".join(str(v) for v in values).encode()).hexdigest()


def fingerprint(adata: AnnData, label_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Shape, non-zeros, total counts and md5 sums of the names, the counts and the labels of ``adata``.

    Parameters
    ----------
    adata
        An AnnData with integer counts in ``X`` (in memory).
    label_keys
        Columns of ``adata.obs`` whose values enter the fingerprint (as strings, cells in sorted name order;
        ``"missing"`` for a column ``adata.obs`` lacks).

    Returns
    -------
    A dictionary of plain values (JSON-friendly): ``shape``, ``nnz``, ``total_counts``, ``obs_names_md5``,
    ``var_names_md5``, ``x_md5`` and, per label key, ``labels_md5[key]``.
    """
    cells = np.argsort(np.asarray(adata.obs_names, dtype=str), kind="stable")
    genes = np.argsort(np.asarray(adata.var_names, dtype=str), kind="stable")
    x = sparse.csr_matrix(adata.X)[cells][:, genes]
    x.sum_duplicates()
    x.eliminate_zeros()
    x.sort_indices()
    data = x.data
    if data.size and not np.array_equal(data, np.round(data)):
        msg = "adata.X holds non-integer values: a fingerprint is taken of raw counts."
        raise ValueError(msg)
    digest = hashlib.md5()
    for part in (x.indptr.astype(np.int64), x.indices.astype(np.int64), data.astype(np.int64)):
        digest.update(part.tobytes())
    obs = adata.obs.iloc[cells]
    return {
        "shape": [int(adata.n_obs), int(adata.n_vars)],
        "nnz": int(x.nnz),
        "total_counts": int(data.astype(np.int64).sum()),
        "obs_names_md5": _md5_lines(adata.obs_names[cells]),
        "var_names_md5": _md5_lines(adata.var_names[genes]),
        "x_md5": digest.hexdigest(),
        "labels_md5": {key: _md5_lines(obs[key].astype(str)) if key in obs else "missing" for key in label_keys},
    }


def fingerprint_differences(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The entries where two fingerprints differ, as ``"name: found X, expected Y"`` lines (empty when equal)."""
    lines = []
    for key, value in expected.items():
        if key == "labels_md5":
            for label, digest in value.items():
                other = found.get("labels_md5", {}).get(label)
                if other != digest:
                    lines.append(f"labels_md5[{label!r}]: found {other}, expected {digest}")
        elif found.get(key) != value:
            lines.append(f"{key}: found {found.get(key)}, expected {value}")
    return lines
