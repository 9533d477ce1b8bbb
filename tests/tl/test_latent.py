import numpy as np
import pytest

import trajvi
from tests.conftest import TRAIN_KW


@pytest.fixture(scope="module")
def fitted():
    import scvi

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(300, 40, seed=5)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN_KW)
    return adata, model


def test_writes_documented_keys(fitted):
    adata, model = fitted
    assert trajvi.tl.latent(adata, model, key_added="X_test") is None
    assert adata.obsm["X_test"].shape == (adata.n_obs, 3)
    assert adata.varm["X_test"].shape == (adata.n_vars, 16)
    params = adata.uns["X_test"]["params"]
    assert params["condition_key"] == "condition" and params["n_latent"] == 3
    np.testing.assert_allclose(adata.obsm["X_test"], model.get_latent_representation())


def test_copy_leaves_the_input_alone(fitted):
    adata, model = fitted
    before_obsm, before_uns = set(adata.obsm), set(adata.uns)
    out = trajvi.tl.latent(adata, model, key_added="X_copy", copy=True)
    assert "X_copy" in out.obsm and "X_copy" in out.uns
    assert set(adata.obsm) == before_obsm and set(adata.uns) == before_uns


def test_other_genes_are_rejected(fitted):
    adata, model = fitted
    with pytest.raises(ValueError, match="genes"):
        trajvi.tl.latent(adata[:, :20].copy(), model)


def test_untrained_model_is_rejected(fitted):
    adata, _ = fitted
    model = trajvi.TrajVI(adata)
    with pytest.raises(RuntimeError, match="train"):
        trajvi.tl.latent(adata, model)
    with pytest.raises(TypeError, match="TrajVI"):
        trajvi.tl.latent(adata, object())
