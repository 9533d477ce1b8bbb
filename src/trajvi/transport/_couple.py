"""``couple``: the optimal-transport plan between two point clouds, with squared-Euclidean cost.

The cost is divided by its mean before solving, so ``epsilon`` (entropic methods) is relative to the
typical squared distance between the two sets: ``epsilon=0.05`` blurs the plan over neighbours
within about 5% of that distance, whatever the units of the latent. The mean, rather than the max,
keeps one outlier from shrinking the effective ``epsilon`` of every other cell.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import ot
import torch
from scipy.special import logsumexp

from trajvi._logging import logger
from trajvi._types import OT_METHODS, OTMethod, check_option

from ._standardize import check_point_set

_EMD_OPTIMAL = 1  # POT's network-simplex result code for an optimal plan
_SINKHORN_TOL = 1e-6  # stop when the row scalings change the plan's mass by less (L1) in one iteration
_STAGE_TOL = 1e-2  # looser tolerance of the epsilon-scaling stages before the last
_ABSORB = 50.0  # rebuild the Sinkhorn kernel once a log-scaling drifts this far from the absorbed one
_MARGINAL_TOL = 1e-4  # largest L1 marginal error accepted in a balanced plan (total mass 1)
_INDEPENDENT_TV = 1e-2  # an entropic plan this close (total variation) to a b^T counts as uniform
_HINT = "Try a larger epsilon, method='exact', or standardizing the sets."


def couple(
    x_source: np.ndarray,
    x_target: np.ndarray,
    *,
    method: OTMethod = "exact",
    epsilon: float = 0.05,
    reg_m: float = 1.0,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    max_iter: int = 1_000_000,
    max_iter_entropic: int = 10_000,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Optimal-transport plan ``(n_source, n_target)`` between two point clouds with squared-Euclidean cost.

    Parameters
    ----------
    x_source
        Source points, ``(n_source, n_dims)``.
    x_target
        Target points, ``(n_target, n_dims)``.
    method
        ``"exact"``: the unregularised plan (network simplex; sparse, at most ``n_source + n_target - 1``
        non-zero entries). ``"sinkhorn"``: entropic OT (dense plan), by stabilised log-domain Sinkhorn
        with epsilon scaling. ``"unbalanced"``: the same with the marginals only penalised (KL, weight
        ``reg_m``), so cells without a counterpart lose mass.
    epsilon
        Entropic regularisation of ``"sinkhorn"`` and ``"unbalanced"``, relative to the mean cost.
    reg_m
        Weight of the marginal penalty of ``"unbalanced"``; larger is closer to balanced.
    a
        Source weights (default uniform); normalised to sum 1 for the balanced methods.
    b
        Target weights (default uniform); normalised to sum 1 for the balanced methods.
    max_iter
        Iteration cap of the exact solver (network-simplex pivots).
    max_iter_entropic
        Iteration cap of the Sinkhorn solvers.
    device
        Where the Sinkhorn iterations of ``"sinkhorn"`` and ``"unbalanced"`` run: ``None`` in numpy, or a
        torch device (``"cuda"``, ``"cpu"``) in float64 torch, the same algorithm (a GPU solves a
        ``4096 x 4096`` block in tens of milliseconds). The cost, the checks and the returned plan stay in
        numpy; ``"exact"`` always runs on the CPU (POT's network simplex).

    Returns
    -------
    The plan as a dense float64 array; for the balanced methods its rows sum to ``a`` and its columns
    to ``b`` (total mass 1). Zero-weight cells get zero rows or columns.

    Raises
    ------
    ValueError
        On invalid points (not 2-D, empty, NaN/Inf, different numbers of columns), weights or options.
    RuntimeError
        When the exact solver stops before optimality, or a plan comes out non-finite, without mass, or
        (balanced) off its marginals by more than 1e-4 in L1.

    Notes
    -----
    Degenerate cases are answered explicitly, never by a silent uniform or NaN plan: when all points of
    both sets are identical, every plan is optimal and the independent coupling ``a b^T`` (scaled to
    mass ``sqrt(sum(a) sum(b))`` for ``"unbalanced"``) is returned with a logged warning; a balanced
    problem with one cell on a side has a single feasible plan, the other side's weights. A warning is
    also logged when Sinkhorn stops at ``max_iter_entropic`` (but passes the checks), and when an
    entropic plan is numerically ``a b^T`` although the cost is not constant (``epsilon`` too large).
    """
    x_source = check_point_set(x_source, name="source set (x_source)")
    x_target = check_point_set(x_target, name="target set (x_target)")
    if x_source.shape[1] != x_target.shape[1]:
        msg = (
            f"x_source and x_target must have the same number of columns; "
            f"got {x_source.shape[1]} and {x_target.shape[1]}."
        )
        raise ValueError(msg)
    _check_options(method, epsilon, reg_m, max_iter, max_iter_entropic)
    balanced = method != "unbalanced"
    a = _check_weights(a, x_source.shape[0], name="a", side="source", normalize=balanced)
    b = _check_weights(b, x_target.shape[0], name="b", side="target", normalize=balanced)

    if balanced and min(a.size, b.size) == 1:
        return np.outer(a, b)  # the only plan with these marginals
    identical = np.all(x_source == x_source[0]) and np.all(x_target == x_source[0])
    if not identical:
        # The cost is shift-invariant: computing it near the origin limits rounding in |x|^2 + |y|^2 - 2 x.y.
        center = (x_source.mean(axis=0) + x_target.mean(axis=0)) / 2
        cost = ot.dist(x_source - center, x_target - center)
        scale = cost.mean()
    if identical or not scale > 0:
        logger.warning(
            "All %d source and %d target points are identical: every plan is optimal; "
            "returning the independent coupling a b^T.",
            a.size,
            b.size,
        )
        return np.outer(a, b) / np.sqrt(a.sum() * b.sum())
    cost /= scale

    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    full = rows.size == a.size and cols.size == b.size
    sub_cost = cost if full else cost[np.ix_(rows, cols)]
    if method == "exact":
        sub_plan, converged = _solve_exact(sub_cost, a[rows], b[cols], max_iter), True
    else:
        unbalanced_reg = None if method == "sinkhorn" else reg_m
        solver = _sinkhorn if device is None else partial(_sinkhorn_torch, device=device)
        sub_plan, converged = solver(sub_cost, a[rows], b[cols], epsilon, unbalanced_reg, max_iter_entropic)
    if full:
        plan = sub_plan
    else:
        plan = np.zeros((a.size, b.size))
        plan[np.ix_(rows, cols)] = sub_plan

    _check_plan(plan, a, b, method=method, epsilon=epsilon, reg_m=reg_m)
    if not converged:
        logger.warning(
            "The %s solver stopped at max_iter_entropic=%d before reaching its tolerance; "
            "the plan passed the checks, but a larger epsilon converges faster.",
            method,
            max_iter_entropic,
        )
    if method != "exact":
        _warn_if_independent(plan, a, b, cost, method=method, epsilon=epsilon)
    return plan


def _check_options(method: str, epsilon: float, reg_m: float, max_iter: int, max_iter_entropic: int) -> None:
    check_option(method, OT_METHODS, "method")
    if not (np.isfinite(epsilon) and epsilon > 0):
        msg = f"epsilon must be a finite number > 0 (relative to the mean squared distance); got {epsilon}."
        raise ValueError(msg)
    if not (np.isfinite(reg_m) and reg_m > 0):
        msg = f"reg_m must be a finite number > 0 (larger keeps more mass); got {reg_m}."
        raise ValueError(msg)
    for name, value in (("max_iter", max_iter), ("max_iter_entropic", max_iter_entropic)):
        if int(value) != value or value < 1:
            msg = f"{name} must be a positive integer; got {value}."
            raise ValueError(msg)


def _check_weights(w: np.ndarray | None, n: int, *, name: str, side: str, normalize: bool) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        msg = f"{name} must be a 1-D array with one weight per {side} cell ({n}); got shape {w.shape}."
        raise ValueError(msg)
    if not np.all(np.isfinite(w)):
        msg = f"{name} must be finite; got {np.count_nonzero(~np.isfinite(w))} NaN/Inf weight(s)."
        raise ValueError(msg)
    if np.any(w < 0):
        msg = f"{name} must be non-negative; got {np.count_nonzero(w < 0)} negative weight(s) (smallest {w.min():.3g})."
        raise ValueError(msg)
    total = w.sum()
    if not total > 0:
        msg = f"{name} must have a positive sum; all {n} {side} weights are 0."
        raise ValueError(msg)
    return w / total if normalize else w.copy()


def _solve_exact(cost: np.ndarray, a: np.ndarray, b: np.ndarray, max_iter: int) -> np.ndarray:
    # No warnings.catch_warnings() here: couple_sets solves blocks in threads, and catch_warnings is not
    # thread-safe before Python 3.14 (two threads inside it at once left an 'ignore UserWarning' filter behind for
    # the rest of the process). POT warns only when the plan is not optimal, which raises just below.
    plan, log = ot.emd(a, b, np.ascontiguousarray(cost), numItermax=max_iter, log=True)
    if log["result_code"] != _EMD_OPTIMAL:
        msg = (
            f"The exact OT solver stopped without an optimal plan: {log['warning']} "
            f"(max_iter={max_iter}). Increase max_iter, or use method='sinkhorn'."
        )
        raise RuntimeError(msg)
    return plan


def _sinkhorn(
    cost: np.ndarray, a: np.ndarray, b: np.ndarray, epsilon: float, reg_m: float | None, max_iter: int
) -> tuple[np.ndarray, bool]:
    """Entropic OT by stabilised log-domain Sinkhorn with epsilon scaling; ``reg_m=None`` is balanced.

    Minimises ``<P, C> + epsilon KL(P | a b^T)`` under ``P 1 = a``, ``P^T 1 = b`` (balanced), or plus
    ``reg_m KL(P 1 | a) + reg_m KL(P^T 1 | b)`` instead of the constraints (unbalanced). The solution is
    ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / epsilon)``. The potentials ``f, g`` are first solved at
    ``epsilon`` = 1, 1/2, 1/4, ... (the cost has mean 1) to a loose tolerance, each stage starting from
    the last: small epsilons then need far fewer iterations. ``max_iter`` caps all stages together.
    """
    log_a, log_b = np.log(a), np.log(b)
    f, g, converged = _epsilon_scaling(
        _sinkhorn_stage, cost, log_a, log_b, np.zeros(a.size), np.zeros(b.size), epsilon, reg_m, max_iter
    )
    return np.exp(log_a[:, None] + log_b + (f[:, None] + g - cost) / epsilon), converged


def _epsilon_scaling(
    stage_fn: Any, cost: Any, log_a: Any, log_b: Any, f: Any, g: Any, epsilon: float, reg_m: float | None, max_iter: int
) -> tuple[Any, Any, bool]:
    """Solve the potentials at epsilon = 1, 1/2, 1/4, ... then ``epsilon``, each stage from the last.

    ``stage_fn`` is one stage's solver (numpy or torch arrays alike); returns ``f``, ``g`` and whether the
    final stage converged within ``max_iter`` iterations in all.
    """
    stages = [e for e in 0.5 ** np.arange(60) if e > epsilon] + [epsilon]
    n_iter, converged, final = 0, False, False
    for stage in stages:
        final = stage == epsilon
        damping = 1.0 if reg_m is None else reg_m / (reg_m + stage)
        tol = _SINKHORN_TOL if final else _STAGE_TOL
        phi, psi, used, converged = stage_fn(
            cost / stage, log_a, log_b, f / stage, g / stage, damping, tol, max_iter - n_iter
        )
        f, g, n_iter = phi * stage, psi * stage, n_iter + used
        if n_iter >= max_iter:
            break
    return f, g, converged and final


def _sinkhorn_stage(
    scaled: np.ndarray,
    log_a: np.ndarray,
    log_b: np.ndarray,
    phi: np.ndarray,
    psi: np.ndarray,
    damping: float,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Sinkhorn iterations on ``scaled = C / epsilon`` from the log-scalings ``phi, psi``.

    Each half-step is ``phi_i = -damping * logsumexp_j(log b_j + psi_j - scaled_ij)`` (and the same for
    ``psi``), with ``damping = 1`` for balanced OT and ``reg_m / (reg_m + epsilon)`` for unbalanced. The
    current log-scalings are absorbed into a kernel so that most steps are two matrix-vector products; a
    step whose scalings drift beyond ``exp(+-_ABSORB)`` of the kernel's, or under/overflow, is redone as
    an exact log-sum-exp step and the kernel rebuilt, so a small epsilon does not give NaN.
    """
    a, b = np.exp(log_a), np.exp(log_b)
    kernel = phi_0 = psi_0 = None
    for n_iter in range(1, max_iter + 1):
        if kernel is None:
            phi_new = -damping * logsumexp(log_b + psi - scaled, axis=1)
            psi_new = -damping * logsumexp(log_a[:, None] + phi_new[:, None] - scaled, axis=0)
            phi_0, psi_0 = phi_new, psi_new
            kernel = np.exp(phi_0[:, None] + psi_0 - scaled)
        else:
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                phi_new = -damping * (np.log(kernel @ (b * np.exp(psi - psi_0))) - phi_0)
                psi_new = -damping * (np.log(kernel.T @ (a * np.exp(phi_new - phi_0))) - psi_0)
                drift = max(np.abs(phi_new - phi_0).max(), np.abs(psi_new - psi_0).max())
            if not drift <= _ABSORB:  # also catches NaN/Inf: the next step is a log-domain one
                kernel = None
                continue
        # Mass-weighted change of the row scalings: for balanced OT, the L1 row-marginal error of (phi, psi).
        change = a @ np.abs(np.expm1(phi - phi_new))
        phi, psi = phi_new, psi_new
        if change < tol:
            return phi, psi, n_iter, True
    return phi, psi, max_iter, False


def _sinkhorn_torch(
    cost: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    epsilon: float,
    reg_m: float | None,
    max_iter: int,
    *,
    device: str | torch.device,
) -> tuple[np.ndarray, bool]:
    """:func:`_sinkhorn` in float64 torch on ``device``; returns the plan as a numpy array."""
    device = torch.device(device)
    as_tensor = partial(torch.as_tensor, dtype=torch.float64, device=device)
    cost_t = as_tensor(cost)
    log_a, log_b = torch.log(as_tensor(a)), torch.log(as_tensor(b))
    with torch.inference_mode():
        f, g, converged = _epsilon_scaling(
            _sinkhorn_stage_torch,
            cost_t,
            log_a,
            log_b,
            torch.zeros_like(log_a),
            torch.zeros_like(log_b),
            epsilon,
            reg_m,
            max_iter,
        )
        plan = torch.exp(log_a[:, None] + log_b + (f[:, None] + g - cost_t) / epsilon)
    return plan.cpu().numpy(), converged


def _sinkhorn_stage_torch(
    scaled: torch.Tensor,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    phi: torch.Tensor,
    psi: torch.Tensor,
    damping: float,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
    """:func:`_sinkhorn_stage` in torch, with one host synchronisation per iteration."""
    a, b = torch.exp(log_a), torch.exp(log_b)
    kernel = phi_0 = psi_0 = None
    for n_iter in range(1, max_iter + 1):
        if kernel is None:
            phi_new = -damping * torch.logsumexp(log_b + psi - scaled, dim=1)
            psi_new = -damping * torch.logsumexp(log_a[:, None] + phi_new[:, None] - scaled, dim=0)
            phi_0, psi_0 = phi_new, psi_new
            kernel = torch.exp(phi_0[:, None] + psi_0 - scaled)
            change = float(a @ torch.abs(torch.expm1(phi - phi_new)))
        else:
            assert phi_0 is not None and psi_0 is not None  # set with the kernel
            phi_new = -damping * (torch.log(kernel @ (b * torch.exp(psi - psi_0))) - phi_0)
            psi_new = -damping * (torch.log(kernel.T @ (a * torch.exp(phi_new - phi_0))) - psi_0)
            drift = torch.maximum((phi_new - phi_0).abs().max(), (psi_new - psi_0).abs().max())
            drift, change = torch.stack([drift, a @ torch.abs(torch.expm1(phi - phi_new))]).tolist()
            if not drift <= _ABSORB:  # also catches NaN/Inf: the next step is a log-domain one
                kernel = None
                continue
        phi, psi = phi_new, psi_new
        if change < tol:
            return phi, psi, n_iter, True
    return phi, psi, max_iter, False


def _check_plan(plan: np.ndarray, a: np.ndarray, b: np.ndarray, *, method: str, epsilon: float, reg_m: float) -> None:
    n_bad = np.count_nonzero(~np.isfinite(plan))
    if n_bad:
        msg = f"The {method} plan has {n_bad} non-finite entries (epsilon={epsilon}). {_HINT}"
        raise RuntimeError(msg)
    if method == "unbalanced":
        if not plan.sum() > 0:
            msg = (
                f"The unbalanced plan has no mass left (epsilon={epsilon}, reg_m={reg_m}). "
                "Try a larger reg_m or epsilon, or standardizing the sets."
            )
            raise RuntimeError(msg)
        return
    error = np.abs(plan.sum(axis=1) - a).sum() + np.abs(plan.sum(axis=0) - b).sum()
    if error > _MARGINAL_TOL:
        msg = (
            f"The {method} plan misses its marginals by {error:.3g} (L1; tolerance {_MARGINAL_TOL:g}) "
            f"with epsilon={epsilon}. {_HINT}"
        )
        raise RuntimeError(msg)


def _warn_if_independent(
    plan: np.ndarray, a: np.ndarray, b: np.ndarray, cost: np.ndarray, *, method: str, epsilon: float
) -> None:
    """Warn when an entropic plan is numerically ``a b^T`` although the cost could prefer another plan."""
    independent = np.outer(a, b) / (a.sum() * b.sum())
    if 0.5 * np.abs(plan / plan.sum() - independent).sum() >= _INDEPENDENT_TV:
        return
    # A cost of the form u_i + v_j gives every plan the same cost: then a b^T is right, not a symptom.
    residual = cost - cost.mean(axis=1, keepdims=True) - cost.mean(axis=0, keepdims=True) + cost.mean()
    if np.abs(residual).max() <= 1e-9:
        return
    logger.warning(
        "The %s plan is (numerically) the independent coupling a b^T although the cost is not constant: "
        "epsilon=%g is too large relative to the cost scale (costs are divided by their mean). Use a smaller epsilon.",
        method,
        epsilon,
    )
