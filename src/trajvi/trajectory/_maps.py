"""Transport maps between the cells of two conditions: push, pull, composition, growth, group transitions.

A :class:`TransportMap` is a joint distribution over (source cell, target cell) pairs, stored sparse. It comes
from the optimal-transport coupling of a trained segment (:func:`map_from_coupling`; several segments chain
with :meth:`TransportMap.then`) or from the velocity field (:func:`map_from_endpoints`: each cell's simulated
end point spread over its nearest real cells at the other time).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from trajvi._logging import logger

if TYPE_CHECKING:
    from trajvi._types import MapMethod, NeighborSearch
    from trajvi.train import Segment
    from trajvi.transport import Coupling

    from ._pathset import PathSet


@dataclass
class TransportMap:
    """How the mass of the cells of one condition is shared among the cells of another.

    Attributes
    ----------
    source, target
        The two conditions.
    matrix
        ``(n_source, n_target)`` joint mass (a :class:`scipy.sparse.csr_array` of total mass 1): entry ``(i, j)``
        is the share of all mass that goes from source cell ``i`` to target cell ``j``.
    source_cells, target_cells
        Names of the cells of both sides (``obs_names``), in the order of the matrix.
    method
        ``"coupling"`` (optimal transport) or ``"flow"`` (the velocity field).
    baseline
        Each source cell's share of the mass if every cell of its coupling block weighed the same (the
        block's weight over its cells), or ``None`` for a flow map; :meth:`growth` compares the mass a cell
        sends with it.
    """

    source: str
    target: str
    matrix: sp.csr_array
    source_cells: pd.Index
    target_cells: pd.Index
    method: MapMethod = "coupling"
    baseline: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.matrix = sp.csr_array(self.matrix, dtype=np.float64)
        self.source_cells = pd.Index(self.source_cells, dtype=object)
        self.target_cells = pd.Index(self.target_cells, dtype=object)
        if self.matrix.shape != (len(self.source_cells), len(self.target_cells)):
            msg = (
                f"The map has shape {self.matrix.shape} for {len(self.source_cells)} source and "
                f"{len(self.target_cells)} target cells."
            )
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Plain arrays and strings (what a saved model keeps; :meth:`from_dict` reads it back)."""
        return {
            "source": self.source,
            "target": self.target,
            "matrix": self.matrix,
            "source_cells": self.source_cells.to_numpy(dtype=object).astype(str),
            "target_cells": self.target_cells.to_numpy(dtype=object).astype(str),
            "method": self.method,
            "baseline": self.baseline,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TransportMap:
        """The map :meth:`to_dict` described."""
        return cls(**state)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_source, n_target)``."""
        return (len(self.source_cells), len(self.target_cells))

    def row_mass(self) -> np.ndarray:
        """Mass leaving each source cell (zero for cells left out of the coupling)."""
        return np.asarray(self.matrix.sum(axis=1)).reshape(-1)

    def column_mass(self) -> np.ndarray:
        """Mass reaching each target cell."""
        return np.asarray(self.matrix.sum(axis=0)).reshape(-1)

    def push(self, weights: np.ndarray, *, normalize: bool = True) -> np.ndarray:
        """Carry a distribution over source cells forward: where the descendants of the weighted cells go.

        Each source cell's weight is shared among the target cells in proportion to its row of the map
        (the conditional distribution of its descendants), so the result does not depend on how much mass
        the map gave the cell. Weight on cells without a row (left out of the coupling) is lost.

        Parameters
        ----------
        weights
            Non-negative weight of each source cell (``(n_source,)``).
        normalize
            Return a distribution (sum 1) rather than the carried mass.
        """
        side = f"source cells of {self.source!r}"
        return _carry(self.matrix.T, weights, self.row_mass(), side, self.source, self.target, normalize)

    def pull(self, weights: np.ndarray, *, normalize: bool = True) -> np.ndarray:
        """Carry a distribution over target cells backward: where the ancestors of the weighted cells were.

        Each target cell's weight is shared among the source cells in proportion to its column of the map.

        Parameters
        ----------
        weights
            Non-negative weight of each target cell (``(n_target,)``).
        normalize
            Return a distribution (sum 1) rather than the carried mass.
        """
        side = f"target cells of {self.target!r}"
        return _carry(self.matrix, weights, self.column_mass(), side, self.target, self.source, normalize)

    def then(self, other: TransportMap) -> TransportMap:
        """Chain ``other`` after this map (whose source cells are this map's target cells).

        Mass reaching a middle cell continues as that cell's row of ``other`` says; mass reaching a middle
        cell that ``other`` has no row for stops there (the result then has less than mass 1, renormalised).
        """
        if not self.target_cells.equals(other.source_cells):
            msg = f"Cannot chain {self.source}->{self.target} with {other.source}->{other.target}: the cells differ."
            raise ValueError(msg)
        rows = other.row_mass()
        inv = np.divide(1.0, rows, out=np.zeros_like(rows), where=rows > 0)
        joint = sp.csr_array(self.matrix @ sp.diags_array(inv) @ other.matrix)
        total = joint.sum()
        if total <= 0:
            msg = f"No mass goes from {self.source!r} through {self.target!r} to {other.target!r}."
            raise ValueError(msg)
        return TransportMap(
            self.source,
            other.target,
            joint / total,
            self.source_cells,
            other.target_cells,
            method=self.method,
            baseline=self.baseline,
        )

    def growth(self) -> np.ndarray:
        """Relative growth of each source cell: the mass it sends over its :attr:`baseline` share.

        1 everywhere for a balanced coupling without a growth prior; the prior (relative to its block mean)
        for a balanced coupling with one; for an unbalanced coupling the row-mass ratio, Waddington-OT's
        posterior growth estimate (relative: each block is rescaled to its weight, so the mean over a
        block's cells is 1). NaN for cells left out of the coupling.
        """
        if self.baseline is None:
            msg = "Growth is estimated from couplings only (method='coupling'); a flow map has no source marginal."
            raise ValueError(msg)
        rows = self.row_mass()
        out = np.full(rows.shape, np.nan)
        np.divide(rows, self.baseline, out=out, where=self.baseline > 0)
        return out

    def group_transitions(self, source_groups: np.ndarray, target_groups: np.ndarray) -> pd.DataFrame:
        """Share of each source group's descendants in each target group (rows sum to 1).

        Every cell of a source group carries the same weight (the group is pushed as a uniform distribution).
        """
        src = pd.Categorical(np.asarray(source_groups, dtype=object).astype(str))
        tgt = pd.Categorical(np.asarray(target_groups, dtype=object).astype(str))
        if len(src) != self.shape[0] or len(tgt) != self.shape[1]:
            msg = f"Need one group per source cell ({self.shape[0]}) and per target cell ({self.shape[1]})."
            raise ValueError(msg)
        rows = self.row_mass()
        covered = rows > 0
        one_hot_src = sp.csr_array(
            (np.ones(covered.sum()), (src.codes[covered], np.flatnonzero(covered))),
            shape=(len(src.categories), self.shape[0]),
        )
        counts = np.asarray(one_hot_src.sum(axis=1)).reshape(-1)
        # each covered cell of a group carries 1 / (its group's covered cells), shared along its row
        per_cell = np.divide(1.0, rows, out=np.zeros_like(rows), where=covered)
        kernel = sp.diags_array(per_cell) @ self.matrix
        one_hot_tgt = sp.csr_array(
            (np.ones(len(tgt)), (np.arange(len(tgt)), tgt.codes)), shape=(len(tgt), len(tgt.categories))
        )
        table = np.asarray((one_hot_src @ kernel @ one_hot_tgt).todense())
        table = np.divide(table, counts[:, None], out=np.full_like(table, np.nan), where=counts[:, None] > 0)
        return pd.DataFrame(table, index=list(src.categories), columns=list(tgt.categories))

    def cell_fates(self, target_groups: np.ndarray, groups: list[str] | None = None) -> pd.DataFrame:
        """Per source cell, the probability that its descendants fall in each target group (rows sum to 1).

        Parameters
        ----------
        target_groups
            Group of each target cell.
        groups
            The groups to report (default: all); mass reaching other groups is left out and the rows
            renormalised. Cells whose mass reaches none of them get NaN.
        """
        labels = np.asarray(target_groups, dtype=object).astype(str)
        known = sorted(set(labels)) if groups is None else [str(g) for g in groups]
        codes = pd.Categorical(labels, categories=known).codes
        inside = codes >= 0
        one_hot = sp.csr_array(
            (np.ones(inside.sum()), (np.flatnonzero(inside), codes[inside])), shape=(len(labels), len(known))
        )
        mass = np.asarray((self.matrix @ one_hot).todense())
        total = mass.sum(axis=1, keepdims=True)
        probs = np.divide(mass, total, out=np.full_like(mass, np.nan), where=total > 0)
        return pd.DataFrame(probs, index=self.source_cells, columns=known)


def check_weights(weights: np.ndarray, n: int, *, side: str) -> np.ndarray:
    """``weights`` as a float array of length ``n``, finite, non-negative and not all zero (else a ValueError)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1) if np.ndim(weights) else np.full(n, float(weights))
    if w.size != n:
        msg = f"weights has {w.size} entries; it needs one per {side} ({n})."
        raise ValueError(msg)
    if not np.all(np.isfinite(w)):
        msg = f"weights has {int((~np.isfinite(w)).sum())} non-finite entries; give finite, non-negative weights."
        raise ValueError(msg)
    if np.any(w < 0):
        msg = f"weights has {int((w < 0).sum())} negative entries; give non-negative weights (a distribution)."
        raise ValueError(msg)
    if not w.sum() > 0:
        msg = f"weights are all zero; give some mass to the {side}."
        raise ValueError(msg)
    return w


def _carry(
    matrix: sp.csr_array | sp.csc_array,
    weights: np.ndarray,
    mass: np.ndarray,
    side: str,
    start: str,
    end: str,
    normalize: bool,
) -> np.ndarray:
    """Share each cell's weight along its line of ``matrix`` (a row of the map for push, a column for pull)."""
    w = check_weights(weights, mass.size, side=side)
    scale = np.divide(w, mass, out=np.zeros_like(w), where=mass > 0)
    out = np.asarray(matrix @ scale).reshape(-1)
    total = out.sum()
    if not total > 0:
        msg = (
            f"Nothing reaches {end!r}: the weighted cells of {start!r} were left out of the coupling "
            f"(no counterpart in their couple_within group). Put weight on other cells."
        )
        raise ValueError(msg)
    return out / total if normalize else out


def map_from_coupling(
    coupling: Coupling,
    source: str,
    target: str,
    source_cells: pd.Index | np.ndarray,
    target_cells: pd.Index | np.ndarray,
) -> TransportMap:
    """A :class:`TransportMap` from a coupling of two sets of cells (blocks gathered into one sparse matrix).

    Parameters
    ----------
    coupling
        The coupling (:class:`trajvi.transport.Coupling`); an entropic block keeps its entries above 1e-12
        of the block's largest.
    source, target
        The two conditions.
    source_cells, target_cells
        Names of the cells of both sets, in the coupling's order.
    """
    rows, cols, vals = [], [], []
    share = np.zeros(coupling.n_source)
    for index_s, index_t, plan, weight in zip(
        coupling.source_index, coupling.target_index, coupling.plans, coupling.weights
    ):
        block = sp.coo_array(plan)
        keep = block.data > 1e-12 * (block.data.max() if block.data.size else 0.0)
        rows.append(np.asarray(index_s)[block.row[keep]])
        cols.append(np.asarray(index_t)[block.col[keep]])
        vals.append(weight * block.data[keep])
        share[index_s] += weight / len(index_s)
    matrix = sp.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(coupling.n_source, coupling.n_target),
    )
    return TransportMap(source, target, matrix / matrix.sum(), source_cells, target_cells, baseline=share)


#: ``neighbor_search="auto"`` searches exactly unless both the end points and the real cells number more than this.
EXACT_SEARCH_MAX_CELLS = 50_000
#: Search breadth of the approximate query (pynndescent's ``epsilon``; its default 0.1 is a little less exact).
_QUERY_EPSILON = 0.2


def neighbor_search_method(n_endpoints: int, n_cells: int, neighbor_search: str = "auto") -> str:
    """The search :func:`map_from_endpoints` runs: ``"exact"`` or ``"approximate"``.

    ``"auto"`` is exact while the end points or the real cells number at most :data:`EXACT_SEARCH_MAX_CELLS`
    and approximate above. Below, the exact search costs about as much as the approximate one's one-off
    compilation (about 30 CPU seconds per process); above, it grows faster than linearly (75 CPU seconds at
    10^5 cells a side, unfinished after 28 minutes at 10^6; ``docs/performance.md``).

    Parameters
    ----------
    n_endpoints, n_cells
        Number of simulated end points and of real cells.
    neighbor_search
        ``"auto"``, ``"exact"`` or ``"approximate"``.
    """
    from trajvi._types import NEIGHBOR_SEARCHES, check_option

    check_option(neighbor_search, NEIGHBOR_SEARCHES, "neighbor_search")
    if neighbor_search != "auto":
        return neighbor_search
    return "approximate" if min(n_endpoints, n_cells) > EXACT_SEARCH_MAX_CELLS else "exact"


def map_from_endpoints(
    endpoints: np.ndarray,
    z_cells: np.ndarray,
    *,
    n_neighbors: int = 10,
    batch_size: int = 8192,
    n_jobs: int | None = None,
    neighbor_search: NeighborSearch = "auto",
    random_state: int | None = 0,
) -> sp.csr_array:
    """Spread each simulated end point uniformly over its ``n_neighbors`` nearest real cells.

    Returns the ``(n_endpoints, n_cells)`` sparse matrix of mass ``1 / n_endpoints`` per row. Memory is
    linear in the cells: the neighbours are found in batches of ``batch_size`` end points on ``n_jobs``
    cores (``None``: the cores this process may use, as the OT blocks).

    k nearest neighbours rather than a Gaussian kernel: there is no bandwidth to choose, the spread follows the
    local density of the real cells, and each row has exactly ``n_neighbors`` entries.

    Parameters
    ----------
    endpoints
        ``(n_endpoints, n_latent)`` simulated end points.
    z_cells
        ``(n_cells, n_latent)`` latent states of the real cells.
    n_neighbors, batch_size, n_jobs
        Cells per end point, end points per query batch, cores.
    neighbor_search
        ``"exact"``: scikit-learn's search (a tree in a low-dimensional latent); its time grows faster than
        linearly with the cells (``docs/performance.md``). ``"approximate"``: a nearest-neighbour-descent graph
        over the real cells (pynndescent), built in time about linear in the cells and queried in batches
        for ``3 n_neighbors`` candidates, of which the closest are kept; it finds about 99% of the exact
        neighbours on the benchmark latents (``docs/performance.md``), fewer for end points far from all cells.
        ``"auto"``: see :func:`neighbor_search_method`.
    random_state
        Seed of the approximate index (the same seed and number of cores give the same neighbours).
    """
    n_end, n_cells = len(endpoints), len(z_cells)
    if n_cells == 0 or n_end == 0:
        msg = "map_from_endpoints needs end points and real cells."
        raise ValueError(msg)
    search = neighbor_search_method(n_end, n_cells, neighbor_search)
    k = int(min(max(1, n_neighbors), n_cells))
    from trajvi.transport import available_cores

    jobs = available_cores() if n_jobs is None else max(1, int(n_jobs))
    logger.info("flow map: %s search of %d nearest of %d cells for %d end points", search, k, n_cells, n_end)
    if search == "approximate" and k < n_cells:
        cols = _approximate_neighbors(endpoints, z_cells, k, batch_size, jobs, random_state)
    else:
        cols = _exact_neighbors(endpoints, z_cells, k, batch_size, jobs)
    rows = np.repeat(np.arange(n_end), k)
    data = np.full(n_end * k, 1.0 / (n_end * k))
    return sp.csr_array((data, (rows, cols.reshape(-1))), shape=(n_end, n_cells))


def _exact_neighbors(endpoints: np.ndarray, z_cells: np.ndarray, k: int, batch_size: int, jobs: int) -> np.ndarray:
    """``(n_endpoints, k)`` indices of the nearest real cells, by scikit-learn's exact search."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k, n_jobs=jobs).fit(np.asarray(z_cells, dtype=np.float64))
    cols = np.empty((len(endpoints), k), dtype=np.int64)
    for start in range(0, len(endpoints), batch_size):
        chunk = np.asarray(endpoints[start : start + batch_size], dtype=np.float64)
        cols[start : start + len(chunk)] = index.kneighbors(chunk, return_distance=False)
    return cols


def _approximate_neighbors(
    endpoints: np.ndarray, z_cells: np.ndarray, k: int, batch_size: int, jobs: int, random_state: int | None
) -> np.ndarray:
    """``(n_endpoints, k)`` indices of (about) the nearest real cells, by pynndescent's NN-descent graph."""
    import numba
    from pynndescent import NNDescent

    data = np.ascontiguousarray(z_cells, dtype=np.float32)
    index = NNDescent(
        data,
        n_neighbors=min(max(30, k), len(data) - 1),
        random_state=random_state,
        n_jobs=min(jobs, numba.config.NUMBA_NUM_THREADS),  # type: ignore[attr-defined]  # set at import
        low_memory=True,
    )
    cols = np.empty((len(endpoints), k), dtype=np.int64)
    for start in range(0, len(endpoints), batch_size):
        chunk = np.ascontiguousarray(endpoints[start : start + batch_size], dtype=np.float32)
        # a search for 3k candidates, of which the k closest are kept, escapes more of the local minima of
        # the graph search (end points off the real cells); sorted by distance
        found, _ = index.query(chunk, k=min(3 * k, len(data)), epsilon=_QUERY_EPSILON)
        cols[start : start + len(chunk)] = found[:, :k]
    if cols.min() < 0:
        msg = (
            f"The approximate search found fewer than {k} neighbours for {int((cols < 0).any(axis=1).sum())} end "
            "point(s); use neighbor_search='exact' or fewer n_neighbors."
        )
        raise RuntimeError(msg)
    return cols


def maps_of_segments(
    paths: PathSet,
    segments: dict[str, list[Segment]],
    labels: np.ndarray,
    keep: np.ndarray,
    cell_names: pd.Index | np.ndarray,
) -> dict[str, TransportMap]:
    """The coupling of every trained segment as a :class:`TransportMap`, by ``"source->target"``.

    A segment on several paths (branches that share their first conditions) is coupled alike on each
    (same cells, same configuration); it is kept once.
    """
    names = np.asarray(cell_names, dtype=object)
    maps: dict[str, TransportMap] = {}
    for name, conds in paths.paths.items():
        for (src, tgt), segment in zip(itertools.pairwise(conds), segments[name], strict=True):
            key = f"{src}->{tgt}"
            if key not in maps:
                maps[key] = map_from_coupling(
                    segment.coupling, src, tgt, names[keep & (labels == src)], names[keep & (labels == tgt)]
                )
    return maps
