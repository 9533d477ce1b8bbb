import math

import numpy as np
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW
from trajvi._constants import REGISTRY_KEYS
from trajvi.diagnostics import check_gradients
from trajvi.module import TrajVIModule


def _batch(n=16, g=30):
    gen = torch.Generator().manual_seed(0)
    return {
        REGISTRY_KEYS.X_KEY: torch.poisson(torch.full((n, g), 2.0), generator=gen),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(n, 1, dtype=torch.long),
        REGISTRY_KEYS.CONDITION_KEY: torch.randint(2, (n, 1), generator=gen).float(),
    }


def test_after_a_manual_backward(trajvi_caplog):
    torch.manual_seed(0)
    module = TrajVIModule(30, n_latent=4, n_hidden=16)
    _, _, out = module(_batch())
    out.loss.backward()
    norms, has_nan, has_zero = check_gradients(module, blocks="vae")
    assert norms["decoder.gene_embeddings"] > 0
    assert not has_nan
    assert not any(name.startswith(("discriminator", "velocity")) for name in norms)
    # the condition embedding is unused without condition decoding? here it is used, so no zero gradient
    assert not has_zero
    assert "Gradients (vae, " in trajvi_caplog.text and "largest" in trajvi_caplog.text
    adv_norms, _, adv_zero = check_gradients(module, blocks="adversary", log=False)
    assert adv_zero and all(v == 0.0 for v in adv_norms.values())  # no discriminator backward yet


def test_reports_nan_and_zero_gradients():
    module = TrajVIModule(30, n_latent=4, n_hidden=16)
    _, _, out = module(_batch())
    out.loss.backward()
    module.decoder.query.weight.grad[0, 0] = float("nan")
    module.log_theta.grad.zero_()
    check = check_gradients(module, blocks="vae", log=False)
    assert check.has_nan_grad and math.isnan(check.grad_norms["decoder.query.weight"])
    assert check.has_zero_grad and check.grad_norms["log_theta"] == 0.0
    with pytest.raises(ValueError, match="blocks"):
        check_gradients(module, blocks="decoder")


def test_the_specification_call_labels_the_report_and_checks_what_has_gradients(trajvi_caplog):
    torch.manual_seed(0)
    module = TrajVIModule(30, n_latent=4, n_hidden=16)
    _, _, out = module(_batch())
    out.loss.backward()
    check = check_gradients(module, phase_name="Phase 1, Epoch 10")  # a label, not a selection
    assert "Gradients (Phase 1, Epoch 10; vae, " in trajvi_caplog.text
    assert check.grad_norms == check_gradients(module, blocks="vae", log=False).grad_norms
    assert not check.has_zero_grad  # the discriminator and the field got no backward: not reported missing
    everything = check_gradients(module, blocks="all", log=False)
    assert everything.has_zero_grad and any(n.startswith("velocity") for n in everything.grad_norms)
    with pytest.warns(FutureWarning, match="blocks='adversary'"):
        old = check_gradients(module, phase_name="adversary", log=False)  # the old spelling still selects
    assert old.grad_norms and all(n.startswith("discriminator") for n in old.grad_norms)


def test_monitors_land_in_history_and_survive_save_load(synthetic_adata, seeded, tmp_path, trajvi_caplog):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=3, n_hidden=16)
    model.train(
        max_epochs=3,
        batch_size=100,
        monitor_gradients_every_n_steps=2,
        check_gradients_every_n_epochs=2,
        monitor_parameters=True,
        loss_curves_dir=tmp_path / "curves",
        **TRAIN_KW,
    )
    hist = model.history
    for key in (
        "grad_norm/encoder",
        "grad_norm/decoder",
        "grad_norm/discriminator",
        "param_std/decoder",
        "param_nonfinite/encoder",
        "grad_nonfinite_count",
        "grad_zero_count",
    ):
        assert key in hist, key
    assert hist["grad_nonfinite_count"].iloc[:, 0].max() == 0
    assert (hist["param_std/decoder"].iloc[:, 0] > 0).all()
    assert trajvi_caplog.text.count("Gradients (phase 1, epoch") == 2  # epochs 0 and 2
    assert (tmp_path / "curves" / "history.csv").stat().st_size > 0
    assert (tmp_path / "curves" / "history.png").stat().st_size > 0
    model.train_trajectories(
        ["control", "stimulated"],
        residual_penalty=1.0,
        max_epochs=2,
        monitor_gradients_every_n_steps=1,
        monitor_parameters=True,
        **TRAIN_KW,
    )
    assert "grad_norm/velocity" in model.history and "param_absmax/velocity" in model.history
    model.save(tmp_path / "m", overwrite=True)
    loaded = trajvi.TrajVI.load(tmp_path / "m", adata=synthetic_adata)
    assert set(loaded.history) == set(model.history)


def test_monitors_see_gradients_before_clipping_and_of_skipped_steps(synthetic_adata, seeded, trajvi_caplog):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=3, n_hidden=16)
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 1 else grad

    model.module.decoder.query.weight.register_hook(poison)
    model.train(
        max_epochs=2,
        batch_size=100,
        train_size=1.0,
        gradient_clip_val=1e-3,
        monitor_gradients_every_n_steps=1,
        check_gradients_every_n_epochs=1,
        **TRAIN_KW,
    )
    hist = model.history
    assert hist["grad_nonfinite_count"].iloc[0, 0] >= 1  # the first step's gradient was NaN, and was seen
    assert np.isnan(hist["grad_norm/decoder"].iloc[0, 0])  # the epoch mean includes the NaN step
    assert hist["grad_norm_max/encoder"].iloc[1, 0] > 1e-3  # before clipping at 1e-3
    assert hist["n_skipped_steps_train"].iloc[0, 0] == 1


def test_history_keeps_the_epochs_of_sparse_keys_across_calls(synthetic_adata, seeded):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=4, check_gradients_every_n_epochs=2, **TRAIN_KW)
    model.train_trajectories(
        ["control", "stimulated"], residual_penalty=1.0, max_epochs=4, check_gradients_every_n_epochs=2, **TRAIN_KW
    )
    assert list(model.history["grad_zero_count"].index) == [0, 2, 4, 6]
    assert list(model.history["flow_matching_loss_train"].index) == [4, 5, 6, 7]
