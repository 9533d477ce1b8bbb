import numpy as np
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW
from trajvi.train import NonFiniteTrainingError


@pytest.fixture
def fresh(synthetic_adata, seeded):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition", batch_key="batch")
    return trajvi.TrajVI(synthetic_adata, n_latent=4, n_hidden=32)


@pytest.fixture
def one_nan_per_batch(monkeypatch):
    """Make one entry of every batch's NB log-likelihood NaN (the loss repairs and counts it)."""
    from trajvi.module import _module

    original = _module.negative_binomial_log_likelihood

    def one_nan(x, mu, theta):
        mu = mu.clone()
        mu[0, 0] = float("nan")
        return original(x, mu, theta)

    monkeypatch.setattr(_module, "negative_binomial_log_likelihood", one_nan)


def _nan_grad_hook(counter):
    def hook(grad):
        counter["n"] += 1
        return grad * float("nan")

    return hook


def test_nonfinite_gradients_skip_the_step_and_leave_parameters_untouched(fresh, trajvi_caplog):
    before = {k: v.clone() for k, v in fresh.module.state_dict().items() if "discriminator" not in k}
    calls = {"n": 0}
    fresh.module.decoder.query.weight.register_hook(_nan_grad_hook(calls))
    fresh.train(max_epochs=1, batch_size=100, train_size=1.0, max_consecutive_skips=100, **TRAIN_KW)
    assert calls["n"] == 4  # 400 cells / 100
    assert fresh.history["n_skipped_steps_train"].iloc[-1, 0] == 4
    after = fresh.module.state_dict()
    for key, value in before.items():
        if "running" in key or "num_batches" in key:
            continue  # batch-norm statistics move in the forward pass
        torch.testing.assert_close(after[key], value, msg=key)
    assert "Skipped VAE step" in trajvi_caplog.text
    assert "loss or gradient was not finite" in trajvi_caplog.text


def test_too_many_skips_in_a_row_stop_with_advice(fresh):
    fresh.module.decoder.query.weight.register_hook(_nan_grad_hook({"n": 0}))
    with pytest.raises(NonFiniteTrainingError, match=r"3 consecutive VAE steps were skipped.*learning rate"):
        fresh.train(max_epochs=1, batch_size=50, train_size=1.0, max_consecutive_skips=3, **TRAIN_KW)


def test_loss_repairs_are_counted_in_the_history(fresh, one_nan_per_batch, trajvi_caplog):
    fresh.train(max_epochs=2, batch_size=100, train_size=1.0, **TRAIN_KW)
    np.testing.assert_array_equal(fresh.history["n_repaired_train"].iloc[:, 0].to_numpy(), [4.0, 4.0])
    assert fresh.history["n_skipped_steps_train"].iloc[-1, 0] == 0
    assert "non-finite entry of the reconstruction term" in trajvi_caplog.text
    assert "Training finished with 8 repaired loss entries" in trajvi_caplog.text


def test_out_of_range_labels_skip_the_discriminator_step(synthetic_adata, seeded, trajvi_caplog):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    m = trajvi.TrajVI(synthetic_adata, n_latent=4, n_hidden=32, decode_condition=False)
    codes = synthetic_adata.obs["_scvi_condition"].to_numpy().copy()
    codes[:10] = 7  # a corrupted registry: labels the discriminator cannot have
    synthetic_adata.obs["_scvi_condition"] = codes
    m.train(max_epochs=1, batch_size=400, train_size=1.0, **TRAIN_KW)
    assert m.history["n_discriminator_skips_train"].iloc[-1, 0] == 1
    assert "outside [0, 2)" in trajvi_caplog.text


def test_gradient_accumulation_matches_one_large_batch(synthetic_adata):
    """Accumulating 4 batches of 64 takes nearly the step of one batch of 256 (batch norm makes it inexact)."""
    import scvi

    base = synthetic_adata[:256].copy()
    updates = {}
    for batch_size, accumulate in ((256, 1), (64, 4), (64, 1)):
        scvi.settings.seed = 0
        adata = base.copy()
        trajvi.TrajVI.setup_anndata(adata, "condition")
        # the decoder sees the condition, as when the tolerance was measured (0.048; 0.12 without: more of the
        # update then goes through batch-normalised layers, whose statistics differ between 64 and 256 cells)
        m = trajvi.TrajVI(
            adata, n_latent=4, n_hidden=32, dropout_rate=0.0, adversarial_weight=0.0, decode_condition=True
        )
        with torch.no_grad():  # a near-deterministic encoder: no sampling noise between the runs
            m.module.encoder.logvar.bias.fill_(-30.0)
            m.module.encoder.logvar.weight.zero_()
        keys = ("decoder.gene_embeddings", "log_theta", "decoder.query.weight")
        start = {k: m.module.state_dict()[k].clone() for k in keys}
        scvi.settings.seed = 0  # the same minibatches, whatever the module's initialisation drew
        m.train(
            max_epochs=1,
            batch_size=batch_size,
            accumulate_grad_batches=accumulate,
            train_size=1.0,
            gradient_clip_val=None,
            **TRAIN_KW,
        )
        updates[(batch_size, accumulate)] = torch.cat([(m.module.state_dict()[k] - start[k]).flatten() for k in keys])
    reference = updates[(256, 1)]

    def rel(key):
        return ((updates[key] - reference).norm() / reference.norm()).item()

    # measured 0.048-0.109 depending on the order of the minibatches (batch-norm statistics differ between 64
    # and 256 cells); four separate steps land 25 times further away (measured 2.70-2.74)
    assert rel((64, 4)) < 0.15
    assert rel((64, 1)) > 10 * rel((64, 4))


def test_invalid_plan_options(fresh):
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        fresh.train(max_epochs=1, accumulate_grad_batches=0, **TRAIN_KW)
    with pytest.raises(ValueError, match="adversary_steps"):
        fresh.train(max_epochs=1, plan_kwargs={"adversary_steps": 0}, **TRAIN_KW)
    with pytest.raises(ValueError, match=r"plan_kwargs repeats \['lr'\].*pass lr=0.1 to train\(\) directly"):
        fresh.train(max_epochs=1, plan_kwargs={"lr": 0.1}, **TRAIN_KW)
    with pytest.raises(ValueError, match=r"plan_kwargs has \['velocity_lr'\].*valid keys: \[.*'adversary_steps'"):
        fresh.train(max_epochs=1, plan_kwargs={"velocity_lr": 0.1}, **TRAIN_KW)
    assert not fresh.is_trained_  # refused before training


def test_reports_every_few_steps_add_up_as_on_a_gpu(fresh, one_nan_per_batch, trajvi_caplog):
    """check_guards_every_n_steps > 1 (the GPU default is 50): the same counts, reported per span of steps."""
    fresh.module.decoder.query.weight.register_hook(_nan_grad_hook({"n": 0}))
    kwargs = {"max_consecutive_skips": 100, "plan_kwargs": {"check_guards_every_n_steps": 3}}
    fresh.train(max_epochs=2, batch_size=100, train_size=1.0, **kwargs, **TRAIN_KW)
    np.testing.assert_array_equal(fresh.history["n_repaired_train"].iloc[:, 0].to_numpy(), [4.0, 4.0])
    np.testing.assert_array_equal(fresh.history["n_skipped_steps_train"].iloc[:, 0].to_numpy(), [4.0, 4.0])
    text = trajvi_caplog.text
    assert "Training steps 1-3: 3 non-finite entries of the reconstruction term" in text  # 3 steps, then the epoch end
    assert "Training step 4: 1 non-finite entry of the reconstruction term" in text
    assert "Skipped VAE 3 of 3 steps (steps 1-3)" in text and "(3 skipped in a row)" in text
    assert "Training finished with 8 repaired loss entries, 8 skipped steps" in text


def test_a_run_of_skips_stops_at_the_next_read(fresh):
    fresh.module.decoder.query.weight.register_hook(_nan_grad_hook({"n": 0}))
    with pytest.raises(NonFiniteTrainingError, match=r"^4 consecutive VAE steps were skipped"):
        fresh.train(
            max_epochs=1,
            batch_size=50,
            train_size=1.0,
            max_consecutive_skips=3,
            plan_kwargs={"check_guards_every_n_steps": 4},
            **TRAIN_KW,
        )


PLATEAU = {"reduce_lr_on_plateau": True, "lr_patience": 0, "lr_threshold": 1e9, "lr_factor": 0.5}  # never improves


def _rates(history, key):
    return history[key].iloc[:, 0].tolist()


def test_reduce_lr_on_plateau_lowers_the_rate_in_both_phases(fresh, trajvi_caplog):
    fresh.train(max_epochs=4, plan_kwargs=PLATEAU, **TRAIN_KW)
    # rates at the start of each epoch: the first epoch sets the best value, each later one halves the rate
    assert _rates(fresh.history, "lr-Adam/pg1") == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])
    assert _rates(fresh.history, "lr-Adam/pg2") == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])  # the dispersion
    assert _rates(fresh.history, "lr-Adam-1") == pytest.approx([1e-3] * 4)  # the discriminator keeps its rate
    assert "elbo_validation has not improved" in trajvi_caplog.text
    fresh.train_trajectories(
        ["control", "stimulated"], residual_penalty=1.0, max_epochs=3, plan_kwargs=PLATEAU, **TRAIN_KW
    )
    assert _rates(fresh.history, "lr-Adam") == pytest.approx([1e-3, 1e-3, 5e-4])
    assert "flow_matching_loss_train has not improved" in trajvi_caplog.text


def test_a_schedule_without_validation_cells(fresh):
    with pytest.raises(ValueError, match=r"no validation cells \(train_size=1\?\).*'elbo_train'"):
        fresh.train(max_epochs=2, train_size=1.0, plan_kwargs={"reduce_lr_on_plateau": True}, **TRAIN_KW)
    fresh.train(max_epochs=3, train_size=1.0, plan_kwargs={**PLATEAU, "lr_scheduler_metric": "elbo_train"}, **TRAIN_KW)
    assert _rates(fresh.history, "lr-Adam/pg1") == pytest.approx([1e-3, 1e-3, 5e-4])


def test_a_validation_metric_steps_the_schedule_only_when_validation_ran(fresh):
    fresh.train(max_epochs=5, check_val_every_n_epoch=2, plan_kwargs=PLATEAU, **TRAIN_KW)
    # validation after epochs 1 and 3 (0-based): the first sets the best value, the second halves the rate
    assert _rates(fresh.history, "lr-Adam/pg1") == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 5e-4])


@pytest.mark.parametrize(
    ("plan_kwargs", "match"),
    [
        ({"lr_scheduler_metric": "flow_matching_loss_train"}, r"not a metric TrajVITrainingPlan logs.*elbo_validation"),
        ({"lr_factor": 1.5}, "lr_factor=1.5; it must be between 0 and 1"),
        ({"lr_patience": -1}, "lr_patience=-1"),
        ({"reduce_lr_on_plateau": False, "lr_patience": 5}, r"\['lr_patience'\] set without reduce_lr_on_plateau"),
    ],
)
def test_a_schedule_that_cannot_work_is_refused_before_training(fresh, plan_kwargs, match):
    with pytest.raises(ValueError, match=match):
        fresh.train(max_epochs=1, plan_kwargs={"reduce_lr_on_plateau": True, **plan_kwargs}, **TRAIN_KW)
    assert not fresh.is_trained_


def test_phase_2_schedules_follow_its_own_metrics(fresh):
    plan = trajvi.train.VelocityTrainingPlan(fresh.module, reduce_lr_on_plateau=True)
    assert plan.lr_scheduler_metric == "flow_matching_loss_train"
    with pytest.raises(ValueError, match=r"'elbo_validation' is not a metric VelocityTrainingPlan logs"):
        trajvi.train.VelocityTrainingPlan(
            fresh.module, reduce_lr_on_plateau=True, lr_scheduler_metric="elbo_validation"
        )
    with pytest.raises(ValueError, match="set without reduce_lr_on_plateau=True"):
        trajvi.train.VelocityTrainingPlan(fresh.module, lr_factor=0.5)
