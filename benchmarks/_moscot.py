"""moscot as an external reference for the fate benchmarks: solve, couplings, transitions, push/pull, growth.

moscot is *not* a dependency of trajvi. This module runs only in the separate benchmark environment
``/work/bench_moscot`` (trajvi installed editable plus moscot from PyPI, see ``benchmarks/moscot_reference.py``);
it imports moscot lazily, so importing it elsewhere works until a function that needs moscot is called.

Conventions
-----------
* Input ``adata`` holds **raw counts** in ``X``. :func:`solve_temporal` works on a copy: it runs
  ``scanpy.pp.normalize_total(target_sum=1e4)``, ``log1p`` and a PCA (``n_pcs`` components, ``random_state=seed``)
  on all genes, unless ``obsm_key`` names an embedding that is already there, in which case ``X`` is not touched
  and the embedding is used as it is. :func:`preprocess` exposes the same steps, e.g. to cluster on the PCA first.
* Time points are the numeric values of ``adata.obs[time_key]`` (e.g. ``10.0``, ``10.5``); moscot keys its
  subproblems by them. ``source_time``/``target_time`` may be any pair the policy connects: with the default
  ``policy="sequential"`` a non-consecutive pair is answered by chaining the consecutive maps.
* Cost: squared Euclidean in the embedding, divided by its mean (``scale_cost="mean"``, as WOT does).
* moscot's ``epsilon`` is the entropic regularisation relative to that scaled cost; ``tau_a``/``tau_b`` are the
  unbalancedness on the source/target marginals (``1`` = balanced). WOT's ``lambda1``/``lambda2`` correspond to
  ``tau_a = lambda1 / (lambda1 + epsilon)`` and ``tau_b = lambda2 / (lambda2 + epsilon)`` (:func:`wot_taus`).

What moscot's operations mean (moscot 0.5.2; the plan ``T`` is ``n_source x n_target`` and, when unbalanced,
its row sums ``a`` and column sums ``b`` are the *posterior* marginals):

* ``push(x)`` is ``T^T x`` and ``pull(y)`` is ``T y``. moscot first divides the input by its sum (per column)
  at every step. With ``scale_by_marginals=True`` (moscot's default in ``TemporalProblem.push``/``pull``), the
  input is also divided elementwise by ``a`` (push) or ``b`` (pull) before each step, i.e. each source cell's
  row is turned into a conditional distribution ``T_ij / a_i`` (push), each target cell's column into
  ``T_ij / b_j`` (pull). A chained push applies the steps in turn (each renormalised to sum 1).
* ``cell_transition`` (used by :func:`transition_matrix`) pushes, for every source group, the group's
  indicator (divided by the group size) through the plan(s) **without** marginal scaling, sums the pushed mass
  per target group and divides each row by its sum: entry ``(g, h)`` is the share of the transport mass leaving
  group ``g`` that lands in group ``h`` (``sum_{i in g, j in h} T_ij / sum_{i in g} sum_j T_ij`` for one step).
  Forward: rows sum to 1. Backward (``forward=False``): the same with pull, each *target* group's ancestor
  distribution sums to 1 (moscot returns it source x target, so its *columns* sum to 1).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anndata as ad
    from moscot.problems.time import TemporalProblem

logger = logging.getLogger("trajvi.benchmarks")

#: WOT's defaults (Schiebinger et al. 2019): epsilon 0.05, lambda1 1, lambda2 50.
WOT_DEFAULTS: dict[str, float] = {"epsilon": 0.05, "lambda1": 1.0, "lambda2": 50.0}


def wot_taus(epsilon: float, lambda1: float, lambda2: float) -> tuple[float, float]:
    """Moscot's ``(tau_a, tau_b)`` equivalent to WOT's ``lambda1``/``lambda2`` at ``epsilon``.

    Parameters
    ----------
    epsilon
        Entropic regularisation (same value in WOT and moscot, both on the mean-scaled cost).
    lambda1, lambda2
        WOT's marginal penalties on the source and the target.

    Returns
    -------
    tuple of float
        ``(lambda1 / (lambda1 + epsilon), lambda2 / (lambda2 + epsilon))``, as in moscot's WOT regression test.
    """
    return lambda1 / (lambda1 + epsilon), lambda2 / (lambda2 + epsilon)


def preprocess(
    adata: ad.AnnData,
    *,
    n_pcs: int = 30,
    seed: int = 0,
    target_sum: float = 1e4,
    pca: bool = True,
) -> ad.AnnData:
    """Copy of ``adata`` (raw counts in ``X``) normalised, log-transformed and, optionally, with a PCA.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X``; not modified.
    n_pcs
        Number of principal components (``obsm["X_pca"]``).
    seed
        ``random_state`` of the PCA.
    target_sum
        Library size after ``normalize_total``.
    pca
        Whether to compute the PCA (``False`` when moscot's local PCA is used instead).

    Returns
    -------
    AnnData
        The copy, with the counts in ``layers["counts"]``, ``log1p(normalize_total(X))`` in ``X`` and, if
        ``pca``, the PCA in ``obsm["X_pca"]``.
    """
    import scanpy as sc

    out = adata.copy()
    out.layers["counts"] = out.X.copy()
    sc.pp.normalize_total(out, target_sum=target_sum)
    sc.pp.log1p(out)
    if pca:
        sc.pp.pca(out, n_comps=n_pcs, random_state=seed)
    return out


def solve_temporal(
    adata: ad.AnnData,
    time_key: str,
    *,
    epsilon: float = 0.05,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    obsm_key: str | None = None,
    n_pcs: int = 30,
    seed: int = 0,
    local_pca: bool = False,
    growth_key: str | None = None,
    policy: Literal["sequential", "explicit", "triu"] = "sequential",
    subset: Sequence[tuple[float, float]] | None = None,
    scale_cost: Literal["mean", "median", "max_cost"] | float = "mean",
    threshold: float = 1e-3,
    max_iterations: int | None = None,
) -> TemporalProblem:
    """Prepare and solve a moscot :class:`~moscot.problems.time.TemporalProblem`.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` (unless ``obsm_key`` is given); not modified: the problem holds a
        copy (``problem.adata``), with ``obs[time_key]`` as float.
    time_key
        Numeric column of ``adata.obs`` with the time of each cell.
    epsilon
        Entropic regularisation on the mean-scaled cost (default: WOT's 0.05).
    tau_a, tau_b
        Unbalancedness on the source and target marginals in ``(0, 1]``; ``1`` is balanced.
    obsm_key
        Existing embedding to transport in (used as is, no normalisation). ``None``: normalise, ``log1p`` and PCA
        with ``n_pcs`` components (see :func:`preprocess`).
    n_pcs
        Components of the PCA (global, or per pair with ``local_pca``).
    seed
        ``random_state`` of the PCA.
    local_pca
        Use moscot's ``"local-pca"`` callback instead of one global PCA: for every pair of time points a PCA of the
        log-normalised expression of just those two time points (what moscot's WOT regression test does).
        Ignored when ``obsm_key`` is given.
    growth_key
        Optional column of ``adata.obs`` with a positive prior growth rate per cell and unit of time. It becomes
        moscot's source marginal through its birth-death estimate: ``a_i = g_i^dt / sum_k g_k^dt`` (the column's
        log goes to ``proliferation_key`` and ``marginal_kwargs={"scaling": 1}``). The target marginal stays
        uniform, and :func:`growth_rates` reports moscot's posterior growth on this scale.
        ``None``: uniform marginals.
    policy
        moscot's subset policy: ``"sequential"`` solves consecutive time points; ``"explicit"`` the pairs in
        ``subset``; ``"triu"`` every ordered pair.
    subset
        The pairs for ``policy="explicit"``.
    scale_cost
        How moscot rescales the cost matrix.
    threshold, max_iterations
        Sinkhorn convergence threshold and iteration cap (moscot's defaults: ``1e-3`` and ott's default).

    Returns
    -------
    TemporalProblem
        The solved problem. Subproblems are keyed by float time pairs, e.g. ``problem[10.0, 10.5]``.
    """
    from moscot.problems.time import TemporalProblem

    if obsm_key is not None:
        if obsm_key not in adata.obsm:
            msg = f"adata.obsm has no {obsm_key!r}"
            raise KeyError(msg)
        data = adata.copy()
        joint_attr: str | None = obsm_key
    else:
        data = preprocess(adata, n_pcs=n_pcs, seed=seed, pca=not local_pca)
        joint_attr = None if local_pca else "X_pca"
    data.obs[time_key] = pd.to_numeric(np.asarray(data.obs[time_key]), errors="raise").astype(float)

    problem = TemporalProblem(data)
    prepare_kwargs: dict[str, Any] = {}
    if growth_key is not None:
        growth = np.asarray(data.obs[growth_key], dtype=float)
        if not np.all(np.isfinite(growth)) or np.any(growth <= 0):
            msg = f"adata.obs[{growth_key!r}] must be positive and finite"
            raise ValueError(msg)
        data.obs["_log_prior_growth"] = np.log(growth)
        problem.proliferation_key = "_log_prior_growth"
        prepare_kwargs["marginal_kwargs"] = {"scaling": 1.0}
    if joint_attr is None:
        prepare_kwargs["xy_callback"] = "local-pca"
        prepare_kwargs["xy_callback_kwargs"] = {"n_comps": n_pcs, "random_state": seed}
    if subset is not None:
        prepare_kwargs["subset"] = [(float(s), float(t)) for s, t in subset]
    problem = problem.prepare(time_key=time_key, joint_attr=joint_attr, policy=policy, **prepare_kwargs)
    problem = problem.solve(
        epsilon=epsilon,
        tau_a=tau_a,
        tau_b=tau_b,
        scale_cost=scale_cost,
        threshold=threshold,
        max_iterations=max_iterations,
    )
    for key, solution in problem.solutions.items():
        if not bool(solution.converged):
            logger.warning("moscot: the Sinkhorn solve for %s did not converge", key)
    return problem


def _pair(problem: TemporalProblem, source_time: float, target_time: float) -> tuple[float, float]:
    """The key of the subproblem ``(source_time, target_time)`` as moscot stores it (float times)."""
    for src, tgt in problem.problems:
        if np.isclose(float(src), float(source_time)) and np.isclose(float(tgt), float(target_time)):
            return src, tgt
    msg = f"no subproblem ({source_time}, {target_time}); solved pairs: {list(problem.problems)}"
    raise KeyError(msg)


def _time(problem: TemporalProblem, value: float) -> float:
    """``value`` as it appears among the problem's time points."""
    for src, tgt in problem.problems:
        for t in (src, tgt):
            if np.isclose(float(t), float(value)):
                return t
    msg = f"time {value} is not a time point of the problem"
    raise KeyError(msg)


def coupling(problem: TemporalProblem, source_time: float, target_time: float) -> tuple[np.ndarray, pd.Index, pd.Index]:
    """The dense transport plan of one solved subproblem.

    Parameters
    ----------
    problem
        A solved problem from :func:`solve_temporal`.
    source_time, target_time
        A solved pair (consecutive time points with ``policy="sequential"``).

    Returns
    -------
    plan : numpy.ndarray
        ``n_source x n_target`` plan (float64). Unbalanced plans do not sum to 1; their row/column sums are the
        posterior marginals.
    source_names, target_names : pandas.Index
        ``obs_names`` of the source and target cells, in the plan's row and column order (the obs order of
        each time point).
    """
    sub = problem[_pair(problem, source_time, target_time)]
    plan = np.asarray(sub.solution.transport_matrix, dtype=np.float64)
    return plan, sub.adata_src.obs_names.copy(), sub.adata_tgt.obs_names.copy()


def _groups_at(problem: TemporalProblem, groupby: str, time: float) -> list[Any]:
    """Categories of ``obs[groupby]`` that occur at ``time``, in category order."""
    obs = problem.adata.obs
    if not isinstance(obs[groupby].dtype, pd.CategoricalDtype):
        obs[groupby] = obs[groupby].astype("category")
    present = set(obs.loc[np.isclose(obs[problem.temporal_key].to_numpy(float), float(time)), groupby])
    return [c for c in obs[groupby].cat.categories if c in present]


def transition_matrix(
    problem: TemporalProblem,
    source_time: float,
    target_time: float,
    groupby: str,
    forward: bool = True,
    *,
    target_groupby: str | None = None,
) -> pd.DataFrame:
    """Group-to-group transitions with moscot's ``cell_transition``.

    Parameters
    ----------
    problem
        A solved problem from :func:`solve_temporal`.
    source_time, target_time
        Any pair connected by the policy; non-consecutive pairs chain the intermediate maps (moscot's push/pull
        with the mass renormalised to 1 at each step and no marginal scaling).
    groupby
        Categorical (or castable) column of ``problem.adata.obs`` for the source groups.
    forward
        ``True``: where each source group's mass goes (rows sum to 1). ``False``: where each target group's mass
        comes from (moscot's backward transition; columns sum to 1).
    target_groupby
        Column for the target groups (default ``groupby``).

    Returns
    -------
    pandas.DataFrame
        Source groups (rows) x target groups (columns), only groups present at the respective time, in category
        order. Normalisation: see the module docstring.
    """
    target_groupby = groupby if target_groupby is None else target_groupby
    src = _time(problem, source_time)
    tgt = _time(problem, target_time)
    source_groups = {groupby: _groups_at(problem, groupby, src)}
    target_groups = {target_groupby: _groups_at(problem, target_groupby, tgt)}
    tm = problem.cell_transition(
        src,
        tgt,
        source_groups=source_groups,
        target_groups=target_groups,
        forward=forward,
        key_added=None,
    )
    return tm.astype(float)


def aggregate_plan(
    plan: np.ndarray,
    source_labels: Sequence[Any] | pd.Series,
    target_labels: Sequence[Any] | pd.Series,
    *,
    source_groups: Sequence[Any] | None = None,
    target_groups: Sequence[Any] | None = None,
    forward: bool = True,
) -> pd.DataFrame:
    """Group-to-group transitions of any plan with the normalisation of moscot's ``cell_transition``.

    For comparing a plan from elsewhere (WOT's, trajvi's) with :func:`transition_matrix` on equal terms.

    Parameters
    ----------
    plan
        ``n_source x n_target`` non-negative plan.
    source_labels, target_labels
        Group of each source (row) and target (column) cell.
    source_groups, target_groups
        Groups to report, in this order (default: sorted unique labels).
    forward
        ``True``: ``M[g, h] = sum_{i in g, j in h} T_ij / sum_{i in g, j} T_ij`` (rows sum to 1). ``False``: the
        same sums divided by each target group's total (columns sum to 1), as moscot's backward transition.

    Returns
    -------
    pandas.DataFrame
        Source groups x target groups.
    """
    src = np.asarray(source_labels, dtype=object)
    tgt = np.asarray(target_labels, dtype=object)
    source_groups = sorted(set(src)) if source_groups is None else list(source_groups)
    target_groups = sorted(set(tgt)) if target_groups is None else list(target_groups)
    rows = (src[:, None] == np.asarray(source_groups, dtype=object)[None, :]).astype(float)
    cols = (tgt[:, None] == np.asarray(target_groups, dtype=object)[None, :]).astype(float)
    sums = rows.T @ np.asarray(plan, dtype=np.float64) @ cols
    sums = sums / sums.sum(axis=1, keepdims=True) if forward else sums / sums.sum(axis=0, keepdims=True)
    return pd.DataFrame(sums, index=pd.Index(source_groups), columns=pd.Index(target_groups))


def push(
    problem: TemporalProblem,
    source_time: float,
    target_time: float,
    weights: np.ndarray | str,
    *,
    scale_by_marginals: bool = True,
) -> np.ndarray:
    """Push weights on the source cells forward to the target cells (moscot's ``push``).

    Parameters
    ----------
    problem
        A solved problem from :func:`solve_temporal`.
    source_time, target_time
        Connected time points (chained through intermediate maps when not consecutive).
    weights
        Non-negative weights over the source cells in their obs order (``n_source`` or ``n_source x d``), or a
        numeric column of ``obs``. moscot divides each column by its sum first.
    scale_by_marginals
        moscot's default ``True``: divide by the posterior source marginal ``a`` before each step, so every source
        cell spreads its weight by its conditional ``T_ij / a_i``. ``False``: ``T^T x``, i.e. weighted by each
        cell's transported mass (the growth-weighted push that ``cell_transition`` uses).

    Returns
    -------
    numpy.ndarray
        The pushed mass over the target cells (their obs order), shape ``(n_target,)`` or ``(n_target, d)``.
    """
    src = _time(problem, source_time)
    tgt = _time(problem, target_time)
    out = problem.push(src, tgt, data=weights, scale_by_marginals=scale_by_marginals, key_added=None, return_all=False)
    arr = np.asarray(out, dtype=np.float64)
    return arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr


def pull(
    problem: TemporalProblem,
    source_time: float,
    target_time: float,
    weights: np.ndarray | str,
    *,
    scale_by_marginals: bool = True,
) -> np.ndarray:
    """Pull weights on the target cells back to the source cells (moscot's ``pull``).

    Parameters
    ----------
    problem
        A solved problem from :func:`solve_temporal`.
    source_time, target_time
        Connected time points (chained when not consecutive).
    weights
        Non-negative weights over the *target* cells (obs order), ``n_target`` or ``n_target x d``, or an obs column.
    scale_by_marginals
        moscot's default ``True``: divide by the posterior target marginal ``b`` before each step (conditional
        ``T_ij / b_j``); ``False``: plain ``T y``.

    Returns
    -------
    numpy.ndarray
        The pulled mass over the source cells (obs order), shape ``(n_source,)`` or ``(n_source, d)``.
    """
    src = _time(problem, source_time)
    tgt = _time(problem, target_time)
    out = problem.pull(src, tgt, data=weights, scale_by_marginals=scale_by_marginals, key_added=None, return_all=False)
    arr = np.asarray(out, dtype=np.float64)
    return arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr


def cell_fates(
    problem: TemporalProblem,
    source_time: float,
    target_time: float,
    groupby: str,
    cells: Sequence[str] | pd.Index | None = None,
    *,
    scale_by_marginals: bool = False,
) -> pd.DataFrame:
    """Per source cell, the distribution of its pushed mass over the target groups.

    Each selected source cell's indicator is pushed (moscot's push, chained when not consecutive) and the mass
    arriving at the target time is summed per group of ``obs[groupby]`` and divided by its total. With
    ``scale_by_marginals=False`` (default) this is moscot's ``cell_transition(..., aggregation_mode="cell")``.

    Parameters
    ----------
    problem
        A solved problem from :func:`solve_temporal`.
    source_time, target_time
        Connected time points.
    groupby
        Column of ``problem.adata.obs`` with the target groups.
    cells
        ``obs_names`` of cells at ``source_time`` (default: all of them).
    scale_by_marginals
        Passed to :func:`push` (matters only for chained pushes).

    Returns
    -------
    pandas.DataFrame
        Cells (rows, in the given order) x target groups present at ``target_time`` (category order); rows sum to 1.
    """
    src = _time(problem, source_time)
    tgt = _time(problem, target_time)
    obs = problem.adata.obs
    times = obs[problem.temporal_key].to_numpy(float)
    source_names = obs.index[np.isclose(times, float(src))]
    target_obs = obs.loc[np.isclose(times, float(tgt))]
    cells = source_names if cells is None else pd.Index(cells)
    missing = cells.difference(source_names)
    if len(missing):
        msg = f"{len(missing)} cells are not at time {src}, e.g. {list(missing[:3])}"
        raise KeyError(msg)
    indicator = np.zeros((len(source_names), len(cells)))
    indicator[source_names.get_indexer(cells), np.arange(len(cells))] = 1.0
    mass = push(problem, src, tgt, indicator, scale_by_marginals=scale_by_marginals)
    if mass.ndim == 1:
        mass = mass[:, None]
    groups = _groups_at(problem, groupby, tgt)
    onehot = (target_obs[groupby].to_numpy()[:, None] == np.asarray(groups, dtype=object)[None, :]).astype(float)
    per_group = mass.T @ onehot
    per_group /= per_group.sum(axis=1, keepdims=True)
    return pd.DataFrame(per_group, index=cells, columns=pd.Index(groups, name=groupby))


def growth_rates(problem: TemporalProblem, source_time: float, target_time: float) -> pd.DataFrame:
    """Posterior growth of each source cell of one solved pair.

    Parameters
    ----------
    problem
        A solved problem from :func:`solve_temporal`.
    source_time, target_time
        A solved pair.

    Returns
    -------
    pandas.DataFrame
        Indexed by the source cells' ``obs_names`` with columns

        * ``prior_marginal`` - moscot's source marginal ``a_i`` (uniform ``1/n`` unless ``growth_key`` was given),
        * ``posterior_marginal`` - the plan's row sum ``r_i``,
        * ``mass_ratio`` - ``r_i / a_i``: how much more (or less) mass the cell sends than it was given over the
          interval (its relative growth; the plan's total mass is not fixed when unbalanced, so the mean of this
          ratio is the plan's total mass, not 1),
        * ``growth_per_unit_time`` - ``mass_ratio ** (1 / dt)``,
        * ``moscot_posterior_growth`` - moscot's ``posterior_growth_rates``: ``(r_i * sum_k g_k^dt) ** (1/dt)``,
          meaningful only with a ``growth_key`` prior (with uniform marginals moscot's scaling constant stays 1 and
          the value is ``r_i ** (1/dt)``).
    """
    key = _pair(problem, source_time, target_time)
    sub = problem[key]
    dt = float(key[1]) - float(key[0])
    prior = np.asarray(sub.a, dtype=np.float64) if sub.a is not None else None
    n = sub.adata_src.n_obs
    if prior is None:
        prior = np.full(n, 1.0 / n)
    posterior = np.asarray(sub.solution.a, dtype=np.float64)
    ratio = posterior / prior
    moscot_growth = sub.posterior_growth_rates
    return pd.DataFrame(
        {
            "prior_marginal": prior,
            "posterior_marginal": posterior,
            "mass_ratio": ratio,
            "growth_per_unit_time": ratio ** (1.0 / dt),
            "moscot_posterior_growth": np.asarray(moscot_growth, dtype=np.float64).ravel(),
        },
        index=sub.adata_src.obs_names.copy(),
    )
