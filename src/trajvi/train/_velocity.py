"""Phase 2's training: the velocity field, fit by flow matching on coupled latent pairs.

One set of settings (:class:`VelocityFitSettings`) builds the optimizer and the guard of every velocity fit,
and one step (:func:`flow_matching_step`) trains it. The final fit runs them under Lightning
(:class:`VelocityTrainingPlan`: DDP, precision, callbacks, history, CUDA graph); the short fits that choose
the residual penalty run them in a plain loop (:func:`fit_velocity_field`), with the same optimizer, clipping
and guards, so a penalty is chosen under the conditions it is then trained with. On the CPU the two give the
same parameters for the same seed and pairs (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from trajvi._constants import HISTORY_KEYS as H
from trajvi.diagnostics import NonFiniteTrainingError
from trajvi.module import flow_matching_loss

from ._base import GuardedTrainingPlan, fused_adam, skips_message
from ._guards import StepGuard

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from trajvi._types import Phase
    from trajvi.module import TrajVIModule, VelocityField

    from ._pairs import PairDataModule


@dataclass(frozen=True)
class VelocityFitSettings:
    """How a velocity field is fit: the loss, the optimizer and the guards of its steps.

    Attributes
    ----------
    residual_penalty
        Weight of the squared state-dependent residual in the loss.
    lr
        Learning rate of the field's Adam (fused where the device has the kernel, ``eps=1e-8``).
    gradient_clip_val
        Largest gradient norm (``None`` or 0: no clipping).
    rollback_nonfinite, max_update_ratio
        Undo a step that moves the parameters by more than ``max_update_ratio`` times their norm (plus 1)
        or leaves one non-finite.
    max_consecutive_skips
        Stop with :class:`~trajvi.diagnostics.NonFiniteTrainingError` after this many skipped steps in a row.
    """

    residual_penalty: float = 0.0
    lr: float = 1e-3
    gradient_clip_val: float | None = 50.0
    rollback_nonfinite: bool = True
    max_update_ratio: float = 1.0
    max_consecutive_skips: int = 20

    def __post_init__(self) -> None:
        if not self.residual_penalty >= 0:
            msg = f"residual_penalty={self.residual_penalty}; it must be >= 0."
            raise ValueError(msg)
        if not self.lr > 0:
            msg = f"lr={self.lr}; the velocity field's learning rate must be > 0."
            raise ValueError(msg)
        if int(self.max_consecutive_skips) < 1:
            msg = f"max_consecutive_skips={self.max_consecutive_skips}; it must be at least 1."
            raise ValueError(msg)

    def with_penalty(self, residual_penalty: float) -> VelocityFitSettings:
        """The same settings with another residual penalty."""
        return replace(self, residual_penalty=float(residual_penalty))

    def optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Adam:
        """The field's optimizer."""
        return fused_adam(list(params), lr=self.lr)

    def guard(
        self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], world_size: int = 1
    ) -> StepGuard:
        """The guard of the field's steps."""
        return StepGuard(
            "velocity-field",
            optimizer,
            params,
            clip=self.gradient_clip_val,
            rollback=self.rollback_nonfinite,
            max_update_ratio=self.max_update_ratio,
            world_size=world_size,
        )

    def plan_kwargs(self) -> dict[str, Any]:
        """The same settings as arguments of :class:`VelocityTrainingPlan`."""
        return {
            "residual_penalty": self.residual_penalty,
            "lr": self.lr,
            "gradient_clip_val": self.gradient_clip_val,
            "rollback_nonfinite": self.rollback_nonfinite,
            "max_update_ratio": self.max_update_ratio,
            "max_consecutive_skips": self.max_consecutive_skips,
        }


def flow_matching_step(
    field: VelocityField,
    batch: tuple[torch.Tensor, ...],
    residual_penalty: float,
    backward_and_step: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One flow-matching step of ``field`` on a minibatch of pairs ``(z0, z1, t0, t1[, tau[, w]])``.

    ``tau`` (the positions on the straight paths, :class:`~trajvi.train.PairDataModule` draws them) is drawn
    here from the global random state when the batch has none; ``w`` are the pairs' condition weights
    (:func:`~trajvi.train.draw_pairs`), composed into the field's condition vectors.

    ``backward_and_step(loss)`` backpropagates and takes the guarded optimizer step; it returns the
    gradient norm before clipping and whether the step was kept. Returns the flow-matching and residual
    terms (detached), the gradient norm and the kept flag, all on the device.
    """
    z0, z1, t0, t1, *rest = batch
    tau = rest[0] if rest else None
    c = field.condition(rest[1], z0.shape[0]) if len(rest) > 1 else None
    loss, fm, res = flow_matching_loss(field, z0, z1, t0, t1, residual_penalty=residual_penalty, tau=tau, c=c)
    norm, kept = backward_and_step(loss)
    return fm, res, norm, kept


@dataclass(frozen=True)
class VelocityFitResult:
    """What a plain velocity fit did: steps taken, steps skipped, and the last epoch's mean flow-matching loss."""

    n_steps: int
    n_skipped: int
    last_loss: float


def fit_velocity_field(
    field: VelocityField,
    data: PairDataModule,
    *,
    max_epochs: int,
    settings: VelocityFitSettings,
) -> VelocityFitResult:
    """Fit ``field`` on the pairs of ``data`` with the same step, optimizer and guards as the final fit.

    A plain loop, without Lightning (the validation fits that choose the residual penalty are many and
    short). Minibatches are moved to the field's device. The guard is read once per epoch; a run of
    skipped steps longer than ``settings.max_consecutive_skips`` raises
    :class:`~trajvi.diagnostics.NonFiniteTrainingError`.

    Parameters
    ----------
    field
        The velocity field (trained in place; left in eval mode).
    data
        Pairs redrawn from the couplings every epoch (:meth:`PairDataModule.train_dataloader`).
    max_epochs
        Number of epochs.
    settings
        Loss, optimizer and guards.
    """
    params = list(field.parameters())
    optimizer = settings.optimizer(params)
    guard = settings.guard(optimizer, params)
    device = params[0].device

    def backward_and_step(loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        return guard.step(loss, optimizer.step)

    field.train()
    n_steps = n_skipped = 0
    last_loss = float("nan")
    try:
        for _ in range(int(max_epochs)):
            total = torch.zeros((), device=device)
            n_batches = 0
            for batch in data.train_dataloader():
                batch = tuple(t.to(device, non_blocking=True) for t in batch)
                fm, _, _, _ = flow_matching_step(field, batch, settings.residual_penalty, backward_and_step)
                total += fm
                n_batches += 1
            report = guard.read()
            n_steps += report.steps
            n_skipped += report.skipped
            if report.max_consecutive >= settings.max_consecutive_skips:
                raise NonFiniteTrainingError(skips_message(report, settings.max_update_ratio))
            last_loss = float(total) / max(n_batches, 1)
    finally:
        field.eval()
    return VelocityFitResult(n_steps, n_skipped, last_loss)


class VelocityTrainingPlan(GuardedTrainingPlan):
    """Training plan of phase 2: flow matching of the module's velocity field on coupled latent pairs.

    One optimizer, built by :class:`VelocityFitSettings` like every velocity fit's; batches are
    ``(z0, z1, t0, t1, tau, w)`` from a :class:`~trajvi.train.PairDataModule`. The count model stays frozen (it
    gets no gradient and its optimizer does not exist).

    Parameters
    ----------
    module
        A :class:`~trajvi.module.TrajVIModule`; its ``velocity`` is trained.
    residual_penalty
        Weight of the squared state-dependent residual of the field.
    lr
        Learning rate of the velocity field.
    **kwargs
        The guards and their reports (``gradient_clip_val``, ``accumulate_grad_batches``,
        ``max_consecutive_skips``, ``rollback_nonfinite``, ``max_update_ratio``,
        ``check_guards_every_n_steps``, ``cuda_graph``; see :class:`GuardedTrainingPlan`), then
        :class:`scvi.train.TrainingPlan`, including the learning-rate schedule (``reduce_lr_on_plateau``,
        ``lr_factor``, ``lr_patience``, ``lr_threshold``, ``lr_min``; see :class:`GuardedTrainingPlan`).
        Its ``lr_scheduler_metric`` is the flow-matching loss of the epoch (phase 2 has no validation
        cells) or ``"velocity_residual_train"``. The validation fits that choose the residual penalty keep
        a fixed rate.
    """

    phase: ClassVar[Phase] = "flow"
    main_optimizer: ClassVar[str] = "flow"
    prog_bar_metric: ClassVar[str] = H.FLOW + "_train"
    scheduler_metrics: ClassVar[tuple[str, ...]] = (H.FLOW + "_train", H.RESIDUAL + "_train")

    def __init__(self, module: TrajVIModule, *, residual_penalty: float = 0.0, lr: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(module, lr=lr, **kwargs)
        self.settings = VelocityFitSettings(
            residual_penalty=float(residual_penalty),
            lr=lr,
            gradient_clip_val=self.gradient_clip_val,
            rollback_nonfinite=self.rollback_nonfinite,
            max_update_ratio=self.max_update_ratio,
            max_consecutive_skips=self.max_consecutive_skips,
        )

    @property
    def residual_penalty(self) -> float:
        """Weight of the residual term (under DDP, rank 0's value once the fit starts)."""
        return self.settings.residual_penalty

    def guarded_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]]:
        """The velocity field's optimizer (:meth:`VelocityFitSettings.optimizer`)."""
        params = self.module.velocity_parameters()
        return {"flow": (self.settings.optimizer(params), params)}

    def guard_names(self) -> dict[str, str]:
        """Report name of the guard."""
        return {"flow": "velocity-field"}

    def on_fit_start(self) -> None:
        """Under DDP, train every replica with rank 0's residual penalty (each process may have chosen its own)."""
        super().on_fit_start()
        if self.trainer.world_size > 1:
            penalty = float(self.trainer.strategy.broadcast(self.settings.residual_penalty, src=0))
            self.settings = self.settings.with_penalty(penalty)

    def _step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, *, raw: bool = False) -> None:
        fm, res, norm, kept = flow_matching_step(
            self.module.velocity,
            batch,
            self.settings.residual_penalty,
            lambda loss: self._guarded_step("flow", loss, batch_idx, raw=raw),
        )
        self._sums.add({H.FLOW + "_train": fm, H.RESIDUAL + "_train": res}, batch[0].shape[0])
        if kept is not None:
            self._sums.add({H.GRAD_NORM_VELOCITY + "_train": norm}, kept.float())
            self._sums.add_sum({H.N_SKIPPED + "_train": ~kept})

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Phase 2 has no validation loop (its validation is leave-one-group-out, before training)."""
