import numpy as np
import pandas as pd
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW


@pytest.fixture
def model(synthetic_adata, seeded):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition", batch_key="batch")
    m = trajvi.TrajVI(synthetic_adata, n_latent=4, n_hidden=32, n_attention=16)
    m.train(max_epochs=1, batch_size=64, **TRAIN_KW)
    return m


def test_one_epoch_fit_and_every_getter(model, synthetic_adata):
    n, g = synthetic_adata.shape
    z = model.get_latent_representation()
    assert z.shape == (n, 4) and np.isfinite(z).all()
    mean, var = model.get_latent_representation(return_dist=True)
    assert mean.shape == var.shape == (n, 4) and (var > 0).all()
    expr = model.get_normalized_expression()
    assert isinstance(expr, pd.DataFrame) and expr.shape == (n, g)
    np.testing.assert_allclose(expr.sum(axis=1), 1.0, rtol=1e-4)
    emb = model.get_gene_embeddings()
    assert emb.shape == (g, 32) and list(emb.index) == list(synthetic_adata.var_names)
    assert model.get_condition_codes().shape == (n,)
    assert model.conditions == ["control", "stimulated"]
    samples = model.posterior_predictive_sample(n_samples=1)
    assert samples.shape == (n, g)
    assert "adversary on the condition" in model._model_summary_string


def test_history_records_the_phase1_metrics(model):
    for key in (
        "reconstruction_loss_train",
        "kl_local_train",
        "adversarial_loss_train",
        "discriminator_accuracy_train",
        "grad_norm_train",
        "n_repaired_train",
        "n_skipped_steps_train",
        "n_discriminator_skips_train",
        "kl_weight",
    ):
        assert key in model.history, key
    assert model.history["n_repaired_train"].iloc[-1, 0] == 0
    assert model.history["n_skipped_steps_train"].iloc[-1, 0] == 0


def test_save_load_gives_identical_latents(model, synthetic_adata, tmp_path):
    z = model.get_latent_representation()
    model.save(tmp_path / "m", overwrite=True)
    loaded = trajvi.TrajVI.load(tmp_path / "m", adata=synthetic_adata)
    np.testing.assert_array_equal(loaded.get_latent_representation(), z)
    assert loaded.adversarial_target == model.adversarial_target
    torch.testing.assert_close(
        loaded.module.discriminator.state_dict()["classifier.0.fc_layers.Layer 0.0.weight"],
        model.module.discriminator.state_dict()["classifier.0.fc_layers.Layer 0.0.weight"],
    )


def test_same_seed_same_latents(synthetic_adata):
    import scvi

    latents = []
    for _ in range(2):
        scvi.settings.seed = 7
        adata = synthetic_adata.copy()
        trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
        m = trajvi.TrajVI(adata, n_latent=4, n_hidden=32)
        m.train(max_epochs=2, batch_size=64, **TRAIN_KW)
        latents.append(m.get_latent_representation())
    np.testing.assert_array_equal(latents[0], latents[1])


def test_second_train_call_keeps_and_adds_history_keys(synthetic_adata, seeded):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    m = trajvi.TrajVI(synthetic_adata, n_latent=4, n_hidden=32, adversarial_weight=0.0)
    m.train(max_epochs=2, batch_size=128, **TRAIN_KW)
    assert "fool_loss_train" not in m.history
    m.train(max_epochs=3, batch_size=128, plan_kwargs={"adversarial_weight": 2.0}, **TRAIN_KW)
    assert len(m.history["reconstruction_loss_train"]) == 5
    assert list(m.history["fool_loss_train"].index) == [2, 3, 4]


def test_getters_before_training_raise(synthetic_adata):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    m = trajvi.TrajVI(synthetic_adata)
    with pytest.raises(RuntimeError, match="train"):
        m.get_latent_representation()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"adversarial_target": "batch"}, "batch_key"),
        ({"adversarial_target": "donor"}, "adversarial_target"),
        ({"adversarial_weight": -1.0}, "adversarial_weight"),
        ({"n_latent": 0}, "n_latent"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
    ],
)
def test_invalid_options(synthetic_adata, kwargs, match):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    with pytest.raises(ValueError, match=match):
        trajvi.TrajVI(synthetic_adata, **kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [({"max_epochs": 0}, "max_epochs"), ({"batch_size": 1}, "batch_size")])
def test_invalid_train_options(synthetic_adata, kwargs, match):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    m = trajvi.TrajVI(synthetic_adata)
    kwargs.setdefault("max_epochs", 1)
    with pytest.raises(ValueError, match=match):
        m.train(**kwargs, **TRAIN_KW)


def test_batch_adversary_and_size_factors(synthetic_adata, seeded):
    synthetic_adata.obs["sf"] = np.asarray(synthetic_adata.X.sum(axis=1)).ravel()
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition", batch_key="batch", size_factor_key="sf")
    m = trajvi.TrajVI(synthetic_adata, adversarial_target="batch", n_latent=4, n_hidden=32)
    assert m.module.n_adversary_classes == 2 and m.module.use_size_factor
    m.train(max_epochs=1, **TRAIN_KW)
    assert np.isfinite(m.get_latent_representation()).all()


def test_discriminator_accuracy_falls_toward_chance_as_the_weight_grows():
    """Strong condition effect: the discriminator reads the condition at weight 0, less as the weight grows.

    The decoder sees the condition here, so the latent can drop it without losing reconstruction; with the
    default ``decode_condition=False`` the condition must stay in the latent and the adversary only
    regularises it (docs/design.md).
    """
    import scvi

    base = trajvi.data.synthetic(1500, 200, effect_size=2.0, seed=1)
    accuracy = {}
    for weight in (0.0, 10.0, 100.0):
        scvi.settings.seed = 0
        adata = base.copy()
        trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
        m = trajvi.TrajVI(adata, adversarial_weight=weight, decode_condition=True)
        m.train(max_epochs=30, check_val_every_n_epoch=1, **TRAIN_KW)
        accuracy[weight] = m.history["discriminator_accuracy_validation"].iloc[-5:, 0].mean()
    assert accuracy[0.0] > 0.9
    assert accuracy[10.0] < accuracy[0.0] - 0.1
    assert accuracy[100.0] < accuracy[10.0]
    assert accuracy[100.0] < 0.75
