"""Distributed training helpers: the process rank, the strategy check, and agreement of all processes on a flag.

trajvi does no distribution of its own: both phases run under Lightning's DDP strategies through
scvi-tools' trainer. These helpers let the rest of the package write results from one process only and
keep the guarded optimizer steps in lockstep (see ``docs/distributed.md``).
"""

from __future__ import annotations

from typing import Any

import torch

#: The strategy trajvi needs under DDP: each step has several backward passes, each over part of the module.
DDP_STRATEGY = "ddp_find_unused_parameters_true"


def global_rank() -> int:
    """Rank of this process among all processes of a distributed run (0 when not distributed).

    Read from :mod:`torch.distributed` once the process group exists, else from Lightning's record of the
    launcher's environment (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``, ...), which Lightning's strategies
    also update when they set up.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def all_processes_agree(flag: torch.Tensor, world_size: int) -> bool:
    """Whether ``flag`` holds on every process: one all-reduce of a scalar under DDP, nothing on one process.

    Parameters
    ----------
    flag
        This process's value, a scalar tensor on its device (so that the reduction needs no host
        synchronisation beyond reading the result).
    world_size
        Number of processes (``trainer.world_size``).
    """
    return bool(agree_on_device(flag, world_size))


def check_strategy(strategy: Any) -> None:
    """Raise a clear error for a DDP strategy that does not look for unused parameters.

    A trajvi step runs several backward passes (discriminator, then VAE), each over part of the module,
    and phase 2 trains only the velocity field: plain ``"ddp"`` fails on them after the first step.
    """
    from lightning.pytorch.strategies import DDPStrategy

    if isinstance(strategy, str):
        name = strategy.lower()
        bad = name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook") or name.endswith("_find_unused_parameters_false")
    elif isinstance(strategy, DDPStrategy):
        bad = not strategy._ddp_kwargs.get("find_unused_parameters", False)
    else:
        return
    if bad:
        msg = (
            f"strategy={strategy!r} does not look for unused parameters, which trajvi needs: each training step "
            f"has several backward passes over different parts of the module. Use strategy={DDP_STRATEGY!r} "
            "(or DDPStrategy(find_unused_parameters=True)); see docs/distributed.md."
        )
        raise ValueError(msg)


def agree_on_device(flag: torch.Tensor, world_size: int) -> torch.Tensor:
    """Like :func:`all_processes_agree`, but the answer stays a 0-d bool tensor on the device (no host read).

    Under DDP the minimum over the processes is taken by an all-reduce that the device runs in order with
    the step, so the guarded steps of :mod:`trajvi.train` decide without waiting for the device.
    """
    if world_size <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag.reshape(())
    value = flag.detach().reshape(()).to(torch.float32).clone()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return value > 0
