"""Phase 2 of :class:`~trajvi.TrajVI`: optimal-transport coupling and the velocity field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from trajvi._constants import REGISTRY_KEYS
from trajvi._distributed import check_strategy
from trajvi._runtime import in_fit_context
from trajvi.data._blocks import counts_in_memory
from trajvi.data._checks import check_obs_key
from trajvi.diagnostics import monitor_callbacks
from trajvi.train import (
    DiskBatches,
    VelocityFitSettings,
    VelocityTrainingPlan,
    check_plan_kwargs,
    check_precision,
)
from trajvi.trajectory import (
    DEFAULT_PENALTIES,
    CouplingConfig,
    PathSet,
    fit_trajectories,
    path_times,
    resolve_paths,
)
from trajvi.trajectory import ot_device as resolve_ot_device

from ._cells import cell_positions

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData
    from scvi.data import AnnDataManager

    from trajvi._types import GroupWeighting, OTMethod
    from trajvi.module import TrajVIModule

#: Cells encoded at once for phase 2 when the counts are read from disk.
_ENCODE_BATCH = 1024

#: Arguments of the velocity fit that every fit of phase 2 shares (the validation fits too).
_SHARED_PLAN_KEYS = ("gradient_clip_val", "rollback_nonfinite", "max_update_ratio", "max_consecutive_skips")


class TrajectoryMixin:
    """Phase 2: :meth:`train_trajectories`, and the state and checks that inference shares."""

    if TYPE_CHECKING:
        # Provided by the model class (:class:`~trajvi.TrajVI`, scvi-tools' base classes); declared here for
        # the type checker only.
        adata: AnnData
        adata_manager: AnnDataManager
        module: TrajVIModule
        is_trained_: bool

        @property
        def conditions(self) -> list[str]: ...
        def get_condition_codes(self, adata: AnnData | None = None) -> np.ndarray: ...
        def get_from_registry(self, adata: AnnData, registry_key: str) -> np.ndarray: ...
        def get_latent_representation(
            self,
            adata: AnnData | None = None,
            indices: Sequence[int] | np.ndarray | None = None,
            give_mean: bool = True,
            mc_samples: int = 5000,
            batch_size: int | None = None,
            dataloader: Any = None,
        ) -> np.ndarray: ...
        def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData: ...

    # -- state and checks --------------------------------------------------------------------------
    def _init_trajectory_state(self) -> None:
        self.is_trajectory_trained_ = False
        self.trajectory_paths_: dict[str, list[str]] | None = None  # name -> conditions, every trained path
        self.trajectory_path_times_: dict[str, list[float]] | None = None
        self.perturbation_components_: list[str] | None = None
        self.combination_delimiter_: str | None = "+"
        self.perturbation_features_: pd.DataFrame | None = None
        self.trajectory_path_: list[str] | None = None  # the first trained path (as before several paths)
        self.trajectory_times_: list[float] | None = None
        self.residual_penalty_: float | None = None
        self.couple_within_: str | None = None
        self.trajectory_cells_: np.ndarray | None = None
        self.trajectory_validation_: dict[str, dict[str, float]] | None = None
        self.trajectory_timing_: dict[str, float] | None = None
        # "source->target" -> TransportMap.to_dict() of every trained segment (plain data, so saves stay loadable)
        self.transport_maps_: dict[str, dict[str, Any]] | None = None

    def _encode_all_cells(self) -> np.ndarray:
        """Posterior means of all cells (float32), in batches; counts on disk are read in contiguous blocks.

        scvi-tools' loader reads a backed file one minibatch at a time through a fancy index (2,500-3,800
        rows/s measured on an h5ad CSR file, against 28,500 rows/s for slices of 1,024 rows).
        """
        if counts_in_memory(self.adata_manager):
            return self.get_latent_representation().astype(np.float32)
        loader = DiskBatches(
            self.adata_manager.create_torch_dataset(),
            np.arange(self.adata.n_obs),
            batch_size=_ENCODE_BATCH,
            shuffle=False,
            block_size=8 * _ENCODE_BATCH,
            blocks_per_pool=1,
        )
        return self.get_latent_representation(dataloader=loader).astype(np.float32)

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

    def trained_paths(self) -> PathSet:
        """The trained paths, their times and components (a :class:`~trajvi.trajectory.PathSet`)."""
        self._require_phase2()
        paths = self.trajectory_paths_
        if paths is None:  # a model saved before fields held several paths: its one path
            assert self.trajectory_path_ is not None and self.trajectory_times_ is not None
            paths = {self.trajectory_path_[-1]: list(self.trajectory_path_)}
            times = {self.trajectory_path_[-1]: list(self.trajectory_times_)}
            return PathSet(paths, times, [], None, None)
        assert self.trajectory_path_times_ is not None and self.perturbation_components_ is not None
        return PathSet(
            dict(paths),
            dict(self.trajectory_path_times_),
            list(self.perturbation_components_),
            self.combination_delimiter_,
            self.perturbation_features_,
        )

    def _time_of(self, condition: str) -> float:
        if self.trajectory_paths_ is not None and self.trajectory_path_times_ is not None:
            for name, conds in self.trajectory_paths_.items():
                if condition in conds:
                    return self.trajectory_path_times_[name][conds.index(condition)]
        elif self.trajectory_path_ and condition in self.trajectory_path_:
            assert self.trajectory_times_ is not None  # set with the path
            return self.trajectory_times_[self.trajectory_path_.index(condition)]
        known = self.condition_times()
        if known is not None and condition in known:
            return known[condition]
        msg = (
            f"the time of condition {condition!r} is unknown: it is on no trained path "
            f"({list(self.trajectory_paths_ or [])}) and no time_key was registered. Pass t_span=(start, end) instead."
        )
        raise ValueError(msg)

    @in_fit_context
    def train_trajectories(
        self,
        path: Sequence[str] | Sequence[Sequence[str]] | Mapping[str, Sequence[str]] | None = None,
        *,
        control: str | None = None,
        couple_within: str | None = None,
        growth_key: str | None = None,
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
        group_weighting: GroupWeighting = "balanced",
        pairs_per_epoch: int | None = None,
        indices: Sequence[int] | None = None,
        combination_delimiter: str | None = "+",
        perturbation_features: pd.DataFrame | None = None,
        max_folds: int | None = 12,
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
        """Fit phase 2: couple consecutive conditions by optimal transport and fit one velocity field on every path.

        The phase-1 encoder is frozen: cells are encoded once (posterior means). For each consecutive pair
        of conditions on each path, the source and target latents are z-scored separately and coupled with
        POT (within groups of ``couple_within`` when given); pairs drawn by plan mass train the velocity
        field ``v(z, t, c)`` by flow matching on the straight path between the paired latents, in the
        unstandardised latent, over the real times of a registered ``time_key`` (else ``t`` in ``[0, 1]``
        along each path). ``c`` tells the field what the path does: the vectors of the path's components
        (a perturbation; the parts of a combination ``"A+B"``; a branch of a time course), composed and
        scaled by the dose of the cells (a registered ``dose_key``). So one model predicts every trained
        path, combinations of trained components, other doses and, with ``perturbation_features``,
        perturbations never trained on. A second call retrains phase 2 only (the field starts afresh).

        Under DDP (``strategy="ddp_find_unused_parameters_true"``, see ``docs/distributed.md``) every process
        encodes the cells and computes the couplings itself (deterministic pre-processing from the same
        ``seed``, so the same everywhere; its cost is not divided), draws the same pairs every epoch and
        trains on its own disjoint share of their minibatches; the gradients are averaged over the
        processes. ``batch_size`` is per process; ``pairs_per_epoch`` counts the pairs of all processes.

        Parameters
        ----------
        path
            One path of ordered conditions (``["control", "IFNb"]``, ``["d0", "d2", "d4", "d7"]``), several
            (``[["control", "IFNb"], ["control", "LPS"], ["d0", "d2", "d7"]]``), or named paths
            (``{"ASG": ["prog", "ASG_early", "ASG"], "AWA": ["prog", "AWA_early", "AWA"]}``: branches that
            share a start). A path is named after its last condition unless named; the name says what it
            does, split on ``combination_delimiter`` into components.
        control
            The short form: ``control="control"`` trains ``[control, X]`` for every other condition ``X``
            (instead of ``path``).
        couple_within
            Column of ``obs`` (such as the cell type): couple only cells of the same group. Groups that
            lack a side are left out with a logged note.
        growth_key
            Column of ``obs`` with a prior growth rate of each cell per unit of time (from proliferation and
            apoptosis scores, say): a source cell's mass before transport is ``growth ** (t_target -
            t_source)``, as in Waddington-OT. With ``ot_method="unbalanced"`` the couplings then estimate the
            growth the data supports (:func:`trajvi.tl.growth_rates`). Default: every cell the same.
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
            time-dependent shift). ``"auto"`` chooses among ``penalties`` by leave-one-out validation inside
            the training data: each (group of ``couple_within``, path) with cells at every condition of the
            path in turn (or, without groups, each interior time point of a path) is left out of that path,
            a field is fit on the rest, and its prediction of the left-out cells is scored by the energy
            distance in the latent. Under DDP this selection
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
            Cells used in phase 2: integer positions (each at most once, none negative) or a boolean mask
            with one value per cell (default: all).
        combination_delimiter
            Separator of the components of a combination in a path's name (``"A+B"``); ``None``: names are
            never split.
        perturbation_features
            Features of the components (a DataFrame indexed by component name, e.g. gene or compound
            embeddings): the field then computes each component's vector from its features instead of
            learning one per component, so a component never trained on can be predicted from its row. Every
            trained component needs a row.
        max_folds
            Most leave-one-out folds of ``residual_penalty="auto"`` (drawn with ``seed`` when there are more).
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
            More arguments for :class:`~trajvi.train.VelocityTrainingPlan`. ``gradient_clip_val``,
            ``rollback_nonfinite``, ``max_update_ratio`` and ``max_consecutive_skips`` apply to every fit of
            the call (the validation fits too, so the penalty is chosen as it is trained); the others
            (``accumulate_grad_batches``, ``check_guards_every_n_steps``, ``cuda_graph``, the learning-rate schedule
            ``reduce_lr_on_plateau``, ``lr_factor``, ``lr_patience``, ...) to the final fit.
            The arguments above (``lr``, ``residual_penalty``) are not repeated here (an error says so).

        Raises
        ------
        ValueError
            An unknown or repeated condition on ``path``, an invalid option, ``plan_kwargs`` that repeat an
            argument or that the plan does not take; all before any coupling or training.
        """
        import scvi

        self._require_phase1()
        named = resolve_paths(path, self.conditions, control=control)
        known_times = self.condition_times()
        paths = PathSet.build(
            named,
            {name: path_times(conds, known_times) for name, conds in named.items()},
            delimiter=combination_delimiter,
            features=perturbation_features,
        )
        if max_folds is not None and int(max_folds) < 1:
            msg = f"max_folds={max_folds}; it must be at least 1 (or None: every fold)."
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
        plan_kwargs = check_plan_kwargs(
            VelocityTrainingPlan, plan_kwargs, explicit=("lr", "residual_penalty"), caller="train_trajectories"
        )
        shared = {k: plan_kwargs.pop(k) for k in _SHARED_PLAN_KEYS if k in plan_kwargs}
        settings = VelocityFitSettings(lr=lr, **shared)
        if seed is None:
            seed = scvi.settings.seed if scvi.settings.seed is not None else 0
        seed = int(seed)
        coupling = CouplingConfig(
            method=ot_method,
            epsilon=epsilon,
            reg_m=reg_m,
            block_size=ot_batch_size,
            device=resolve_ot_device(ot_device, self.module.device),
            n_jobs=ot_n_jobs,
            group_weighting=group_weighting,
            seed=seed,
        )
        keep = np.zeros(self.adata.n_obs, dtype=bool)
        keep[np.arange(self.adata.n_obs) if indices is None else cell_positions(indices, self.adata.n_obs)] = True
        groups = None
        if couple_within is not None:
            groups = check_obs_key(self.adata, couple_within, parameter="couple_within").astype(str).to_numpy()
        labels = np.asarray(self.conditions, dtype=object)[self.get_condition_codes()]
        growth = None if growth_key is None else _growth_rates(self.adata, growth_key)
        doses = None
        if REGISTRY_KEYS.DOSE_KEY in self.adata_manager.data_registry:
            doses = np.asarray(self.get_from_registry(self.adata, REGISTRY_KEYS.DOSE_KEY), dtype=float).reshape(-1)
        z = self._encode_all_cells()
        trainer_kwargs["callbacks"] = [
            *trainer_kwargs.get("callbacks", []),
            *monitor_callbacks(
                monitor_gradients_every_n_steps=monitor_gradients_every_n_steps,
                check_gradients_every_n_epochs=check_gradients_every_n_epochs,
                monitor_parameters=monitor_parameters,
                loss_curves_dir=loss_curves_dir,
            ),
        ]
        fit = fit_trajectories(
            self,
            z=z,
            labels=labels,
            groups=groups,
            keep=keep,
            paths=paths,
            coupling=coupling,
            doses=doses,
            growth=growth,
            cell_names=np.asarray(self.adata.obs_names),
            max_folds=max_folds,
            settings=settings,
            residual_penalty=residual_penalty,
            penalties=penalties,
            validation_epochs=int(validation_epochs),
            max_epochs=int(max_epochs),
            batch_size=int(batch_size),
            pairs_per_epoch=pairs_per_epoch,
            seed=seed,
            plan_kwargs=plan_kwargs,
            accelerator=accelerator,
            devices=devices,
            trainer_kwargs=trainer_kwargs,
        )
        self.trajectory_paths_ = fit.paths.paths
        self.trajectory_path_times_ = fit.paths.times
        self.perturbation_components_ = fit.paths.components
        self.combination_delimiter_ = fit.paths.delimiter
        self.perturbation_features_ = fit.paths.features
        first = next(iter(fit.paths.paths))
        self.trajectory_path_ = fit.paths.paths[first]
        self.trajectory_times_ = fit.paths.times[first]
        self.residual_penalty_ = fit.residual_penalty
        self.couple_within_ = couple_within
        self.trajectory_cells_ = keep  # the cells phase 2 used (calibrated predictions compare with these only)
        self.trajectory_validation_ = fit.validation
        self.trajectory_timing_ = fit.timing
        self.transport_maps_ = {key: tmap.to_dict() for key, tmap in fit.maps.items()}
        self.is_trajectory_trained_ = True


def _growth_rates(adata: AnnData, key: str) -> np.ndarray:
    """The prior growth rates of ``obs[key]``: finite and positive, or a ValueError that says which are not."""
    values = check_obs_key(adata, key, parameter="growth_key")
    rates = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(rates) & (rates > 0))
    if bad.any():
        msg = (
            f"growth_key={key!r}: {int(bad.sum())} cell(s) have a growth rate that is missing, not a number or not "
            "positive; give every cell a rate > 0 (1 = no growth)."
        )
        raise ValueError(msg)
    return rates
