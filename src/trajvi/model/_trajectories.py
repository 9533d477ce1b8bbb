"""Phase 2 of :class:`~trajvi.TrajVI`: optimal-transport coupling and the velocity field."""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from trajvi._constants import REGISTRY_KEYS
from trajvi._distributed import check_strategy
from trajvi._logging import logger
from trajvi.data._checks import check_obs_key
from trajvi.train import PairDataModule, Segment, TrajVITrainingPlan, check_precision, monitor_callbacks
from trajvi.transport import couple_sets

from ._validation import DEFAULT_PENALTIES, Fold, select_residual_penalty

if TYPE_CHECKING:
    from anndata import AnnData

OTMethod = Literal["exact", "sinkhorn", "unbalanced"]
Integrator = Literal["euler", "rk4", "dopri5"]


class TrajectoryMixin:
    """Phase 2: :meth:`train_trajectories`, and the state and checks that inference shares."""

    # -- state and checks --------------------------------------------------------------------------
    def _init_trajectory_state(self) -> None:
        self.is_trajectory_trained_ = False
        self.trajectory_path_: list[str] | None = None
        self.trajectory_times_: list[float] | None = None
        self.residual_penalty_: float | None = None
        self.couple_within_: str | None = None
        self.trajectory_validation_: dict[str, dict[str, float]] | None = None

    def _require_phase1(self) -> None:
        if not self.is_trained_:
            msg = "The count model is not trained. Run model.train() first, then model.train_trajectories(...)."
            raise RuntimeError(msg)

    def _require_phase2(self) -> None:
        if not getattr(self, "is_trajectory_trained_", False):
            msg = "The velocity field is not trained. Run model.train_trajectories(path=[...]) first."
            raise RuntimeError(msg)

    def _check_condition(self, name: str, parameter: str) -> str:
        if str(name) not in self.conditions:
            msg = f"{parameter}={name!r} is not a condition; valid values: {self.conditions}."
            raise ValueError(msg)
        return str(name)

    def condition_times(self, adata: AnnData | None = None) -> dict[str, float] | None:
        """Time of each condition from the registered ``time_key`` (``None`` without one)."""
        if REGISTRY_KEYS.TIME_KEY not in self.adata_manager.data_registry:
            return None
        adata = self._validate_anndata(adata)
        times = np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.TIME_KEY)).reshape(-1)
        codes = self.get_condition_codes(adata)
        return {self.conditions[c]: float(times[codes == c][0]) for c in np.unique(codes)}

    def _path_times(self, path: list[str]) -> list[float]:
        known = self.condition_times()
        if known is None:
            return list(np.linspace(0.0, 1.0, len(path)))
        missing = [c for c in path if c not in known]
        if missing:
            msg = f"condition(s) {missing} of the path have no cells, so their time is unknown."
            raise ValueError(msg)
        times = [known[c] for c in path]
        if any(b <= a for a, b in itertools.pairwise(times)):
            msg = f"the times of the path {dict(zip(path, times, strict=True))} must increase along it; reorder path."
            raise ValueError(msg)
        return times

    def _time_of(self, condition: str) -> float:
        if self.trajectory_path_ and condition in self.trajectory_path_:
            return self.trajectory_times_[self.trajectory_path_.index(condition)]
        known = self.condition_times()
        if known is not None and condition in known:
            return known[condition]
        msg = (
            f"the time of condition {condition!r} is unknown: it is not on the trained path {self.trajectory_path_} "
            "and no time_key was registered. Pass t_span=(start, end) instead."
        )
        raise ValueError(msg)

    # -- phase 2 ---------------------------------------------------------------------------------------
    def _segments(
        self,
        z: np.ndarray,
        codes: np.ndarray,
        groups: np.ndarray | None,
        path: list[str],
        times: list[float],
        keep: np.ndarray,
        ot: dict[str, Any],
    ) -> list[Segment]:
        segments = []
        for (src, tgt), (t0, t1) in zip(itertools.pairwise(path), itertools.pairwise(times)):
            s_mask = keep & (codes == self.conditions.index(src))
            t_mask = keep & (codes == self.conditions.index(tgt))
            for name, mask in ((src, s_mask), (tgt, t_mask)):
                if not mask.any():
                    msg = f"condition {name!r} has no cells in the data used for phase 2."
                    raise ValueError(msg)
            coupling = couple_sets(
                z[s_mask],
                z[t_mask],
                groups_source=None if groups is None else groups[s_mask],
                groups_target=None if groups is None else groups[t_mask],
                source_name=src,
                target_name=tgt,
                **ot,
            )
            segments.append(Segment(f"{src}->{tgt}", z[s_mask], z[t_mask], float(t0), float(t1), coupling))
        return segments

    def _folds(self, *args: Any) -> list[Fold]:
        """The validation folds, built without repeating the final fit's notes on left-out groups."""
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            return self._build_folds(*args)
        finally:
            logger.setLevel(level)

    def _build_folds(
        self,
        z: np.ndarray,
        codes: np.ndarray,
        groups: np.ndarray | None,
        path: list[str],
        times: list[float],
        keep: np.ndarray,
        ot: dict[str, Any],
    ) -> list[Fold]:
        folds = []
        if groups is not None:
            first, last = self.conditions.index(path[0]), self.conditions.index(path[-1])
            complete = [
                g
                for g in pd.unique(groups[keep])
                if all((keep & (groups == g) & (codes == self.conditions.index(c))).any() for c in path)
            ]
            if len(complete) < 2:
                return []
            for g in complete:
                others = keep & (groups != g)
                folds.append(
                    Fold(
                        f"{g}",
                        self._segments(z, codes, groups, path, times, others, ot),
                        z[keep & (groups == g) & (codes == first)],
                        times[0],
                        times[-1],
                        z[keep & (groups == g) & (codes == last)],
                    )
                )
        elif len(path) >= 3:
            for k in range(1, len(path) - 1):
                sub_path = path[:k] + path[k + 1 :]
                sub_times = times[:k] + times[k + 1 :]
                folds.append(
                    Fold(
                        path[k],
                        self._segments(z, codes, None, sub_path, sub_times, keep, ot),
                        z[keep & (codes == self.conditions.index(path[k - 1]))],
                        times[k - 1],
                        times[k],
                        z[keep & (codes == self.conditions.index(path[k]))],
                    )
                )
        return folds

    def train_trajectories(
        self,
        path: Sequence[str],
        *,
        couple_within: str | None = None,
        ot_method: OTMethod = "exact",
        max_epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        residual_penalty: float | Literal["auto"] = "auto",
        penalties: Sequence[float] = DEFAULT_PENALTIES,
        validation_epochs: int = 30,
        epsilon: float = 0.05,
        reg_m: float = 1.0,
        ot_batch_size: int | None = None,
        ot_device: str | None = "auto",
        ot_n_jobs: int | None = None,
        group_weighting: Literal["source", "balanced"] = "balanced",
        pairs_per_epoch: int | None = None,
        indices: Sequence[int] | None = None,
        seed: int | None = None,
        monitor_gradients_every_n_steps: int | None = None,
        check_gradients_every_n_epochs: int | None = None,
        monitor_parameters: bool = False,
        loss_curves_dir: str | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        plan_kwargs: dict[str, Any] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Fit phase 2: couple consecutive conditions by optimal transport and fit the velocity field.

        The phase-1 encoder is frozen: cells are encoded once (posterior means). For each consecutive pair
        of conditions on ``path``, the source and target latents are z-scored separately and coupled with
        POT (within groups of ``couple_within`` when given); pairs drawn by plan mass train the velocity
        field by flow matching on the straight path between the paired latents, in the unstandardised
        latent, over the real times of a registered ``time_key`` (else ``t`` in ``[0, 1]``). A second call
        retrains phase 2 only (the field starts afresh).

        Under DDP (``strategy="ddp_find_unused_parameters_true"``, see ``docs/distributed.md``) every process
        encodes the cells and computes the couplings itself (deterministic pre-processing from the same
        ``seed``, so the same everywhere; its cost is not divided), draws the same pairs every epoch and
        trains on its own disjoint share of their minibatches; the gradients are averaged over the
        processes. ``batch_size`` is per process; ``pairs_per_epoch`` counts the pairs of all processes.

        Parameters
        ----------
        path
            Ordered conditions, e.g. ``["control", "stimulated"]`` or ``["d0", "d2", "d4", "d7"]``.
        couple_within
            Column of ``obs`` (such as the cell type): couple only cells of the same group. Groups that
            lack a side are left out with a logged note.
        ot_method
            ``"exact"`` (``ot.emd``), ``"sinkhorn"`` (entropic, ``epsilon`` relative to the cost scale) or
            ``"unbalanced"`` (``reg_m`` sets how much mass may be created or destroyed).
        max_epochs
            Epochs of the final fit (each draws ``pairs_per_epoch`` pairs).
        batch_size
            Pairs per minibatch.
        lr
            Learning rate of the velocity field.
        residual_penalty
            Weight of the squared state-dependent residual of the field (a large value leaves a pure
            time-dependent shift). ``"auto"`` chooses among ``penalties`` by leave-one-group-out validation
            inside the training data: each group of ``couple_within`` in turn (or, without groups, each
            interior time point of the path) is left out, a field is fit on the rest, and its prediction
            of the left-out cells is scored by the energy distance in the latent. Under DDP this selection
            is not distributed: every process runs it in full (from its own random initialisation of the
            validation fits), and all train with rank 0's choice.
        penalties
            Candidates for ``residual_penalty="auto"``.
        validation_epochs
            Epochs of each validation fit.
        epsilon, reg_m
            Entropic regularisation (relative to the cost scale) and marginal relaxation.
        ot_batch_size
            Couple in blocks of at most this many cells per side (minibatch OT for large sets).
        ot_device
            Where the entropic solvers (``"sinkhorn"``, ``"unbalanced"``) iterate: ``"auto"`` on the model's
            device when it is a GPU, else in numpy on the CPU; ``None`` always in numpy; or a torch device
            such as ``"cuda:0"``. The exact solver always runs on the CPU.
        ot_n_jobs
            OT blocks (groups, ``ot_batch_size`` chunks) solved at once in threads on the CPU: ``None`` uses
            the cores this process may use (shared among the processes of a node under ``torchrun``), 1
            solves them one after the other. The coupling does not depend on it.
        group_weighting
            How pairs are shared among groups: ``"balanced"`` (equally; the mean shift is then averaged over
            groups, as latent arithmetic does) or ``"source"`` (by number of source cells).
        pairs_per_epoch
            Pairs drawn per epoch; defaults to the number of source cells on the path (at least
            ``4 * batch_size``).
        indices
            Cells used in phase 2 (default: all).
        seed
            Seed of the coupling and the pair draws (default: ``scvi.settings.seed``, or 0 when it is unset).
        monitor_gradients_every_n_steps
            Log the gradient norm of each parameter block every this many optimizer steps
            (``grad_norm/<block>`` in the history).
        check_gradients_every_n_epochs
            Run :func:`~trajvi.diagnostics.check_gradients` every this many epochs (a logged report, and
            ``grad_nonfinite_count``/``grad_zero_count`` in the history).
        monitor_parameters
            Log statistics of each parameter block every epoch (``param_mean/<block>``, ``param_std``,
            ``param_absmax``, ``param_nonfinite``).
        loss_curves_dir
            Folder that receives ``history.csv`` (every epoch) and ``history.png`` (at the end).
        accelerator, devices, **trainer_kwargs
            Passed to the scvi-tools trainer (``strategy``, ``num_nodes``, ``precision``, ...).
        plan_kwargs
            More arguments for :class:`~trajvi.train.TrajVITrainingPlan` of the final fit (they override the
            above), such as ``gradient_clip_val``, ``max_consecutive_skips`` or ``rollback_nonfinite``.
        """
        import scvi

        self._require_phase1()
        path = [self._check_condition(c, "path") for c in path]
        if len(path) < 2 or len(set(path)) != len(path):
            msg = f"path={path}; give at least two different conditions in order, e.g. {self.conditions[:2]}."
            raise ValueError(msg)
        if ot_method not in ("exact", "sinkhorn", "unbalanced"):
            msg = f"ot_method={ot_method!r} is not valid; use 'exact', 'sinkhorn' or 'unbalanced'."
            raise ValueError(msg)
        if group_weighting not in ("source", "balanced"):
            msg = f"group_weighting={group_weighting!r} is not valid; use 'source' or 'balanced'."
            raise ValueError(msg)
        if residual_penalty != "auto" and (not isinstance(residual_penalty, int | float) or residual_penalty < 0):
            msg = f"residual_penalty={residual_penalty!r}; use 'auto' or a number >= 0."
            raise ValueError(msg)
        for name, value in {
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "validation_epochs": validation_epochs,
        }.items():
            if int(value) < 1:
                msg = f"{name}={value}; it must be at least 1."
                raise ValueError(msg)
        check_strategy(trainer_kwargs.get("strategy"))
        check_precision(trainer_kwargs.get("precision"))
        if seed is None:
            seed = scvi.settings.seed if scvi.settings.seed is not None else 0
        seed = int(seed)
        times = self._path_times(path)
        keep = np.zeros(self.adata.n_obs, dtype=bool)
        keep[np.arange(self.adata.n_obs) if indices is None else np.asarray(indices)] = True
        groups = None
        if couple_within is not None:
            groups = check_obs_key(self.adata, couple_within, parameter="couple_within").astype(str).to_numpy()
        codes = self.get_condition_codes()
        z = self.get_latent_representation().astype(np.float32)
        ot = {
            "method": ot_method,
            "epsilon": epsilon,
            "reg_m": reg_m,
            "batch_size": ot_batch_size,
            "group_weighting": group_weighting,
            "rng": seed,
            "device": _ot_device(ot_device, self.module.device),
            "n_jobs": ot_n_jobs,
        }
        segments = self._segments(z, codes, groups, path, times, keep, ot)
        n_source = sum(len(s.z_source) for s in segments)
        pairs = int(pairs_per_epoch or max(n_source, 4 * batch_size))

        module = self.module
        module.velocity.reset_parameters()
        module.velocity.set_time_range(min(times), max(times))

        table = None
        if residual_penalty == "auto":
            folds = self._folds(z, codes, groups, path, times, keep, ot)
            if folds:
                logger.info("Choosing the residual penalty by leave-one-out validation over %d folds.", len(folds))
                residual_penalty, table = select_residual_penalty(
                    module.velocity,
                    folds,
                    penalties=penalties,
                    n_epochs=int(validation_epochs),
                    pairs_per_epoch=pairs,
                    batch_size=int(batch_size),
                    lr=lr,
                    seed=seed,
                    progress=logger.info,
                )
            else:
                residual_penalty = 1.0
                logger.info(
                    "No leave-one-out validation is possible (no couple_within groups with both sides, and no "
                    "interior time point on the path); using residual_penalty=%g.",
                    residual_penalty,
                )

        data = PairDataModule(
            segments,
            pairs_per_epoch=pairs,
            batch_size=int(batch_size),
            seed=seed,
            train_idx=getattr(self, "train_indices", None),
            val_idx=getattr(self, "validation_indices", None),
            test_idx=getattr(self, "test_indices", None),
        )
        trainer_kwargs["callbacks"] = [
            *trainer_kwargs.get("callbacks", []),
            *monitor_callbacks(
                monitor_gradients_every_n_steps=monitor_gradients_every_n_steps,
                check_gradients_every_n_epochs=check_gradients_every_n_epochs,
                monitor_parameters=monitor_parameters,
                loss_curves_dir=loss_curves_dir,
            ),
        ]
        plan_args = {"velocity_lr": lr, "residual_penalty": float(residual_penalty), "adversarial_weight": 0.0}
        plan_args.update(plan_kwargs or {})
        plan = TrajVITrainingPlan(module, phase="flow", **plan_args)
        trainer_kwargs.setdefault("reload_dataloaders_every_n_epochs", 1)
        trainer_kwargs.setdefault("log_every_n_steps", 1)  # pairs are redrawn every epoch; few batches each
        trainer_kwargs.setdefault("check_val_every_n_epoch", None)
        trainer_kwargs["early_stopping"] = False
        runner = self._train_runner_cls(
            self,
            training_plan=plan,
            data_splitter=data,
            max_epochs=int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )
        module.velocity.train()
        with warnings.catch_warnings():
            # The frozen encoder and decoder stay in eval mode on purpose (phase 2 trains the velocity field
            # only); Lightning warns about every module in eval mode at the start of a fit.
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode", category=UserWarning)
            runner()
        self._report_guards(plan)
        self.trajectory_path_ = path
        self.trajectory_times_ = [float(t) for t in times]
        self.residual_penalty_ = float(plan.residual_penalty)  # under DDP, rank 0's choice (see the plan)
        self.couple_within_ = couple_within
        self.trajectory_validation_ = table
        self.is_trajectory_trained_ = True


def _ot_device(ot_device: str | None, model_device: Any) -> str | None:
    """The device of the entropic OT solvers: ``"auto"`` is the model's device when it is a GPU, else numpy."""
    if ot_device == "auto":
        return str(model_device) if getattr(model_device, "type", "cpu") == "cuda" else None
    return ot_device
