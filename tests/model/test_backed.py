"""Both phases, the getters and predict on data read from disk: backed h5ad files and an AnnCollection."""

import anndata as ad
import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule
from scipy import sparse

import trajvi
from tests.conftest import TRAIN_KW
from trajvi.train import choose_data_on_device

P2 = {"max_epochs": 2, "validation_epochs": 1, "residual_penalty": 0.0, **TRAIN_KW}


def _counts(n_cells=240, n_genes=40, seed=0):
    adata = trajvi.data.synthetic(n_cells, n_genes, seed=seed)
    adata.X = sparse.csr_matrix(adata.X).astype(np.int32)
    return adata


def _fit_and_use(data, layer=None):
    trajvi.TrajVI.setup_anndata(data, "condition", batch_key="batch", layer=layer)
    model = trajvi.TrajVI(data, n_latent=4, n_hidden=16)
    model.train(max_epochs=1, batch_size=64, **TRAIN_KW)
    model.train_trajectories(["control", "stimulated"], **P2)
    z = model.get_latent_representation()
    sources = np.flatnonzero((data.obs["condition"] == "control").to_numpy())[[5, 1, 3]]  # not sorted
    predicted = model.predict(source="control", target="stimulated", indices=sources)
    return model, z, predicted


@pytest.mark.parametrize("fmt", ["csr", "dense"])
def test_backed_h5ad_trains_both_phases_and_predicts(tmp_path, fmt, seeded, trajvi_caplog):
    adata = _counts()
    if fmt == "dense":
        adata.X = adata.X.toarray()
    adata.write_h5ad(tmp_path / "counts.h5ad")
    backed = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    model, z, predicted = _fit_and_use(backed)
    assert model.is_trajectory_trained_
    assert z.shape == (adata.n_obs, 4)
    assert np.isfinite(z).all()
    assert predicted.n_obs == 3
    assert predicted.n_vars == adata.n_vars
    assert backed.isbacked  # still backed: nothing was loaded into memory in its place
    # phase 2 encodes backed cells in contiguous blocks: the same posterior means as scvi-tools' loader
    np.testing.assert_allclose(model._encode_all_cells(), z, rtol=1e-5, atol=1e-5)
    assert "read from disk in blocks of 1024 cells" in trajvi_caplog.text  # trajvi.train.DiskDataSplitter


def test_anncollection_of_two_backed_files(tmp_path, seeded):
    from anndata.experimental import AnnCollection
    from scvi.dataloaders import CollectionAdapter

    adata = _counts()
    adata.layers["counts"] = adata.X.copy()
    half = adata.n_obs // 2
    adata[:half].write_h5ad(tmp_path / "a.h5ad")
    adata[half:].write_h5ad(tmp_path / "b.h5ad")
    files = [ad.read_h5ad(tmp_path / name, backed="r") for name in ("a.h5ad", "b.h5ad")]
    collection = CollectionAdapter(AnnCollection(files, join_vars="inner", join_obs="inner"))
    model, z, predicted = _fit_and_use(collection, layer="counts")
    assert model.is_trajectory_trained_
    assert z.shape == (adata.n_obs, 4)
    assert predicted.n_obs == 3


class _CountingModule(LightningDataModule):
    """A custom loader: scvi-tools' AnnDataLoader over the first cells, counting the minibatches it gives."""

    def __init__(self, adata_manager, n_cells):
        super().__init__()
        self.adata_manager, self.n_cells, self.n_batches = adata_manager, n_cells, 0

    def train_dataloader(self):
        from scvi.dataloaders import AnnDataLoader

        loader = AnnDataLoader(self.adata_manager, indices=np.arange(self.n_cells), batch_size=32, shuffle=True)
        return _Counted(loader, self)


class _Counted:
    def __init__(self, loader, owner):
        self.loader, self.owner = loader, owner

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.owner.n_batches += 1
            yield batch


def test_train_accepts_a_datamodule(tmp_path, seeded):
    adata = _counts()
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=4, n_hidden=16)
    module = _CountingModule(model.adata_manager, n_cells=96)
    model.train(max_epochs=2, datamodule=module, **TRAIN_KW)
    assert module.n_batches == 2 * 3  # its loader, not the default splitter, fed the training
    assert len(model.history["reconstruction_loss_train"]) == 2
    with pytest.raises(ValueError, match="exclude each other"):
        model.train(max_epochs=1, datamodule=module, data_on_device=True, **TRAIN_KW)


def test_device_loader_is_refused_for_backed_counts_and_not_chosen_for_them(tmp_path, trajvi_caplog):
    adata = _counts()
    adata.write_h5ad(tmp_path / "counts.h5ad")
    backed = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    trajvi.TrajVI.setup_anndata(backed, "condition", batch_key="batch")
    model = trajvi.TrajVI(backed, n_latent=4, n_hidden=16)
    with pytest.raises(ValueError, match="data_on_device=True"):
        model.train(max_epochs=1, data_on_device=True, **TRAIN_KW)
    manager = model.adata_manager
    assert not choose_data_on_device(manager, requested=None, on_gpu=True)
    assert "read from disk" in trajvi_caplog.text
    in_memory = trajvi.TrajVI(_registered(_counts()), n_latent=4).adata_manager
    assert not choose_data_on_device(in_memory, requested=None, on_gpu=False)
    assert choose_data_on_device(in_memory, requested=True, on_gpu=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_loader_is_chosen_when_the_counts_fit_on_the_gpu(trajvi_caplog, monkeypatch):
    from trajvi.train import _device_data

    manager = trajvi.TrajVI(_registered(_counts()), n_latent=4).adata_manager
    assert choose_data_on_device(manager, requested=None, on_gpu=True)
    assert "copied to the device" in trajvi_caplog.text
    monkeypatch.setattr(_device_data, "DEVICE_MEMORY_SHARE", 0.0)  # nothing fits
    assert not choose_data_on_device(manager, requested=None, on_gpu=True)
    assert "sliced on the host" in trajvi_caplog.text


def _registered(adata):
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    return adata
