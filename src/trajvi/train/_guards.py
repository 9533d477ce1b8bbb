"""Guarded optimizer steps decided on the device, and per-epoch metric sums kept there.

A guarded step is skipped when its loss or gradient norm is not finite (or when the caller vetoes it, for
example for labels out of range), and undone when it blows up. Every decision is a tensor on the device:
the fused Adam kernel skips the update itself when its ``found_inf`` input is 1 (parameters and moments
untouched, step count unchanged), and a blown-up step is undone with ``torch.where`` from a backup kept in
buffers. A step therefore never waits for the device, and it can be captured in a CUDA graph
(:mod:`trajvi.train._graph`). The host reads the counters every few steps (:meth:`StepGuard.read`) to
report what happened and to stop a run that keeps failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

from trajvi._distributed import agree_on_device

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: Counters of a :class:`StepGuard`, in the order of :attr:`StepGuard.counts`.
COUNTERS = ("steps", "nonfinite", "vetoed", "undone", "consecutive", "max_consecutive")


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` skips its update on the device when its ``found_inf`` attribute is 1 (fused Adam)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and bool(optimizer.defaults.get("fused"))


@dataclass(frozen=True)
class GuardReport:
    """What one :class:`StepGuard` did since its previous report (numbers read from the device)."""

    name: str
    steps: int
    nonfinite: int
    vetoed: int
    undone: int
    consecutive: int
    max_consecutive: int
    moved: float
    size: float

    @property
    def skipped(self) -> int:
        """Steps not taken or undone."""
        return self.nonfinite + self.vetoed + self.undone

    def reasons(self, veto_reason: str, max_update_ratio: float) -> str:
        """The reasons of the skips, for the logger."""

        def times(n: int) -> str:
            return "" if n == 1 else f" ({n} steps)"

        parts = []
        if self.nonfinite:
            parts.append("the loss or gradient was not finite" + times(self.nonfinite))
        if self.vetoed:
            parts.append(veto_reason + times(self.vetoed))
        if self.undone:
            parts.append(
                f"the step blew up and was undone{times(self.undone)} (last: parameters moved by {self.moved:.3g}, "
                f"more than {max_update_ratio:g} x their norm {self.size:.3g} + 1, or became non-finite)"
            )
        return "; ".join(parts)


class StepGuard:
    """Guarded steps of one optimizer, decided on the device.

    Parameters
    ----------
    name
        Name used in reports (``"VAE"``, ``"discriminator"``, ``"velocity-field"``).
    optimizer
        The torch optimizer (not Lightning's wrapper). With fused Adam the skip happens in its kernel;
        with any other optimizer the guard reads the decision on the host (one synchronisation).
    params
        The parameters the optimizer updates.
    clip
        Largest gradient norm (``None`` or 0: no clipping).
    rollback
        Undo a step that leaves a parameter non-finite or moves the parameters by more than
        ``max_update_ratio`` times their norm (plus 1).
    max_update_ratio
        See ``rollback``.
    world_size
        Number of processes; above 1, every decision is the minimum over the processes (an all-reduce on
        the device).
    """

    def __init__(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        params: Sequence[torch.nn.Parameter],
        *,
        clip: float | None,
        rollback: bool,
        max_update_ratio: float,
        world_size: int = 1,
    ) -> None:
        self.name = name
        self.optimizer = optimizer
        self.params = list(params)
        self.clip = clip
        self.rollback = rollback
        self.max_update_ratio = float(max_update_ratio)
        self.world_size = world_size
        self.on_device = skips_on_device(optimizer)
        device = self.params[0].device
        self.counts = torch.zeros(len(COUNTERS), dtype=torch.int64, device=device)
        self.last_blowup = torch.zeros(2, device=device)  # moved, size of the last undone step
        self._reported = [0] * len(COUNTERS)
        self._backup: list[torch.Tensor] | None = None

    def step(
        self, loss: torch.Tensor, step: Callable[[], object], ok: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip the gradients and take the optimizer step if it is safe; count what happened.

        Call it after the backward pass. ``step`` runs the optimizer (``optimizer.step`` or Lightning's
        wrapper); ``ok`` is the caller's veto, a 0-d bool tensor. Returns the gradient norm before
        clipping and whether the step was kept, both 0-d tensors on the device.
        """
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False)
        else:  # nothing reached these parameters: a step that changes nothing
            norm = torch.zeros((), device=self.counts.device)
        finite = torch.isfinite(norm) & torch.isfinite(loss.detach())
        allowed = finite if ok is None else finite & ok
        good = agree_on_device(allowed, self.world_size)
        if self.clip:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.clip, norm)
        if self.rollback:
            if self._backup is None:
                self._backup = [torch.empty_like(p) for p in self.params]
            with torch.no_grad():  # (the cast: torch's _foreach stubs take an invariant list[Tensor])
                torch._foreach_copy_(self._backup, cast("list[torch.Tensor]", self.params))
        if self.on_device:
            vars(self.optimizer)["found_inf"] = (~good).float()  # read by fused Adam's step
            try:
                step()
            finally:  # a GradScaler that stepped this optimizer has removed it already
                vars(self.optimizer).pop("found_inf", None)
        elif bool(good):  # an optimizer that cannot skip on the device: the decision is read here
            step()
        kept = good
        if self.rollback:
            kept = self._undo_blowups(good)
        self._count(good, kept, ok)
        return norm, kept

    @torch.no_grad()
    def _undo_blowups(self, good: torch.Tensor) -> torch.Tensor:
        backup = self._backup
        assert backup is not None  # step() fills it before any rollback
        params = cast("list[torch.Tensor]", self.params)  # torch's _foreach stubs take an invariant list[Tensor]
        moved = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(torch._foreach_sub(params, backup))))
        size = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(backup)))
        kept = good & torch.isfinite(moved) & (moved <= self.max_update_ratio * (size + 1.0))
        kept = agree_on_device(kept, self.world_size)
        for p, b in zip(self.params, backup, strict=True):
            p.copy_(torch.where(kept, p, b))
        undone = good & ~kept
        self.last_blowup.copy_(torch.where(undone, torch.stack([moved, size]), self.last_blowup))
        return kept

    @torch.no_grad()
    def _count(self, good: torch.Tensor, kept: torch.Tensor, ok: torch.Tensor | None) -> None:
        vetoed = torch.zeros_like(good) if ok is None else ~good & ~ok
        nonfinite = ~good & ~vetoed
        undone = good & ~kept
        c = self.counts
        consecutive = torch.where(kept, 0, c[4] + 1)
        delta = torch.stack([torch.ones_like(good), nonfinite, vetoed, undone]).long()
        c[:4].add_(delta)
        c[4:].copy_(torch.stack([consecutive, torch.maximum(c[5], consecutive)]))

    def read(self) -> GuardReport:
        """What happened since the previous read (one synchronisation with the device)."""
        values = self.counts.tolist()
        moved, size = self.last_blowup.tolist()
        steps, nonfinite, vetoed, undone = (v - r for v, r in zip(values[:4], self._reported[:4], strict=True))
        self._reported = values
        return GuardReport(self.name, steps, nonfinite, vetoed, undone, values[4], values[5], moved, size)


class EpochSums:
    """Per-epoch metrics summed on the device: each is a weighted mean or a plain sum over the steps.

    Every :meth:`add` is a few kernel launches and no synchronisation; :meth:`flush` reads all the sums
    at once and starts over.
    """

    def __init__(self) -> None:
        self._slots: dict[str, int] = {}
        self._is_sum: list[bool] = []
        self._sums: torch.Tensor | None = None  # (2, n): weighted values, weights
        self.frozen = False  # set while a CUDA graph writes into the sums: no new metric may appear then

    def _slot(self, names: Sequence[str], is_sum: bool, device: torch.device) -> tuple[int, int]:
        start = self._slots.get(names[0])
        if start is None:
            if self.frozen:
                msg = f"metrics {list(names)} appeared after the step was captured; capture needs a fixed set."
                raise RuntimeError(msg)
            start = len(self._slots)
            for i, name in enumerate(names):
                self._slots[name] = start + i
                self._is_sum.append(is_sum)
            grown = torch.zeros(2, len(self._slots), device=device)
            if self._sums is not None:
                grown[:, : self._sums.shape[1]] = self._sums
            self._sums = grown
        return start, start + len(names)

    @torch.no_grad()
    def add(self, values: dict[str, torch.Tensor], weight: float | torch.Tensor = 1.0) -> None:
        """Add ``values`` (0-d tensors) with ``weight`` (cells of the minibatch, or whether a step counts)."""
        stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
        lo, hi = self._slot(list(values), False, stacked.device)
        sums = self._sums
        assert sums is not None  # _slot made room for the values
        sums[0, lo:hi].add_(stacked * weight)
        sums[1, lo:hi].add_(weight)

    @torch.no_grad()
    def add_sum(self, values: dict[str, torch.Tensor]) -> None:
        """Add counts (0-d tensors) that are reported as their sum over the epoch."""
        stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
        lo, hi = self._slot(list(values), True, stacked.device)
        sums = self._sums
        assert sums is not None  # _slot made room for the values
        sums[0, lo:hi].add_(stacked)

    @property
    def pending(self) -> bool:
        """Whether anything was added since the last :meth:`flush` (one read of the device)."""
        return self._sums is not None and bool(self._sums.any())

    def flush(self) -> dict[str, float]:
        """The epoch's means and sums (metrics without weight are left out); resets the sums."""
        if self._sums is None:
            return {}
        values, weights = self._sums.tolist()
        self._sums.zero_()
        out = {}
        for name, i in self._slots.items():
            if self._is_sum[i]:
                out[name] = values[i]
            elif weights[i] > 0:
                out[name] = values[i] / weights[i]
        return out
