"""Minibatches read from disk in contiguous blocks of cells (block shuffling).

scvi-tools' :class:`~scvi.dataloaders.AnnDataLoader` reads every minibatch of a backed AnnData as its own
scattered read: 128 random rows of an h5ad CSR matrix took 93 ms on the benchmark machine, against 48 ms for
8,192 contiguous rows, so a phase-1 epoch from disk spent most of its time in h5py. :class:`DiskDataSplitter`
keeps scvi-tools' train/validation split, registry, keys and dtypes (it reads through the same
:class:`~scvi.data.AnnTorchDataset`), but reads the training cells in contiguous blocks: every epoch the
blocks come in a new random order, ``blocks_per_pool`` of them (from random places in the file) are read and
shuffled together, and the pool is cut into minibatches. Memory holds one pool, dense.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scvi import settings
from scvi.dataloaders import DataSplitter

from trajvi._logging import logger
from trajvi.data._blocks import counts_in_memory

from ._device_data import DeviceDataSplitter, SplitLoaders

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Cells read at once from one place of the file.
DEFAULT_BLOCK_SIZE = 1024
#: Blocks shuffled together: each minibatch mixes cells from this many places of the file.
DEFAULT_BLOCKS_PER_POOL = 8


class DiskBatches:
    """An epoch's minibatches of ``indices``, read from disk in contiguous blocks.

    Parameters
    ----------
    dataset
        scvi-tools' :class:`~scvi.data.AnnTorchDataset` of the model's AnnData.
    indices
        Cells of this loader (train or validation).
    batch_size
        Cells per minibatch.
    shuffle
        New block order and new order within each pool every epoch (seeded: the same seed, the same order).
    drop_last
        Leave out a last, smaller minibatch.
    block_size, blocks_per_pool
        Cells per contiguous read; blocks shuffled together.
    seed
        Seed of the shuffling.
    """

    def __init__(
        self,
        dataset: Any,
        indices: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        block_size: int = DEFAULT_BLOCK_SIZE,
        blocks_per_pool: int = DEFAULT_BLOCKS_PER_POOL,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.indices = np.sort(np.asarray(indices, dtype=np.int64))
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.block_size = max(1, int(block_size))
        self.blocks_per_pool = max(1, int(blocks_per_pool))
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The fields of ``rows`` (sorted), read as one contiguous slice of the file and subset."""
        first, last = int(rows[0]), int(rows[-1]) + 1
        block = self.dataset[slice(first, last)]
        if len(rows) == last - first:
            return block
        keep = rows - first
        return {key: value[keep] for key, value in block.items()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        blocks = [self.indices[i : i + self.block_size] for i in range(0, len(self.indices), self.block_size)]
        if self.shuffle:
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        carry: dict[str, np.ndarray] | None = None
        for p in range(0, len(blocks), self.blocks_per_pool):
            parts = [self._read(rows) for rows in blocks[p : p + self.blocks_per_pool]]
            if carry is not None:
                parts.insert(0, carry)
            pool = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
            n = len(next(iter(pool.values())))
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            n_full = n // self.batch_size * self.batch_size
            for b in range(0, n_full, self.batch_size):
                rows = order[b : b + self.batch_size]
                yield {key: torch.from_numpy(np.ascontiguousarray(value[rows])) for key, value in pool.items()}
            rest = order[n_full:]
            carry = {key: value[rest] for key, value in pool.items()} if len(rest) else None
        if carry is not None and not self.drop_last:
            yield {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in carry.items()}


class DiskDataSplitter(SplitLoaders, DataSplitter):
    """scvi-tools' :class:`~scvi.dataloaders.DataSplitter` whose loaders read contiguous blocks of cells.

    For counts read from disk (a backed AnnData, an AnnCollection): the split is scvi-tools', the minibatches
    hold the same keys and dtypes as its ``AnnDataLoader``'s, but each epoch reads the file in blocks of
    ``block_size`` cells in a random order, shuffling ``blocks_per_pool`` blocks together (see the module
    docstring). A minibatch therefore mixes cells of ``blocks_per_pool`` places of the file instead of
    cells drawn from all of it; a file sorted by condition still gives minibatches of several conditions
    as long as ``blocks_per_pool`` blocks are drawn from different places.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager`.
    block_size, blocks_per_pool
        Cells per contiguous read, and blocks shuffled together.
    **kwargs
        ``train_size``, ``validation_size``, ``shuffle_set_split``, ``batch_size``, ``drop_last``,
        ``external_indexing``.
    """

    def __init__(
        self,
        adata_manager: Any,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        blocks_per_pool: int = DEFAULT_BLOCKS_PER_POOL,
        **kwargs: Any,
    ) -> None:
        self.batch_size = int(kwargs.pop("batch_size", settings.batch_size))
        self.block_size = int(block_size)
        self.blocks_per_pool = int(blocks_per_pool)
        kwargs.pop("distributed_sampler", None)
        super().__init__(adata_manager, batch_size=self.batch_size, **kwargs)
        self._dataset: Any = None

    def _loader(self, indices: np.ndarray, *, shuffle: bool, drop_last: bool) -> DiskBatches:
        if self._dataset is None:
            self._dataset = self.adata_manager.create_torch_dataset()
        return DiskBatches(
            self._dataset,
            indices,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            block_size=self.block_size,
            blocks_per_pool=self.blocks_per_pool,
            seed=settings.seed if settings.seed is not None else 0,
        )


def select_data_splitter(
    adata_manager: Any, *, on_device: bool, distributed: bool, splitter_kwargs: dict[str, Any], default: type
) -> tuple[type, dict[str, Any]]:
    """The data splitter class of phase 1 and its keyword arguments.

    :class:`~trajvi.train.DeviceDataSplitter` when ``on_device``; :class:`DiskDataSplitter` for counts read
    from disk (unless ``block_size=0`` is passed, or training is distributed, where scvi-tools' loader
    reads each minibatch on its own); ``default`` (scvi-tools' splitter) otherwise. Arguments that only
    one splitter takes (``max_dense_bytes``, ``block_size``, ``blocks_per_pool``) are dropped for the others.
    """
    kwargs = dict(splitter_kwargs)
    block: dict[str, Any] = {key: kwargs.pop(key) for key in ("block_size", "blocks_per_pool") if key in kwargs}
    if on_device:
        return DeviceDataSplitter, kwargs
    kwargs.pop("max_dense_bytes", None)
    if block.get("block_size", DEFAULT_BLOCK_SIZE) and not distributed and not counts_in_memory(adata_manager):
        logger.info(
            "Counts are read from disk in blocks of %d cells, %d blocks shuffled together per pool "
            "(datasplitter_kwargs block_size, blocks_per_pool; block_size=0 reads each minibatch on its own).",
            block.get("block_size", DEFAULT_BLOCK_SIZE),
            block.get("blocks_per_pool", DEFAULT_BLOCKS_PER_POOL),
        )
        return DiskDataSplitter, {**kwargs, **block}
    return default, kwargs
