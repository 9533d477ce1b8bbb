"""Builders: from the downloaded source files to the AnnData of each dataset, as its reference ``.md`` describes."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ._convert import add_highly_variable, categorical, read_h5ad_without, recover_counts, require_obs

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from anndata import AnnData

    from ._registry import Record


def _source_note(record: Record) -> dict[str, str]:
    return {key: f"{s.repo}@{s.commit} {s.path}" for key, s in record.sources.items()}


def _read(path: Path) -> AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # files written by old anndata versions
        return ad.read_h5ad(path)


def kang_scgen_valid(files: dict[str, Path], record: Record) -> AnnData:
    """From scGen's ``valid.h5ad``: counts recovered, obs names ``<barcode>-<condition>``, 2,000 HVG flags.

    Checked against the real file at the pinned commit: the reference copy is rebuilt exactly (counts, names, obs,
    var).
    """
    source = _read(files["scgen"])
    require_obs(source, ("condition", "cell_type", "n_counts", "n_genes"), "scGen's valid.h5ad")
    counts, deviation = recover_counts(source.X)
    condition = np.asarray(source.obs["condition"], dtype=str)
    # scGen's names are already "<barcode>-<condition>"; the barcode column keeps the 10x barcode alone
    names = np.asarray(source.obs_names, dtype=str)
    barcode = np.array([n.removesuffix(f"-{c}") for n, c in zip(names, condition)])
    obs = pd.DataFrame(
        {
            "condition": categorical(condition),
            "cell_type": categorical(source.obs["cell_type"]),
            "barcode": categorical(barcode),
            "n_counts_orig": source.obs["n_counts"].to_numpy(dtype=np.float32),
            "n_genes_orig": source.obs["n_genes"].to_numpy(dtype=np.int32),
        },
        index=pd.Index([f"{b}-{c}" for b, c in zip(barcode, condition)], name="index"),
    )
    adata = ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=pd.Index(source.var_names.astype(str), name="index")))
    add_highly_variable(adata, 2000)
    adata.uns["source"] = {**record.sources["scgen"].__dict__}
    adata.uns["count_reconstruction"] = {
        "method": "counts = expm1(X)/min_nonzero(expm1(X)) per cell, rounded",
        "max_abs_deviation_from_integer": deviation,
    }
    return adata


def klein2015(files: dict[str, Path], record: Record) -> AnnData:
    """From tmscc's ``profile.txt`` (genes x cells CSV of counts) and ``labels.txt`` (the day of each cell)."""
    profile = pd.read_csv(files["profile"], index_col=0)
    days = np.loadtxt(files["labels"], dtype=np.int64).reshape(-1)
    if profile.shape[1] != days.size:
        msg = f"profile.txt has {profile.shape[1]} cells but labels.txt {days.size} days: the files do not match."
        raise ValueError(msg)
    values = profile.to_numpy()
    if not np.issubdtype(values.dtype, np.integer):
        msg = "profile.txt holds non-integer values: it is not the count table this dataset is built from."
        raise ValueError(msg)
    order = sorted(set(days.tolist()))
    obs = pd.DataFrame(
        {
            "day": days.astype(np.int32),
            "time": pd.Categorical([f"d{d}" for d in days], categories=[f"d{d}" for d in order], ordered=True),
        },
        index=pd.Index(profile.columns.astype(str)),
    )
    counts = sparse.csr_matrix(values.T.astype(np.int32))
    adata = ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=pd.Index(profile.index.astype(str))))
    add_highly_variable(adata, 500)
    adata.uns["source"] = {
        "repo": record.sources["profile"].repo,
        "commit": record.sources["profile"].commit,
        "paths": np.array([s.path for s in record.sources.values()], dtype=object),
        "geo": "GSE65525",
    }
    return adata


_HABER_DESIGN = {  # condition -> (pathogen, days post infection), per the paper's design
    "Control": ("none", 0),
    "Hpoly.Day10": ("H. polygyrus (helminth)", 10),
    "Salmonella": ("S. enterica (bacterium)", 2),
}


def _haber_part(path: Path, what: str) -> tuple[AnnData, float]:
    source = read_h5ad_without(path, ("uns/neighbors",))
    require_obs(source, ("condition", "cell_label", "n_counts", "n_genes"), what)
    counts, deviation = recover_counts(source.X)
    part = ad.AnnData(counts, obs=source.obs[["condition", "cell_label", "n_counts", "n_genes"]].copy())
    part.obs_names = source.obs_names.astype(str)
    part.var_names = source.var_names.astype(str)
    return part, deviation


def haber2017(files: dict[str, Path], record: Record) -> AnnData:
    """From scGen's two Haber validation files: counts recovered, merged on shared cells (checked equal) and genes."""
    hpoly, dev_hpoly = _haber_part(files["hpoly_valid"], "valid_hpoly.h5ad")
    salmonella, dev_salmonella = _haber_part(files["salmonella_valid"], "valid_salmonella.h5ad")
    genes = [g for g in hpoly.var_names if g in set(salmonella.var_names)]
    hpoly, salmonella = hpoly[:, genes], salmonella[:, genes]
    shared = hpoly.obs_names.intersection(salmonella.obs_names)
    if (hpoly[shared].X != salmonella[shared].X).nnz:
        msg = f"the {len(shared)} cells in both files have different counts: the files are not scGen's splits."
        raise ValueError(msg)
    extra = salmonella[~salmonella.obs_names.isin(shared)]
    merged = ad.concat([hpoly, extra], merge="same")
    names = merged.obs_names.to_numpy(dtype=str)
    condition = merged.obs["condition"].to_numpy(dtype=str)
    in_hpoly = np.isin(names, hpoly.obs_names)
    in_salmonella = np.isin(names, salmonella.obs_names)
    src = np.where(in_hpoly & in_salmonella, "both", np.where(in_hpoly, "hpoly_valid", "salmonella_valid"))
    parts = np.array([n.split("_") for n in names], dtype=object)
    obs = pd.DataFrame(
        {
            "condition": categorical(condition, list(_HABER_DESIGN)),
            "cell_type": categorical(merged.obs["cell_label"]),
            "mouse": categorical([p[0] for p in parts]),
            "barcode": categorical([p[1] for p in parts]),
            "n_counts_orig": merged.obs["n_counts"].to_numpy(dtype=np.float64),
            "n_genes_orig": merged.obs["n_genes"].to_numpy(dtype=np.int64),
            "src": categorical(src),
            "in_hpoly_valid": in_hpoly,
            "in_salmonella_valid": in_salmonella,
            "days_post_infection": np.array([_HABER_DESIGN[c][1] for c in condition], dtype=np.int64),
            "pathogen": categorical([_HABER_DESIGN[c][0] for c in condition]),
            "is_control": condition == "Control",
        },
        index=pd.Index(names, name="index"),
    )
    adata = ad.AnnData(sparse.csr_matrix(merged.X, dtype=np.int32), obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    adata.uns["sources"] = _source_note(record)
    adata.uns["count_recovery"] = {
        "method": "counts = expm1(X)/min_nonzero(expm1(X)) per cell",
        "max_abs_dev_hpoly": dev_hpoly,
        "max_abs_dev_salmonella": dev_salmonella,
    }
    return adata


BUILDERS: dict[str, Callable[[dict[str, Path], Record], AnnData]] = {
    "kang_scgen_valid_counts": kang_scgen_valid,
    "klein2015_mesc_lif_counts": klein2015,
    "haber2017_scgen_valid_counts": haber2017,
}
