"""Several paths in one field: what each path does, as weights over the field's components.

A *path* is an ordered list of conditions, named by what it does: a perturbation (``"IFNb"``), a
combination (``"KLF1+MAP2K6"``, split on ``delimiter`` into its components) or a branch of a time course. The
field learns one vector per *component*; a path's condition vector composes its components' vectors, so a
combination, a dose or (with features) a perturbation never trained on still has one.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def check_path(path: Sequence[str], conditions: Sequence[str]) -> list[str]:
    """The path as a list of condition names; an unknown or repeated condition raises a ``ValueError``."""
    if isinstance(path, str):
        msg = f"path={path!r} is a single string; give the conditions in order, e.g. {list(conditions[:2])}."
        raise TypeError(msg)
    names = [str(c) for c in path]
    for name in names:
        if name not in conditions:
            msg = f"path={name!r} is not a condition; valid values: {list(conditions)}."
            raise ValueError(msg)
    if len(names) < 2 or len(set(names)) != len(names):
        msg = f"path={names}; give at least two different conditions in order, e.g. {list(conditions[:2])}."
        raise ValueError(msg)
    return names


def path_times(path: list[str], known: dict[str, float] | None) -> list[float]:
    """Time of each condition of ``path``: the registered times, or evenly spaced in ``[0, 1]`` without them."""
    if known is None:
        return [float(t) for t in np.linspace(0.0, 1.0, len(path))]
    missing = [c for c in path if c not in known]
    if missing:
        msg = f"condition(s) {missing} of the path have no cells, so their time is unknown."
        raise ValueError(msg)
    times = [float(known[c]) for c in path]
    if any(b <= a for a, b in itertools.pairwise(times)):
        msg = f"the times of the path {dict(zip(path, times, strict=True))} must increase along it; reorder path."
        raise ValueError(msg)
    return times


def resolve_paths(
    paths: Sequence[str] | Sequence[Sequence[str]] | Mapping[str, Sequence[str]] | None,
    conditions: Sequence[str],
    *,
    control: str | None = None,
) -> dict[str, list[str]]:
    """The paths to train, by name.

    Parameters
    ----------
    paths
        One path (``["control", "IFNb"]``), several (``[["control", "IFNb"], ["d0", "d2", "d7"]]``), or
        named paths (``{"ASG": ["prog", "ASG_early", "ASG"], ...}``). An unnamed path is named after its last
        condition. ``None`` with ``control``: every other condition from the control.
    conditions
        The registered conditions.
    control
        The short form: ``["control", X]`` for every other condition ``X`` (``paths`` must be ``None``).

    Raises
    ------
    ValueError
        An unknown or repeated condition on a path, two paths with one name, or neither or both of
        ``paths`` and ``control``.
    """
    if (paths is None) == (control is None):
        msg = "give the paths to train (path=[...]) or a control condition (control='...'), one of the two."
        raise ValueError(msg)
    if control is not None:
        control = check_path([control, next(c for c in conditions if c != control)], conditions)[0]
        return {c: [control, c] for c in conditions if c != control}
    assert paths is not None
    if isinstance(paths, Mapping):
        named = {str(k): check_path(v, conditions) for k, v in paths.items()}
    else:
        items: list[Sequence[str]] = list(paths)  # one path, or several
        if items and all(isinstance(p, str) for p in items):
            items = [[str(p) for p in items]]  # a single path
        named = {}
        for item in items:
            path = check_path(item, conditions)
            if path[-1] in named:
                msg = f"two paths end at {path[-1]!r}; name them: path={{'name': [...], ...}}."
                raise ValueError(msg)
            named[path[-1]] = path
    if not named:
        msg = "path is empty; give at least one path of two conditions."
        raise ValueError(msg)
    return named


def components_of(name: str, delimiter: str | None) -> list[str]:
    """The components of a path name: ``"A+B"`` -> ``["A", "B"]`` (``delimiter=None``: the name itself)."""
    if delimiter is None:
        return [name]
    parts = [p.strip() for p in str(name).split(delimiter)]
    if any(not p for p in parts):
        msg = f"{name!r} has an empty component around {delimiter!r}; name combinations like 'A{delimiter}B'."
        raise ValueError(msg)
    return parts


@dataclass
class PathSet:
    """The trained paths and what each does.

    Attributes
    ----------
    paths
        Name -> conditions, in order.
    times
        Name -> time of each condition.
    components
        The field's components, in the order of its vectors.
    delimiter
        Separator of combined components in a name (``None``: no combinations).
    features
        Features of components (rows indexed by component), or ``None``; may hold components the paths do not.
    """

    paths: dict[str, list[str]]
    times: dict[str, list[float]]
    components: list[str]
    delimiter: str | None = "+"
    features: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        paths: dict[str, list[str]],
        times: dict[str, list[float]],
        *,
        delimiter: str | None = "+",
        features: pd.DataFrame | None = None,
    ) -> PathSet:
        """Collect the components of the paths' names (and check that ``features`` has a row for each)."""
        components: list[str] = []
        for name in paths:
            for part in components_of(name, delimiter):
                if part not in components:
                    components.append(part)
        if features is not None:
            missing = [c for c in components if c not in features.index]
            if missing:
                msg = (
                    f"perturbation_features has no row for {missing} (its index has {len(features.index)} "
                    f"entries, e.g. {list(features.index[:3])}); give every trained perturbation its features."
                )
                raise ValueError(msg)
            values = features.to_numpy(dtype=float)
            if not np.isfinite(values).all():
                msg = "perturbation_features holds NaN or infinite values; fill or drop them."
                raise ValueError(msg)
        return cls(dict(paths), dict(times), components, delimiter, features)

    def weights(self, name: str, dose: float = 1.0) -> np.ndarray:
        """``(n_components,)`` weights of a path name (a trained one or a composition of known components)."""
        unknown = self.unknown_components(name)
        if unknown:
            msg = f"{name!r} has components {unknown} that the model was not trained on; known: {self.components}."
            raise ValueError(msg)
        out = np.zeros(len(self.components))
        for part in components_of(name, self.delimiter):
            out[self.components.index(part)] += float(dose)
        return out

    def unknown_components(self, name: str) -> list[str]:
        """Components of ``name`` that have no trained vector."""
        return [p for p in components_of(name, self.delimiter) if p not in self.components]

    def feature_rows(self, names: Sequence[str]) -> np.ndarray:
        """Features of components (for the unseen ones); a clear error when there are none."""
        if self.features is None:
            msg = (
                f"components {list(names)} were never trained on and the model has no perturbation features to "
                "place them: train with perturbation_features=... (a DataFrame indexed by perturbation)."
            )
            raise ValueError(msg)
        missing = [n for n in names if n not in self.features.index]
        if missing:
            msg = f"perturbation_features has no row for {missing}; a component without features cannot be placed."
            raise ValueError(msg)
        return self.features.loc[list(names)].to_numpy(dtype=np.float32)

    def path_of(self, source: str, target: str | None) -> str | None:
        """The trained path that goes from ``source`` (to ``target``, when given); ``None`` if none does.

        Raises when several do (the caller then names one).
        """
        found = [
            name
            for name, conds in self.paths.items()
            if source in conds and (target is None or (target in conds and conds.index(target) > conds.index(source)))
        ]
        if len(found) > 1:
            msg = (
                f"several trained paths go from {source!r}{'' if target is None else f' to {target!r}'}: "
                f"{found}; choose one with path=..."
            )
            raise ValueError(msg)
        return found[0] if found else None
