"""The guarded base of trajvi's training plans: what both regimes share.

Manual optimization with guarded steps: a step whose loss or gradient is not finite is skipped (parameters
untouched) and counted, a step that blows the parameters up is undone and counted, and too many skipped
steps in a row stop training with an error that says what to try. Gradients are accumulated by hand over
windows of minibatches, clipped before the step, and shown to the gradient monitors before clipping.

The guards decide on the device (:mod:`trajvi.train._guards`) and the per-step metrics are summed there;
the host reads both every ``check_guards_every_n_steps`` steps and at the end of each epoch. On one CUDA
device the whole step is recorded once and replayed as a CUDA graph (:mod:`trajvi.train._graph`).

Under DDP (``strategy="ddp_find_unused_parameters_true"``) every backward pass averages the gradients over
the processes, so each optimizer steps on the same gradients everywhere; every decision that could depend
on one process's minibatch alone (a non-finite loss, labels out of range, a rolled-back step) is reduced
over the processes first, so all replicas take, skip or undo the same steps.

A regime subclasses :class:`GuardedTrainingPlan` and gives its optimizers (:meth:`~GuardedTrainingPlan.
guarded_optimizers`) and its step (:meth:`~GuardedTrainingPlan._step`); see :mod:`trajvi.train._vae`
and :mod:`trajvi.train._velocity`.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from scvi.train import TrainingPlan

from trajvi._constants import HISTORY_KEYS as H
from trajvi._distributed import all_processes_agree
from trajvi._logging import logger
from trajvi.diagnostics import NonFiniteTrainingError

from ._graph import CapturedStep
from ._guards import EpochSums, GuardReport, StepGuard

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from scvi.module.base import BaseModuleClass

    from trajvi._types import Phase

#: scvi-tools' schedule options that only act with ``reduce_lr_on_plateau=True``.
_SCHEDULE_OPTIONS = ("lr_factor", "lr_patience", "lr_threshold", "lr_min")
#: Metrics reported as their sum over the epoch (the others are weighted means).
COUNTS = frozenset({H.N_SKIPPED + "_train", H.N_LABEL_SKIPS + "_train", H.N_REPAIRED + "_train"})
#: Counters decided together on every process (equal everywhere, so never summed over processes).
_UNSYNCED = frozenset({H.N_SKIPPED + "_train", H.N_LABEL_SKIPS + "_train"})


@contextmanager
def frozen(params: Iterable[torch.nn.Parameter]) -> Iterator[None]:
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


def fused_adam(params: Any, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel (which can skip a step on the device) where the parameters' device has it.

    ``capturable`` is set on CUDA, so that the step can be recorded in a CUDA graph.
    """
    first = next(iter(params[0]["params"])) if isinstance(params[0], dict) else params[0]
    on_cuda = first.device.type == "cuda"
    try:
        return torch.optim.Adam(params, fused=True, capturable=on_cuda, **kwargs)
    except RuntimeError:
        return torch.optim.Adam(params, **kwargs)


def plan_parameters(plan_cls: type) -> list[str]:
    """Names of the keyword arguments a training plan class accepts (its own, its bases', scvi-tools')."""
    names: list[str] = []
    for cls in plan_cls.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        for name, param in inspect.signature(vars(cls)["__init__"]).parameters.items():
            if name in ("self", "module") or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            if name not in names:
                names.append(name)
        if cls is TrainingPlan:
            break
    return names


def check_plan_kwargs(
    plan_cls: type, plan_kwargs: dict[str, Any] | None, *, explicit: Iterable[str], caller: str
) -> dict[str, Any]:
    """Refuse ``plan_kwargs`` that repeat an explicit argument of ``caller`` or that the plan does not take.

    An explicit argument of ``train()`` or ``train_trajectories()`` is never overridden silently: naming it
    in ``plan_kwargs`` too is an error that says where to pass it. Checked before any work is done.
    """
    plan_kwargs = dict(plan_kwargs or {})
    repeated = sorted(set(plan_kwargs) & set(explicit))
    if repeated:
        shown = ", ".join(f"{k}={plan_kwargs[k]!r}" for k in repeated)
        msg = f"plan_kwargs repeats {repeated}, which {caller}() takes itself: pass {shown} to {caller}() directly."
        raise ValueError(msg)
    valid = [name for name in plan_parameters(plan_cls) if name not in set(explicit)]
    unknown = sorted(set(plan_kwargs) - set(valid))
    if unknown:
        msg = f"plan_kwargs has {unknown}, which {plan_cls.__name__} does not take; valid keys: {valid}."
        raise ValueError(msg)
    return plan_kwargs


class GuardedTrainingPlan(TrainingPlan):
    """Manual optimization with guarded steps, accumulation, per-epoch sums and CUDA-graph capture.

    A subclass names its optimizers in :meth:`guarded_optimizers` (each gets a :class:`StepGuard`) and
    implements :meth:`_step`, which calls :meth:`_guarded_step` once per optimizer step it takes and adds
    its metrics to ``self._sums``.

    Parameters
    ----------
    module
        The module (a :class:`~trajvi.module.TrajVIModule`).
    lr, weight_decay, eps
        Adam settings of the plan's main optimizer.
    gradient_clip_val
        Largest gradient norm; larger gradients are scaled down (0 or ``None``: no clipping).
    accumulate_grad_batches
        Number of minibatches whose gradients are summed before each optimizer step.
    max_consecutive_skips
        Training stops with :class:`~trajvi.diagnostics.NonFiniteTrainingError` after this many skipped
        steps in a row.
    rollback_nonfinite
        Undo a step that blows up: one that leaves a parameter non-finite, or moves the parameters by more
        than ``max_update_ratio`` times their norm (plus 1). It then counts as skipped.
    max_update_ratio
        See ``rollback_nonfinite``; Adam at ``lr=1e-3`` moves them by about 1e-3 of that.
    check_guards_every_n_steps
        How often the host reads what the guards did (skipped steps, repairs) to report it and to stop a
        failing run. ``None``: every step on the CPU, every 50 steps on an accelerator (each read waits for
        the device). Skips are reported, and the error raised, at the next read.
    cuda_graph
        Record the training step once and replay it as a CUDA graph. ``None`` (default) does so on one
        CUDA device in ``precision="32-true"`` without gradient accumulation, gradient monitors or a
        learning-rate schedule (the recorded step keeps the learning rates it was recorded with).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan`, including its learning-rate schedule:
        ``reduce_lr_on_plateau=True`` multiplies the learning rates of the main optimizer by ``lr_factor``
        (not below ``lr_min``) when ``lr_scheduler_metric`` has not fallen by more than ``lr_threshold``
        for ``lr_patience`` epochs (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`, absolute
        threshold, as in scvi-tools). The metric must be one of :attr:`scheduler_metrics` (default: the
        first); the schedule is stepped at the end of every epoch, and the learning rates land in the history
        (``lr-Adam``). Schedule options without ``reduce_lr_on_plateau=True`` are refused.
    """

    #: The regime this plan trains (read by the monitors to pick the parameter blocks).
    phase: ClassVar[Phase]
    #: The optimizer whose skipped steps count as the plan's skipped steps (and can stop training).
    main_optimizer: ClassVar[str]
    #: Name of the prog-bar metric.
    prog_bar_metric: ClassVar[str] = H.TRAIN_LOSS
    #: Metrics that ``lr_scheduler_metric`` may name (logged every epoch by the plan); the first is the default.
    scheduler_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        gradient_clip_val: float | None = 50.0,
        accumulate_grad_batches: int = 1,
        max_consecutive_skips: int = 20,
        rollback_nonfinite: bool = True,
        max_update_ratio: float = 1.0,
        check_guards_every_n_steps: int | None = None,
        cuda_graph: bool | None = None,
        lr_scheduler_metric: str | None = None,
        **kwargs: Any,
    ) -> None:
        given = [k for k in _SCHEDULE_OPTIONS if k in kwargs] + ["lr_scheduler_metric"] * (
            lr_scheduler_metric is not None
        )
        if given and not kwargs.get("reduce_lr_on_plateau", False):
            msg = (
                f"{given} set without reduce_lr_on_plateau=True: the learning rate would stay fixed. Add "
                "reduce_lr_on_plateau=True to plan_kwargs, or leave them out."
            )
            raise ValueError(msg)
        if lr_scheduler_metric is None and self.scheduler_metrics:
            lr_scheduler_metric = self.scheduler_metrics[0]
        if lr_scheduler_metric is not None:
            kwargs["lr_scheduler_metric"] = lr_scheduler_metric
        if int(accumulate_grad_batches) < 1:
            msg = f"accumulate_grad_batches={accumulate_grad_batches}; it must be at least 1."
            raise ValueError(msg)
        if int(max_consecutive_skips) < 1:
            msg = f"max_consecutive_skips={max_consecutive_skips}; it must be at least 1."
            raise ValueError(msg)
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=eps, **kwargs)
        if self.reduce_lr_on_plateau:
            check_schedule(type(self), self.lr_scheduler_metric, self.lr_factor, self.lr_patience, self.lr_min)
        self.automatic_optimization = False
        self.gradient_clip_val = gradient_clip_val
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.rollback_nonfinite = bool(rollback_nonfinite)
        self.max_update_ratio = float(max_update_ratio)
        self.gradient_monitors: list[Any] = []  # set by the monitoring callbacks (trajvi.diagnostics)
        self.check_guards_every_n_steps = check_guards_every_n_steps
        self.cuda_graph = cuda_graph
        self.consecutive_skips = 0
        self.total_skipped_steps = 0
        self.total_repaired = 0
        self.total_label_skips = 0

    # -- what a regime gives -------------------------------------------------------------------------
    def guarded_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]]:
        """The regime's optimizers by name, each with the parameters it updates (called once per fit)."""
        raise NotImplementedError

    def guard_names(self) -> dict[str, str]:
        """Name of each optimizer's guard in reports (``{"vae": "VAE", ...}``)."""
        return {name: name for name in self._optimizer_names}

    def _step(self, batch: Any, batch_idx: int, *, raw: bool = False) -> None:
        """One training step: losses, :meth:`_guarded_step` per optimizer, metrics into ``self._sums``.

        It must read nothing from the device on the host (it may be captured as a CUDA graph).
        """
        raise NotImplementedError

    def _report_skips(self, name: str, report: GuardReport, span: str) -> None:
        """Report the skipped steps of a guard other than the main one (default: a warning)."""
        logger.warning(
            "Skipped %d %s step(s) (%s, epoch %d): %s.",
            report.skipped,
            report.name,
            span,
            self.current_epoch,
            report.reasons("a veto", self.max_update_ratio),
        )

    def _report_repairs(self, span: str, *, single: bool) -> None:
        """Report the loss entries repaired since the last read (the regimes whose losses repair)."""

    def _log_epoch_extras(self) -> None:
        """Log per-epoch values that are not step sums (for example the KL weight)."""

    def _setup_fit_state(self) -> None:
        """Create the tensors the regime's step writes into (called before the first step of a fit)."""

    # -- optimizers ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """The regime's optimizers, in the order of :meth:`guarded_optimizers`, and the main one's schedule.

        With ``reduce_lr_on_plateau`` the main optimizer gets a
        :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` (handed to Lightning, so that its learning-rate
        monitor and checkpoints see it; stepped by :meth:`on_train_epoch_end`, as optimization is manual).
        """
        optimizers = self.guarded_optimizers()
        self._optimizer_names = list(optimizers)
        self._optimizer_params = {name: params for name, (_, params) in optimizers.items()}
        opts = [opt for opt, _ in optimizers.values()]
        if not self.reduce_lr_on_plateau:
            return opts
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizers[self.main_optimizer][0],
            mode="min",
            factor=self.lr_factor,
            patience=self.lr_patience,
            threshold=self.lr_threshold,
            threshold_mode="abs",
            min_lr=self.lr_min,
        )
        return opts, [{"scheduler": scheduler}]  # manual optimization: Lightning ignores "monitor" and "interval"

    def _step_schedule(self) -> None:
        """Step the learning-rate schedule on this epoch's ``lr_scheduler_metric`` (after it was logged)."""
        if not self.reduce_lr_on_plateau:
            return
        if "validation" in self.lr_scheduler_metric and getattr(self, "_validated_epoch", None) != self.current_epoch:
            return  # no validation this epoch (check_val_every_n_epoch > 1): the last value would be stale
        value = self.trainer.callback_metrics.get(self.lr_scheduler_metric)
        if value is None:
            msg = (
                f"lr_scheduler_metric={self.lr_scheduler_metric!r} was not logged in epoch {self.current_epoch}, so "
                f"the learning-rate schedule cannot follow it; follow one of {list(self.scheduler_metrics)}."
            )
            raise ValueError(msg)
        schedulers = self.lr_schedulers()
        scheduler = schedulers[0] if isinstance(schedulers, list) else schedulers
        before = [group["lr"] for group in scheduler.optimizer.param_groups]
        scheduler.step(float(value))
        after = [group["lr"] for group in scheduler.optimizer.param_groups]
        if after != before:
            logger.info(
                "Epoch %d: %s has not improved for %d epoch(s); learning rate %s -> %s.",
                self.current_epoch,
                self.lr_scheduler_metric,
                self.lr_patience + 1,
                ", ".join(f"{v:.3g}" for v in before),
                ", ".join(f"{v:.3g}" for v in after),
            )

    def on_validation_epoch_end(self) -> None:
        """Note the epochs whose validation ran (a schedule on a validation metric steps only on those)."""
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            self._validated_epoch = self.current_epoch

    def _agree(self, flag: torch.Tensor) -> bool:
        """Whether ``flag`` holds on every process (a no-op without DDP; one scalar all-reduce with it)."""
        return all_processes_agree(flag, self.trainer.world_size)

    # -- set-up of a fit -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """With a learning-rate schedule and no validation cells: refuse a validation metric, else skip validation.

        Lightning calls it after the data splitter's ``setup``, before any epoch (and before its own
        message about a missing validation loader).
        """
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not self.reduce_lr_on_plateau or getattr(datamodule, "n_val", None) != 0:
            return
        if "validation" not in self.lr_scheduler_metric:
            # scvi-tools' runner turns on its learning-rate monitor, which validates every epoch; with no
            # validation cells Lightning would then fail on the missing loader
            self.trainer.limit_val_batches = 0
        else:
            train_metrics = [m for m in self.scheduler_metrics if "validation" not in m]
            msg = (
                f"reduce_lr_on_plateau follows lr_scheduler_metric={self.lr_scheduler_metric!r}, but there are no "
                f"validation cells (train_size=1?): keep some (train_size=0.9) or follow a training metric "
                f"({train_metrics})."
            )
            raise ValueError(msg)

    def on_train_start(self) -> None:
        """Set up the guards of the optimizers, the per-epoch sums and, where it applies, the CUDA graph."""
        super().on_train_start()
        wrapped = self.optimizers()
        wrapped = wrapped if isinstance(wrapped, list) else [wrapped]
        self._wrapped = dict(zip(self._optimizer_names, wrapped, strict=True))
        names = self.guard_names()
        self._guards = {
            name: StepGuard(
                names[name],
                self._wrapped[name].optimizer,
                self._optimizer_params[name],
                clip=self.gradient_clip_val,
                rollback=self.rollback_nonfinite,
                max_update_ratio=self.max_update_ratio,
                world_size=self.trainer.world_size,
            )
            for name in self._optimizer_names
        }
        check_precision(self.trainer.precision)
        self._sums = EpochSums()
        self._steps_since_check = 0
        self._n_steps = 0  # training steps (minibatches) of this fit; Lightning's global_step counts optimizers
        self._first_unchecked_step = 0
        self._check_every = self._resolve_check_every()
        self._setup_fit_state()
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
        if self.reduce_lr_on_plateau:
            reasons.append("a learning-rate schedule (reduce_lr_on_plateau)")
        if not all(g.on_device for g in self._guards.values()):
            reasons.append("an optimizer without fused Adam")
        if self.cuda_graph is None:
            return not reasons
        if self.cuda_graph and reasons:
            logger.warning("cuda_graph=True ignored: %s.", "; ".join(reasons))
        return bool(self.cuda_graph) and not reasons

    # -- guarded optimizer steps -------------------------------------------------------------------
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

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """Run the step (replayed when captured); read the guards every few steps and the sums at the epoch's end."""
        self._before_step()
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

    def _before_step(self) -> None:
        """Update, outside the (possibly captured) step, the device tensors it reads (for example the KL weight)."""

    def on_train_epoch_end(self) -> None:
        """Log the epoch's sums if the loop did not know its number of batches."""
        if self._steps_since_check:
            self._check_guards()
        if self._sums.pending:
            self._log_epoch()
        self._step_schedule()
        super().on_train_epoch_end()

    def _log_epoch(self) -> None:
        for name, value in self._sums.flush().items():
            self.log(
                name,
                value,
                on_step=False,
                on_epoch=True,
                batch_size=1,
                prog_bar=name == self.prog_bar_metric,
                reduce_fx="sum" if name in COUNTS else "mean",
                sync_dist=self.use_sync_dist and name not in _UNSYNCED,
            )
        self._log_epoch_extras()

    # -- reports (read from the device every few steps) -----------------------------------------
    def _check_guards(self) -> None:
        """Read what the guards and the loss repairs did since the last check; report it; stop a failing run."""
        first, last = self._first_unchecked_step, self._n_steps
        span = f"step {last}" if last - first <= 1 else f"steps {first + 1}-{last}"
        self._steps_since_check = 0
        self._first_unchecked_step = last
        self._report_repairs(span, single=last - first <= 1)
        for name in self._optimizer_names:
            report = self._guards[name].read()
            if not report.skipped:
                continue
            if name != self.main_optimizer:
                self._report_skips(name, report, span)
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
                raise NonFiniteTrainingError(skips_message(report, self.max_update_ratio))


def check_schedule(
    plan_cls: type[GuardedTrainingPlan], metric: str, factor: float, patience: int, lr_min: float
) -> None:
    """Refuse a learning-rate schedule that could not work, before any training: a metric the plan never logs."""
    if metric not in plan_cls.scheduler_metrics:
        msg = (
            f"lr_scheduler_metric={metric!r} is not a metric {plan_cls.__name__} logs every epoch; valid values: "
            f"{list(plan_cls.scheduler_metrics)}."
        )
        raise ValueError(msg)
    if not 0 < factor < 1:
        msg = f"lr_factor={factor}; it must be between 0 and 1 (the learning rate is multiplied by it)."
        raise ValueError(msg)
    if int(patience) < 0 or lr_min < 0:
        msg = f"lr_patience={patience}, lr_min={lr_min}; both must be >= 0."
        raise ValueError(msg)


def report_guards(plan: GuardedTrainingPlan) -> None:
    """Log, once at the end of a fit, what the guards of ``plan`` repaired and skipped (nothing if nothing)."""
    if plan.total_repaired or plan.total_skipped_steps or plan.total_label_skips:
        logger.warning(
            "Training finished with %d repaired loss entries, %d skipped steps and %d skipped "
            "discriminator steps (see model.history and docs/numerical_stability.md).",
            plan.total_repaired,
            plan.total_skipped_steps,
            plan.total_label_skips,
        )


def skips_message(report: GuardReport, max_update_ratio: float) -> str:
    """The message of :class:`~trajvi.diagnostics.NonFiniteTrainingError` for a guard that kept skipping."""
    return (
        f"{report.max_consecutive} consecutive {report.name} steps were skipped (last reasons: "
        f"{report.reasons('a veto', max_update_ratio)}); stopping. "
        "Likely causes: a learning rate too high for this data (try lr=1e-4), cells with extreme "
        "library sizes or non-count values (check the input layer, filter outlier cells), or "
        "half precision (use precision='32' or 'bf16-mixed'). See the troubleshooting docs."
    )
