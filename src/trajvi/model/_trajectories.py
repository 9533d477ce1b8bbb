"""Phase 2 and inference of :class:`~trajvi.TrajVI`: coupling, the velocity field, trajectories, predictions."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi.distributions import NegativeBinomial

from trajvi._constants import REGISTRY_KEYS
from trajvi._logging import logger
from trajvi.data._checks import check_obs_key
from trajvi.dynamics import METHODS, simulate, time_grid
from trajvi.train import PairDataModule, Segment, TrajVITrainingPlan
from trajvi.transport import couple_sets

from ._validation import DEFAULT_PENALTIES, Fold, select_residual_penalty

if TYPE_CHECKING:
    from anndata import AnnData

OTMethod = Literal["exact", "sinkhorn", "unbalanced"]
Integrator = Literal["euler", "rk4", "dopri5"]


@dataclass
class TrajectoryResult:
    """Simulated trajectories of a set of cells.

    Attributes
    ----------
    latent
        ``(T, n_cells, n_latent)`` latent path (numpy, or a torch tensor with a graph when simulated with
        ``with_grad=True``).
    times
        ``(T,)`` times of the path.
    expression
        ``(T, n_cells, n_genes)`` decoded NB means along the path (for ``genes`` only when given), or ``None``.
    genes
        Names of the genes in ``expression``.
    cells
        Names of the simulated cells (``obs_names``).
    source, target
        Conditions the path starts from and goes to (``target`` is ``None`` for a ``t_span``).
    """

    latent: Any
    times: np.ndarray
    expression: Any = None
    genes: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    source: str | None = None
    target: str | None = None


class TrajectoryMixin:
    """Phase 2 (:meth:`train_trajectories`) and inference (:meth:`simulate_trajectory`, :meth:`predict`)."""

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

    def _folds(
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
        group_weighting: Literal["source", "balanced"] = "balanced",
        pairs_per_epoch: int | None = None,
        indices: Sequence[int] | None = None,
        seed: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        **trainer_kwargs: Any,
    ) -> None:
        """Fit phase 2: couple consecutive conditions by optimal transport and fit the velocity field.

        The phase-1 encoder is frozen: cells are encoded once (posterior means). For each consecutive pair
        of conditions on ``path``, the source and target latents are z-scored separately and coupled with
        POT (within groups of ``couple_within`` when given); pairs drawn by plan mass train the velocity
        field by flow matching on the straight path between the paired latents, in the unstandardised
        latent, over the real times of a registered ``time_key`` (else ``t`` in ``[0, 1]``). A second call
        retrains phase 2 only (the field starts afresh).

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
            of the left-out cells is scored by the energy distance in the latent.
        penalties
            Candidates for ``residual_penalty="auto"``.
        validation_epochs
            Epochs of each validation fit.
        epsilon, reg_m
            Entropic regularisation (relative to the cost scale) and marginal relaxation.
        ot_batch_size
            Couple in blocks of at most this many cells per side (minibatch OT for large sets).
        group_weighting
            How pairs are shared among groups: ``"balanced"`` (equally; the mean shift is then averaged over
            groups, as latent arithmetic does) or ``"source"`` (by number of source cells).
        pairs_per_epoch
            Pairs drawn per epoch; defaults to the number of source cells on the path (at least
            ``4 * batch_size``).
        indices
            Cells used in phase 2 (default: all).
        seed
            Seed of the coupling and the pair draws (default: ``scvi.settings.seed``).
        accelerator, devices, **trainer_kwargs
            Passed to the scvi-tools trainer.
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
        seed = int(scvi.settings.seed if seed is None else seed)
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
        plan = TrajVITrainingPlan(
            module, phase="flow", velocity_lr=lr, residual_penalty=float(residual_penalty), adversarial_weight=0.0
        )
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
        runner()
        self._report_guards(plan)
        self.trajectory_path_ = path
        self.trajectory_times_ = [float(t) for t in times]
        self.residual_penalty_ = float(residual_penalty)
        self.couple_within_ = couple_within
        self.trajectory_validation_ = table
        self.is_trajectory_trained_ = True

    # -- inference -------------------------------------------------------------------------------------
    def _start_cells(self, adata: AnnData, source: str, indices: Sequence[int] | None) -> np.ndarray:
        if indices is not None:
            idx = np.asarray(indices)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
        else:
            idx = np.flatnonzero(self.get_condition_codes(adata) == self.conditions.index(source))
        if idx.size == 0:
            msg = f"no cells to simulate: condition {source!r} has no cells in adata (or indices is empty)."
            raise ValueError(msg)
        return idx

    def _span(self, source: str | None, target: str | None, t_span: tuple[float, float] | None) -> tuple[float, float]:
        if t_span is not None:
            if target is not None:
                msg = "give either target or t_span, not both."
                raise ValueError(msg)
            t0, t1 = (float(t) for t in t_span)
        else:
            t0, t1 = self._time_of(source), self._time_of(target)
        if t0 == t1:
            msg = f"the path starts and ends at time {t0}; choose a target at another time."
            raise ValueError(msg)
        return t0, t1

    def _mixture_at(self, t: float, target: str | None, t_end: float) -> list[tuple[int | None, float]]:
        """Conditions (codes) and weights whose decoded means are mixed at time ``t``.

        At a named target's time: that condition alone. Elsewhere: the two conditions of the trained path
        around ``t``, weighted linearly in time (clamped at the ends). Without condition decoding: one
        decode with no condition.
        """
        if self.module.condition_embedding is None:
            return [(None, 1.0)]
        if target is not None and t == t_end:
            return [(self.conditions.index(target), 1.0)]
        path_times = np.asarray(self.trajectory_times_)
        codes = [self.conditions.index(c) for c in self.trajectory_path_]
        t = float(np.clip(t, path_times[0], path_times[-1]))
        k = int(np.clip(np.searchsorted(path_times, t, side="right") - 1, 0, len(path_times) - 2))
        w = (t - path_times[k]) / (path_times[k + 1] - path_times[k])
        return [(code, weight) for code, weight in ((codes[k], 1.0 - w), (codes[k + 1], w)) if weight > 0]

    def _cell_inputs(self, adata: AnnData, idx: np.ndarray, library_size: float | None) -> tuple[torch.Tensor, ...]:
        device = self.module.device
        z = torch.as_tensor(self.get_latent_representation(adata, indices=idx), device=device)
        batch = torch.as_tensor(np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.BATCH_KEY))[idx], device=device)
        if library_size is not None:
            library = torch.full((len(idx), 1), float(np.log(library_size)), device=device)
        elif self.module.use_size_factor:
            sf = np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.SIZE_FACTOR_KEY)).reshape(-1, 1)[idx]
            library = torch.as_tensor(np.log(sf), dtype=torch.float32, device=device)
        else:
            counts = self.get_from_registry(adata, REGISTRY_KEYS.X_KEY)[idx]
            totals = np.asarray(counts.sum(axis=1)).reshape(-1, 1)
            library = torch.as_tensor(np.log(np.maximum(totals, 1.0)), dtype=torch.float32, device=device)
        return z.float(), batch.long().reshape(-1, 1), library

    def _decode(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch: torch.Tensor,
        mixture: list[tuple[int | None, float]],
        genes: torch.Tensor | None,
    ) -> torch.Tensor:
        """NB means of latent states, mixed over the conditions of ``mixture`` (see :meth:`_mixture_at`)."""
        total = None
        for code, weight in mixture:
            cond = torch.full_like(batch, 0 if code is None else code)
            mean = self.module.generative(z, library, batch, cond)["px_rate"]
            mean = mean if genes is None else mean[:, genes]
            total = weight * mean if total is None else total + weight * mean
        return total

    def _gene_index(self, genes: Sequence[str] | None) -> tuple[torch.Tensor | None, list[str]]:
        names = list(self.adata.var_names)
        if genes is None:
            return None, names
        genes = [genes] if isinstance(genes, str) else list(genes)
        lookup = {g: i for i, g in enumerate(names)}
        missing = [g for g in genes if g not in lookup]
        if missing:
            msg = f"genes not in the model's genes: {missing[:10]}{' ...' if len(missing) > 10 else ''}."
            raise KeyError(msg)
        return torch.as_tensor([lookup[g] for g in genes], device=self.module.device), genes

    def simulate_trajectory(
        self,
        adata: AnnData | None = None,
        *,
        indices: Sequence[int] | None = None,
        source: str | None = None,
        target: str | None = None,
        t_span: tuple[float, float] | None = None,
        n_steps: int = 100,
        method: Integrator = "euler",
        with_grad: bool = False,
        decode: bool = True,
        genes: Sequence[str] | None = None,
        batch_size: int = 1024,
        library_size: float | None = None,
    ) -> TrajectoryResult:
        """Integrate the velocity field from cells' latent states and decode expression along the way.

        When the decoder sees the condition, the NB means at a time between two conditions of the trained
        path are the means decoded under each of them, mixed linearly in time; at a named ``target`` the
        target condition is used. (Interpolating the condition embeddings instead puts the decoder where it
        was never trained; see the design notes for the measurements.)

        Parameters
        ----------
        adata
            AnnData with the model's genes (default: the model's own).
        indices
            Cells to start from (default: every cell of ``source``).
        source
            Condition the path starts from (default: the first condition of the trained path).
        target
            Condition the path goes to (default: the last of the trained path).
        t_span
            ``(start, end)`` times instead of ``source``/``target`` times, e.g. to reach an unobserved time.
        n_steps
            Integration steps (fixed-step methods) and number of reported intervals (all methods).
        method
            ``"euler"``, ``"rk4"`` or ``"dopri5"`` (adaptive, torchdiffeq).
        with_grad
            Keep the graph (torch tensors are returned) so that a loss can reach the velocity field;
            otherwise run under inference mode and return numpy arrays.
        decode
            Decode NB means along the path.
        genes
            Decode only these genes (the path holds ``T x cells x genes`` values).
        batch_size
            Cells integrated and decoded at once.
        library_size
            Library size used for decoding (default: each cell's observed one).

        Returns
        -------
        A :class:`TrajectoryResult`.
        """
        self._require_phase2()
        if method not in METHODS:
            msg = f"method={method!r} is not valid; use one of {list(METHODS)}."
            raise ValueError(msg)
        adata = self._validate_anndata(adata)
        source = self._check_condition(source or self.trajectory_path_[0], "source")
        if target is not None:
            target = self._check_condition(target, "target")
        elif t_span is None:
            target = self.trajectory_path_[-1]
        t0, t1 = self._span(source, target, t_span)
        times = time_grid(t0, t1, n_steps)
        idx = self._start_cells(adata, source, indices)
        z0, batch, library = self._cell_inputs(adata, idx, library_size)
        self.module.eval()
        vel = self.module.velocity
        path = simulate(vel, z0, times.to(z0.device), method=method, batch_size=batch_size, with_grad=with_grad)
        expression = None
        gene_idx, gene_names = self._gene_index(genes)
        if decode:
            expression = self._decode_path(path, batch, library, times, target, t1, gene_idx, batch_size, with_grad)
        if not with_grad:
            path = path.cpu().numpy()
        return TrajectoryResult(
            latent=path,
            times=times.numpy(),
            expression=expression,
            genes=gene_names if decode else [],
            cells=list(adata.obs_names[idx]),
            source=source,
            target=target,
        )

    def _decode_path(self, path, batch, library, times, target, t_end, gene_idx, batch_size, with_grad):
        context = torch.enable_grad() if with_grad else torch.inference_mode()
        n_genes = self.summary_stats.n_vars if gene_idx is None else len(gene_idx)
        frames = []
        with context:
            for k, t in enumerate(times.tolist()):
                parts = []
                for i in range(0, path.shape[1], batch_size):
                    sl = slice(i, i + batch_size)
                    mixture = self._mixture_at(t, target, float(t_end))
                    parts.append(self._decode(path[k, sl], library[sl], batch[sl], mixture, gene_idx))
                frame = torch.cat(parts) if parts else torch.zeros(0, n_genes)
                frames.append(frame if with_grad else frame.cpu().numpy().astype(np.float32))
        return torch.stack(frames) if with_grad else np.stack(frames)

    def predict(
        self,
        adata: AnnData | None = None,
        *,
        source: str,
        target: str | None = None,
        t_span: tuple[float, float] | None = None,
        indices: Sequence[int] | None = None,
        n_samples: int = 1,
        n_steps: int = 100,
        method: Integrator = "euler",
        batch_size: int = 1024,
        library_size: float | None = None,
        layer_key: str = "trajvi_mean",
    ) -> AnnData:
        """Predict cells of ``target`` from cells of ``source``, as an AnnData scanpy can analyse.

        The source cells are pushed along the velocity field to the target time and decoded with the
        target condition; NB counts are sampled from the decoded means.

        Parameters
        ----------
        adata
            AnnData with the model's genes (default: the model's own).
        source, target, t_span, indices, n_steps, method, batch_size, library_size
            As in :meth:`simulate_trajectory`.
        n_samples
            Predicted cells per source cell (independent NB samples of the same mean).
        layer_key
            Layer that receives the NB means.

        Returns
        -------
        AnnData with sampled counts in ``X`` (CSR), the NB means in ``layers[layer_key]``, ``var`` as in the
        input, and ``obs`` holding the source cell (``source_cell``), its obs columns, ``condition`` (the
        target, or ``t=<time>``), ``source_condition`` and ``sample``.
        """
        from anndata import AnnData

        if int(n_samples) < 1:
            msg = f"n_samples={n_samples}; it must be at least 1."
            raise ValueError(msg)
        result = self.simulate_trajectory(
            adata,
            indices=indices,
            source=source,
            target=target,
            t_span=t_span,
            n_steps=n_steps,
            method=method,
            decode=False,
            batch_size=batch_size,
        )
        adata = self._validate_anndata(adata)
        idx = adata.obs_names.get_indexer(result.cells)
        _, batch, library = self._cell_inputs(adata, idx, library_size)
        z_end = torch.as_tensor(result.latent[-1], device=self.module.device)
        t_end = float(result.times[-1])
        with torch.inference_mode():
            means = torch.cat(
                [
                    self._decode(
                        z_end[i : i + batch_size],
                        library[i : i + batch_size],
                        batch[i : i + batch_size],
                        self._mixture_at(t_end, result.target, t_end),
                        None,
                    )
                    for i in range(0, len(idx), batch_size)
                ]
            )
            dist = NegativeBinomial(mu=means.clamp_min(1e-12), theta=self.module.theta)
            samples = [dist.sample().cpu().numpy().astype(np.float32) for _ in range(int(n_samples))]
        mean_np = means.cpu().numpy().astype(np.float32)
        label = result.target if result.target is not None else f"t={t_end:g}"
        source_obs = adata.obs.iloc[idx]
        user_cols = [c for c in source_obs.columns if not str(c).startswith("_scvi")]
        obs = pd.concat([source_obs[user_cols]] * int(n_samples), ignore_index=True)
        obs["source_cell"] = np.tile(np.asarray(result.cells), int(n_samples))
        obs["source_condition"] = result.source
        obs["condition"] = pd.Categorical([label] * len(obs))
        obs["sample"] = np.repeat(np.arange(int(n_samples)), len(idx))
        obs.index = [f"{c}-pred{s}" for c, s in zip(obs["source_cell"], obs["sample"], strict=True)]
        out = AnnData(
            X=sparse.csr_matrix(np.concatenate(samples)),
            obs=obs,
            var=adata.var.copy(),
            layers={layer_key: np.concatenate([mean_np] * int(n_samples))},
        )
        out.uns["trajvi_predict"] = {
            "params": {
                "source": result.source,
                "target": label,
                "t_span": [float(result.times[0]), t_end],
                "n_samples": int(n_samples),
                "n_steps": int(n_steps),
                "method": method,
            }
        }
        return out
