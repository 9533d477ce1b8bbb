"""Leave-one-out selection of the velocity field's residual penalty, inside the training data."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi.utils import track

from trajvi._logging import logger
from trajvi.dynamics import simulate, time_grid
from trajvi.metrics import energy_distance_unbiased, subsample
from trajvi.train import PairDataModule, VelocityFitSettings, fit_velocity_field

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trajvi.module import VelocityField

    from ._paths import Fold

#: Residual penalties compared by default; the largest makes the field a pure time-dependent shift.
DEFAULT_PENALTIES: tuple[float, ...] = (0.0, 1.0, 10.0, 1e4)


def score_fold(field: VelocityField, fold: Fold, z_start: np.ndarray, z_truth: np.ndarray) -> float:
    """Unbiased energy distance in the latent between the fold's start cells pushed by ``field`` and its truth.

    The start cells are integrated under the fold's condition from its start to its end time (Euler, 20 steps).
    """
    device = next(field.parameters()).device
    start = torch.as_tensor(z_start, dtype=torch.float32, device=device)
    with torch.no_grad():
        weights = None if fold.weights is None else torch.as_tensor(fold.weights, dtype=torch.float32, device=device)
        c = field.condition(weights, 1)
    path = simulate(field.bind(c), start, time_grid(fold.t_start, fold.t_end, 20))
    return energy_distance_unbiased(path[-1].cpu().numpy(), z_truth, max_cells=None)


def select_residual_penalty(
    template: VelocityField,
    folds: Sequence[Fold],
    *,
    settings: VelocityFitSettings,
    penalties: Sequence[float] = DEFAULT_PENALTIES,
    n_epochs: int,
    pairs_per_epoch: int,
    batch_size: int,
    seed: int,
    max_cells: int = 500,
    progress: Callable[[str], None] | None = None,
    progress_bar: bool = False,
) -> tuple[float, dict[str, dict[str, float]]]:
    """Pick the residual penalty whose fields, fit without each fold's cells, best reach those cells.

    For every penalty and fold, a copy of ``template`` is fit on the fold's segments with
    :func:`~trajvi.train.fit_velocity_field` (the same step, optimizer, clipping and guards as the final
    fit, from ``settings``), pushes the fold's start cells to the end time, and is scored by the unbiased
    energy distance to the fold's real cells in the latent (:func:`score_fold`). Every fit starts from the
    same initial field, draws the same pairs and the same interpolation times (one seed), and is scored on
    the same subsample of at most ``max_cells`` cells per side, so the penalties are compared on equal
    terms. The penalty with the smallest mean distance wins; ties go to the larger penalty (the simpler
    field). The fits draw nothing from the global random state.

    ``progress`` receives one line per penalty (its mean distance); ``progress_bar`` shows a bar over the
    ``len(penalties) * len(folds)`` fits (scvi-tools' style, ``scvi.settings.progress_bar_style``).

    Returns
    -------
    The chosen penalty and the table ``{str(penalty): {fold name: distance, ..., "mean": mean}}``.
    """
    if not folds:
        msg = "no validation folds"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    cells = [(subsample(f.z_start, max_cells, rng), subsample(f.z_truth, max_cells, rng)) for f in folds]
    fits = [(i, penalty, j) for i, penalty in enumerate(penalties) for j in range(len(folds))]
    bar = track(fits, description="Residual penalty", disable=not progress_bar)
    table: dict[str, dict[str, float]] = {}
    for i, penalty, j in bar:
        fold, (z_start, z_truth) = folds[j], cells[j]
        scores = table.setdefault(str(penalty), {})
        field = copy.deepcopy(template)
        data = PairDataModule(fold.segments, pairs_per_epoch=pairs_per_epoch, batch_size=batch_size, seed=seed)
        fit_velocity_field(field, data, max_epochs=n_epochs, settings=settings.with_penalty(penalty))
        scores[fold.name] = score_fold(field, fold, z_start, z_truth)
        if j < len(folds) - 1:
            continue
        scores["mean"] = float(np.mean([scores[f.name] for f in folds]))
        if progress is not None:
            progress(
                f"residual penalty {penalty:g} ({i + 1} of {len(penalties)}): "
                f"mean held-out energy distance {scores['mean']:.4f}"
            )
    best = min(penalties, key=lambda p: (round(table[str(p)]["mean"], 6), -p))
    logger.info(
        "Leave-one-out validation chose residual_penalty=%g (held-out energy distance %.4f; pure shift %.4f).",
        best,
        table[str(best)]["mean"],
        table[str(max(penalties))]["mean"],
    )
    return float(best), table
