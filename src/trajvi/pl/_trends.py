"""``pl.gene_trends``: expression along the simulated paths."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import matplotlib.pyplot as plt
import numpy as np

from trajvi._constants import ADATA_KEYS

from ._utils import save_or_show

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def gene_trends(
    adata: AnnData,
    *,
    key: str = ADATA_KEYS.TRENDS,
    genes: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    spread: bool = True,
    ncols: int = 4,
    axs: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Plot the gene trends stored by :func:`trajvi.tl.gene_trends`: one panel per gene, one line per group.

    Parameters
    ----------
    adata
        AnnData with ``uns[key]``, written by ``trajvi.tl.gene_trends(adata, model, genes, key_added=key)``
        (also after an h5ad round trip).
    key
        Key used by :func:`trajvi.tl.gene_trends`.
    genes
        Genes to draw (default: all in the stored table).
    groups
        Groups to draw (default: all).
    spread
        Shade the interquartile range over cells.
    ncols
        Panels per row.
    axs
        Axes to draw into, one per gene.
    show
        Show the figure (default: ``scanpy.settings.autoshow``, unless the figure is returned).
    save
        Write the figure under ``scanpy.settings.figdir`` as scanpy does: ``True`` writes
        ``gene_trends{plot_suffix}.{file_format_figs}``; a string is appended to ``gene_trends`` (ending in
        ``.png``, ``.pdf`` or ``.svg``, it also sets the format). Default: ``scanpy.settings.autosave``.
    return_fig
        Return the figure.

    Returns
    -------
    The figure with ``return_fig=True``; else the axes, one per gene, when not shown (``show=False``); else
    ``None``.
    """
    import anndata as ad
    import pandas as pd

    if not isinstance(adata, ad.AnnData):
        msg = (
            f"adata must be an AnnData, not {type(adata).__name__}; store the trends with "
            f"trajvi.tl.gene_trends(adata, model, genes, key_added={key!r}) and pass that AnnData."
        )
        raise TypeError(msg)
    if key not in adata.uns or "table" not in adata.uns[key]:
        msg = f"no gene trends under uns[{key!r}]; run trajvi.tl.gene_trends(adata, model, genes, key_added={key!r})."
        raise KeyError(msg)
    trends = pd.DataFrame(adata.uns[key]["table"])
    needed = {"time", "gene", "group", "mean", "q25", "q75"}
    if not needed <= set(trends.columns):
        msg = (
            f"uns[{key!r}]['table'] lacks columns {sorted(needed - set(trends.columns))}; rerun trajvi.tl.gene_trends."
        )
        raise ValueError(msg)
    genes = list(dict.fromkeys(trends["gene"])) if genes is None else list(genes)
    missing = [g for g in genes if g not in set(trends["gene"])]
    if missing:
        msg = f"genes {missing} are not in uns[{key!r}]; available: {sorted(set(trends['gene']))[:20]}."
        raise KeyError(msg)
    groups = list(dict.fromkeys(trends["group"])) if groups is None else list(groups)
    if axs is None:
        ncols = min(ncols, len(genes))
        nrows = int(np.ceil(len(genes) / ncols))
        fig, grid = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False)
        axs = list(grid.ravel())
        for extra in axs[len(genes) :]:
            extra.set_visible(False)
    else:
        axs = list(axs)
        if len(axs) < len(genes):
            msg = f"axs has {len(axs)} axes; {len(genes)} genes need one each."
            raise ValueError(msg)
        fig = cast("Figure", axs[0].figure)  # matplotlib also allows a SubFigure, which has no tight_layout
    scale = adata.uns[key].get("params", {}).get("scale", "")
    for ax, gene in zip(axs, genes, strict=False):
        for group in groups:
            sel = trends[(trends["gene"] == gene) & (trends["group"] == group)]
            line = ax.plot(sel["time"], sel["mean"], label=str(group))[0]
            if spread:
                ax.fill_between(sel["time"], sel["q25"], sel["q75"], color=line.get_color(), alpha=0.2)
        ax.set_title(gene)
        ax.set_xlabel("time")
        ax.set_ylabel(f"expression ({scale})" if scale else "expression")
    if len(groups) > 1:
        axs[0].legend(fontsize="x-small")
    fig.tight_layout()
    return save_or_show(
        fig, list(axs[: len(genes)]), writekey="gene_trends", show=show, save=save, return_fig=return_fig
    )
