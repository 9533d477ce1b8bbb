"""Leave-one-group-out selection of the velocity field's residual penalty, inside the training data."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trajvi._logging import logger
from trajvi.dynamics import simulate, time_grid
from trajvi.module import VelocityField, flow_matching_loss
from trajvi.train import Segment, draw_pairs

#: Residual penalties compared by default; the largest makes the field a pure time-dependent shift.
DEFAULT_PENALTIES: tuple[float, ...] = (0.0, 1.0, 10.0, 1e4)


@dataclass
class Fold:
    """One validation fold: segments to fit on, cells to push and the real cells they should reach."""

    name: str
    segments: list[Segment]
    z_start: np.ndarray
    t_start: float
    t_end: float
    z_truth: np.ndarray


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (Euclidean) between two sets of points."""
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def fit_field(
    field: VelocityField,
    segments: list[Segment],
    *,
    residual_penalty: float,
    n_epochs: int,
    pairs_per_epoch: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> VelocityField:
    """Fit a velocity field by flow matching with a plain Adam loop (used for the validation folds)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(field.parameters(), lr=lr)
    field.train()
    for _ in range(n_epochs):
        z0, z1, t0, t1 = draw_pairs(segments, pairs_per_epoch, rng)
        order = torch.randperm(z0.shape[0], generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            tau = torch.rand(len(idx), 1, generator=gen)
            loss, _, _ = flow_matching_loss(
                field, z0[idx], z1[idx], t0[idx], t1[idx], residual_penalty=residual_penalty, tau=tau
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    field.eval()
    return field


def select_residual_penalty(
    template: VelocityField,
    folds: Sequence[Fold],
    *,
    penalties: Sequence[float] = DEFAULT_PENALTIES,
    n_epochs: int,
    pairs_per_epoch: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_cells: int = 500,
    progress: Callable[[str], None] | None = None,
) -> tuple[float, dict[str, dict[str, float]]]:
    """Pick the residual penalty whose fields, fit without each fold's cells, best reach those cells.

    Each fold's field is fit on the other groups (or time points), pushes the fold's source cells to the
    target time (Euler, 20 steps) and is scored by the energy distance to the fold's real target cells in
    the latent. The penalty with the smallest mean distance wins; ties go to the larger penalty (the
    simpler field).

    Returns
    -------
    The chosen penalty and the table ``{str(penalty): {fold name: distance, ..., "mean": mean}}``.
    """
    if not folds:
        msg = "no validation folds"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    table: dict[str, dict[str, float]] = {}
    for penalty in penalties:
        scores: dict[str, float] = {}
        for fold in folds:
            field = copy.deepcopy(template)
            fit_field(
                field,
                fold.segments,
                residual_penalty=penalty,
                n_epochs=n_epochs,
                pairs_per_epoch=pairs_per_epoch,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
            )
            start = fold.z_start
            if len(start) > max_cells:
                start = start[rng.choice(len(start), max_cells, replace=False)]
            truth = fold.z_truth
            if len(truth) > max_cells:
                truth = truth[rng.choice(len(truth), max_cells, replace=False)]
            path = simulate(field, torch.as_tensor(start, dtype=torch.float32), time_grid(fold.t_start, fold.t_end, 20))
            scores[fold.name] = energy_distance(path[-1], torch.as_tensor(truth, dtype=torch.float32))
        scores["mean"] = float(np.mean([scores[f.name] for f in folds]))
        table[str(penalty)] = scores
        if progress is not None:
            progress(f"residual penalty {penalty:g}: mean held-out energy distance {scores['mean']:.4f}")
    best = min(penalties, key=lambda p: (round(table[str(p)]["mean"], 6), -p))
    logger.info(
        "Leave-one-out validation chose residual_penalty=%g (held-out energy distance %.4f; pure shift %.4f).",
        best,
        table[str(best)]["mean"],
        table[str(max(penalties))]["mean"],
    )
    return float(best), table
