"""Phase-2 data: pairs of latent states drawn from optimal-transport couplings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

if TYPE_CHECKING:
    from trajvi.transport import Coupling


@dataclass
class Segment:
    """One step of a trajectory path: source and target latents, their times and the coupling between them."""

    name: str
    z_source: np.ndarray
    z_target: np.ndarray
    t_source: float
    t_target: float
    coupling: Coupling


def draw_pairs(
    segments: list[Segment], n_pairs: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw about ``n_pairs`` pairs, shared equally by the segments, by plan mass.

    Returns float32 tensors ``z0``, ``z1`` ``(n, d)`` and ``t0``, ``t1`` ``(n,)``.
    """
    per_segment = max(1, int(np.ceil(n_pairs / len(segments))))
    z0, z1, t0, t1 = [], [], [], []
    for seg in segments:
        i, j = seg.coupling.sample(per_segment, rng)
        z0.append(seg.z_source[i])
        z1.append(seg.z_target[j])
        t0.append(np.full(len(i), seg.t_source))
        t1.append(np.full(len(i), seg.t_target))
    as_tensor = lambda parts: torch.as_tensor(np.concatenate(parts), dtype=torch.float32)  # noqa: E731
    return as_tensor(z0), as_tensor(z1), as_tensor(t0), as_tensor(t1)


class PairDataModule(pl.LightningDataModule):
    """Batches of coupled latent pairs ``(z0, z1, t0, t1)``, redrawn from the couplings every epoch.

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
        """A fresh draw of pairs (the trainer reloads it every epoch)."""
        dataset = TensorDataset(*draw_pairs(self.segments, self.pairs_per_epoch, self.rng))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, drop_last=False)

    def val_dataloader(self) -> list:
        """Phase 2 has no validation loop (its validation is leave-one-group-out, before training)."""
        return []
