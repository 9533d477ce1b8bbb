"""``Coupling``, an OT plan stored as blocks (groups and/or minibatches), and ``couple_sets``, which builds one."""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from trajvi._logging import logger
from trajvi._types import GROUP_WEIGHTINGS, GroupWeighting, OTMethod, check_option

from ._couple import _check_options, couple
from ._standardize import check_point_set, standardize

if TYPE_CHECKING:
    import torch

_PREVIEW = 10  # group names listed in a message before "..."


@dataclass
class Coupling:
    """Plan between a source and a target set, stored as blocks (groups and/or minibatches).

    The full plan is zero outside the blocks; inside block ``k`` it is ``weights[k] * plans[k]`` on the
    rows ``source_index[k]`` and the columns ``target_index[k]``.

    Attributes
    ----------
    source_index
        Global row indices (into the source set) of each block.
    target_index
        Global column indices (into the target set) of each block.
    plans
        Each block's plan, ``(len(source_index[k]), len(target_index[k]))``, of total mass 1: a
        :class:`scipy.sparse.csr_array` for exact OT (at most ``n_source + n_target - 1`` non-zero entries
        per block, so a coupling takes memory linear in the cells), a dense array for entropic OT.
    weights
        Mass of each block; sums to 1.
    groups
        Group label of each block (``None`` without grouping).
    n_source
        Number of cells in the source set.
    n_target
        Number of cells in the target set.
    solve_seconds
        Wall time of each block's solve (blocks may be solved at once, in threads).
    wall_seconds
        Wall time of the whole coupling (standardizing, splitting and solving), as a fit waits for it.
    """

    source_index: list[np.ndarray]
    target_index: list[np.ndarray]
    plans: list[np.ndarray | sp.csr_array]
    weights: np.ndarray
    groups: list[str | None]
    n_source: int
    n_target: int
    solve_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wall_seconds: float = 0.0
    _samplers: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float64)
        n = len(self.plans)
        if not len(self.source_index) == len(self.target_index) == len(self.groups) == self.weights.size == n:
            msg = "source_index, target_index, plans, weights and groups must have one entry per block."
            raise ValueError(msg)
        for k, (rows, cols, plan) in enumerate(zip(self.source_index, self.target_index, self.plans)):
            if plan.shape != (len(rows), len(cols)):
                msg = f"Block {k} has a plan of shape {plan.shape} for {len(rows)} source and {len(cols)} target cells."
                raise ValueError(msg)
        if n and (np.any(self.weights < 0) or not np.isclose(self.weights.sum(), 1.0)):
            msg = f"weights must be non-negative and sum to 1; got sum {self.weights.sum():.6g}."
            raise ValueError(msg)

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return len(self.plans)

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` (source, target) index pairs by plan mass.

        A block is drawn by its weight, then an entry of its plan by its mass; entries of zero mass are
        never drawn. The pairs come in random order.

        Parameters
        ----------
        n
            Number of pairs.
        rng
            Random generator or seed.

        Returns
        -------
        ``(source, target)``: two int64 arrays of length ``n`` with global indices into the two sets.
        """
        if int(n) != n or n < 0:
            msg = f"n must be a non-negative integer; got {n}."
            raise ValueError(msg)
        n = int(n)
        rng = np.random.default_rng(rng)
        counts = rng.multinomial(n, self.weights / self.weights.sum())
        sources, targets = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
        for k in np.flatnonzero(counts):
            plan = self.plans[k]
            support, cdf = self._sampler(int(k))
            picked = np.searchsorted(cdf, rng.random(counts[k]) * cdf[-1], side="right")
            rows, cols = np.divmod(support[np.minimum(picked, support.size - 1)], plan.shape[1])
            sources.append(np.asarray(self.source_index[k], dtype=np.int64)[rows])
            targets.append(np.asarray(self.target_index[k], dtype=np.int64)[cols])
        order = rng.permutation(n)
        return np.concatenate(sources)[order], np.concatenate(targets)[order]

    def _sampler(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat (row-major) indices of block ``k``'s non-zero entries and their cumulative mass.

        Sparse plans (exact OT) keep their sampler, so that the pairs redrawn every epoch cost
        ``O(entries)``; dense plans (entropic) are scanned on every draw rather than doubling their memory.
        """
        if k in self._samplers:
            return self._samplers[k]
        plan = self.plans[k]
        if sp.issparse(plan):
            coo = sp.csr_array(plan).tocoo()
            keep = coo.data > 0
            support = coo.row[keep].astype(np.int64) * plan.shape[1] + coo.col[keep]
            order = np.argsort(support, kind="stable")
            sampler = support[order], np.cumsum(coo.data[keep][order])
            self._samplers[k] = sampler
            return sampler
        flat = plan.ravel()
        support = np.flatnonzero(flat > 0)
        return support, np.cumsum(flat[support])

    def to_dense(self) -> np.ndarray:
        """The full ``(n_source, n_target)`` plan, of total mass 1 (for tests and small data)."""
        dense = np.zeros((self.n_source, self.n_target))
        for rows, cols, plan, weight in zip(self.source_index, self.target_index, self.plans, self.weights):
            # issparse does not narrow the type: the cast says what it checked
            dense[np.ix_(rows, cols)] += weight * (cast("sp.csr_array", plan).toarray() if sp.issparse(plan) else plan)
        return dense


def couple_sets(
    z_source: np.ndarray,
    z_target: np.ndarray,
    *,
    method: OTMethod = "exact",
    groups_source: np.ndarray | None = None,
    groups_target: np.ndarray | None = None,
    group_weighting: GroupWeighting = "balanced",
    batch_size: int | None = None,
    epsilon: float = 0.05,
    reg_m: float = 1.0,
    standardize_sets: bool = True,
    source_name: str = "source",
    target_name: str = "target",
    rng: np.random.Generator | int | None = None,
    device: str | torch.device | None = None,
    n_jobs: int | None = None,
    source_weights: np.ndarray | None = None,
    quiet: bool = False,
) -> Coupling:
    """Couple two sets of latent cell states by optimal transport, within groups and minibatches.

    Parameters
    ----------
    z_source
        Source cells, ``(n_source, n_dims)``.
    z_target
        Target cells, ``(n_target, n_dims)``.
    method
        OT solver of each block, see :func:`couple`.
    groups_source
        Group label of each source cell (e.g. cell types); cells are only coupled within their group.
    groups_target
        Group label of each target cell; pass both label arrays or neither.
    group_weighting
        ``"balanced"`` (default): every group has the same mass; ``"source"``: a group's mass is
        proportional to its source cells.
    batch_size
        Blocks with more cells than this on either side are split at random into ``k`` minibatches,
        ``k = ceil(max(n_source, n_target) / batch_size)`` (at most the smaller side's size), and chunk
        ``i`` of the source is coupled with chunk ``i`` of the target. ``None`` couples each block whole.
    epsilon
        Entropic regularisation, relative to the mean cost, see :func:`couple`.
    reg_m
        Marginal penalty of ``method="unbalanced"``.
    standardize_sets
        z-score each whole set separately first (see :func:`standardize`), so the coupling matches
        cells by their position within their own condition rather than by the shift between conditions.
    source_name
        Name of the source condition in messages.
    target_name
        Name of the target condition in messages.
    rng
        Random generator or seed of the minibatch split; the same seed gives the same coupling.
    device
        Where the entropic solvers iterate (``None``: numpy; a torch device such as ``"cuda"``), see
        :func:`couple`.
    n_jobs
        Blocks solved at once on the CPU, in threads (POT's exact solver and numpy release the GIL).
        ``None``: the cores this process may use (:func:`available_cores`); 1: one after the other. Blocks
        whose solver runs on a GPU are solved one after the other. The result does not depend on it.
    source_weights
        Relative mass of each source cell before transport (e.g. a prior growth rate; default: uniform),
        the source marginal of each block's solve. A block's total stays its weight.
    quiet
        Log the groups left out (present on one side only) at debug level instead of info (for couplings
        computed again on parts of the data, such as validation folds).

    Returns
    -------
    The coupling, with one block per (group, minibatch).
    """
    started = time.perf_counter()
    source_label, target_label = f"condition {source_name!r}", f"condition {target_name!r}"
    _check_options(method, epsilon, reg_m, 1, 1)
    check_option(group_weighting, GROUP_WEIGHTINGS, "group_weighting")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        msg = f"batch_size must be a positive integer or None; got {batch_size}."
        raise ValueError(msg)
    if standardize_sets:
        z_source, z_target = standardize(z_source, name=source_label)[0], standardize(z_target, name=target_label)[0]
    else:
        z_source, z_target = check_point_set(z_source, name=source_label), check_point_set(z_target, name=target_label)
    if z_source.shape[1] != z_target.shape[1]:
        msg = f"The {source_label} has {z_source.shape[1]} dimensions but the {target_label} has {z_target.shape[1]}."
        raise ValueError(msg)
    rng = np.random.default_rng(rng)
    if source_weights is not None:
        source_weights = np.asarray(source_weights, dtype=np.float64).reshape(-1)
        if source_weights.size != z_source.shape[0] or not np.all(np.isfinite(source_weights)):
            msg = f"source_weights needs one finite weight per cell of the {source_label} ({z_source.shape[0]})."
            raise ValueError(msg)
        if np.any(source_weights < 0):
            msg = f"source_weights has {int((source_weights < 0).sum())} negative entries; weights are masses."
            raise ValueError(msg)

    blocks = _group_blocks(
        groups_source, groups_target, z_source.shape[0], z_target.shape[0], source_label, target_label, quiet=quiet
    )
    if group_weighting == "source":
        group_mass = np.array([rows.size for _, rows, _ in blocks], dtype=np.float64)
    else:
        group_mass = np.ones(len(blocks))
    group_mass /= group_mass.sum()

    source_index: list[np.ndarray] = []
    target_index: list[np.ndarray] = []
    weights: list[float] = []
    labels: list[str | None] = []
    for (label, rows, cols), mass in zip(blocks, group_mass):
        for chunk_rows, chunk_cols in _minibatches(rows, cols, batch_size, rng):
            source_index.append(chunk_rows)
            target_index.append(chunk_cols)
            weights.append(mass * chunk_rows.size / rows.size)
            labels.append(label)

    seconds = np.zeros(len(source_index))

    def solve(k: int) -> np.ndarray | sp.csr_array:
        start = time.perf_counter()
        plan = couple(
            z_source[source_index[k]],
            z_target[target_index[k]],
            method=method,
            epsilon=epsilon,
            reg_m=reg_m,
            device=device,
            a=None if source_weights is None else _block_marginal(source_weights[source_index[k]], source_label),
        )
        plan = plan / plan.sum()
        out = sp.csr_array(plan) if method == "exact" else plan
        seconds[k] = time.perf_counter() - start
        return out

    on_cpu = device is None or str(device) == "cpu" or method == "exact"
    workers = min(len(source_index), available_cores() if n_jobs is None else max(1, int(n_jobs))) if on_cpu else 1
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="trajvi-ot") as pool:
            plans = list(pool.map(solve, range(len(source_index))))
    else:
        plans = [solve(k) for k in range(len(source_index))]
    block_weights = np.asarray(weights)
    logger.debug(
        "Coupled %d source and %d target cells by %s OT in %d block(s), %d at a time.",
        sum(r.size for r in source_index),
        sum(c.size for c in target_index),
        method,
        len(plans),
        workers,
    )
    return Coupling(
        source_index,
        target_index,
        plans,
        block_weights / block_weights.sum(),
        labels,
        z_source.shape[0],
        z_target.shape[0],
        solve_seconds=seconds,
        wall_seconds=time.perf_counter() - started,
    )


def _block_marginal(weights: np.ndarray, source_label: str) -> np.ndarray:
    """A block's source marginal from the given weights, of mass 1 like the default uniform one."""
    total = weights.sum()
    if not total > 0:
        msg = f"source_weights are all zero in a block of the {source_label}; every coupled group needs some mass."
        raise ValueError(msg)
    return weights / total


def available_cores() -> int:
    """CPU cores for this process's OT blocks: its affinity mask, shared among the processes of its node.

    The mask is what SLURM and containers set; under ``torchrun`` it is divided by ``LOCAL_WORLD_SIZE``.
    At least 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _labels(groups: np.ndarray, n: int, *, name: str, set_label: str) -> np.ndarray:
    if np.ndim(groups) != 1 or len(groups) != n:
        msg = f"{name} must have one label per cell of the {set_label} ({n}); got shape {np.shape(groups)}."
        raise ValueError(msg)
    values = pd.Series(np.asarray(groups, dtype=object))
    n_missing = int(values.isna().sum())
    if n_missing:
        msg = f"{name} has {n_missing} missing label(s); label every cell of the {set_label} or drop them."
        raise ValueError(msg)
    return values.astype(str).to_numpy()


def _preview(names: list[str]) -> str:
    shown = ", ".join(map(repr, names[:_PREVIEW]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > _PREVIEW else "")


def _group_blocks(
    groups_source: np.ndarray | None,
    groups_target: np.ndarray | None,
    n_source: int,
    n_target: int,
    source_label: str,
    target_label: str,
    *,
    quiet: bool = False,
) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """``(group, source rows, target rows)`` of each group present on both sides (one ``None`` block without groups)."""
    if groups_source is None and groups_target is None:
        return [(None, np.arange(n_source), np.arange(n_target))]
    if groups_source is None or groups_target is None:
        msg = "Pass both groups_source and groups_target, or neither."
        raise ValueError(msg)
    source = _labels(groups_source, n_source, name="groups_source", set_label=source_label)
    target = _labels(groups_target, n_target, name="groups_target", set_label=target_label)
    source_groups, target_groups = set(source), set(target)
    shared = sorted(source_groups & target_groups)
    if not shared:
        msg = (
            f"No group has cells in both conditions: the {source_label} has groups "
            f"{_preview(sorted(source_groups))}; the {target_label} has {_preview(sorted(target_groups))}."
        )
        raise ValueError(msg)
    only_source, only_target = sorted(source_groups - target_groups), sorted(target_groups - source_groups)
    note = logger.debug if quiet else logger.info
    if only_source:
        note("Left out of the coupling, no cells in the %s: group(s) %s.", target_label, _preview(only_source))
    if only_target:
        note("Left out of the coupling, no cells in the %s: group(s) %s.", source_label, _preview(only_target))
    return [(group, np.flatnonzero(source == group), np.flatnonzero(target == group)) for group in shared]


def _minibatches(
    rows: np.ndarray, cols: np.ndarray, batch_size: int | None, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a block into ``k`` random chunk pairs, at most the smaller side's size so no chunk is empty."""
    if batch_size is None or max(rows.size, cols.size) <= batch_size:
        return [(rows, cols)]
    k = min(math.ceil(max(rows.size, cols.size) / batch_size), rows.size, cols.size)
    row_chunks = np.array_split(rng.permutation(rows), k)
    col_chunks = np.array_split(rng.permutation(cols), k)
    return [(np.sort(r), np.sort(c)) for r, c in zip(row_chunks, col_chunks)]
