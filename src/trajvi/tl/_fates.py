"""Fate analysis over a trained model: transition matrices, fate probabilities, ancestors, growth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trajvi._constants import ADATA_KEYS
from trajvi._logging import logger
from trajvi.data._checks import check_obs_key

from ._utils import check_model, skip_on_other_ranks

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from trajvi._types import MapMethod, NeighborSearch
    from trajvi.model import TrajVI
    from trajvi.trajectory import TransportMap


def _cell_labels(adata: AnnData, groupby: str, cells: pd.Index, side: str) -> np.ndarray:
    """``obs[groupby]`` of ``cells`` (every one must be in ``adata``)."""
    labels = check_obs_key(adata, groupby, parameter="groupby")
    rows = adata.obs_names.get_indexer(cells)
    if (rows < 0).any():
        msg = (
            f"{int((rows < 0).sum())} {side} cell(s) of the model are not in adata (e.g. {cells[rows < 0][0]!r}); "
            "pass the AnnData the model was trained on (or one with the same cell names)."
        )
        raise ValueError(msg)
    values = labels.iloc[rows]
    if values.isna().any():
        msg = f"obs[{groupby!r}] is missing for {int(values.isna().sum())} {side} cell(s); label every cell."
        raise ValueError(msg)
    return values.astype(str).to_numpy()


def _default_target(model: TrajVI, source: str, path: str | None) -> str:
    """The last condition of the trained path through ``source`` (``path`` when given)."""
    paths = model.trained_paths()
    name = path if path is not None else paths.path_of(source, None)
    if name is None or name not in paths.paths:
        msg = f"no trained path goes from source={source!r}; trained paths: {paths.paths}. Give target=..."
        raise ValueError(msg)
    return paths.paths[name][-1]


def _write_obs(adata: AnnData, key: str, values: pd.Series, params: dict[str, Any]) -> None:
    """``obs[key]``: ``values`` on their cells, NaN elsewhere; ``uns[key]``: the parameters."""
    column = pd.Series(np.nan, index=adata.obs_names)
    column.loc[values.index] = values.to_numpy()
    adata.obs[key] = column.to_numpy()
    adata.uns[key] = {"params": params}


def _params(**values: Any) -> dict[str, Any]:
    """Parameters for ``uns`` (no ``None``: h5ad cannot store it)."""
    return {k: ("" if v is None else v) for k, v in values.items()}


def transition_matrix(
    adata: AnnData,
    model: TrajVI,
    source: str,
    *,
    target: str,
    groupby: str,
    method: MapMethod = "coupling",
    path: str | None = None,
    n_neighbors: int = 10,
    neighbor_search: NeighborSearch = "auto",
    key_added: str = ADATA_KEYS.TRANSITIONS,
) -> pd.DataFrame:
    """The share of each source group's mass that reaches each target group (rows sum to 1).

    Every cell of a source group carries the same weight; its mass is shared among the target cells as
    the transport map says (:meth:`~trajvi.TrajVI.transport_map`), then summed by target group.

    Parameters
    ----------
    adata
        The AnnData the model was trained on (its cells are looked up by name).
    model
        A :class:`~trajvi.TrajVI` with a trained velocity field.
    source, target
        Conditions of one trained path, ``source`` first (several steps apart is fine).
    groupby
        ``obs`` column grouping the cells of both conditions (cell types, clusters, fates).
    method
        ``"coupling"`` (the kept optimal-transport couplings) or ``"flow"`` (the velocity field, integrated
        forward; end points spread over their ``n_neighbors`` nearest target cells).
    path
        The trained path to follow (branches that share both conditions).
    n_neighbors, neighbor_search
        See :meth:`~trajvi.TrajVI.transport_map`.
    key_added
        ``uns`` key of the result.

    Returns
    -------
    The ``(source groups, target groups)`` table. Writes ``uns[key_added]`` = ``{"matrix": table, "params":
    {...}}`` (on rank 0 under DDP).
    """
    check_model(model, adata)
    tmap = model.transport_map(
        source, target, method=method, path=path, n_neighbors=n_neighbors, neighbor_search=neighbor_search
    )
    table = tmap.group_transitions(
        _cell_labels(adata, groupby, tmap.source_cells, "source"),
        _cell_labels(adata, groupby, tmap.target_cells, "target"),
    )
    if not skip_on_other_ranks("tl.transition_matrix"):
        adata.uns[key_added] = {
            "matrix": table,
            "params": _params(source=source, target=target, groupby=groupby, method=method, path=path),
        }
        logger.info("added %r, the %s transitions %s -> %s (adata.uns)", key_added, method, source, target)
    return table


def fate_probabilities(
    adata: AnnData,
    model: TrajVI,
    source: str,
    *,
    targets: Sequence[str] | None = None,
    groupby: str,
    target: str | None = None,
    method: MapMethod = "coupling",
    path: str | None = None,
    n_neighbors: int = 10,
    neighbor_search: NeighborSearch = "auto",
    key_added: str = ADATA_KEYS.FATES,
) -> pd.DataFrame:
    """Per source cell, the probability that its descendants at ``target`` are in each target group.

    Parameters
    ----------
    adata
        The AnnData the model was trained on.
    model
        A :class:`~trajvi.TrajVI` with a trained velocity field.
    source
        The condition of the cells whose fates are asked for.
    targets
        The fates: groups of ``groupby`` among the target cells (default: every group there). Mass reaching
        other groups is left out and each row renormalised.
    groupby
        ``obs`` column of the fates (cell types at the target condition).
    target
        The condition the fates are read at (default: the end of the trained path through ``source``).
        With branches (several paths from ``source``), call once per branch with its ``path``.
    method, path, n_neighbors, neighbor_search
        See :func:`transition_matrix`.
    key_added
        ``obsm``/``uns`` key of the result.

    Returns
    -------
    The ``(source cells, fates)`` table, rows summing to 1 (NaN for cells whose mass reaches none of
    ``targets``).

    Notes
    -----
    With ``method="coupling"``, a cell's row is only as smooth as the couplings: exact OT (the default of
    :meth:`~trajvi.TrajVI.train_trajectories`) sends each cell to a handful of cells per step, so its most
    likely fate is noisy even when its group's mass is right. For per-cell fates over several steps, train
    phase 2 with ``ot_method="unbalanced"`` or ``"sinkhorn"`` (on the worm lineages: the most likely fate allowed
    by the lineage for 0.79-0.86 of the progenitors instead of 0.56-0.61, the same share of mass on allowed
    fates; docs/benchmarks.md). Writes ``obsm[key_added]``: the same table over every cell of ``adata`` (NaN outside the
    source cells), and ``uns[key_added]`` = ``{"fates": [...], "params": {...}}`` (on rank 0 under DDP).
    """
    check_model(model, adata)
    target = _default_target(model, source, path) if target is None else target
    tmap = model.transport_map(
        source, target, method=method, path=path, n_neighbors=n_neighbors, neighbor_search=neighbor_search
    )
    labels = _cell_labels(adata, groupby, tmap.target_cells, "target")
    if targets is not None:
        targets = [str(t) for t in ([targets] if isinstance(targets, str) else targets)]
        unknown = sorted(set(targets) - set(labels))
        if unknown:
            msg = (
                f"targets {unknown} have no cells at {target!r} in obs[{groupby!r}]; groups there: "
                f"{sorted(set(labels))}."
            )
            raise ValueError(msg)
    fates = tmap.cell_fates(labels, None if targets is None else list(targets))
    if not skip_on_other_ranks("tl.fate_probabilities"):
        full = pd.DataFrame(np.nan, index=adata.obs_names.copy(), columns=fates.columns)
        full.loc[fates.index] = fates.to_numpy()
        adata.obsm[key_added] = full
        adata.uns[key_added] = {
            "fates": list(fates.columns),
            "params": _params(source=source, target=target, groupby=groupby, method=method, path=path),
        }
        logger.info("added %r, fate probabilities of %d cells (adata.obsm, adata.uns)", key_added, len(fates))
    return fates


def _target_of(model: TrajVI, adata: AnnData, cells: pd.Index) -> str:
    """The one condition of ``cells``."""
    codes = model.get_condition_codes(adata)[adata.obs_names.get_indexer(cells)]
    found = sorted({model.conditions[c] for c in np.unique(codes)})
    if len(found) != 1:
        msg = f"target_cells must belong to one condition; they span {found}. Select the cells of one time point."
        raise ValueError(msg)
    return found[0]


def ancestors(
    adata: AnnData,
    model: TrajVI,
    target_cells: Sequence[str] | np.ndarray | pd.Series,
    *,
    source: str,
    method: MapMethod = "coupling",
    path: str | None = None,
    n_neighbors: int = 10,
    neighbor_search: NeighborSearch = "auto",
    key_added: str = ADATA_KEYS.ANCESTORS,
    copy: bool = False,
) -> AnnData | None:
    """The probability that each cell of ``source`` is an ancestor of the given cells.

    The target cells' mass (uniform, or the given weights) is pulled back through the transport map:
    through the kept couplings, or through the velocity field integrated backward from the target time to
    the source time (each end point spread over its ``n_neighbors`` nearest source cells).

    Parameters
    ----------
    adata
        The AnnData the model was trained on.
    model
        A :class:`~trajvi.TrajVI` with a trained velocity field.
    target_cells
        The cells whose ancestors are asked for, all of one condition: cell names, a boolean mask over
        ``adata``, or non-negative weights as a Series indexed by cell names.
    source
        The earlier condition whose cells are scored.
    method, path, n_neighbors, neighbor_search
        See :func:`transition_matrix` (``"flow"`` integrates backward).
    key_added
        ``obs`` key of the result.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes ``obs[key_added]``: the ancestor probability of each
    source cell (summing to 1 over them), NaN elsewhere; and ``uns[key_added]`` = ``{"params": {...}}``.
    """
    check_model(model, adata)
    weights = _target_weights(adata, target_cells)
    target = _target_of(model, adata, pd.Index(weights.index[weights > 0]))
    pulled = model.pull(
        source, target, weights, method=method, path=path, n_neighbors=n_neighbors, neighbor_search=neighbor_search
    )
    if not copy and skip_on_other_ranks("tl.ancestors"):
        return None
    if copy:
        adata = adata.copy()
    column = pd.Series(np.nan, index=adata.obs_names)
    column.loc[pulled.index] = pulled.to_numpy()
    adata.obs[key_added] = column.to_numpy()
    adata.uns[key_added] = {
        "params": _params(
            source=source, target=target, method=method, path=path, n_target_cells=int((weights > 0).sum())
        )
    }
    logger.info("added %r, ancestor probabilities of %d %s cells (adata.obs)", key_added, len(pulled), source)
    return adata if copy else None


def _target_weights(adata: AnnData, cells: Sequence[str] | np.ndarray | pd.Series) -> pd.Series:
    """Weights over cell names from names, a boolean mask over ``adata`` or a Series of weights."""
    if isinstance(cells, pd.Series) and cells.dtype != bool:
        weights = cells.astype(float)
    else:
        values = np.asarray(cells)
        if values.dtype == bool:
            if values.size != adata.n_obs:
                msg = f"a boolean target_cells needs one entry per cell of adata ({adata.n_obs}); got {values.size}."
                raise ValueError(msg)
            names = adata.obs_names[values]
        else:
            names = pd.Index(values.astype(str))
        weights = pd.Series(1.0, index=names)
    missing = ~weights.index.isin(adata.obs_names)
    if missing.any():
        msg = f"{int(missing.sum())} target cell(s) are not in adata (e.g. {weights.index[missing][0]!r})."
        raise ValueError(msg)
    if not (weights > 0).any():
        msg = "target_cells selects no cell; give at least one."
        raise ValueError(msg)
    return weights


def growth_rates(
    adata: AnnData,
    model: TrajVI,
    source: str,
    *,
    target: str | None = None,
    path: str | None = None,
    key_added: str = ADATA_KEYS.GROWTH,
    copy: bool = False,
) -> AnnData | None:
    """Relative growth of each source cell from its coupling to the next condition (row-mass ratio).

    With ``ot_method="unbalanced"`` the coupling may create and destroy mass: a cell that sends more mass
    than its share before transport grows (Waddington-OT's posterior growth estimate); with a prior
    (``train_trajectories(growth_key=...)``) that prior is where it starts. Balanced couplings give 1 (or the
    prior). Relative: the mean over the cells of a coupling block is 1.

    Parameters
    ----------
    adata
        The AnnData the model was trained on.
    model
        A :class:`~trajvi.TrajVI` with a trained velocity field and kept couplings.
    source
        The condition whose cells are scored.
    target
        The next condition (default: the one after ``source`` on its trained path).
    path
        The trained path (branches).
    key_added
        ``obs`` key of the result.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes ``obs[key_added]`` (NaN outside the coupled source cells)
    and ``uns[key_added]`` = ``{"params": {...}}``.
    """
    check_model(model, adata)
    if target is None:
        paths = model.trained_paths()
        name = path if path is not None else paths.path_of(source, None)
        conds = [] if name is None else paths.paths.get(name, [])
        if source not in conds or conds.index(source) == len(conds) - 1:
            msg = f"no trained path continues from source={source!r}; trained paths: {paths.paths}. Give target=..."
            raise ValueError(msg)
        target = conds[conds.index(source) + 1]
    tmap: TransportMap = model.get_coupling(source, target, path=path)
    growth = tmap.growth()
    if not copy and skip_on_other_ranks("tl.growth_rates"):
        return None
    if copy:
        adata = adata.copy()
    present = tmap.source_cells.isin(adata.obs_names)
    _write_obs(
        adata,
        key_added,
        pd.Series(growth[present], index=tmap.source_cells[present]),
        _params(source=source, target=target, path=path),
    )
    logger.info("added %r, growth rates of %d %s cells (adata.obs)", key_added, int(present.sum()), source)
    return adata if copy else None
