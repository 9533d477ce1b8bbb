"""Phase-2 data: pairs of latent states drawn from optimal-transport couplings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

if TYPE_CHECKING:
    from trajvi.transport import Coupling


@dataclass
class Segment:
    """One step of a trajectory path: source and target latents, their times and the coupling between them.

    Attributes
    ----------
    name
        ``"source->target"``.
    z_source, z_target
        Latent states of the two sets.
    t_source, t_target
        Their times.
    coupling
        The optimal-transport coupling between them.
    weights
        What the path does, as weights over the velocity field's components (``(n_components,)``; a
        combination ``"A+B"`` has two ones); ``None``: an unconditional field.
    dose_target
        Dose of each target cell (it scales the weights of the pairs that end there); ``None``: 1.
    """

    name: str
    z_source: np.ndarray
    z_target: np.ndarray
    t_source: float
    t_target: float
    coupling: Coupling
    weights: np.ndarray | None = None
    dose_target: np.ndarray | None = None


def draw_pairs(
    segments: list[Segment], n_pairs: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw about ``n_pairs`` pairs, shared equally by the segments, by plan mass.

    Returns float32 tensors ``z0``, ``z1`` ``(n, d)``, ``t0``, ``t1`` ``(n,)`` and the condition weights
    ``w`` ``(n, n_components)`` of each pair (its segment's weights times the dose of its target cell;
    ``(n, 0)`` for unconditional segments).
    """
    widths = {0 if seg.weights is None else len(seg.weights) for seg in segments}
    if len(widths) > 1:
        msg = f"segments have condition weights of different lengths {sorted(widths)}; give every segment the same."
        raise ValueError(msg)
    per_segment = max(1, int(np.ceil(n_pairs / len(segments))))
    z0, z1, t0, t1, w = [], [], [], [], []
    for seg in segments:
        i, j = seg.coupling.sample(per_segment, rng)
        z0.append(seg.z_source[i])
        z1.append(seg.z_target[j])
        t0.append(np.full(len(i), seg.t_source))
        t1.append(np.full(len(i), seg.t_target))
        weights = np.zeros(0) if seg.weights is None else np.asarray(seg.weights, dtype=np.float64)
        dose = np.ones(len(j)) if seg.dose_target is None else np.asarray(seg.dose_target, dtype=np.float64)[j]
        w.append(dose[:, None] * weights[None, :])
    as_tensor = lambda parts: torch.as_tensor(np.concatenate(parts), dtype=torch.float32)  # noqa: E731
    return as_tensor(z0), as_tensor(z1), as_tensor(t0), as_tensor(t1), as_tensor(w)


class PairBatches(Dataset):
    """Minibatches of pairs already in random order: item ``k`` is the ``k``-th slice of ``batch_size`` pairs.

    A :class:`~torch.utils.data.TensorDataset` under a batching ``DataLoader`` indexes and collates one pair at
    a time; for phase-2 batches of a few thousand small rows that per-pair work took longer than the
    optimizer step (12 ms against 8 ms at 1,024 pairs on one CPU thread). Slicing costs one copy per batch.
    Use it with ``DataLoader(..., batch_size=None)``; a distributed sampler then deals out whole batches.

    Parameters
    ----------
    tensors
        Tensors with the same first dimension, in the order they should be served.
    batch_size
        Pairs per minibatch (the last one may be smaller).
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int) -> None:
        if int(batch_size) < 1:
            msg = f"batch_size={batch_size}; it must be at least 1."
            raise ValueError(msg)
        self.tensors = tensors
        self.batch_size = int(batch_size)
        self.n = int(tensors[0].shape[0])

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        rows = slice(k * self.batch_size, (k + 1) * self.batch_size)
        return tuple(t[rows] for t in self.tensors)


class PairDataModule(pl.LightningDataModule):
    """Batches of coupled latent pairs ``(z0, z1, t0, t1, tau, w)``, redrawn from the couplings every epoch.

    ``w`` ``(n, n_components)`` says what each pair's path does (see :func:`draw_pairs`).

    ``tau`` ``(n, 1)`` is each pair's position on its straight path (uniform in ``[0, 1)``), drawn from the
    same seeded generator as the pairs: a velocity fit then depends on its seed alone, not on the global
    random state (which Lightning's loops and the data loaders also draw from), and the validation fits
    and the final fit take the same steps from the same seed.

    Under distributed training (DDP) every process holds the same couplings and draws the same pairs in
    the same order (the same seed); a :class:`~torch.utils.data.DistributedSampler` then deals the
    minibatches out, so each process trains on its own disjoint share of every epoch's pairs. An epoch
    still draws ``pairs_per_epoch`` pairs in all, and ``batch_size`` is per process.

    Parameters
    ----------
    segments
        The coupled steps of the path.
    pairs_per_epoch
        Pairs drawn per epoch (shared equally by the segments).
    batch_size
        Pairs per minibatch.
    seed
        Seed of the pair draws.
    train_idx, val_idx, test_idx
        The model's phase-1 split, carried through so that the runner keeps it.
    """

    def __init__(
        self,
        segments: list[Segment],
        *,
        pairs_per_epoch: int,
        batch_size: int = 256,
        seed: int = 0,
        train_idx: np.ndarray | None = None,
        val_idx: np.ndarray | None = None,
        test_idx: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if not segments:
            msg = "no segments to train on; the path needs at least two conditions."
            raise ValueError(msg)
        self.segments = segments
        self.pairs_per_epoch = int(pairs_per_epoch)
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.train_idx, self.val_idx, self.test_idx = train_idx, val_idx, test_idx
        self.n_train = self.pairs_per_epoch
        self.n_val = 0

    def train_dataloader(self) -> DataLoader:
        """A fresh draw of pairs in random order, cut into minibatches (the trainer reloads it every epoch)."""
        z0, z1, t0, t1, w = draw_pairs(self.segments, self.pairs_per_epoch, self.rng)
        n = z0.shape[0]
        order = torch.as_tensor(self.rng.permutation(n))  # mixes the segments
        tau = torch.as_tensor(self.rng.random((n, 1), dtype=np.float32))
        batches = PairBatches((z0[order], z1[order], t0[order], t1[order], tau, w[order]), self.batch_size)
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size == 1:
            return DataLoader(batches, batch_size=None)
        # this process's share: every world_size-th minibatch (the order is already random, and the same everywhere)
        share: DistributedSampler[int] = DistributedSampler(
            batches, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
        return DataLoader(batches, batch_size=None, sampler=share)

    def val_dataloader(self) -> list:
        """Phase 2 has no validation loop (its validation is leave-one-group-out, before training)."""
        return []
