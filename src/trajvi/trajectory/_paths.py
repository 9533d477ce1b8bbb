"""Paths, their segments and the validation folds built from them.

A path is an ordered list of conditions (``["control", "IFNb"]``, ``["d0", "d2", "d7"]``); each consecutive
pair is a segment, whose source and target cells are coupled by optimal transport. A fold leaves part of the
training data out (a group of ``couple_within``, or an interior time point) to score a velocity field on it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trajvi.train import Segment

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._config import CouplingConfig


@dataclass
class Fold:
    """One validation fold: segments to fit on, cells to push and the real cells they should reach."""

    name: str
    segments: list[Segment]
    z_start: np.ndarray
    t_start: float
    t_end: float
    z_truth: np.ndarray


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


def build_segments(
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    path: list[str],
    times: list[float],
    keep: np.ndarray,
    coupling: CouplingConfig,
    *,
    quiet: bool = False,
) -> list[Segment]:
    """Couple the cells of each consecutive pair of conditions on ``path``.

    Parameters
    ----------
    z
        ``(n_cells, n_latent)`` latent states.
    labels
        Condition name of each cell.
    groups
        Group of each cell (``couple_within``), or ``None``.
    path, times
        The conditions in order and their times.
    keep
        Boolean mask of the cells phase 2 may use.
    coupling
        How to couple.
    quiet
        Note left-out groups at debug level only (for the validation folds, which repeat the final fit's).
    """
    segments = []
    for (src, tgt), (t0, t1) in zip(itertools.pairwise(path), itertools.pairwise(times), strict=True):
        s_mask, t_mask = keep & (labels == src), keep & (labels == tgt)
        for name, mask in ((src, s_mask), (tgt, t_mask)):
            if not mask.any():
                msg = f"condition {name!r} has no cells in the data used for phase 2."
                raise ValueError(msg)
        plan = coupling.couple(
            z[s_mask],
            z[t_mask],
            groups_source=None if groups is None else groups[s_mask],
            groups_target=None if groups is None else groups[t_mask],
            source_name=src,
            target_name=tgt,
            quiet=quiet,
        )
        segments.append(Segment(f"{src}->{tgt}", z[s_mask], z[t_mask], float(t0), float(t1), plan))
    return segments


def build_folds(
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    path: list[str],
    times: list[float],
    keep: np.ndarray,
    coupling: CouplingConfig,
) -> list[Fold]:
    """Leave-one-out folds inside the training data, coupled quietly.

    With groups, each group that has cells at every condition of the path is left out in turn: the field is
    fit on the other groups and must carry the group's first-condition cells to its last-condition cells.
    Without groups, each interior condition of a path of three or more is left out in turn and must be
    reached from the previous one. A fold needs at least two cells on each side of its score (the energy
    distance compares sets); fewer than two complete groups (and no interior condition) give no fold.
    """
    folds: list[Fold] = []
    if groups is not None:

        def n_cells(g: str, condition: str) -> int:
            return int((keep & (groups == g) & (labels == condition)).sum())

        complete = [
            g
            for g in pd.unique(groups[keep])
            if all(n_cells(g, c) >= 1 for c in path) and min(n_cells(g, path[0]), n_cells(g, path[-1])) >= 2
        ]
        if len(complete) < 2:
            return []
        for g in complete:
            others = keep & (groups != g)
            folds.append(
                Fold(
                    f"{g}",
                    build_segments(z, labels, groups, path, times, others, coupling, quiet=True),
                    z[keep & (groups == g) & (labels == path[0])],
                    times[0],
                    times[-1],
                    z[keep & (groups == g) & (labels == path[-1])],
                )
            )
    elif len(path) >= 3:
        for k in range(1, len(path) - 1):
            if min((keep & (labels == path[k - 1])).sum(), (keep & (labels == path[k])).sum()) < 2:
                continue
            sub_path, sub_times = path[:k] + path[k + 1 :], times[:k] + times[k + 1 :]
            folds.append(
                Fold(
                    path[k],
                    build_segments(z, labels, None, sub_path, sub_times, keep, coupling, quiet=True),
                    z[keep & (labels == path[k - 1])],
                    times[k - 1],
                    times[k],
                    z[keep & (labels == path[k])],
                )
            )
    return folds
