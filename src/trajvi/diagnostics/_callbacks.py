"""Training monitors as Lightning callbacks: gradient norms, gradient checks, parameter statistics, loss curves.

Each writes through ``pl_module.log`` (so its figures land in ``model.history`` and survive ``save``/``load``)
or into a folder. :meth:`trajvi.TrajVI.train` and :meth:`~trajvi.TrajVI.train_trajectories` install them
when asked (``monitor_gradients_every_n_steps``, ``check_gradients_every_n_epochs``, ``monitor_parameters``,
``loss_curves_dir``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from ._gradients import block_of, check_gradients


def _phase(pl_module: Any) -> Literal["vae", "flow"]:
    """The regime a training plan trains (its ``phase`` class attribute: ``"vae"`` or ``"flow"``)."""
    return "flow" if getattr(pl_module, "phase", "vae") == "flow" else "vae"


def _trained(pl_module: Any) -> list[torch.nn.Parameter]:
    """The parameters of the regime a plan trains (the VAE's, or the velocity field's)."""
    module = pl_module.module
    return module.velocity_parameters() if _phase(pl_module) == "flow" else module.vae_parameters()


def _log(pl_module: Any, name: str, value: float, reduce_fx: str = "mean") -> None:
    pl_module.log(name, float(value), on_step=False, on_epoch=True, reduce_fx=reduce_fx, sync_dist=False)


class _PlanMonitor(pl.Callback):
    """A monitor the training plan calls from its guarded step, with the gradients before clipping.

    Registering on the plan (rather than using Lightning's ``on_before_optimizer_step``) lets it see the
    gradients before they are clipped, and those of steps that are then skipped as non-finite.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        pl_module.gradient_monitors.append(self)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self in pl_module.gradient_monitors:
            pl_module.gradient_monitors.remove(self)

    def observe(self, pl_module: Any, optimizer: Any, params: list[torch.nn.Parameter]) -> None:
        """Called by the plan after each backward that closes an accumulation window."""
        raise NotImplementedError


class GradientNormMonitor(_PlanMonitor):
    """Every ``every_n_steps`` steps of each optimizer, the gradient norm of each parameter block, before clipping.

    Blocks are the module's top-level parts (``encoder``, ``decoder``, ``log_theta``, ``discriminator``,
    ``velocity``, ...). Logged as ``grad_norm/<block>`` (mean over the sampled steps of an epoch; ``nan``
    when a sampled gradient was non-finite) and ``grad_norm_max/<block>``.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if int(every_n_steps) < 1:
            msg = f"every_n_steps={every_n_steps}; it must be at least 1."
            raise ValueError(msg)
        self.every_n_steps = int(every_n_steps)
        self._calls: dict[int, int] = {}

    def observe(self, pl_module: Any, optimizer: Any, params: list[torch.nn.Parameter]) -> None:
        calls = self._calls.get(id(optimizer), 0)  # counted per optimizer: the VAE and the discriminator alternate
        self._calls[id(optimizer)] = calls + 1
        if calls % self.every_n_steps:
            return
        names = _names(pl_module)
        blocks: dict[str, float] = {}
        for param in params:
            if param.grad is not None:
                name = names.get(id(param), "other")
                blocks[name] = blocks.get(name, 0.0) + float(param.grad.detach().float().square().sum())
        for name, sq in blocks.items():
            norm = math.sqrt(sq) if math.isfinite(sq) else math.nan
            _log(pl_module, f"grad_norm/{name}", norm)
            _log(pl_module, f"grad_norm_max/{name}", norm, reduce_fx="max")


def _names(pl_module: Any) -> dict[int, str]:
    cache = getattr(pl_module, "_trajvi_block_names", None)
    if cache is None:
        cache = {id(p): block_of(n) for n, p in pl_module.module.named_parameters()}
        pl_module._trajvi_block_names = cache
    return cache


class GradientCheckCallback(_PlanMonitor):
    """Runs :func:`~trajvi.diagnostics.check_gradients` at the first step of every ``every_n_epochs``-th epoch.

    It sees the gradients before clipping, including those of a step that is then skipped. Logs the report
    and records ``grad_nonfinite_count`` and ``grad_zero_count`` (parameters of the phase being trained) in
    the history; the last result is kept in ``pl_module.last_gradient_check``.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if int(every_n_epochs) < 1:
            msg = f"every_n_epochs={every_n_epochs}; it must be at least 1."
            raise ValueError(msg)
        self.every_n_epochs = int(every_n_epochs)
        self._done_epoch = -1

    def observe(self, pl_module: Any, optimizer: Any, params: list[torch.nn.Parameter]) -> None:
        epoch = pl_module.current_epoch
        if epoch == self._done_epoch or epoch % self.every_n_epochs:
            return
        if not {id(p) for p in params} & {id(p) for p in _trained(pl_module)}:
            return  # the discriminator's step; wait for the phase's own optimizer
        self._done_epoch = epoch
        phase = _phase(pl_module)
        label = f"phase {1 if phase == 'vae' else 2}, epoch {epoch}"
        check = check_gradients(pl_module.module, phase_name=label, blocks=phase)
        pl_module.last_gradient_check = check
        _log(pl_module, "grad_nonfinite_count", sum(math.isnan(v) for v in check.grad_norms.values()), "max")
        _log(pl_module, "grad_zero_count", sum(v == 0.0 for v in check.grad_norms.values()), "max")


class ParameterMonitor(pl.Callback):
    """At the end of every epoch, statistics of each parameter block of the phase being trained.

    Logged as ``param_mean/<block>``, ``param_std/<block>``, ``param_absmax/<block>`` and
    ``param_nonfinite/<block>``.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        params = _trained(pl_module)
        names = _names(pl_module)
        blocks: dict[str, list[torch.Tensor]] = {}
        for p in params:
            blocks.setdefault(names.get(id(p), "other"), []).append(p.detach().float().reshape(-1))
        for name, parts in blocks.items():
            values = torch.cat(parts)
            finite = values[torch.isfinite(values)]
            _log(pl_module, f"param_nonfinite/{name}", float(values.numel() - finite.numel()))
            if finite.numel():
                _log(pl_module, f"param_mean/{name}", float(finite.mean()))
                _log(pl_module, f"param_std/{name}", float(finite.std()) if finite.numel() > 1 else 0.0)
                _log(pl_module, f"param_absmax/{name}", float(finite.abs().max()))


class LossCurveWriter(pl.Callback):
    """Writes the training history to ``folder`` as ``history.csv`` (every epoch) and ``history.png`` (at the end).

    Parameters
    ----------
    folder
        Output folder (created). Concurrent runs should get their own folders.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _frame(self, trainer: pl.Trainer) -> Any:
        import pandas as pd

        history = getattr(trainer.logger, "history", None) or {}
        columns = {key: frame.iloc[:, 0].astype(float) for key, frame in history.items() if len(frame)}
        return pd.DataFrame(columns)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._frame(trainer).to_csv(self.folder / "history.csv", index_label="epoch")

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        import matplotlib.pyplot as plt

        frame = self._frame(trainer)
        if frame.empty:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.folder / "history.csv", index_label="epoch")
        keys = [k for k in frame.columns if not k.startswith(("param_", "grad_norm_max/"))]
        ncols = 4
        nrows = max(1, math.ceil(len(keys) / ncols))
        fig, axs = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False)
        for ax, key in zip(axs.ravel(), keys, strict=False):
            ax.plot(frame.index, frame[key].to_numpy())
            ax.set_title(key, fontsize="small")
        for ax in axs.ravel()[len(keys) :]:
            ax.set_visible(False)
        fig.tight_layout()
        fig.savefig(self.folder / "history.png", dpi=100)
        plt.close(fig)


def monitor_callbacks(
    *,
    monitor_gradients_every_n_steps: int | None = None,
    check_gradients_every_n_epochs: int | None = None,
    monitor_parameters: bool = False,
    loss_curves_dir: str | Path | None = None,
) -> list[pl.Callback]:
    """The callbacks asked for by the monitoring arguments of ``train`` and ``train_trajectories``."""
    callbacks: list[pl.Callback] = []
    if monitor_gradients_every_n_steps:
        callbacks.append(GradientNormMonitor(monitor_gradients_every_n_steps))
    if check_gradients_every_n_epochs:
        callbacks.append(GradientCheckCallback(check_gradients_every_n_epochs))
    if monitor_parameters:
        callbacks.append(ParameterMonitor())
    if loss_curves_dir is not None:
        callbacks.append(LossCurveWriter(loss_curves_dir))
    return callbacks
