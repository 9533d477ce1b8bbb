"""One training plan (manual optimization) for both phases of trajvi.

Phase 1 (``phase="vae"``) alternates a discriminator step on the detached latent with a VAE step that
adds a bounded fooling term. Every step is guarded: a loss or gradient that is not finite skips the
step (parameters untouched) and is counted; non-finite loss entries are repaired and counted; too many
skipped steps in a row stop training with an error that says what to try.

The guards decide on the device (:mod:`trajvi.train._guards`) and the per-step metrics are summed there;
the host reads both every ``check_guards_every_n_steps`` steps and at the end of each epoch. On one CUDA
device the whole step is then recorded once and replayed as a CUDA graph (:mod:`trajvi.train._graph`).

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
from trajvi.train._graph import CapturedStep
from trajvi.train._guards import EpochSums, StepGuard

Phase = Literal["vae", "flow"]

#: Metrics reported as their sum over the epoch (the others are means).
_COUNTS = frozenset({H.N_SKIPPED + "_train", H.N_LABEL_SKIPS + "_train", H.N_REPAIRED + "_train"})


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


def check_precision(precision: Any) -> None:
    """Refuse float16 training (``"16-mixed"``, ``"16-true"``) with a message that says what to use instead.

    float16 needs loss scaling: a GradScaler skips the steps whose scaled gradients overflow and lowers the
    scale. trajvi's guards skip those steps first (their gradient is not finite), so the scaler never lowers
    its scale and every step is skipped (measured on an H100: 30 skipped steps in a row from the first one).
    """
    name = str(precision).lower() if precision is not None else ""
    if name in ("16", "16-mixed", "16-true", "half"):
        msg = (
            f"precision={precision!r} (float16) is not supported: its loss scaling and trajvi's guarded steps both "
            "skip steps with non-finite gradients, and together they skip every step. Use precision='bf16-mixed' "
            "(half precision without loss scaling, on GPUs that have bfloat16) or '32' (the default)."
        )
        raise ValueError(msg)


def _adam(params: Any, **kwargs: Any) -> torch.optim.Adam:
    """Fused Adam where the device has the kernel, else the default implementation."""
    try:
        return torch.optim.Adam(params, **kwargs)
    except RuntimeError:
        kwargs.pop("fused")
        kwargs.pop("capturable")
        return torch.optim.Adam(params, **kwargs)


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
    check_guards_every_n_steps
        How often the host reads what the guards did (skipped steps, repairs) to report it and to stop a
        failing run. ``None``: every step on the CPU, every 50 steps on an accelerator (each read waits for
        the device). Skips are reported, and :class:`NonFiniteTrainingError` raised, at the next read.
    cuda_graph
        Record the training step once and replay it as a CUDA graph. ``None`` (default) does so on one
        CUDA device in ``precision="32-true"`` without gradient accumulation or gradient monitors. The
        learning rates are then fixed for the fit.
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
        check_guards_every_n_steps: int | None = None,
        cuda_graph: bool | None = None,
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
        self.check_guards_every_n_steps = check_guards_every_n_steps
        self.cuda_graph = cuda_graph
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
        # Fused Adam skips a bad step inside its kernel (see train/_guards.py); capturable on CUDA for graphs.
        fused = {"fused": True, "capturable": self.device.type == "cuda"}
        dispersion = [self.module.log_theta]
        others = [p for p in self.module.vae_parameters() if p is not self.module.log_theta]
        groups = [{"params": others}, {"params": dispersion, "eps": 1e-8, "lr": self.dispersion_lr or self.lr}]
        vae = _adam(groups, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, **fused)
        disc = _adam(
            self.module.discriminator_parameters(), lr=self.adversary_lr, weight_decay=self.weight_decay, **fused
        )
        velocity = _adam(self.module.velocity_parameters(), lr=self.velocity_lr, **fused)
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

    # -- guarded optimizer steps -----------------------------------------------------------------
    def on_train_start(self) -> None:
        """Set up the guards of the three optimizers, the per-epoch sums and, where it applies, the CUDA graph."""
        super().on_train_start()
        self._wrapped = dict(zip(("vae", "discriminator", "flow"), self.optimizers(), strict=True))
        vae, disc, velocity = (o.optimizer for o in self._wrapped.values())
        guard = {
            "clip": self.gradient_clip_val,
            "rollback": self.rollback_nonfinite,
            "max_update_ratio": self.max_update_ratio,
            "world_size": self.trainer.world_size,
        }
        module = self.module
        self._guards = {
            "vae": StepGuard("VAE", vae, module.vae_parameters(), **guard),
            "discriminator": StepGuard("discriminator", disc, module.discriminator_parameters(), **guard),
            "flow": StepGuard("velocity-field", velocity, module.velocity_parameters(), **guard),
        }
        check_precision(self.trainer.precision)
        self._sums = EpochSums()
        self._repairs = torch.zeros(2, device=self.device)  # entries repaired in the reconstruction and KL terms
        self._repairs_reported = [0.0, 0.0]
        self._last_repairs: tuple[Any, ...] = ()
        self._kl_weight = torch.full((), self.kl_weight_value, device=self.device)
        self._kl_weight_value = self.kl_weight_value
        self._steps_since_check = 0
        self._n_steps = 0  # training steps (minibatches) of this fit; Lightning's global_step counts optimizers
        self._first_unchecked_step = 0
        self._check_every = self._resolve_check_every()
        self._captured = None
        if self._resolve_cuda_graph():
            self._captured = CapturedStep(lambda batch: self._step(batch, 0, raw=True), on_capture=self._freeze_sums)

    def _freeze_sums(self) -> None:
        self._sums.frozen = True

    def on_train_end(self) -> None:
        """Say how many steps the CUDA graph replayed."""
        super().on_train_end()
        if self._captured is not None:
            c = self._captured
            logger.info(
                "%d training steps replayed from the CUDA graph, %d run eagerly (warm-up, shorter minibatches%s).",
                c.n_replays,
                c.n_eager,
                ", a failed capture" if c.failed else "",
            )

    def _resolve_check_every(self) -> int:
        if self.check_guards_every_n_steps is not None:
            return max(1, int(self.check_guards_every_n_steps))
        return 1 if self.device.type == "cpu" else 50

    def _resolve_cuda_graph(self) -> bool:
        """Whether to capture the step: on one CUDA device, in float32, without accumulation or monitors."""
        reasons = []
        if self.device.type != "cuda":
            reasons.append("not training on a CUDA device")
        if self.trainer.world_size > 1:
            reasons.append("distributed training")
        if str(self.trainer.precision) != "32-true":
            reasons.append(f"precision={self.trainer.precision!r} (needs '32-true')")
        if self.accumulate_grad_batches > 1:
            reasons.append("gradient accumulation")
        if self.gradient_monitors:
            reasons.append("gradient monitors attached")
        if not all(g.on_device for g in self._guards.values()):
            reasons.append("an optimizer without fused Adam")
        if self.cuda_graph is None:
            return not reasons
        if self.cuda_graph and reasons:
            logger.warning("cuda_graph=True ignored: %s.", "; ".join(reasons))
        return bool(self.cuda_graph) and not reasons

    def _window(self, batch_idx: int) -> tuple[bool, bool]:
        """Whether this batch opens and whether it closes a gradient-accumulation window."""
        k = self.accumulate_grad_batches
        if k == 1:
            return True, True
        first = batch_idx % k == 0
        n_batches = self.trainer.num_training_batches
        last = (batch_idx + 1) % k == 0 or (isinstance(n_batches, int) and batch_idx + 1 >= n_batches)
        return first, last

    def _guarded_step(
        self,
        name: str,
        loss: torch.Tensor,
        batch_idx: int,
        *,
        raw: bool,
        ok: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backward ``loss`` and, at the end of an accumulation window, take the guarded step of optimizer ``name``.

        ``raw`` bypasses Lightning's backward and optimizer wrappers (inside a CUDA graph); otherwise
        they run, so that precision plugins and DDP see every backward pass. Returns the gradient norm
        before clipping (``nan`` inside a window) and whether the step was kept (``None`` inside a
        window), both on the device.
        """
        guard = self._guards[name]
        first, last = self._window(batch_idx)
        if first:
            guard.optimizer.zero_grad(set_to_none=False)  # the gradients keep their storage (CUDA graphs)
        scaled = loss / self.accumulate_grad_batches
        if raw:
            scaled.backward()
        else:
            self.manual_backward(scaled)
        if not last:
            return torch.full((), float("nan"), device=loss.device), None
        for monitor in self.gradient_monitors:  # before clipping and before the finite check
            monitor.observe(self, guard.optimizer, guard.params)
        step = guard.optimizer.step if raw else self._wrapped[name].step
        return guard.step(loss, step, ok)

    def _step(self, batch: Any, batch_idx: int, *, raw: bool = False) -> None:
        if self.phase == "flow":
            self._flow_step(batch, batch_idx, raw=raw)
        else:
            self._vae_step(batch, batch_idx, raw=raw)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """Run the step of the current phase; read the guards every few steps and the sums at the epoch's end."""
        kl_weight = self.kl_weight_value
        if kl_weight != self._kl_weight_value:
            self._kl_weight.fill_(kl_weight)
            self._kl_weight_value = kl_weight
        if self._captured is not None:
            self._captured(batch)
        else:
            self._step(batch, batch_idx)
        self._steps_since_check += 1
        self._n_steps += 1
        n_batches = self.trainer.num_training_batches
        last = isinstance(n_batches, int) and batch_idx + 1 >= n_batches
        if last or self._steps_since_check >= self._check_every:
            self._check_guards()
        if last:
            self._log_epoch()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's sums if the loop did not know its number of batches."""
        if self._steps_since_check:
            self._check_guards()
        if self._sums.pending:
            self._log_epoch()
        super().on_train_epoch_end()

    def _log_epoch(self) -> None:
        unsynced = {H.N_SKIPPED + "_train", H.N_LABEL_SKIPS + "_train"}  # decided together: equal on every process
        for name, value in self._sums.flush().items():
            is_count = name in _COUNTS
            self.log(
                name,
                value,
                on_step=False,
                on_epoch=True,
                batch_size=1,
                prog_bar=name in ("train_loss", H.FLOW + "_train"),
                reduce_fx="sum" if is_count else "mean",
                sync_dist=self.use_sync_dist and name not in unsynced,
            )
        if self.phase == "vae":
            self.log(H.KL_WEIGHT, self._kl_weight_value, on_step=False, on_epoch=True, batch_size=1)

    # -- reports (read from the device every few steps) -----------------------------------------
    def _check_guards(self) -> None:
        """Read what the guards and the loss repairs did since the last check; report it; stop a failing run."""
        first, last = self._first_unchecked_step, self._n_steps
        span = f"step {last}" if last - first <= 1 else f"steps {first + 1}-{last}"
        self._steps_since_check = 0
        self._first_unchecked_step = last
        self._report_repairs(span, single=last - first <= 1)
        phase_guard = "flow" if self.phase == "flow" else "vae"
        for name in (phase_guard, "discriminator") if self.phase == "vae" else (phase_guard,):
            report = self._guards[name].read()
            if not report.skipped:
                continue
            if name == "discriminator":
                self.total_label_skips += report.skipped
                logger.warning(
                    "Skipped %d discriminator step%s (%s, epoch %d): %s.",
                    report.skipped,
                    "" if report.skipped == 1 else "s",
                    span,
                    self.current_epoch,
                    report.reasons(
                        f"adversarial labels outside [0, {self.module.n_adversary_classes})", self.max_update_ratio
                    ),
                )
                continue
            self.total_skipped_steps += report.skipped
            self.consecutive_skips = report.consecutive
            logger.warning(
                "Skipped %s %s (epoch %d): %s; parameters left unchanged (%d skipped in a row).",
                report.name,
                span if report.steps == 1 else f"{report.skipped} of {report.steps} steps ({span})",
                self.current_epoch,
                report.reasons("a veto", self.max_update_ratio),
                report.consecutive,
            )
            if report.max_consecutive >= self.max_consecutive_skips:
                phase = "VAE" if name == "vae" else "velocity-field"
                msg = (
                    f"{report.max_consecutive} consecutive {phase} steps were skipped (last reasons: "
                    f"{report.reasons('a veto', self.max_update_ratio)}); stopping. "
                    "Likely causes: a learning rate too high for this data (try lr=1e-4), cells with extreme "
                    "library sizes or non-count values (check the input layer, filter outlier cells), or "
                    "half precision (use precision='32' or 'bf16-mixed'). See the troubleshooting docs."
                )
                raise NonFiniteTrainingError(msg)

    def _report_repairs(self, span: str, *, single: bool) -> None:
        if self.phase == "flow":
            return
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

    # -- the steps -------------------------------------------------------------------------------
    def _flow_step(self, batch: Any, batch_idx: int, *, raw: bool) -> None:
        z0, z1, t0, t1 = batch
        loss, fm, res = flow_matching_loss(self.module.velocity, z0, z1, t0, t1, residual_penalty=self.residual_penalty)
        norm, kept = self._guarded_step("flow", loss, batch_idx, raw=raw)
        self._sums.add({H.FLOW + "_train": fm, H.RESIDUAL + "_train": res}, z0.shape[0])
        if kept is not None:
            self._sums.add({H.GRAD_NORM_VELOCITY + "_train": norm}, kept.float())
            self._sums.add_sum({H.N_SKIPPED + "_train": ~kept})

    def _vae_step(self, batch: dict[str, torch.Tensor], batch_idx: int, *, raw: bool) -> None:
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
                with _frozen(self.module.discriminator_parameters()):
                    fool = confusion_loss(self.module.adversary_logits(z))
                loss = loss + self.adversarial_weight * fool
                metrics[H.FOOL + "_train"] = fool

        norm, kept = self._guarded_step("vae", loss, batch_idx, raw=raw)
        if kept is not None:
            self._sums.add({H.GRAD_NORM + "_train": norm}, kept.float())
            self._sums.add_sum({H.N_SKIPPED + "_train": ~kept})
        recon, kl = loss_output.reconstruction_loss_sum, loss_output.kl_local_sum
        metrics["train_loss"] = loss
        metrics[H.RECONSTRUCTION + "_train"] = recon / n_obs
        metrics[H.KL + "_train"] = kl / n_obs
        metrics["elbo_train"] = (recon + kl) / n_obs
        self._sums.add(metrics, n_obs)
        self._sums.add_sum({H.N_REPAIRED + "_train": loss_output.extra_metrics["n_repaired"]})

    @torch.no_grad()  # not inference_mode: under gloo DDP, Lightning syncs the logged values in place afterwards
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """ELBO terms and discriminator accuracy on the validation cells (phase 1)."""
        if self.phase == "flow":
            return
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
        self.log("elbo_validation", (loss_output.reconstruction_loss_sum + loss_output.kl_local_sum) / n_obs, **log)
        if self.use_adversary:
            target = labels_to_indices(batch[self.adversary_key], self.module.n_adversary_classes)
            if self._agree(labels_in_range(target, self.module.n_adversary_classes)):  # same keys on every process
                logits = self.module.adversary_logits(inference_outputs["qzm"])
                accuracy = (logits.argmax(dim=-1) == target).float().mean()
                self.log(H.DISC_ACCURACY + "_validation", accuracy, **log)
