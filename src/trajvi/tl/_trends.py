"""``tl.gene_trends``: decoded expression along simulated paths, summarised over cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trajvi._constants import ADATA_KEYS
from trajvi._logging import logger
from trajvi._types import EXPRESSION_SCALES, check_option
from trajvi.data._checks import check_obs_key

from ._utils import check_model, skip_on_other_ranks

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from trajvi._types import ExpressionScale, Integrator
    from trajvi.model import TrajVI


def gene_trends(
    adata: AnnData,
    model: TrajVI,
    genes: Sequence[str] | str,
    *,
    source: str | None = None,
    target: str | None = None,
    t_span: tuple[float, float] | None = None,
    path: str | None = None,
    dose: float | None = None,
    groupby: str | None = None,
    indices: Sequence[int] | None = None,
    n_steps: int = 50,
    method: Integrator = "euler",
    scale: ExpressionScale = "log1p",
    batch_size: int = 1024,
    key_added: str = ADATA_KEYS.TRENDS,
    copy: bool = False,
) -> AnnData | None:
    """Expression of ``genes`` along the simulated paths: mean and spread over cells at each time, into ``adata``.

    Expression is decoded from the latent path (NB means with the library size fixed at 10,000, so cells
    are comparable), optionally ``log1p``-transformed, and summarised per time point and gene (and per
    group of ``groupby``).

    Parameters
    ----------
    adata
        AnnData with the model's genes.
    model
        A :class:`~trajvi.TrajVI` with a trained velocity field.
    genes
        Gene names.
    source, target, t_span, path, dose, indices, n_steps, method, batch_size
        As in :meth:`~trajvi.TrajVI.simulate_trajectory`.
    groupby
        Column of ``obs`` to summarise per group (e.g. the cell type of the source cells).
    scale
        ``"log1p"`` (log1p of expression per 10,000) or ``"normalized"`` (expression per 10,000).
    key_added
        ``uns`` key of the result (read by :func:`trajvi.pl.gene_trends`).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    AnnData or None
        ``None``, or the copy when ``copy=True``. Under distributed training only rank 0 writes into
        ``adata`` (the other processes return ``None`` at once; ``copy=True`` works on every process). Writes
        ``uns[key_added]`` = ``{"table": ..., "params": {...}}`` (written to h5ad with the AnnData), where the
        table is a long DataFrame with columns ``time``, ``gene``, ``group`` (``"all"`` without ``groupby``),
        ``mean``, ``std``, ``q25``, ``q75`` and ``n_cells``, and the parameters hold ``source``, ``target``,
        ``path``, ``dose``, ``scale``, ``groupby`` and ``genes`` (``""`` for a missing value).
    """
    check_model(model, adata)
    check_option(scale, EXPRESSION_SCALES, "scale")
    labels = None
    if groupby is not None:
        labels = check_obs_key(adata, groupby, parameter="groupby").astype(str)
    if not copy and skip_on_other_ranks("tl.gene_trends"):
        return None
    result = model.simulate_trajectory(
        adata,
        indices=indices,
        source=source,
        target=target,
        t_span=t_span,
        path=path,
        dose=dose,
        n_steps=n_steps,
        method=method,
        genes=genes,
        batch_size=batch_size,
        library_size=1e4,
    )
    values = result.expression  # (T, n_cells, n_genes)
    if scale == "log1p":
        values = np.log1p(values)
    cell_groups = (
        np.full(len(result.cells), "all", dtype=object) if labels is None else labels.loc[result.cells].to_numpy()
    )
    frames = []
    for group in pd.unique(cell_groups):
        sel = values[:, cell_groups == group, :]
        q25, q75 = np.quantile(sel, [0.25, 0.75], axis=1)
        for g, gene in enumerate(result.genes):
            frames.append(
                pd.DataFrame(
                    {
                        "time": result.times,
                        "gene": gene,
                        "group": group,
                        "mean": sel[:, :, g].mean(axis=1),
                        "std": sel[:, :, g].std(axis=1),
                        "q25": q25[:, g],
                        "q75": q75[:, g],
                        "n_cells": sel.shape[1],
                    }
                )
            )
    out = pd.concat(frames, ignore_index=True)
    params = {
        "source": result.source,
        "target": result.target,
        "path": result.path,
        "dose": float(result.dose),
        "scale": scale,
        "groupby": groupby,
        "genes": list(result.genes),
    }
    if copy:
        adata = adata.copy()
    adata.uns[key_added] = {"table": out, "params": {k: "" if v is None else v for k, v in params.items()}}
    logger.info("added %r, gene trends along the simulated paths (adata.uns)", key_added)
    return adata if copy else None
