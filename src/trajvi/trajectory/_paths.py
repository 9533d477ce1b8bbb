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
    from ._config import CouplingConfig

if TYPE_CHECKING:
    from ._pathset import PathSet


@dataclass
class Fold:
    """One validation fold: segments to fit on, cells to push and the real cells they should reach."""

    name: str
    segments: list[Segment]
    z_start: np.ndarray
    t_start: float
    t_end: float
    z_truth: np.ndarray
    weights: np.ndarray | None = None  # the condition the start cells are pushed under (None: unconditional)


def build_segments(
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    path: list[str],
    times: list[float],
    keep: np.ndarray,
    coupling: CouplingConfig,
    *,
    weights: np.ndarray | None = None,
    doses: np.ndarray | None = None,
    growth: np.ndarray | None = None,
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
    weights
        What the path does, over the field's components (:meth:`PathSet.weights`); ``None``: unconditional.
    doses
        Dose of each cell (it scales ``weights`` for the pairs ending at the cell); ``None``: 1.
    growth
        Prior growth rate of each cell per unit of time: a source cell's mass before transport is
        ``growth ** (t_target - t_source)``, as in Waddington-OT; ``None``: uniform.
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
            source_weights=None if growth is None else growth[s_mask] ** (float(t1) - float(t0)),
            quiet=quiet,
        )
        segments.append(
            Segment(
                f"{src}->{tgt}",
                z[s_mask],
                z[t_mask],
                float(t0),
                float(t1),
                plan,
                weights=weights,
                dose_target=None if doses is None else doses[t_mask],
            )
        )
    return segments


def build_all_segments(
    paths: PathSet,
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    keep: np.ndarray,
    coupling: CouplingConfig,
    *,
    doses: np.ndarray | None = None,
    growth: np.ndarray | None = None,
    quiet: bool = False,
) -> dict[str, list[Segment]]:
    """The segments of every path of ``paths``, by path name (each path coupled on its own)."""
    return {
        name: build_segments(
            z,
            labels,
            groups,
            conds,
            paths.times[name],
            keep,
            coupling,
            weights=paths.weights(name),
            doses=doses,
            growth=growth,
            quiet=quiet,
        )
        for name, conds in paths.paths.items()
    }


def build_folds(
    paths: PathSet,
    segments: dict[str, list[Segment]],
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    keep: np.ndarray,
    coupling: CouplingConfig,
    *,
    doses: np.ndarray | None = None,
    growth: np.ndarray | None = None,
    max_folds: int | None = 12,
    seed: int = 0,
) -> list[Fold]:
    """Leave-one-out folds inside the training data, coupled quietly.

    With groups, each (group, path) whose group has cells at every condition of the path is a fold: that
    group's cells past the path's start are left out, and the field fit without them must carry the group's
    first-condition cells to its last-condition cells under the path's condition. Without groups, each interior
    condition of a path of three or more is left out in turn and must be reached from the previous one. The
    left-out cells are left out of every path: another path through the same condition (branches that share
    their progenitors, time courses that share a day) is coupled again without them, skipping a condition that
    has no cells left, so that no fit sees the cells it is scored on; paths that do not hold them keep their
    couplings from ``segments``. Only what exists in the training data is left out, never a combination the
    user asks to predict (it is not there).
    A fold needs at least two cells on each side of its score (the energy distance compares sets), and the path
    must keep cells at every condition without the group (a perturbation seen in one group only cannot be
    left out); fewer than two such (group, path) pairs give no group folds. More than ``max_folds`` folds: that
    many, drawn with ``seed``.
    """
    candidates: list[tuple[str, str, np.ndarray, list[str], list[float], np.ndarray, np.ndarray, float, float]] = []
    # each candidate: label, path, cells the fold may fit on, the path's conditions and times without the left-out
    # ones, start cells, truth cells, start and end time
    for name, conds in paths.paths.items():
        times = paths.times[name]
        if groups is not None:
            for g in pd.unique(groups[keep]):
                in_g = keep & (groups == g)
                counts = [int((in_g & (labels == c)).sum()) for c in conds]
                if min(counts) < 1 or min(counts[0], counts[-1]) < 2:
                    continue
                fold_keep = keep & ~(in_g & np.isin(labels, conds[1:]))
                if not all((fold_keep & (labels == c)).any() for c in conds):
                    continue  # the only group with this path's cells: leaving it out leaves nothing to fit on
                start, truth = in_g & (labels == conds[0]), in_g & (labels == conds[-1])
                candidates.append(
                    (
                        f"{g}" if len(paths.paths) == 1 else f"{g} x {name}",
                        name,
                        fold_keep,
                        conds,
                        times,
                        start,
                        truth,
                        times[0],
                        times[-1],
                    )
                )
        elif len(conds) >= 3:
            for k in range(1, len(conds) - 1):
                start, truth = keep & (labels == conds[k - 1]), keep & (labels == conds[k])
                if min(start.sum(), truth.sum()) < 2:
                    continue
                sub = conds[:k] + conds[k + 1 :], times[:k] + times[k + 1 :]
                label = conds[k] if len(paths.paths) == 1 else f"{conds[k]} ({name})"
                candidates.append((label, name, keep & ~truth, sub[0], sub[1], start, truth, times[k - 1], times[k]))
    if groups is not None and len(candidates) < 2:
        return []
    if max_folds is not None and len(candidates) > max_folds:
        chosen = np.sort(np.random.default_rng(seed).choice(len(candidates), int(max_folds), replace=False))
        candidates = [candidates[i] for i in chosen]
    folds = []
    for label, name, fold_keep, conds, times, start, truth, t_start, t_end in candidates:
        weights = paths.weights(name)
        fold_segments = {
            other: _segments_without(
                paths,
                other,
                segments[other],
                z,
                labels,
                groups,
                fold_keep,
                keep & ~fold_keep,
                coupling,
                doses=doses,
                growth=growth,
            )
            for other in paths.paths
            if other != name
        }
        fold_segments[name] = build_segments(
            z,
            labels,
            groups,
            conds,
            times,
            fold_keep,
            coupling,
            weights=weights,
            doses=doses,
            growth=growth,
            quiet=True,
        )
        dose = 1.0 if doses is None else float(np.mean(doses[truth]))
        folds.append(
            Fold(
                label,
                [seg for segs in fold_segments.values() for seg in segs],
                z[start],
                t_start,
                t_end,
                z[truth],
                weights=weights * dose,
            )
        )
    return folds


def _segments_without(
    paths: PathSet,
    name: str,
    segments: list[Segment],
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    keep: np.ndarray,
    left_out: np.ndarray,
    coupling: CouplingConfig,
    *,
    doses: np.ndarray | None,
    growth: np.ndarray | None,
) -> list[Segment]:
    """The segments of path ``name`` fit on the cells of ``keep`` (``segments`` when it held none of ``left_out``).

    A condition of the path with no cells left is skipped; a path left with fewer than two conditions has no
    segments.
    """
    conds, times = paths.paths[name], paths.times[name]
    if not (left_out & np.isin(labels, conds)).any():
        return segments
    kept = [(c, t) for c, t in zip(conds, times, strict=True) if (keep & (labels == c)).any()]
    if len(kept) < 2:
        return []
    return build_segments(
        z,
        labels,
        groups,
        [c for c, _ in kept],
        [t for _, t in kept],
        keep,
        coupling,
        weights=paths.weights(name),
        doses=doses,
        growth=growth,
        quiet=True,
    )
