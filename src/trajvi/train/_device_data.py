"""Minibatches drawn from tensors that live on the training device.

scvi-tools' :class:`~scvi.dataloaders.AnnDataLoader` slices the AnnData on the host for every minibatch and
copies the slice to the device. On a GPU that per-step host work, not the model, bounds the throughput of
a model of this size. :class:`DeviceDataSplitter` keeps scvi-tools' train/validation split and registry
(same indices, same keys, same dtypes) but copies every registered field to the training device once and
draws minibatches there: counts as a dense tensor when they fit in ``max_dense_bytes``, else as CSR
arrays whose rows are gathered per minibatch.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS, settings
from scvi.dataloaders import DataSplitter

from trajvi._logging import logger
from trajvi.data._blocks import counts_in_memory

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Counts up to this size (bytes, float32) are held dense; larger ones stay CSR.
DEFAULT_MAX_DENSE_BYTES = 2 * 1024**3


class _Fields:
    """The registered fields of all cells as tensors on one device."""

    def __init__(self, adata_manager: Any, device: torch.device, max_dense_bytes: int) -> None:
        dataset = adata_manager.create_torch_dataset()
        self.device = device
        self.dense: dict[str, torch.Tensor] = {}
        self.csr: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}
        for key, dtype in dataset.keys_and_dtypes.items():
            data = dataset.data[key]
            if isinstance(data, str):  # minified-data marker, not a per-cell field
                continue
            if sp.issparse(data):
                data = sp.csr_matrix(data)
                csr = (
                    torch.as_tensor(data.indptr.astype(np.int64), device=device),
                    torch.as_tensor(data.indices.astype(np.int64), device=device),
                    torch.as_tensor(data.data.astype(dtype, copy=False), device=device),
                    data.shape[1],
                )
                n_bytes = data.shape[0] * data.shape[1] * np.dtype(dtype).itemsize
                if n_bytes <= max_dense_bytes:  # densified on the device, never on the host
                    with warnings.catch_warnings():  # "sparse CSR support is in beta"
                        warnings.simplefilter("ignore", UserWarning)
                        self.dense[key] = torch.sparse_csr_tensor(*csr[:3], size=data.shape).to_dense()
                else:
                    self.csr[key] = csr
            elif hasattr(data, "iloc"):
                self.dense[key] = torch.as_tensor(data.to_numpy().astype(dtype, copy=False), device=device)
            else:
                self.dense[key] = torch.as_tensor(np.asarray(data).astype(dtype, copy=False), device=device)

    def take(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fields of ``rows`` (a long tensor on the device), dense."""
        batch = {key: value.index_select(0, rows) for key, value in self.dense.items()}
        for key, (indptr, indices, values, n_cols) in self.csr.items():
            batch[key] = _gather_csr_rows(indptr, indices, values, n_cols, rows)
        return batch


def _gather_csr_rows(
    indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, n_cols: int, rows: torch.Tensor
) -> torch.Tensor:
    """Rows of a CSR matrix as a dense ``(len(rows), n_cols)`` tensor, without leaving the device."""
    starts = indptr.index_select(0, rows)
    lengths = indptr.index_select(0, rows + 1) - starts
    out = torch.zeros(rows.numel(), n_cols, dtype=values.dtype, device=values.device)
    total = int(lengths.sum())  # the one host read: the size of the gather
    if total == 0:
        return out
    row_of = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths, output_size=total)
    offsets = torch.cumsum(lengths, 0) - lengths
    position = (
        torch.arange(total, device=rows.device) - offsets.index_select(0, row_of) + starts.index_select(0, row_of)
    )
    out[row_of, indices.index_select(0, position)] = values.index_select(0, position)
    return out


class DeviceBatches:
    """An epoch's minibatches of ``indices``, cut from fields held on the device.

    Parameters
    ----------
    fields
        The registered fields of all cells, on the device.
    indices
        Cells of this loader (train or validation).
    batch_size
        Cells per minibatch.
    shuffle
        Draw a new order every epoch (from a seeded generator: the same seed gives the same order).
    drop_last
        Leave out a last, smaller minibatch.
    rank, world_size
        This process's share under distributed training: each process takes every ``world_size``-th
        cell of the shared order, cut to equal lengths.
    seed
        Seed of the shuffling.
    """

    def __init__(
        self,
        fields: _Fields,
        indices: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        self.fields = fields
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.epoch = 0
        self.device = fields.device

    def _n_cells(self) -> int:
        return len(self.indices) // self.world_size if self.world_size > 1 else len(self.indices)

    def __len__(self) -> int:
        n = self._n_cells()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The cells of ``epoch`` (this process's share), in the order they are drawn."""
        order = self.indices
        if self.shuffle:
            order = order[np.random.default_rng((self.seed, epoch)).permutation(len(order))]
        if self.world_size > 1:
            order = order[self.rank :: self.world_size][: self._n_cells()]
        return order

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rows = torch.as_tensor(self.order(self.epoch), device=self.device)
        self.epoch += 1
        for b in range(len(self)):
            yield self.fields.take(rows[b * self.batch_size : (b + 1) * self.batch_size])


class SplitLoaders:
    """The train/validation/test loaders of a splitter, each from its ``_loader(indices, shuffle, drop_last)``.

    Training cells are shuffled (and the last short minibatch dropped when ``drop_last``); validation and test
    cells are read in order; a split without cells has no loader (``None``).
    """

    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    drop_last: bool

    def _loader(self, indices: np.ndarray, *, shuffle: bool, drop_last: bool) -> Any:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        """Shuffled minibatches of the training cells."""
        return self._loader(self.train_idx, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> Any:
        """Minibatches of the validation cells, in order (``None`` without validation cells)."""
        if len(self.val_idx) == 0:
            return None
        return self._loader(self.val_idx, shuffle=False, drop_last=False)

    def test_dataloader(self) -> Any:
        """Minibatches of the test cells, in order (``None`` without test cells)."""
        if len(self.test_idx) == 0:
            return None
        return self._loader(self.test_idx, shuffle=False, drop_last=False)


class DeviceDataSplitter(SplitLoaders, DataSplitter):
    """scvi-tools' :class:`~scvi.dataloaders.DataSplitter` whose loaders draw minibatches on the device.

    The split (``train_size``, ``validation_size``, ``shuffle_set_split``, ``settings.seed``) is scvi-tools';
    the minibatches hold the same keys and dtypes as its ``AnnDataLoader``'s. Every registered field is
    copied once to the training device (``trainer.strategy.root_device``) when training starts.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager`.
    max_dense_bytes
        Counts up to this many bytes (float32) are held dense on the device; larger ones as CSR arrays
        whose minibatch rows are gathered on the device.
    distributed_sampler
        Under distributed training each process takes its own share of every epoch's order.
    **kwargs
        ``train_size``, ``validation_size``, ``shuffle_set_split``, ``batch_size``, ``drop_last``.
    """

    def __init__(
        self,
        adata_manager: Any,
        *,
        max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
        distributed_sampler: bool = False,
        **kwargs: Any,
    ) -> None:
        self.batch_size = int(kwargs.pop("batch_size", settings.batch_size))
        self.max_dense_bytes = int(max_dense_bytes)
        self.distributed = bool(distributed_sampler)
        super().__init__(adata_manager, batch_size=self.batch_size, **kwargs)
        self._fields: _Fields | None = None

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if not self.distributed or trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, indices: np.ndarray, *, shuffle: bool, drop_last: bool) -> DeviceBatches:
        device = self._device()
        if self._fields is None or self._fields.device != device:
            self._fields = _Fields(self.adata_manager, device, self.max_dense_bytes)
            logger.info(
                "Counts of %d cells copied to %s (%s).",
                self.adata_manager.adata.n_obs,
                device,
                "dense" if REGISTRY_KEYS.X_KEY in self._fields.dense else "CSR",
            )
        rank, world_size = self._rank()
        return DeviceBatches(
            self._fields,
            indices,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            seed=settings.seed if settings.seed is not None else 0,
        )


#: Share of the device's free memory that the copied data may take (the rest is left to the model and its steps).
DEVICE_MEMORY_SHARE = 0.5


def _counts_on_device_bytes(counts: Any, shape: tuple[int, int], max_dense_bytes: int) -> int:
    """Bytes the counts take on the device as :class:`DeviceDataSplitter` holds them (dense or CSR)."""
    dense = shape[0] * shape[1] * 4
    if not sp.issparse(counts) or dense <= max_dense_bytes:
        return dense
    return int(counts.nnz) * (8 + 4) + (shape[0] + 1) * 8


def choose_data_on_device(
    adata_manager: Any,
    *,
    requested: bool | None,
    on_gpu: bool,
    device_index: int = 0,
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
) -> bool:
    """Decide whether phase 1 draws its minibatches on the device (:class:`DeviceDataSplitter`).

    With ``requested=None`` the data go to the device only when training on a GPU, when the counts are in
    memory (not a backed file, an AnnCollection or a dask array: those are read minibatch by minibatch by
    scvi-tools' loader), and when they take at most :data:`DEVICE_MEMORY_SHARE` of the device's free memory.
    The choice and its reason are logged.

    Raises
    ------
    ValueError
        ``requested=True`` for counts that are not in memory.
    """
    adata = adata_manager.adata
    counts = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    in_memory = counts_in_memory(adata_manager)
    if requested is not None:
        if requested and not in_memory:
            msg = (
                "data_on_device=True copies all the counts to the device, but they are read from disk (a backed "
                "AnnData, an AnnCollection or a lazy array). Use data_on_device=None or False to train through "
                "scvi-tools' loader, or load the counts first (adata = adata.to_memory())."
            )
            raise ValueError(msg)
        return bool(requested)
    if not on_gpu:
        return False
    if not in_memory:
        logger.info("Counts are read from disk: minibatches are read on the host, not copied to the device.")
        return False
    need = _counts_on_device_bytes(counts, (adata.n_obs, adata.n_vars), max_dense_bytes)
    free, _ = torch.cuda.mem_get_info(device_index)
    if need > DEVICE_MEMORY_SHARE * free:
        logger.info(
            "Counts need %.2f GB on the device, more than %d%% of its %.2f GB free: minibatches are sliced on "
            "the host by scvi-tools' loader (data_on_device=True forces the copy).",
            need / 1e9,
            round(100 * DEVICE_MEMORY_SHARE),
            free / 1e9,
        )
        return False
    logger.info(
        "Counts (%.2f GB) are copied to the device once and minibatches drawn there (data_on_device=False "
        "slices them on the host instead).",
        need / 1e9,
    )
    return True
