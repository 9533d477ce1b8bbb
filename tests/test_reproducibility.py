"""Same seed, same data, same results on CPU; half precision keeps the losses in float32."""

import numpy as np
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW, shared_data


def _pipeline(seed):
    import scvi

    scvi.settings.seed = seed
    adata = trajvi.data.synthetic(400, 50, seed=1)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=4, n_hidden=32)
    model.train(max_epochs=2, **TRAIN_KW)
    model.train_trajectories(
        ["control", "stimulated"], couple_within="cell_type", max_epochs=2, validation_epochs=2, **TRAIN_KW
    )
    traj = model.simulate_trajectory(n_steps=5, genes=list(adata.var_names[:4]))
    scvi.settings.seed = seed
    pred = model.predict(source="control", target="stimulated", n_samples=2)
    return model.get_latent_representation(), traj, pred


def test_same_seed_same_latents_trajectories_and_predictions():
    z1, t1, p1 = _pipeline(3)
    z2, t2, p2 = _pipeline(3)
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_array_equal(t1.latent, t2.latent)
    np.testing.assert_array_equal(t1.expression, t2.expression)
    assert (p1.X != p2.X).nnz == 0
    np.testing.assert_array_equal(p1.layers["trajvi_mean"], p2.layers["trajvi_mean"])
    z3, _, _ = _pipeline(4)
    assert not np.array_equal(z1, z3)


def test_bf16_mixed_keeps_losses_in_float32(synthetic_adata, seeded):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=3, n_hidden=16)
    seen = {}
    original = model.module.loss

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen["loss"] = out.loss.dtype
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return out

    model.module.loss = spy
    model.train(max_epochs=1, precision="bf16-mixed", **TRAIN_KW)
    assert seen == {"loss": torch.float32, "autocast": True}
    assert model.history["n_skipped_steps_train"].iloc[:, 0].sum() == 0


@pytest.mark.slow
def test_bf16_mixed_on_kang_has_no_nonfinite_step():
    import anndata as ad
    import scvi

    adata = ad.read_h5ad(shared_data("kang_pbmc_union_counts.h5ad"))
    scvi.settings.seed = 0
    trajvi.TrajVI.setup_anndata(adata, condition_key="condition")
    model = trajvi.TrajVI(adata)
    model.train(max_epochs=3, precision="bf16-mixed", **TRAIN_KW)
    hist = model.history
    assert hist["n_skipped_steps_train"].iloc[:, 0].sum() == 0
    assert hist["n_repaired_train"].iloc[:, 0].sum() == 0
    assert hist["reconstruction_loss_train"].iloc[-1, 0] < hist["reconstruction_loss_train"].iloc[0, 0]
