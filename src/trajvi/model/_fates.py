"""Where cells go and where they came from: the kept couplings and the flow as transport maps.

:meth:`get_coupling` chains the couplings of the last :meth:`~trajvi.TrajVI.train_trajectories` between two
conditions of a trained path; :meth:`transport_map` does the same through the velocity field (integrating
forward, or backward with a reversed time span, and spreading each end point over its nearest real cells);
:meth:`push` and :meth:`pull` carry a distribution over cells through either.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scvi

from trajvi._types import MAP_METHODS, NEIGHBOR_SEARCHES, check_option
from trajvi.trajectory import TransportMap, map_from_endpoints

from ._inference import InferenceMixin

if TYPE_CHECKING:
    from trajvi._types import Integrator, MapMethod, NeighborSearch

#: Directions of a flow map: integrate the source cells forward, or the target cells backward.
_DIRECTIONS = ("forward", "backward")


class FateMixin(InferenceMixin):
    """Transport maps, push and pull over the kept couplings and the velocity field."""

    def _kept_maps(self) -> dict[str, TransportMap]:
        self._require_phase2()
        kept = getattr(self, "transport_maps_", None)
        if kept is None:
            msg = (
                "This model keeps no couplings: it was saved before trajvi kept them. Run "
                "model.train_trajectories(...) again (or use method='flow', which needs only the velocity field)."
            )
            raise RuntimeError(msg)
        return {key: TransportMap.from_dict(state) for key, state in kept.items()}

    def _path_through(self, source: str, target: str, path: str | None) -> tuple[str, list[str]]:
        """A trained path with ``source`` before ``target`` (``path`` when given), and its conditions."""
        source = self._check_condition(source, "source")
        target = self._check_condition(target, "target")
        paths = self.trained_paths()
        candidates = [path] if path is not None else list(paths.paths)
        if path is not None and path not in paths.paths:
            msg = f"path={path!r} is not a trained path; trained paths: {list(paths.paths)}."
            raise ValueError(msg)
        for name in candidates:
            conds = paths.paths[name]
            if source in conds and target in conds and conds.index(source) < conds.index(target):
                return name, conds
        msg = (
            f"no trained path goes from {source!r} to {target!r}{'' if path is None else f' (path={path!r})'}; "
            f"trained paths: {paths.paths}. Transport maps follow a trained path forward in time."
        )
        raise ValueError(msg)

    def get_coupling(self, source: str, target: str, *, path: str | None = None) -> TransportMap:
        """The optimal-transport coupling between the cells of two conditions of a trained path.

        The couplings of the last :meth:`train_trajectories` are kept on the model (sparse for exact OT) and
        saved with it. Between conditions that are not consecutive, the couplings of the segments between
        them are chained (mass reaching a middle cell continues along that cell's coupling).

        Parameters
        ----------
        source, target
            Conditions of one trained path, ``source`` first.
        path
            The trained path to follow (branches that share conditions have the same couplings there, so
            any path through both conditions gives the same map).

        Returns
        -------
        A :class:`~trajvi.trajectory.TransportMap`: the joint mass over (source cell, target cell) pairs with
        the cell names of both sides (``source_cells``, ``target_cells``).
        """
        name, conds = self._path_through(source, target, path)
        kept = self._kept_maps()
        steps = conds[conds.index(source) : conds.index(target) + 1]
        chained: TransportMap | None = None
        for src, tgt in itertools.pairwise(steps):
            step = kept.get(f"{src}->{tgt}")
            if step is None:
                msg = f"no kept coupling for {src!r} -> {tgt!r} on path {name!r}; run train_trajectories again."
                raise RuntimeError(msg)
            chained = step if chained is None else chained.then(step)
        assert chained is not None  # source comes before target: at least one step
        return chained

    def transport_map(
        self,
        source: str,
        target: str,
        *,
        method: MapMethod = "coupling",
        path: str | None = None,
        direction: str = "forward",
        n_neighbors: int = 10,
        n_steps: int = 50,
        integrator: Integrator = "rk4",
        batch_size: int = 1024,
        neighbor_search: NeighborSearch = "auto",
    ) -> TransportMap:
        """Where the cells of ``source`` go among the cells of ``target``, by the coupling or by the flow.

        Parameters
        ----------
        source, target
            Conditions of one trained path, ``source`` first.
        method
            ``"coupling"``: the kept couplings (:meth:`get_coupling`). ``"flow"``: the velocity field.
            ``direction="forward"`` integrates every source cell from the source time to the target time
            and spreads its end point uniformly over its ``n_neighbors`` nearest target cells in the latent;
            ``"backward"`` integrates every target cell back to the source time (a reversed time span) and
            spreads it over its nearest source cells. Nearest neighbours rather than a kernel: no bandwidth
            to choose, and the spread follows the density of the real cells. The flow map covers every cell
            of both conditions, the coupling the cells phase 2 used.
        path
            The trained path whose condition the field follows (needed for branches that share
            ``source`` and ``target``).
        direction
            ``"forward"`` or ``"backward"`` (flow only; :meth:`push` uses forward, :meth:`pull` backward).
        n_neighbors
            Real cells each end point is spread over (flow only).
        n_steps, integrator, batch_size
            Integration steps, method (``"euler"``, ``"rk4"``, ``"dopri5"``) and cells at once (flow only).
        neighbor_search
            How the nearest cells are found (flow only): ``"exact"``, ``"approximate"`` (a nearest-neighbour-
            descent index, seeded by ``scvi.settings.seed``; time about linear in the cells) or ``"auto"``
            (exact up to 50,000 cells on either side); see :func:`~trajvi.trajectory.map_from_endpoints`.
        """
        check_option(method, MAP_METHODS, "method")
        check_option(direction, _DIRECTIONS, "direction")
        check_option(neighbor_search, NEIGHBOR_SEARCHES, "neighbor_search")
        if method == "coupling":
            return self.get_coupling(source, target, path=path)
        name, _ = self._path_through(source, target, path)
        route = self._route(source, target, name, False, None)
        t_source, t_target = self._span(route, None)
        codes = self.get_condition_codes()
        src_idx = np.flatnonzero(codes == self.conditions.index(source))
        tgt_idx = np.flatnonzero(codes == self.conditions.index(target))
        start_idx, end_idx = (src_idx, tgt_idx) if direction == "forward" else (tgt_idx, src_idx)
        result = self.simulate_trajectory(
            indices=start_idx.tolist(),
            source=source if direction == "forward" else target,  # the cells it starts from are of this condition
            t_span=(t_source, t_target) if direction == "forward" else (t_target, t_source),
            path=name,
            n_steps=n_steps,
            method=integrator,
            decode=False,
            batch_size=batch_size,
        )
        endpoints = np.asarray(result.latent)[-1]
        z_end = self.get_latent_representation(indices=end_idx, batch_size=batch_size)
        seed = scvi.settings.seed if scvi.settings.seed is not None else 0
        matrix = map_from_endpoints(
            endpoints, z_end, n_neighbors=n_neighbors, neighbor_search=neighbor_search, random_state=seed
        )
        names = self.adata.obs_names
        if direction == "backward":
            matrix = matrix.T.tocsr()
        return TransportMap(source, target, matrix, names[src_idx], names[tgt_idx], method="flow")

    def push(
        self,
        source: str,
        target: str,
        weights: np.ndarray | pd.Series,
        *,
        method: MapMethod = "coupling",
        path: str | None = None,
        normalize: bool = True,
        n_neighbors: int = 10,
        n_steps: int = 50,
        integrator: Integrator = "rk4",
        neighbor_search: NeighborSearch = "auto",
    ) -> pd.Series:
        """Carry a distribution over the cells of ``source`` forward to the cells of ``target``.

        Parameters
        ----------
        source, target
            Conditions of one trained path, ``source`` first.
        weights
            Non-negative weights of the source cells (a cell-type indicator, a gene score): an array in the
            order of the map's source cells, or a Series indexed by cell names (cells of other conditions
            are ignored, missing source cells weigh 0).
        method
            ``"coupling"`` or ``"flow"`` (forward integration), see :meth:`transport_map`.
        path, n_neighbors, n_steps, integrator, neighbor_search
            See :meth:`transport_map`.
        normalize
            Return a distribution over the target cells (sum 1).

        Returns
        -------
        The mass reaching each target cell, indexed by cell name.
        """
        tmap = self.transport_map(
            source,
            target,
            method=method,
            path=path,
            n_neighbors=n_neighbors,
            n_steps=n_steps,
            integrator=integrator,
            neighbor_search=neighbor_search,
        )
        pushed = tmap.push(_align(weights, tmap.source_cells, source), normalize=normalize)
        return pd.Series(pushed, index=tmap.target_cells, name=f"push {source}->{target}")

    def pull(
        self,
        source: str,
        target: str,
        weights: np.ndarray | pd.Series,
        *,
        method: MapMethod = "coupling",
        path: str | None = None,
        normalize: bool = True,
        n_neighbors: int = 10,
        n_steps: int = 50,
        integrator: Integrator = "rk4",
        neighbor_search: NeighborSearch = "auto",
    ) -> pd.Series:
        """Carry a distribution over the cells of ``target`` back to the cells of ``source`` (their ancestors).

        Parameters
        ----------
        source, target
            Conditions of one trained path, ``source`` first.
        weights
            Non-negative weights of the target cells: an array in the order of the map's target cells, or
            a Series indexed by cell names (cells of other conditions are ignored).
        method
            ``"coupling"`` or ``"flow"`` (the target cells integrated backward), see :meth:`transport_map`.
        path, n_neighbors, n_steps, integrator, neighbor_search
            See :meth:`transport_map`.
        normalize
            Return a distribution over the source cells (sum 1).

        Returns
        -------
        The mass reaching each source cell, indexed by cell name.
        """
        tmap = self.transport_map(
            source,
            target,
            method=method,
            path=path,
            direction="backward",
            n_neighbors=n_neighbors,
            n_steps=n_steps,
            integrator=integrator,
            neighbor_search=neighbor_search,
        )
        pulled = tmap.pull(_align(weights, tmap.target_cells, target), normalize=normalize)
        return pd.Series(pulled, index=tmap.source_cells, name=f"pull {target}->{source}")


def _align(weights: np.ndarray | pd.Series, cells: pd.Index, condition: str) -> np.ndarray:
    """Weights in the order of ``cells``: a Series by name (others ignored), an array as given."""
    if isinstance(weights, pd.Series):
        if not weights.index.isin(cells).any():
            msg = (
                f"none of the {len(weights)} weighted cells is a cell of {condition!r} in this map; index the "
                "weights by the cell names (obs_names) of that condition."
            )
            raise ValueError(msg)
        return weights.reindex(cells).fillna(0.0).to_numpy(dtype=np.float64)
    return np.asarray(weights)
