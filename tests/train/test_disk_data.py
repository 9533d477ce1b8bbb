import functools

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
from scvi.dataloaders import DataSplitter

import trajvi
from trajvi.train import DiskDataSplitter, select_data_splitter


@pytest.fixture
def backed_model(tmp_path):
    adata = trajvi.data.synthetic(n_cells=300, n_genes=40, seed=0)
    adata.X = sp.csr_matrix(adata.X).astype(np.int32)
    adata.obs["cell_id_plus_one"] = np.arange(1, adata.n_obs + 1, dtype=float)  # registered: tells the cells apart
    adata.write_h5ad(tmp_path / "counts.h5ad")
    backed = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    trajvi.TrajVI.setup_anndata(backed, "condition", batch_key="batch", size_factor_key="cell_id_plus_one")
    return trajvi.TrajVI(backed, n_latent=4, n_hidden=16), adata


def _cells(batch):
    return batch["size_factor"].numpy().reshape(-1).astype(int) - 1


def test_disk_batches_match_scvi_loader_and_cover_the_train_cells_once(backed_model):
    model, adata = backed_model
    scvi.settings.seed = 0
    ours = DiskDataSplitter(model.adata_manager, batch_size=32, block_size=20, blocks_per_pool=3)
    theirs = DataSplitter(model.adata_manager, batch_size=32)
    ours.setup()
    theirs.setup()
    np.testing.assert_array_equal(ours.train_idx, theirs.train_idx)
    ref = next(iter(theirs.train_dataloader()))
    loader = ours.train_dataloader()
    epochs = [list(loader), list(loader)]
    for batches in epochs:
        assert len(batches) == len(loader) == len(theirs.train_dataloader())
        cells = np.concatenate([_cells(b) for b in batches])
        np.testing.assert_array_equal(np.sort(cells), np.sort(ours.train_idx))  # every training cell once
        for batch in batches:
            rows = _cells(batch)
            np.testing.assert_array_equal(batch["X"].numpy(), adata.X[rows].toarray())  # rows and fields agree
        # a minibatch mixes blocks from several places of the file
        assert (
            max(len(np.unique(np.searchsorted(np.sort(ours.train_idx)[::20], _cells(b), "right"))) for b in batches) > 1
        )
    assert set(epochs[0][0]) == set(ref)
    for key in ref:
        assert epochs[0][0][key].dtype == ref[key].dtype, key
    assert not np.array_equal(_cells(epochs[0][0]), _cells(epochs[1][0]))  # a new order every epoch


def test_disk_splitter_is_selected_for_backed_counts_only(backed_model, trajvi_caplog):
    model, adata = backed_model
    select = functools.partial(select_data_splitter, on_device=False, distributed=False, default=DataSplitter)
    cls, kwargs = select_data_splitter(
        model.adata_manager,
        on_device=False,
        distributed=False,
        splitter_kwargs={"block_size": 64},
        default=DataSplitter,
    )
    assert cls is DiskDataSplitter
    assert kwargs == {"block_size": 64}
    assert "read from disk in blocks of 64 cells" in trajvi_caplog.text
    cls, kwargs = select(model.adata_manager, splitter_kwargs={"block_size": 0})
    assert (cls, kwargs) == (DataSplitter, {})
    trajvi.TrajVI.setup_anndata(adata, "condition")
    in_memory = trajvi.TrajVI(adata, n_latent=4).adata_manager
    cls, _ = select_data_splitter(
        in_memory, on_device=False, distributed=False, splitter_kwargs={}, default=DataSplitter
    )
    assert cls is DataSplitter
