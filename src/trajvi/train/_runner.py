"""A TrainRunner whose history keeps every key across successive ``train()`` calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from lightning.pytorch.loggers import Logger
from scvi.model._utils import use_distributed_sampler
from scvi.train import SaveCheckpoint, TrainRunner
from scvi.train._logger import SimpleLogger

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


class TrajVITrainRunner(TrainRunner):
    """:class:`scvi.train.TrainRunner` that merges histories by the union of their keys.

    scvi-tools drops the keys that the first ``train()`` call did not log; trajvi logs other metrics
    in phase 2 and in later calls, so each call's new rows are appended per key, and new keys are added
    (indexed after the epochs already recorded). Values are stored as floats. Under DDP only rank 0 holds
    a history (the other processes keep an empty one), and after training each process keeps the model on
    its own device.

    A Lightning logger passed as ``logger=`` (``CSVLogger``, ``TensorBoardLogger``, or a list of them)
    is kept, after scvi-tools' own in-memory logger: scvi-tools reads ``model.history`` from the first
    logger only, so without it the history (and its repair counters) would stay empty.
    ``enable_checkpointing=True`` saves the model (scvi-tools' format, ``TrajVI.load`` reads it) with
    :class:`TrajVISaveCheckpoint`.
    """

    def __init__(self, model: BaseModelClass, *args: Any, **trainer_kwargs: Any) -> None:
        trainer_kwargs["logger"] = _with_history_logger(trainer_kwargs.get("logger"), trainer_kwargs)
        if trainer_kwargs.get("enable_checkpointing"):
            callbacks = list(trainer_kwargs.get("callbacks") or [])
            if not any(isinstance(c, SaveCheckpoint) for c in callbacks):
                monitor = trainer_kwargs.get("checkpointing_monitor", "validation_loss")
                trainer_kwargs["callbacks"] = [*callbacks, TrajVISaveCheckpoint(monitor=monitor)]
        super().__init__(model, *args, **trainer_kwargs)

    def _run_training_core(self) -> None:
        super()._run_training_core()
        if self.trainer.world_size > 1:
            # scvi-tools moves the model to the first listed device on every process; keep each on its own
            self.model.to_device(self.trainer.strategy.root_device)

    def _update_history(self) -> None:
        previous = self.model.history_ if isinstance(self.model.history_, dict) else None
        was_trained = self.model.is_trained_
        if previous is None or not was_trained:
            super()._update_history()
            self.model.history_ = _as_float(self.model.history_)
            return
        self.model.history_ = None
        self.model.is_trained_ = False
        try:
            super()._update_history()
        finally:
            self.model.is_trained_ = was_trained
        new = self.model.history_ or {}
        merged = {k: v.copy() for k, v in previous.items()}
        # epochs of this call follow those already recorded; a key logged only on some epochs keeps its epochs
        offset = 1 + max((int(v.index.max()) for v in previous.values() if len(v)), default=-1)
        for key, frame in new.items():
            frame = frame.copy()
            frame.index = pd.Index(np.asarray(frame.index, dtype=int) + offset, name=frame.index.name or "epoch")
            merged[key] = pd.concat([merged[key], frame]) if key in merged else frame
        self.model.history_ = _as_float(merged)


class TrajVISaveCheckpoint(SaveCheckpoint):
    """scvi-tools' :class:`~scvi.train.SaveCheckpoint` for trajvi's plans, whose steps return no loss.

    trajvi optimizes by hand and its guards already count and skip non-finite steps, so the per-batch
    NaN check of scvi-tools' callback (which reads the step's returned loss) has nothing to read.
    """

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Check the step's loss when it returned one (trajvi's steps return none)."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def _with_history_logger(user: Any, trainer_kwargs: dict[str, Any]) -> Any:
    """scvi-tools' history logger first, then the user's Lightning loggers (``None``/``bool``: unchanged)."""
    if user is None or isinstance(user, bool):
        return user  # scvi-tools' default (its logger), Lightning's default, or no logging
    loggers = [user] if isinstance(user, Logger) else list(user)
    if any(isinstance(log, SimpleLogger) for log in loggers):
        return loggers
    save_dir = trainer_kwargs.get("log_save_dir")
    on_disk = bool(save_dir) or use_distributed_sampler(trainer_kwargs.get("strategy"))
    return [SimpleLogger(save_dir=save_dir, save_log_on_disk=on_disk), *loggers]


def _as_float(history: dict[str, pd.DataFrame] | None) -> dict[str, pd.DataFrame] | None:
    """scvi-tools' logger stores metrics as objects; make them float columns."""
    if not isinstance(history, dict):
        return history
    return {k: v.apply(pd.to_numeric, errors="coerce").astype(float) for k, v in history.items()}
