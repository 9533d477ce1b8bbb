"""One training plan (manual optimization) for both phases of trajvi.

Phase 1 (``phase="vae"``) alternates a discriminator step on the detached latent with a VAE step that
adds a bounded fooling term. Every step is guarded: a loss or gradient that is not finite skips the
step (parameters untouched) and is counted; non-finite loss entries are repaired and counted; too many
skipped steps in a row stop training with an error that says what to try.

Under DDP (``strategy="ddp_find_unused_parameters_true"``) every backward pass averages the gradients over
the processes, so each of the three optimizers steps on the same gradients everywhere; every decision that
could depend on one process's minibatch alone (a non-finite loss, labels out of range, a rolled-back step)
is reduced over the processes first, so all replicas take, skip or undo the same steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any, Literal

import torch
from scvi.train import TrainingPlan

from trajvi._constants import HISTORY_KEYS as H
from trajvi._constants import REGISTRY_KEYS
from trajvi._distributed import all_processes_agree
from trajvi._logging import logger
from trajvi.module import (
    TrajVIModule,
    confusion_loss,
    discriminator_loss,
    flow_matching_loss,
    labels_in_range,
    labels_to_indices,
)

Phase = Literal["vae", "flow"]

#: Said of a skipped step whose trouble was on another process of a distributed run (all skip it together).
_ELSEWHERE = " on another process"


class NonFiniteTrainingError(RuntimeError):
    """Raised when too many consecutive steps had a non-finite loss or gradient."""


@contextmanager
def _frozen(params: Iterable[torch.nn.Parameter]):
    """Stop gradients from reaching ``params`` inside the block (restores ``requires_grad`` after)."""
    params = list(params)
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


class TrajVITrainingPlan(TrainingPlan):
    """Training plan with manual optimization of both phases.

    It owns three optimizers (the VAE, the discriminator, the velocity field); ``phase`` selects the step.

    Parameters
    ----------
    module
        A :class:`~trajvi.module.TrajVIModule`.
    phase
        Which step runs: ``"vae"`` (phase 1: the count model and its adversary) or ``"flow"`` (phase 2:
        flow matching of the velocity field on coupled latent pairs).
    adversarial_weight
        Weight of the fooling term in the VAE loss (0 trains the discriminator only as a monitor).
    adversary_key
        Registry key of the discriminator's target (the condition or the batch).
    lr, weight_decay, eps
        Adam settings of the VAE.
    adversary_lr
        Learning rate of the discriminator (Adam with its default ``eps``: the discriminator's
        gradients are small, and the VAE's ``eps=0.01`` would slow it down a hundredfold).
    adversary_steps
        Discriminator steps per minibatch, on the same detached latent.
    gradient_clip_val
        Largest gradient norm; larger gradients are scaled down (0 or ``None``: no clipping).
    accumulate_grad_batches
        Number of minibatches whose gradients are summed before each optimizer step.
    max_consecutive_skips
        Training stops with :class:`NonFiniteTrainingError` after this many skipped steps in a row.
    rollback_nonfinite
        Undo a step that blows up: one that leaves a parameter non-finite, or moves the parameters by more
        than ``max_update_ratio`` times their norm (plus 1). It then counts as skipped.
    max_update_ratio
        See ``rollback_nonfinite``; Adam at ``lr=1e-3`` moves them by about 1e-3 of that.
    n_epochs_kl_warmup
        Epochs over which the KL weight rises linearly from 0 to 1.
    velocity_lr
        Learning rate of the velocity field (phase 2).
    dispersion_lr
        Learning rate of the gene-wise dispersion (default: ``lr``).
    residual_penalty
        Weight of the squared state-dependent residual of the velocity field (phase 2).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module: TrajVIModule,
        *,
        phase: Phase = "vae",
        adversarial_weight: float = 1.0,
        adversary_key: str = REGISTRY_KEYS.CONDITION_KEY,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        adversary_lr: float = 1e-3,
        adversary_steps: int = 1,
        gradient_clip_val: float | None = 50.0,
        accumulate_grad_batches: int = 1,
        max_consecutive_skips: int = 20,
        rollback_nonfinite: bool = True,
        max_update_ratio: float = 1.0,
        n_epochs_kl_warmup: int | None = None,
        velocity_lr: float = 1e-3,
        dispersion_lr: float | None = None,
        residual_penalty: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if phase not in ("vae", "flow"):
            msg = f"phase={phase!r} is not valid; use 'vae' or 'flow'."
            raise ValueError(msg)
        if residual_penalty < 0:
            msg = f"residual_penalty={residual_penalty}; it must be >= 0."
            raise ValueError(msg)
        if int(accumulate_grad_batches) < 1:
            msg = f"accumulate_grad_batches={accumulate_grad_batches}; it must be at least 1."
            raise ValueError(msg)
        if adversarial_weight < 0:
            msg = f"adversarial_weight={adversarial_weight}; it must be >= 0."
            raise ValueError(msg)
        if int(adversary_steps) < 1:
            msg = f"adversary_steps={adversary_steps}; it must be at least 1."
            raise ValueError(msg)
        super().__init__(
            module,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            n_steps_kl_warmup=None,
            **kwargs,
        )
        self.automatic_optimization = False
        self.phase = phase
        self.adversarial_weight = float(adversarial_weight)
        self.adversary_key = adversary_key
        self.adversary_lr = adversary_lr
        self.adversary_steps = int(adversary_steps)
        self.gradient_clip_val = gradient_clip_val
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.rollback_nonfinite = bool(rollback_nonfinite)
        self.max_update_ratio = float(max_update_ratio)
        self.gradient_monitors: list[Any] = []  # set by the monitoring callbacks (train/_callbacks.py)
        self.last_skip_reason = ""
        self.velocity_lr = velocity_lr
        self.dispersion_lr = dispersion_lr
        self.residual_penalty = float(residual_penalty)
        self.consecutive_skips = 0
        self.total_skipped_steps = 0
        self.total_repaired = 0
        self.total_label_skips = 0

    # -- optimizers ------------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """One Adam per parameter group: the VAE, the discriminator and the velocity field."""
        # The gene-wise dispersion gets Adam's default eps: its gradients are small for sparse genes, and
        # eps=0.01 (right for the network weights) would all but freeze it (see the design notes).
        dispersion = [self.module.log_theta]
        others = [p for p in self.module.vae_parameters() if p is not self.module.log_theta]
        vae = torch.optim.Adam(
            [{"params": others}, {"params": dispersion, "eps": 1e-8, "lr": self.dispersion_lr or self.lr}],
            lr=self.lr,
            eps=self.eps,
            weight_decay=self.weight_decay,
        )
        disc = torch.optim.Adam(
            self.module.discriminator_parameters(), lr=self.adversary_lr, weight_decay=self.weight_decay
        )
        velocity = torch.optim.Adam(self.module.velocity_parameters(), lr=self.velocity_lr)
        return [vae, disc, velocity]

    @property
    def kl_weight_value(self) -> float:
        """The KL weight of the current epoch as a Python float (no device tensor, no synchronisation)."""
        warmup = self.n_epochs_kl_warmup
        if not warmup or self.current_epoch >= warmup:
            return float(self.max_kl_weight)
        slope = self.max_kl_weight - self.min_kl_weight
        return float(self.min_kl_weight + slope * self.current_epoch / warmup)

    def _agree(self, flag: torch.Tensor) -> bool:
        """Whether ``flag`` holds on every process (a no-op without DDP; one scalar all-reduce with it)."""
        return all_processes_agree(flag, self.trainer.world_size)

    def on_fit_start(self) -> None:
        """Under DDP, train every replica with rank 0's residual penalty (each process may have chosen its own)."""
        super().on_fit_start()
        if self.phase == "flow" and self.trainer.world_size > 1:
            self.residual_penalty = float(self.trainer.strategy.broadcast(self.residual_penalty, src=0))

    @property
    def use_adversary(self) -> bool:
        """Whether the discriminator has at least two classes to tell apart."""
        return self.module.n_adversary_classes > 1

    # -- guarded optimizer step ------------------------------------------------------------------
    def _window(self, batch_idx: int) -> tuple[bool, bool]:
        """Whether this batch opens and whether it closes a gradient-accumulation window."""
        k = self.accumulate_grad_batches
        first = batch_idx % k == 0
        n_batches = self.trainer.num_training_batches
        last = (batch_idx + 1) % k == 0 or (isinstance(n_batches, int) and batch_idx + 1 >= n_batches)
        return first, last

    def _guarded_step(
        self,
        optimizer: Any,
        params: list[torch.nn.Parameter],
        loss: torch.Tensor,
        batch_idx: int,
    ) -> tuple[torch.Tensor, bool | None]:
        """Backward ``loss`` and, at the end of an accumulation window, clip and step if finite.

        A step whose loss or gradient norm is not finite is not taken. With ``rollback_nonfinite``, a step
        that blows up (a learning rate far too high for one step) is undone. Under DDP both decisions are
        taken by all processes together (a step is taken only if it is fine on every one), so the replicas
        stay identical. Returns the gradient
        norm (before clipping; ``nan`` inside a window) and whether the step was kept (``None`` inside a
        window); the reason for a skip is in ``self.last_skip_reason``.
        """
        first, last = self._window(batch_idx)
        if first:
            optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss / self.accumulate_grad_batches)
        if not last:
            return torch.full((), float("nan"), device=loss.device), None
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=loss.device), True
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False)
        self._monitor_gradients(optimizer, params)
        finite = torch.isfinite(norm) & torch.isfinite(loss.detach())
        if not self._agree(finite):
            optimizer.zero_grad(set_to_none=True)
            self.last_skip_reason = "loss or gradient was not finite" + ("" if bool(finite) else _ELSEWHERE)
            return norm, False
        if self.gradient_clip_val:
            torch.nn.utils.clip_grads_with_norm_(params, self.gradient_clip_val, norm)
        if not self.rollback_nonfinite:
            optimizer.step()
            return norm, True
        with torch.no_grad():
            backup = [p.detach().clone() for p in params]
            optimizer.step()
            moved = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(torch._foreach_sub(params, backup))))
            size = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(backup)))
            kept = torch.isfinite(moved) & (moved <= self.max_update_ratio * (size + 1.0))
            if self._agree(kept):
                return norm, True
            for p, b in zip(params, backup, strict=True):
                p.copy_(b)
        optimizer.zero_grad(set_to_none=True)
        self.last_skip_reason = (
            f"the step blew up (parameters moved by {float(moved):.3g}, more than {self.max_update_ratio:g} x their "
            f"norm {float(size):.3g} + 1, or became non-finite) and was undone"
            if not bool(kept)
            else "the step blew up" + _ELSEWHERE + " and was undone"
        )
        return norm, False

    def _monitor_gradients(self, optimizer: Any, params: list[torch.nn.Parameter]) -> None:
        """Hand the gradients, before clipping and before the finite check, to the attached monitors."""
        for monitor in self.gradient_monitors:
            monitor.observe(self, optimizer, params)

    def _record_skip(self, skipped: bool, phase: str) -> None:
        self.log(H.N_SKIPPED + "_train", float(skipped), on_step=False, on_epoch=True, reduce_fx="sum")
        if not skipped:
            self.consecutive_skips = 0
            return
        self.consecutive_skips += 1
        self.total_skipped_steps += 1
        logger.warning(
            "Skipped %s step %d (epoch %d): %s; parameters left unchanged (%d skipped in a row).",
            phase,
            self.global_step,
            self.current_epoch,
            self.last_skip_reason,
            self.consecutive_skips,
        )
        if self.consecutive_skips >= self.max_consecutive_skips:
            msg = (
                f"{self.consecutive_skips} consecutive {phase} steps were skipped (last: {self.last_skip_reason}); "
                "stopping. "
                "Likely causes: a learning rate too high for this data (try lr=1e-4), cells with extreme "
                "library sizes or non-count values (check the input layer, filter outlier cells), or "
                "half precision (use precision='32' or 'bf16-mixed'). See the troubleshooting docs."
            )
            raise NonFiniteTrainingError(msg)

    def _report_repairs(self, loss_output: Any, stage: str) -> None:
        n = float(loss_output.extra_metrics["n_repaired"])
        if n > 0:
            self.total_repaired += int(n)
            for repair in loss_output.repairs:
                if int(repair.n_repaired) > 0:
                    logger.warning("%s step %d: %s.", stage, self.global_step, repair.describe())

    # -- phase 1 -------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """Run the step of the current phase."""
        if self.phase == "flow":
            self._flow_step(batch, batch_idx)
        else:
            self._vae_step(batch, batch_idx)

    def _flow_step(self, batch: Any, batch_idx: int) -> None:
        opt_velocity = self.optimizers()[2]
        z0, z1, t0, t1 = batch
        loss, fm, res = flow_matching_loss(self.module.velocity, z0, z1, t0, t1, residual_penalty=self.residual_penalty)
        norm, stepped = self._guarded_step(opt_velocity, self.module.velocity_parameters(), loss, batch_idx)
        if stepped is not None:
            self._record_skip(not stepped, "velocity-field")
        log = {"on_step": False, "on_epoch": True, "batch_size": z0.shape[0], "sync_dist": self.use_sync_dist}
        self.log(H.FLOW + "_train", fm, prog_bar=True, **log)
        self.log(H.RESIDUAL + "_train", res, **log)
        if stepped:
            self.log(H.GRAD_NORM_VELOCITY + "_train", norm, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)

    def _vae_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_vae, opt_disc, _ = self.optimizers()
        kl_weight = self.kl_weight_value
        inference_outputs, _, loss_output = self.forward(batch, loss_kwargs={"kl_weight": kl_weight})
        z = inference_outputs["z"]
        n_obs = z.shape[0]
        log = {"on_step": False, "on_epoch": True, "batch_size": n_obs, "sync_dist": self.use_sync_dist}
        self._report_repairs(loss_output, "Training")

        loss = loss_output.loss
        if self.use_adversary:
            target = labels_to_indices(batch[self.adversary_key], self.module.n_adversary_classes)
            in_range = self._agree(labels_in_range(target, self.module.n_adversary_classes))
            self.log(H.N_LABEL_SKIPS + "_train", float(not in_range), on_step=False, on_epoch=True, reduce_fx="sum")
            if in_range:
                for _ in range(self.adversary_steps):
                    logits = self.module.adversary_logits(z.detach())
                    d_loss = discriminator_loss(logits, target)
                    _, kept = self._guarded_step(opt_disc, self.module.discriminator_parameters(), d_loss, batch_idx)
                    if kept is False:
                        self.total_label_skips += 1
                        self.log(H.N_LABEL_SKIPS + "_train", 1.0, on_step=False, on_epoch=True, reduce_fx="sum")
                        logger.warning(
                            "Skipped discriminator step %d (epoch %d): %s.",
                            self.global_step,
                            self.current_epoch,
                            self.last_skip_reason,
                        )
                accuracy = (logits.argmax(dim=-1) == target).float().mean()
                self.log(H.ADVERSARIAL + "_train", d_loss.detach(), **log)
                self.log(H.DISC_ACCURACY + "_train", accuracy, **log)
            else:
                self.total_label_skips += 1
                logger.warning(
                    "Step %d: adversarial labels outside [0, %d)%s (values %s); skipped this batch's "
                    "discriminator step (%d so far).",
                    self.global_step,
                    self.module.n_adversary_classes,
                    _ELSEWHERE if bool(labels_in_range(target, self.module.n_adversary_classes)) else "",
                    sorted(set(target.tolist()))[:10],
                    self.total_label_skips,
                )
            if self.adversarial_weight > 0:
                with _frozen(self.module.discriminator_parameters()):
                    fool = confusion_loss(self.module.adversary_logits(z))
                loss = loss + self.adversarial_weight * fool
                self.log(H.FOOL + "_train", fool.detach(), **log)

        norm, stepped = self._guarded_step(opt_vae, self.module.vae_parameters(), loss, batch_idx)
        if stepped is not None:
            self._record_skip(not stepped, "VAE")
            if stepped:
                self.log(H.GRAD_NORM + "_train", norm, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)

        self.log("train_loss", loss.detach(), prog_bar=True, **log)
        self.log(H.RECONSTRUCTION + "_train", loss_output.reconstruction_loss_sum.detach() / n_obs, **log)
        self.log(H.KL + "_train", loss_output.kl_local_sum.detach() / n_obs, **log)
        self.log("elbo_train", (loss_output.reconstruction_loss_sum + loss_output.kl_local_sum).detach() / n_obs, **log)
        self.log(
            H.N_REPAIRED + "_train",
            loss_output.extra_metrics["n_repaired"],
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            sync_dist=self.use_sync_dist,
        )
        self.log(H.KL_WEIGHT, kl_weight, on_step=False, on_epoch=True)

    @torch.no_grad()  # not inference_mode: under gloo DDP, Lightning syncs the logged values in place afterwards
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """ELBO terms and discriminator accuracy on the validation cells (phase 1)."""
        if self.phase == "flow":
            return
        inference_outputs, _, loss_output = self.forward(batch, loss_kwargs={"kl_weight": self.kl_weight_value})
        self._report_repairs(loss_output, "Validation")
        n_obs = inference_outputs["z"].shape[0]
        log = {"on_step": False, "on_epoch": True, "batch_size": n_obs, "sync_dist": self.use_sync_dist}
        self.log(
            H.N_REPAIRED + "_validation",
            loss_output.extra_metrics["n_repaired"],
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            sync_dist=self.use_sync_dist,
        )
        self.log("validation_loss", loss_output.loss, **log)
        self.log(H.RECONSTRUCTION + "_validation", loss_output.reconstruction_loss_sum / n_obs, **log)
        self.log(H.KL + "_validation", loss_output.kl_local_sum / n_obs, **log)
        self.log("elbo_validation", (loss_output.reconstruction_loss_sum + loss_output.kl_local_sum) / n_obs, **log)
        if self.use_adversary:
            target = labels_to_indices(batch[self.adversary_key], self.module.n_adversary_classes)
            if self._agree(labels_in_range(target, self.module.n_adversary_classes)):  # same keys on every process
                logits = self.module.adversary_logits(inference_outputs["qzm"])
                accuracy = (logits.argmax(dim=-1) == target).float().mean()
                self.log(H.DISC_ACCURACY + "_validation", accuracy, **log)
