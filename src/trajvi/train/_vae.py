"""Phase 1's training plan: the count model (VAE) and its adversary.

Each step alternates a discriminator step on the detached latent with a VAE step that adds a bounded
fooling term. Non-finite loss entries are repaired and counted (see :mod:`trajvi.module._losses`); the
guarded steps, accumulation, reports and CUDA-graph capture come from :class:`GuardedTrainingPlan`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from trajvi._constants import HISTORY_KEYS as H
from trajvi._constants import REGISTRY_KEYS
from trajvi._logging import logger
from trajvi.module import confusion_loss, discriminator_loss, labels_in_range, labels_to_indices

from ._base import GuardedTrainingPlan, frozen, fused_adam

if TYPE_CHECKING:
    from trajvi._types import Phase
    from trajvi.module import TrajVIModule

    from ._guards import GuardReport


class TrajVITrainingPlan(GuardedTrainingPlan):
    """Training plan of phase 1: the negative-binomial VAE and the discriminator that reads its latent.

    Two optimizers: the VAE (encoder, decoder, embeddings; the gene-wise dispersion in its own group
    with Adam's default ``eps``) and the discriminator. See :class:`GuardedTrainingPlan` for the
    guards, accumulation, reports and CUDA-graph capture.

    Parameters
    ----------
    module
        A :class:`~trajvi.module.TrajVIModule`.
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
    n_epochs_kl_warmup
        Epochs over which the KL weight rises linearly from 0 to 1.
    dispersion_lr
        Learning rate of the gene-wise dispersion (default: ``lr``).
    reduce_lr_on_plateau, lr_factor, lr_patience, lr_threshold, lr_scheduler_metric, lr_min
        scvi-tools' learning-rate schedule (see :class:`GuardedTrainingPlan`) of the VAE's optimizer (the
        dispersion's rate too; not the discriminator's), following ``"elbo_validation"`` by default, or
        any of :attr:`scheduler_metrics` (a ``_train`` one when there are no validation cells).
    **kwargs
        The guards and their reports (``gradient_clip_val``, ``accumulate_grad_batches``,
        ``max_consecutive_skips``, ``rollback_nonfinite``, ``max_update_ratio``,
        ``check_guards_every_n_steps``, ``cuda_graph``; see :class:`GuardedTrainingPlan`), then
        :class:`scvi.train.TrainingPlan`.
    """

    phase: ClassVar[Phase] = "vae"
    main_optimizer: ClassVar[str] = "vae"
    prog_bar_metric: ClassVar[str] = H.TRAIN_LOSS
    scheduler_metrics: ClassVar[tuple[str, ...]] = (
        *(f"{name}_{split}" for split in ("validation", "train") for name in (H.ELBO, H.RECONSTRUCTION, H.KL)),
        H.TRAIN_LOSS,
        "validation_loss",
    )

    def __init__(
        self,
        module: TrajVIModule,
        *,
        adversarial_weight: float = 1.0,
        adversary_key: str = REGISTRY_KEYS.CONDITION_KEY,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        adversary_lr: float = 1e-3,
        adversary_steps: int = 1,
        n_epochs_kl_warmup: int | None = None,
        dispersion_lr: float | None = None,
        **kwargs: Any,
    ) -> None:
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
        self.adversarial_weight = float(adversarial_weight)
        self.adversary_key = adversary_key
        self.adversary_lr = adversary_lr
        self.adversary_steps = int(adversary_steps)
        self.dispersion_lr = dispersion_lr

    # -- optimizers ------------------------------------------------------------------------------
    def guarded_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]]:
        """The VAE's Adam (dispersion in its own group) and the discriminator's Adam, both fused where possible."""
        # The gene-wise dispersion gets Adam's default eps: its gradients are small for sparse genes, and
        # eps=0.01 (right for the network weights) would all but freeze it (see the design notes).
        module = self.module
        vae_params = module.vae_parameters()
        dispersion = [module.log_theta]
        others = [p for p in vae_params if p is not module.log_theta]
        groups = [{"params": others}, {"params": dispersion, "eps": 1e-8, "lr": self.dispersion_lr or self.lr}]
        vae = fused_adam(groups, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay)
        disc_params = module.discriminator_parameters()
        disc = fused_adam(disc_params, lr=self.adversary_lr, weight_decay=self.weight_decay)
        return {"vae": (vae, vae_params), "discriminator": (disc, disc_params)}

    def guard_names(self) -> dict[str, str]:
        """Report names of the two guards."""
        return {"vae": "VAE", "discriminator": "discriminator"}

    @property
    def kl_weight_value(self) -> float:
        """The KL weight of the current epoch as a Python float (no device tensor, no synchronisation)."""
        warmup = self.n_epochs_kl_warmup
        if not warmup or self.current_epoch >= warmup:
            return float(self.max_kl_weight)
        slope = self.max_kl_weight - self.min_kl_weight
        return float(self.min_kl_weight + slope * self.current_epoch / warmup)

    @property
    def use_adversary(self) -> bool:
        """Whether the discriminator has at least two classes to tell apart."""
        return self.module.n_adversary_classes > 1

    # -- per-fit state and reports ----------------------------------------------------------------
    def _setup_fit_state(self) -> None:
        self._repairs = torch.zeros(2, device=self.device)  # entries repaired in the reconstruction and KL terms
        self._repairs_reported = [0.0, 0.0]
        self._last_repairs: tuple[Any, ...] = ()
        self._kl_weight = torch.full((), self.kl_weight_value, device=self.device)
        self._kl_weight_value = self.kl_weight_value

    def _before_step(self) -> None:
        kl_weight = self.kl_weight_value
        if kl_weight != self._kl_weight_value:
            self._kl_weight.fill_(kl_weight)
            self._kl_weight_value = kl_weight

    def _log_epoch_extras(self) -> None:
        self.log(H.KL_WEIGHT, self._kl_weight_value, on_step=False, on_epoch=True, batch_size=1)

    def _report_skips(self, name: str, report: GuardReport, span: str) -> None:
        self.total_label_skips += report.skipped
        logger.warning(
            "Skipped %d discriminator step%s (%s, epoch %d): %s.",
            report.skipped,
            "" if report.skipped == 1 else "s",
            span,
            self.current_epoch,
            report.reasons(f"adversarial labels outside [0, {self.module.n_adversary_classes})", self.max_update_ratio),
        )

    def _report_repairs(self, span: str, *, single: bool) -> None:
        counts = self._repairs.tolist()
        delta = [c - r for c, r in zip(counts, self._repairs_reported, strict=True)]
        self._repairs_reported = counts
        if not any(delta):
            return
        self.total_repaired += int(sum(delta))
        if single:  # the last step's records still hold the values: report their range too
            for repair in self._last_repairs:
                if int(repair.n_repaired) > 0:
                    logger.warning("Training %s: %s.", span, repair.describe())
            return
        for term, n in zip((r.term for r in self._last_repairs), delta, strict=True):
            if n:
                logger.warning(
                    "Training %s: %d non-finite entries of the %s term replaced by 0 (non-finite inputs or results).",
                    span,
                    int(n),
                    term,
                )

    # -- the step ----------------------------------------------------------------------------------
    def _step(self, batch: dict[str, torch.Tensor], batch_idx: int, *, raw: bool = False) -> None:
        inference_outputs, _, loss_output = self.forward(batch, loss_kwargs={"kl_weight": self._kl_weight})
        z = inference_outputs["z"]
        n_obs = z.shape[0]
        self._last_repairs = loss_output.repairs
        self._repairs.add_(torch.stack([r.n_repaired.float() for r in loss_output.repairs]))

        loss = loss_output.loss
        metrics: dict[str, torch.Tensor] = {}
        if self.use_adversary:
            n_classes = self.module.n_adversary_classes
            target = labels_to_indices(batch[self.adversary_key], n_classes)
            in_range = labels_in_range(target, n_classes)
            safe = torch.where((target >= 0) & (target < n_classes), target, 0)
            for _ in range(self.adversary_steps):
                logits = self.module.adversary_logits(z.detach())
                d_loss = discriminator_loss(logits, safe)
                _, d_kept = self._guarded_step("discriminator", d_loss, batch_idx, raw=raw, ok=in_range)
                if d_kept is not None:
                    self._sums.add_sum({H.N_LABEL_SKIPS + "_train": ~d_kept})
            metrics[H.ADVERSARIAL + "_train"] = d_loss
            metrics[H.DISC_ACCURACY + "_train"] = (logits.argmax(dim=-1) == safe).float().mean()
            if self.adversarial_weight > 0:
                with frozen(self.module.discriminator_parameters()):
                    fool = confusion_loss(self.module.adversary_logits(z))
                loss = loss + self.adversarial_weight * fool
                metrics[H.FOOL + "_train"] = fool

        norm, kept = self._guarded_step("vae", loss, batch_idx, raw=raw)
        if kept is not None:
            self._sums.add({H.GRAD_NORM + "_train": norm}, kept.float())
            self._sums.add_sum({H.N_SKIPPED + "_train": ~kept})
        recon, kl = loss_output.reconstruction_loss_sum, loss_output.kl_local_sum
        metrics[H.TRAIN_LOSS] = loss
        metrics[H.RECONSTRUCTION + "_train"] = recon / n_obs
        metrics[H.KL + "_train"] = kl / n_obs
        metrics[H.ELBO + "_train"] = (recon + kl) / n_obs
        self._sums.add(metrics, n_obs)
        self._sums.add_sum({H.N_REPAIRED + "_train": loss_output.extra_metrics["n_repaired"]})

    @torch.no_grad()  # not inference_mode: under gloo DDP, Lightning syncs the logged values in place afterwards
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """ELBO terms and discriminator accuracy on the validation cells."""
        inference_outputs, _, loss_output = self.forward(batch, loss_kwargs={"kl_weight": self.kl_weight_value})
        n_repaired = float(loss_output.extra_metrics["n_repaired"])
        if n_repaired > 0:
            self.total_repaired += int(n_repaired)
            for repair in loss_output.repairs:
                if int(repair.n_repaired) > 0:
                    logger.warning("Validation step %d: %s.", self.global_step, repair.describe())
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
        self.log(
            H.ELBO + "_validation", (loss_output.reconstruction_loss_sum + loss_output.kl_local_sum) / n_obs, **log
        )
        if self.use_adversary:
            target = labels_to_indices(batch[self.adversary_key], self.module.n_adversary_classes)
            if self._agree(labels_in_range(target, self.module.n_adversary_classes)):  # same keys on every process
                logits = self.module.adversary_logits(inference_outputs["qzm"])
                accuracy = (logits.argmax(dim=-1) == target).float().mean()
                self.log(H.DISC_ACCURACY + "_validation", accuracy, **log)
