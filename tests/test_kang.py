"""Phase 1 on real data: Kang 2018 IFN-beta PBMCs from ../shared/data."""

import numpy as np
import pytest

import trajvi
from tests.conftest import TRAIN_KW, shared_data


@pytest.mark.slow
def test_kang_20_epochs_finite_and_separates_cell_types():
    import anndata as ad
    import scvi

    adata = ad.read_h5ad(shared_data("kang_pbmc_union_counts.h5ad"))
    scvi.settings.seed = 0
    trajvi.TrajVI.setup_anndata(adata, condition_key="condition")
    model = trajvi.TrajVI(adata)
    model.train(max_epochs=20, **TRAIN_KW)
    hist = model.history
    assert hist["n_skipped_steps_train"].iloc[:, 0].sum() == 0
    assert hist["n_repaired_train"].iloc[:, 0].sum() == 0
    assert np.isfinite(hist["reconstruction_loss_train"].iloc[:, 0]).all()
    z = model.get_latent_representation()
    labelled = (adata.obs["cell_type_source"] == "scgen").to_numpy()
    accuracy = trajvi.metrics.knn_accuracy(z[labelled], adata.obs["cell_type"].to_numpy()[labelled])
    assert accuracy >= 0.8, accuracy
