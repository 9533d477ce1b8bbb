import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from scvi.dataloaders import DataSplitter

import trajvi
from trajvi.train import DeviceDataSplitter
from trajvi.train._device_data import DeviceBatches, _Fields, _gather_csr_rows


def test_gather_csr_rows_matches_dense_rows_including_empty_ones():
    rng = np.random.default_rng(0)
    x = sp.random(50, 30, density=0.1, format="csr", random_state=0, dtype=np.float32)
    x = sp.csr_matrix(x.multiply((np.arange(50) != 7)[:, None]))  # row 7 empty
    rows = torch.as_tensor(rng.choice(50, size=20, replace=True))
    rows[0] = 7
    out = _gather_csr_rows(
        torch.as_tensor(x.indptr.astype(np.int64)),
        torch.as_tensor(x.indices.astype(np.int64)),
        torch.as_tensor(x.data),
        x.shape[1],
        rows,
    )
    np.testing.assert_array_equal(out.numpy(), x.toarray()[rows.numpy()])
    empty = _gather_csr_rows(
        torch.as_tensor(x.indptr.astype(np.int64)),
        torch.as_tensor(x.indices.astype(np.int64)),
        torch.as_tensor(x.data),
        x.shape[1],
        torch.tensor([7]),
    )
    assert empty.shape == (1, 30)
    assert float(empty.abs().sum()) == 0.0


@pytest.fixture
def model():
    adata = trajvi.data.synthetic(n_cells=300, n_genes=40, seed=0)
    trajvi.TrajVI.setup_anndata(adata, condition_key="condition", batch_key="batch")
    return trajvi.TrajVI(adata, n_latent=4, n_hidden=16)


@pytest.mark.parametrize("max_dense_bytes", [2**31, 0])
def test_device_batches_match_scvi_loader_keys_dtypes_and_cover_the_train_cells(model, max_dense_bytes):
    scvi.settings.seed = 0
    ours = DeviceDataSplitter(model.adata_manager, batch_size=64, max_dense_bytes=max_dense_bytes)
    theirs = DataSplitter(model.adata_manager, batch_size=64)
    ours.setup()
    theirs.setup()
    np.testing.assert_array_equal(ours.train_idx, theirs.train_idx)
    ref = next(iter(theirs.train_dataloader()))
    loader = ours.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == len(theirs.train_dataloader())
    assert set(batches[0]) == set(ref)
    for key in ref:
        assert batches[0][key].dtype == ref[key].dtype, key
        assert batches[0][key].shape[1:] == ref[key].shape[1:], key
    x = np.concatenate([b["X"].numpy() for b in batches])
    counts = model.adata.X
    counts = counts.toarray() if sp.issparse(counts) else counts
    expected = counts[ours.train_idx]
    # every training cell exactly once, in a shuffled order
    order = np.lexsort(x.T[::-1])
    np.testing.assert_array_equal(x[order], expected[np.lexsort(expected.T[::-1])])
    assert not np.array_equal(x, expected)
    assert len(list(ours.val_dataloader())) >= 1


def test_distributed_shares_are_disjoint_equal_and_change_every_epoch(model):
    fields = _Fields(model.adata_manager, torch.device("cpu"), 2**31)
    idx = np.arange(101)
    loaders = [DeviceBatches(fields, idx, batch_size=16, shuffle=True, rank=r, world_size=2, seed=3) for r in (0, 1)]
    first = [loader.order(0) for loader in loaders]
    assert len(first[0]) == len(first[1]) == 50
    assert not set(first[0]) & set(first[1])
    assert len(loaders[0]) == len(list(loaders[0])) == 4
    assert not np.array_equal(loaders[0].order(1), first[0])


def test_training_on_device_batches_is_seeded_and_dense_equals_csr(model):
    latents = []
    for max_dense_bytes in (2**31, 2**31, 0):
        scvi.settings.seed = 0
        adata = model.adata.copy()
        trajvi.TrajVI.setup_anndata(adata, condition_key="condition", batch_key="batch")
        m = trajvi.TrajVI(adata, n_latent=4, n_hidden=16)
        m.train(
            max_epochs=2,
            batch_size=64,
            data_on_device=True,
            datasplitter_kwargs={"max_dense_bytes": max_dense_bytes},
            enable_progress_bar=False,
        )
        assert m.history["elbo_train"].notna().all().all()
        latents.append(m.get_latent_representation())
    np.testing.assert_array_equal(latents[0], latents[1])
    np.testing.assert_allclose(latents[0], latents[2], rtol=1e-5, atol=1e-5)
