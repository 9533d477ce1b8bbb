"""Which trained path (or which composition of trained components) a simulation follows, and its condition vector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from trajvi.trajectory import components_of

if TYPE_CHECKING:
    from trajvi.module import VelocityField
    from trajvi.trajectory import PathSet


@dataclass(frozen=True)
class Route:
    """What a simulation follows.

    Attributes
    ----------
    source
        The condition the cells start from.
    target
        The condition (or perturbation) they go to; ``None`` for a ``t_span``.
    path
        Name of the trained path followed; ``None`` for a composition never trained as a path.
    conditions, times
        The followed path's conditions and their times (``[source, target]`` for a composition).
    weights
        The condition weights over the field's components (unseen components with features appended).
    features
        Features of the unseen components (rows matching the appended weights), or ``None``.
    dose
        The dose the weights were scaled by.
    """

    source: str
    target: str | None
    path: str | None
    conditions: list[str]
    times: list[float]
    weights: np.ndarray
    features: np.ndarray | None = None
    dose: float = 1.0

    def condition(self, field: VelocityField) -> torch.Tensor | None:
        """The ``(1, n_condition)`` condition vector of the route (``None`` for an unconditional field)."""
        if not field.n_condition or not len(self.weights):
            return None
        device = field.time_offset.device
        vectors = field.component_vectors()
        if self.features is not None:
            vectors = torch.cat([vectors, field.component_vectors(torch.as_tensor(self.features))])
        weights = torch.as_tensor(self.weights, dtype=torch.float32, device=device)
        return field.condition(weights, 1, vectors=vectors)


def resolve_route(
    paths: PathSet,
    *,
    source: str | None,
    target: str | None,
    path: str | None,
    t_span_given: bool,
    dose: float | None,
    default_dose: float,
) -> Route:
    """The route of a simulation from the trained paths; every mistake gets an error that names the fix.

    Parameters
    ----------
    paths
        The trained paths.
    source, target
        The conditions asked for (``None``: the followed path's start and end).
    path
        A trained path's name (for branches that share a start, or several paths through ``source``).
    t_span_given
        Whether the caller gives the times itself (then ``target`` stays ``None``).
    dose
        Dose to scale the condition by (``None``: ``default_dose``).
    default_dose
        Dose when none is given (the mean dose of the path's cells in training, or 1).
    """
    dose = float(default_dose if dose is None else dose)
    if not np.isfinite(dose) or dose < 0:
        msg = f"dose={dose}; it must be a finite number >= 0."
        raise ValueError(msg)
    names = list(paths.paths)
    if path is not None:
        if path not in paths.paths:
            msg = f"path={path!r} is not a trained path; trained paths: {names}."
            raise ValueError(msg)
        conds = paths.paths[path]
        source = conds[0] if source is None else source
        if source not in conds:
            msg = f"source={source!r} is not on the path {path!r} ({conds}); start from one of its conditions."
            raise ValueError(msg)
        if target is None and not t_span_given:
            target = conds[-1]
        if target is not None and (target not in conds or conds.index(target) <= conds.index(source)):
            msg = f"target={target!r} does not follow source={source!r} on the path {path!r} ({conds})."
            raise ValueError(msg)
        return _on_path(paths, path, source, target, dose)
    source = paths.paths[names[0]][0] if source is None else source
    name = paths.path_of(source, target)
    if name is not None:
        if target is None and not t_span_given:
            target = paths.paths[name][-1]
        return _on_path(paths, name, source, target, dose)
    starts = [n for n, conds in paths.paths.items() if conds[0] == source]
    if target is None or not starts:
        msg = (
            f"no trained path goes from source={source!r}{'' if target is None else f' to target={target!r}'}; "
            f"trained paths: {paths.paths}."
        )
        raise ValueError(msg)
    # a composition never trained as a path: the trained components of its name, the others from features
    unknown = paths.unknown_components(target)
    known = [p for p in components_of(target, paths.delimiter) if p not in unknown]
    weights = np.zeros(len(paths.components) + len(unknown))
    for part in known:
        weights[paths.components.index(part)] += dose
    features = None
    if unknown:
        if paths.features is None:
            reachable = sorted({c for conds in paths.paths.values() for c in conds[1:]})
            msg = (
                f"target={target!r} is on no trained path from {source!r}, and its components {unknown} were never "
                f"trained on (trained: {paths.components}) and have no perturbation features; valid values: "
                f"{reachable}, or combinations of the trained components (train with perturbation_features=... "
                "to predict components never trained on)."
            )
            raise ValueError(msg)
        features = paths.feature_rows(unknown)
        weights[len(paths.components) :] = dose
    times = paths.times[starts[0]]
    return Route(source, target, None, [source, target], [times[0], times[-1]], weights, features, dose)


def _on_path(paths: PathSet, name: str, source: str, target: str | None, dose: float) -> Route:
    conds, times = paths.paths[name], paths.times[name]
    weights = paths.weights(name, dose) if paths.components else np.zeros(0)
    return Route(source, target, name, list(conds), list(times), weights, None, dose)
