"""``pl.transitions`` (a heatmap or a sankey-style flow) and ``pl.fate_probabilities`` (fates on an embedding)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import PathPatch
from matplotlib.path import Path

from trajvi._constants import ADATA_KEYS

from ._utils import save_or_show

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_KINDS = ("heatmap", "sankey")


def transitions(
    adata: AnnData,
    *,
    key: str = ADATA_KEYS.TRANSITIONS,
    kind: Literal["heatmap", "sankey"] = "heatmap",
    source_weights: pd.Series | None = None,
    min_share: float = 0.02,
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Draw a transition matrix from :func:`trajvi.tl.transition_matrix`.

    Parameters
    ----------
    adata
        AnnData with ``uns[key]``.
    key
        Key used by :func:`trajvi.tl.transition_matrix`.
    kind
        ``"heatmap"``: the shares with their values; ``"sankey"``: source groups on the left, target groups
        on the right, each band as wide as the mass it carries.
    source_weights
        Sankey only: the mass of each source group (default: every group the same, as the rows of the
        table are shares).
    min_share
        Sankey only: bands below this share of the total are not drawn.
    cmap
        Colormap of the heatmap.
    ax
        Axes to draw into.
    show
        Show the figure (default: ``scanpy.settings.autoshow``, unless the figure is returned).
    save
        Write the figure under ``scanpy.settings.figdir`` as scanpy does: ``True`` writes
        ``transitions{plot_suffix}.{file_format_figs}``; a string is appended to ``transitions`` (ending in
        ``.png``, ``.pdf`` or ``.svg``, it also sets the format). Default: ``scanpy.settings.autosave``.
    return_fig
        Return the figure.

    Returns
    -------
    The figure with ``return_fig=True``; else the axes when not shown (``show=False``); else ``None``.
    """
    if key not in adata.uns or "matrix" not in adata.uns[key]:
        msg = f"no transition matrix under uns[{key!r}]; run trajvi.tl.transition_matrix(..., key_added={key!r})."
        raise KeyError(msg)
    if kind not in _KINDS:
        msg = f"kind={kind!r} is not valid; use one of {_KINDS}."
        raise ValueError(msg)
    table = pd.DataFrame(adata.uns[key]["matrix"]).fillna(0.0)
    params = adata.uns[key].get("params", {})
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * table.shape[1], 1.0 + 0.5 * table.shape[0]))
    else:
        fig = cast("Figure", ax.figure)
    if kind == "heatmap":
        image = ax.imshow(table.to_numpy(), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(table.shape[1]), table.columns, rotation=90)
        ax.set_yticks(range(table.shape[0]), table.index)
        for (i, j), value in np.ndenumerate(table.to_numpy()):
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=7
            )
        fig.colorbar(image, ax=ax, label="share of the source group")
        ax.set_xlabel(f"{params.get('target', 'target')}")
        ax.set_ylabel(f"{params.get('source', 'source')}")
    else:
        weights = np.ones(len(table)) if source_weights is None else source_weights.reindex(table.index).fillna(0)
        _sankey(ax, table, np.asarray(weights, dtype=float), min_share)
        ax.set_title(
            f"{params.get('source', 'source')} -> {params.get('target', 'target')} ({params.get('method', '')})"
        )
    return save_or_show(fig, ax, writekey="transitions", show=show, save=save, return_fig=return_fig)


def _sankey(ax: Axes, table: pd.DataFrame, weights: np.ndarray, min_share: float, gap: float = 0.02) -> None:
    """Bands from stacked source bars (left) to stacked target bars (right), widths by mass."""
    flows = table.to_numpy() * (weights / weights.sum())[:, None]
    colors = plt.get_cmap("tab20")(np.arange(len(table)) % 20)

    def stack(sizes: np.ndarray) -> np.ndarray:
        starts = np.concatenate([[0.0], np.cumsum(sizes + gap)[:-1]])
        return 1.0 - starts  # top of each bar, from the top down

    src_top, tgt_top = stack(flows.sum(axis=1)), stack(flows.sum(axis=0))
    src_used, tgt_used = np.zeros(len(table)), np.zeros(table.shape[1])
    for i, j in np.ndindex(*flows.shape):
        width = flows[i, j]
        if width < min_share:
            src_used[i] += width
            tgt_used[j] += width
            continue
        y0, y1 = src_top[i] - src_used[i], tgt_top[j] - tgt_used[j]
        src_used[i] += width
        tgt_used[j] += width
        verts = [
            (0.1, y0),
            (0.5, y0),
            (0.5, y1),
            (0.9, y1),
            (0.9, y1 - width),
            (0.5, y1 - width),
            (0.5, y0 - width),
            (0.1, y0 - width),
            (0.1, y0),
        ]
        codes = [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4, Path.LINETO]
        codes += [Path.CURVE4, Path.CURVE4, Path.CURVE4, Path.CLOSEPOLY]
        ax.add_patch(PathPatch(Path(verts, codes), facecolor=colors[i], alpha=0.55, edgecolor="none"))
    for top, sizes, names, x, align in (
        (src_top, flows.sum(axis=1), table.index, 0.1, "right"),
        (tgt_top, flows.sum(axis=0), table.columns, 0.9, "left"),
    ):
        for y, size, name in zip(top, sizes, names):
            if size <= 0:
                continue
            ax.add_patch(plt.Rectangle((x - 0.015, y - size), 0.03, size, color="0.3"))
            ax.text(x + (-0.03 if align == "right" else 0.03), y - size / 2, str(name), ha=align, va="center")
    bottom = min((src_top - flows.sum(axis=1)).min(), (tgt_top - flows.sum(axis=0)).min())
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(bottom - 0.02, 1.02)
    ax.set_axis_off()


def fate_probabilities(
    adata: AnnData,
    *,
    key: str = ADATA_KEYS.FATES,
    basis: str = "umap",
    fates: list[str] | None = None,
    cmap: str = "magma_r",
    size: float = 12.0,
    axs: list[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Draw fate probabilities from :func:`trajvi.tl.fate_probabilities` on a 2-D embedding, one panel per fate.

    Every cell is drawn in grey; the source cells are coloured by their probability of each fate.

    Parameters
    ----------
    adata
        AnnData with ``obsm[key]`` and ``obsm['X_' + basis]``.
    key
        Key used by :func:`trajvi.tl.fate_probabilities`.
    basis
        Embedding (``"umap"`` reads ``obsm['X_umap']``; any ``obsm`` key works, its first two columns).
    fates
        The fates to draw (default: all).
    cmap, size
        Colormap and dot size.
    axs
        Axes to draw into, one per fate.
    show
        Show the figure (default: ``scanpy.settings.autoshow``, unless the figure is returned).
    save
        Write the figure under ``scanpy.settings.figdir`` as scanpy does: ``True`` writes
        ``fate_probabilities{plot_suffix}.{file_format_figs}``; a string is appended to ``fate_probabilities``
        (ending in ``.png``, ``.pdf`` or ``.svg``, it also sets the format). Default: ``scanpy.settings.autosave``.
    return_fig
        Return the figure.

    Returns
    -------
    The figure with ``return_fig=True``; else the axes, one per fate, when not shown (``show=False``); else
    ``None``.
    """
    if key not in adata.obsm:
        msg = f"no fate probabilities under obsm[{key!r}]; run trajvi.tl.fate_probabilities(..., key_added={key!r})."
        raise KeyError(msg)
    basis_key = basis if basis in adata.obsm else f"X_{basis}"
    if basis_key not in adata.obsm:
        msg = f"adata.obsm has no {basis_key!r}; compute an embedding first. Available: {list(adata.obsm.keys())}."
        raise KeyError(msg)
    probs = pd.DataFrame(adata.obsm[key], index=adata.obs_names)
    if "fates" in adata.uns.get(key, {}):
        probs.columns = list(adata.uns[key]["fates"])
    chosen = list(probs.columns) if fates is None else [str(f) for f in fates]
    missing = sorted(set(chosen) - {str(c) for c in probs.columns})
    if missing:
        msg = f"fates {missing} are not in obsm[{key!r}]; available: {list(probs.columns)}."
        raise ValueError(msg)
    xy = np.asarray(adata.obsm[basis_key])[:, :2]
    if axs is None:
        fig, grid = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.0), squeeze=False)
        axs = list(grid[0])
    else:
        if len(axs) != len(chosen):
            msg = f"axs has {len(axs)} axes for {len(chosen)} fates."
            raise ValueError(msg)
        fig = cast("Figure", axs[0].figure)
    scored = probs.notna().all(axis=1).to_numpy()
    for ax, fate in zip(axs, chosen):
        ax.scatter(xy[~scored, 0], xy[~scored, 1], s=size / 3, color="0.85", linewidths=0)
        points = ax.scatter(
            xy[scored, 0], xy[scored, 1], c=probs.loc[scored, fate], cmap=cmap, vmin=0, vmax=1, s=size, linewidths=0
        )
        ax.set_title(fate)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axs, label="fate probability", shrink=0.8)
    return save_or_show(fig, list(axs), writekey="fate_probabilities", show=show, save=save, return_fig=return_fig)
