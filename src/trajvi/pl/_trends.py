"""``pl.gene_trends``: expression along the simulated paths."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def gene_trends(
    trends: pd.DataFrame,
    *,
    genes: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    spread: bool = True,
    ncols: int = 4,
    axs: Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Plot gene trends from :func:`trajvi.tl.gene_trends`: one panel per gene, one line per group.

    Parameters
    ----------
    trends
        The DataFrame returned by :func:`trajvi.tl.gene_trends`.
    genes
        Genes to draw (default: all in ``trends``).
    groups
        Groups to draw (default: all).
    spread
        Shade the interquartile range over cells.
    ncols
        Panels per row.
    axs
        Axes to draw into, one per gene.
    show
        Show the figure (default: when not returning it).
    return_fig
        Return the figure.
    """
    needed = {"time", "gene", "group", "mean", "q25", "q75"}
    if not needed <= set(trends.columns):
        msg = f"trends lacks columns {sorted(needed - set(trends.columns))}; pass the output of trajvi.tl.gene_trends."
        raise ValueError(msg)
    genes = list(dict.fromkeys(trends["gene"])) if genes is None else list(genes)
    missing = [g for g in genes if g not in set(trends["gene"])]
    if missing:
        msg = f"genes {missing} are not in trends; available: {sorted(set(trends['gene']))[:20]}."
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
    scale = trends.attrs.get("params", {}).get("scale", "")
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
    if show or (show is None and not return_fig):
        plt.show()
    return fig if return_fig else None
