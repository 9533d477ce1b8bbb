"""``pl.trajectories``: simulated paths drawn over a 2-D embedding of the cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import matplotlib.pyplot as plt
import numpy as np

from trajvi._constants import ADATA_KEYS

from ._utils import save_or_show

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def place_in_embedding(
    points: np.ndarray, latent: np.ndarray, embedding: np.ndarray, *, n_neighbors: int = 10
) -> np.ndarray:
    """Place latent points in a 2-D embedding at the mean position of their nearest cells in the latent.

    Parameters
    ----------
    points
        ``(m, d)`` latent points to place.
    latent
        ``(n, d)`` latent of the embedded cells.
    embedding
        ``(n, 2)`` coordinates of those cells.
    n_neighbors
        Number of nearest cells averaged.
    """
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, latent.shape[0])
    nn = NearestNeighbors(n_neighbors=k).fit(latent)
    _, idx = nn.kneighbors(points)
    return embedding[idx].mean(axis=1)


def trajectories(
    adata: AnnData,
    *,
    basis: str = "umap",
    key: str = ADATA_KEYS.TRAJECTORIES,
    color: str | None = None,
    n_paths: int = 100,
    n_neighbors: int = 10,
    seed: int = 0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Draw simulated trajectories (from :func:`trajvi.tl.trajectories`) over an existing 2-D embedding.

    Each point of a path is placed at the mean embedding position of its nearest cells in the latent space
    (``obsm[uns[key]['params']['latent_key']]``); paths start at a dot and end at an arrow head.

    Parameters
    ----------
    adata
        AnnData with ``obsm[key]``, ``uns[key]`` and ``obsm['X_' + basis]``.
    basis
        Embedding to draw on (``"umap"`` reads ``obsm['X_umap']``).
    key
        Key used by :func:`trajvi.tl.trajectories`.
    color
        ``obs`` column (or gene) colouring the cells underneath, as in :func:`scanpy.pl.embedding`.
    n_paths
        Number of paths drawn (a seeded random subset of the simulated cells).
    n_neighbors
        Cells averaged to place each path point.
    seed
        Seed of the subset.
    ax
        Axes to draw into.
    show
        Show the figure (default: ``scanpy.settings.autoshow``, unless the figure is returned).
    save
        Write the figure under ``scanpy.settings.figdir`` as scanpy does: ``True`` writes
        ``trajectories{plot_suffix}.{file_format_figs}``; a string is appended to ``trajectories`` (ending in
        ``.png``, ``.pdf`` or ``.svg``, it also sets the format). Default: ``scanpy.settings.autosave``.
    return_fig
        Return the figure.

    Returns
    -------
    The figure with ``return_fig=True``; else the axes when not shown (``show=False``); else ``None``.
    """
    import scanpy as sc

    basis_key = basis if basis.startswith("X_") else f"X_{basis}"
    if key not in adata.obsm or key not in adata.uns:
        msg = f"no trajectories under key={key!r}; run trajvi.tl.trajectories(adata, model, key_added={key!r}) first."
        raise KeyError(msg)
    if basis_key not in adata.obsm:
        msg = (
            f"adata.obsm has no {basis_key!r}; compute the embedding first (e.g. sc.pp.neighbors(adata, "
            f"use_rep='X_trajvi'); sc.tl.umap(adata)). Available: {list(adata.obsm.keys())}."
        )
        raise KeyError(msg)
    info = adata.uns[key]
    latent_key = info["params"]["latent_key"]
    if latent_key not in adata.obsm:
        msg = f"adata.obsm has no latent {latent_key!r}; run trajvi.tl.latent(adata, model, key_added={latent_key!r})."
        raise KeyError(msg)
    simulated = np.flatnonzero(np.asarray(info["simulated"]))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(simulated, size=min(n_paths, simulated.size), replace=False)
    paths = np.asarray(adata.obsm[key])[chosen]  # (m, T, d)
    embedding = np.asarray(adata.obsm[basis_key])[:, :2]
    placed = place_in_embedding(
        paths.reshape(-1, paths.shape[-1]), np.asarray(adata.obsm[latent_key]), embedding, n_neighbors=n_neighbors
    ).reshape(paths.shape[0], paths.shape[1], 2)

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 5.0))
    else:
        fig = cast("Figure", ax.figure)  # axes of a figure (matplotlib's type also allows a SubFigure)
    sc.pl.embedding(adata, basis=basis_key, color=color, ax=ax, show=False, save=False, frameon=False, alpha=0.4)
    for path in placed:
        ax.plot(path[:, 0], path[:, 1], color="black", linewidth=0.7, alpha=0.6)
        ax.scatter(path[0, 0], path[0, 1], s=6, color="black", zorder=3)
        ax.annotate(
            "", xy=path[-1], xytext=path[-2], arrowprops={"arrowstyle": "->", "color": "black", "lw": 0.8}, zorder=3
        )
    params = info["params"]
    ax.set_title(f"{params['source']} -> {params['target'] or params['t_span'][1]}")
    return save_or_show(fig, ax, writekey="trajectories", show=show, save=save, return_fig=return_fig)
