import pytest

import trajvi
from tests.conftest import TRAIN_KW


@pytest.fixture(scope="package")
def trained():
    """Both phases on tiny synthetic data, fitted once for the tl tests."""
    import scvi

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(500, 60, seed=2)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=4, n_hidden=32)
    model.train(max_epochs=3, **TRAIN_KW)
    model.train_trajectories(["control", "stimulated"], residual_penalty=1.0, max_epochs=3, **TRAIN_KW)
    return adata, model
