"""Phase 2 from encoded cells to a trained velocity field: couple, choose the residual penalty, fit.

:meth:`trajvi.TrajVI.train_trajectories` checks its arguments, encodes the cells and calls
:func:`fit_trajectories`; everything after the encoding happens here.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from trajvi._logging import logger
from trajvi.train import PairDataModule, VelocityFitSettings, VelocityTrainingPlan, report_guards

from ._maps import TransportMap, maps_of_segments
from ._paths import build_all_segments, build_folds
from ._selection import DEFAULT_PENALTIES, select_residual_penalty

if TYPE_CHECKING:
    from collections.abc import Sequence

    from scvi.model.base import BaseModelClass

    from ._config import CouplingConfig
    from ._pathset import PathSet

#: Penalty used when no leave-one-out fold exists (a residual as strong as the drift is costly).
FALLBACK_PENALTY = 1.0


@dataclass
class TrajectoryFit:
    """What a phase-2 fit did.

    Attributes
    ----------
    paths
        The trained paths, their times and components.
    residual_penalty
        The penalty the final fit used (chosen, or given).
    validation
        The leave-one-out table ``{str(penalty): {fold: distance, ..., "mean": mean}}`` (``None`` when no
        selection ran).
    timing
        Seconds spent coupling (``coupling_s``: wall time; ``coupling_blocks_s``: sum over blocks, which
        may run at once; ``coupling_block_median_s``: median block), choosing the penalty
        (``selection_s``) and in the final fit (``fit_s``); the number of coupling blocks (``n_blocks``)
        and of pairs per epoch (``pairs_per_epoch``).
    maps
        The coupling of every trained segment, by ``"source->target"`` (:class:`TransportMap`).
    """

    paths: PathSet
    residual_penalty: float
    validation: dict[str, dict[str, float]] | None
    timing: dict[str, float] = field(default_factory=dict)
    maps: dict[str, TransportMap] = field(default_factory=dict)


def fit_trajectories(
    model: BaseModelClass,
    *,
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    keep: np.ndarray,
    paths: PathSet,
    coupling: CouplingConfig,
    doses: np.ndarray | None = None,
    growth: np.ndarray | None = None,
    cell_names: Sequence[str] | np.ndarray | None = None,
    max_folds: int | None = 12,
    settings: VelocityFitSettings,
    residual_penalty: float | Literal["auto"],
    penalties: Sequence[float] = DEFAULT_PENALTIES,
    validation_epochs: int = 30,
    max_epochs: int = 100,
    batch_size: int = 256,
    pairs_per_epoch: int | None = None,
    seed: int = 0,
    plan_kwargs: dict[str, Any] | None = None,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    trainer_kwargs: dict[str, Any] | None = None,
) -> TrajectoryFit:
    """Couple the segments of every path, choose the residual penalty if asked, and fit the model's velocity field.

    One field ``v(z, t, c)`` is trained on the pairs of every segment of every path together; ``c`` is the
    path's composition of the field's components (:class:`PathSet`).

    Parameters
    ----------
    model
        The scvi-tools model whose ``module.velocity`` is trained (its runner class, phase-1 split and
        history are used).
    z, labels, groups, keep
        Latent states, condition names, ``couple_within`` groups (or ``None``) and the usable cells.
    paths
        The paths, their times and components.
    coupling
        How every segment (and every validation fold) is coupled.
    doses
        Dose of each cell (``dose_key``), or ``None``.
    growth
        Prior growth rate of each cell per unit of time (the source marginal of each coupling is
        ``growth ** dt``), or ``None``.
    cell_names
        Name of each cell, for the kept couplings (default: the row numbers).
    max_folds
        Most validation folds (drawn with ``seed`` when there are more).
    settings
        Optimizer and guards of every velocity fit (its ``residual_penalty`` is replaced by the chosen one).
    residual_penalty
        A number, or ``"auto"``: chosen among ``penalties`` by :func:`select_residual_penalty` on the folds of
        :func:`build_folds`, each fit for ``validation_epochs``.
    max_epochs, batch_size, pairs_per_epoch
        The final fit (``pairs_per_epoch`` defaults to the number of source cells, at least 4 batches).
    seed
        Seed of the pair draws and of the validation fits.
    plan_kwargs
        More arguments of :class:`~trajvi.train.VelocityTrainingPlan` for the final fit only.
    accelerator, devices, trainer_kwargs
        Passed to the scvi-tools trainer.
    """
    timing: dict[str, float] = {}
    started = time.perf_counter()
    by_path = build_all_segments(paths, z, labels, groups, keep, coupling, doses=doses, growth=growth)
    segments = [seg for segs in by_path.values() for seg in segs]
    timing["coupling_s"] = time.perf_counter() - started
    block_seconds = np.concatenate([s.coupling.solve_seconds for s in segments])
    timing["coupling_blocks_s"] = float(block_seconds.sum())
    timing["coupling_block_median_s"] = float(np.median(block_seconds))
    timing["n_blocks"] = float(block_seconds.size)
    n_source = sum(len(s.z_source) for s in segments)
    pairs = int(pairs_per_epoch or max(n_source, 4 * batch_size))
    timing["pairs_per_epoch"] = float(pairs)

    module = model.module
    features = None if paths.features is None else paths.features.loc[paths.components].to_numpy(dtype=np.float32)
    module.velocity.set_components(len(paths.components), None if features is None else torch.as_tensor(features))
    all_times = [t for times in paths.times.values() for t in times]
    module.velocity.set_time_range(min(all_times), max(all_times))

    table = None
    started = time.perf_counter()
    if residual_penalty == "auto":
        folds = build_folds(
            paths,
            by_path,
            z,
            labels,
            groups,
            keep,
            coupling,
            doses=doses,
            growth=growth,
            max_folds=max_folds,
            seed=seed,
        )
        if folds:
            logger.info(
                "Choosing the residual penalty among %s by leave-one-out validation over %d folds (%d fits).",
                [float(p) for p in penalties],
                len(folds),
                len(folds) * len(penalties),
            )
            residual_penalty, table = select_residual_penalty(
                module.velocity,
                folds,
                settings=settings,
                penalties=penalties,
                n_epochs=int(validation_epochs),
                pairs_per_epoch=pairs,
                batch_size=int(batch_size),
                seed=seed,
                progress=logger.info,
                progress_bar=bool((trainer_kwargs or {}).get("enable_progress_bar", True)),
            )
        else:
            residual_penalty = FALLBACK_PENALTY
            logger.info(
                "No leave-one-out validation is possible (no couple_within groups with both sides, and no "
                "interior time point on the path); using residual_penalty=%g.",
                residual_penalty,
            )
    timing["selection_s"] = time.perf_counter() - started

    data = PairDataModule(
        segments,
        pairs_per_epoch=pairs,
        batch_size=int(batch_size),
        seed=seed,
        train_idx=getattr(model, "train_indices", None),
        val_idx=getattr(model, "validation_indices", None),
        test_idx=getattr(model, "test_indices", None),
    )
    plan = VelocityTrainingPlan(
        module, **settings.with_penalty(float(residual_penalty)).plan_kwargs(), **(plan_kwargs or {})
    )
    trainer_kwargs = dict(trainer_kwargs or {})
    trainer_kwargs.setdefault("reload_dataloaders_every_n_epochs", 1)
    trainer_kwargs.setdefault("log_every_n_steps", 1)  # pairs are redrawn every epoch; few batches each
    trainer_kwargs.setdefault("check_val_every_n_epoch", None)
    trainer_kwargs["early_stopping"] = False
    runner = model._train_runner_cls(
        model,
        training_plan=plan,
        data_splitter=data,
        max_epochs=int(max_epochs),
        accelerator=accelerator,
        devices=devices,
        **trainer_kwargs,
    )
    started = time.perf_counter()
    module.velocity.train()
    with warnings.catch_warnings():
        # The frozen encoder and decoder stay in eval mode on purpose (phase 2 trains the velocity field
        # only); Lightning warns about every module in eval mode at the start of a fit.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode", category=UserWarning)
        runner()
    timing["fit_s"] = time.perf_counter() - started
    report_guards(plan)
    return TrajectoryFit(
        paths=paths,
        residual_penalty=float(plan.residual_penalty),  # under DDP, rank 0's choice (see the plan)
        validation=table,
        timing=timing,
        maps=maps_of_segments(
            paths, by_path, labels, keep, np.arange(len(z)).astype(str) if cell_names is None else cell_names
        ),
    )
