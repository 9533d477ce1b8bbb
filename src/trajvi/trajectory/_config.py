"""The coupling configuration of phase 2, as one object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trajvi._types import GROUP_WEIGHTINGS, OT_METHODS, GroupWeighting, OTMethod, check_option
from trajvi.transport import Coupling, couple_sets


@dataclass(frozen=True)
class CouplingConfig:
    """How every segment of a path is coupled: solver, regularisation, blocks, device, threads and group weights.

    Attributes
    ----------
    method
        ``"exact"`` (``ot.emd``), ``"sinkhorn"`` (entropic, ``epsilon`` relative to the cost scale) or
        ``"unbalanced"`` (``reg_m`` sets how much mass may be created or destroyed).
    epsilon, reg_m
        Entropic regularisation (relative to the mean cost) and marginal relaxation.
    block_size
        Couple in blocks of at most this many cells per side (minibatch OT for large sets; ``None``: whole).
    device
        Where the entropic solvers iterate (``None``: numpy on the CPU; a torch device such as ``"cuda:0"``).
    n_jobs
        Blocks solved at once in threads on the CPU (``None``: the cores this process may use).
    group_weighting
        ``"balanced"``: every group of ``couple_within`` gets the same mass; ``"source"``: mass by source cells.
    seed
        Seed of the block split; the same seed gives the same coupling.
    """

    method: OTMethod = "exact"
    epsilon: float = 0.05
    reg_m: float = 1.0
    block_size: int | None = None
    device: str | None = None
    n_jobs: int | None = None
    group_weighting: GroupWeighting = "balanced"
    seed: int = 0

    def __post_init__(self) -> None:
        check_option(self.method, OT_METHODS, "ot_method")
        check_option(self.group_weighting, GROUP_WEIGHTINGS, "group_weighting")
        for name in ("epsilon", "reg_m"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                msg = f"{name}={value}; it must be a finite number > 0."
                raise ValueError(msg)
        if self.block_size is not None and int(self.block_size) < 1:
            msg = f"ot_batch_size={self.block_size}; it must be a positive integer or None."
            raise ValueError(msg)

    def couple(
        self,
        z_source: np.ndarray,
        z_target: np.ndarray,
        *,
        groups_source: np.ndarray | None = None,
        groups_target: np.ndarray | None = None,
        source_name: str = "source",
        target_name: str = "target",
        source_weights: np.ndarray | None = None,
        quiet: bool = False,
    ) -> Coupling:
        """Couple two sets of latent states with this configuration (:func:`~trajvi.transport.couple_sets`)."""
        return couple_sets(
            z_source,
            z_target,
            groups_source=groups_source,
            groups_target=groups_target,
            source_name=source_name,
            target_name=target_name,
            source_weights=source_weights,
            quiet=quiet,
            **self.couple_sets_kwargs(),
        )

    def couple_sets_kwargs(self) -> dict[str, Any]:
        """The configuration as arguments of :func:`~trajvi.transport.couple_sets`."""
        return {
            "method": self.method,
            "epsilon": self.epsilon,
            "reg_m": self.reg_m,
            "batch_size": self.block_size,
            "device": self.device,
            "n_jobs": self.n_jobs,
            "group_weighting": self.group_weighting,
            "rng": self.seed,
        }


def ot_device(ot_device: str | None, model_device: Any) -> str | None:
    """The device of the entropic OT solvers: ``"auto"`` is the model's device when it is a GPU, else numpy."""
    if ot_device == "auto":
        return str(model_device) if getattr(model_device, "type", "cpu") == "cuda" else None
    return ot_device
