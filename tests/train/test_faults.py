"""Fault survival: corrupted batches and a blown-up step are repaired or skipped, counted, and training goes on."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW
from trajvi._constants import REGISTRY_KEYS


class FaultInjector(pl.Callback):
    """Corrupts the batches of chosen training steps (counted over the whole fit)."""

    def __init__(self, faults: dict[int, str]) -> None:
        self.faults = faults
        self.step = -1
        self.saved_lr = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step += 1
        kind = self.faults.get(self.step)
        x = batch[REGISTRY_KEYS.X_KEY]
        if kind == "nan":
            x[:8, :5] = float("nan")
        elif kind == "inf":
            x[:8, :5] = float("inf")
        elif kind == "library":
            x.mul_(1e7 / x.sum(dim=1, keepdim=True).clamp_min(1)).round_()
        elif kind == "zeros":
            x.zero_()
        elif kind == "lr":
            opt = trainer.optimizers[0]
            self.saved_lr = [g["lr"] for g in opt.param_groups]
            for g in opt.param_groups:
                g["lr"] = 1e30  # one Adam step moves every parameter by about 1e30

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.saved_lr is not None:
            for g, lr in zip(trainer.optimizers[0].param_groups, self.saved_lr, strict=True):
                g["lr"] = lr
            self.saved_lr = None


@pytest.fixture(scope="module")
def data():
    return trajvi.data.synthetic(1200, 100, seed=4)


def _fit(data, callbacks=()):
    import scvi

    scvi.settings.seed = 0
    adata = data.copy()
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=6, n_hidden=64)
    model.train(max_epochs=12, batch_size=128, callbacks=list(callbacks), **TRAIN_KW)
    return model


@pytest.fixture(scope="module")
def clean(data):
    return _fit(data)


def _heldout_reconstruction(model):
    return float(model.get_reconstruction_error(indices=model.validation_indices)["reconstruction_loss"])


@pytest.mark.parametrize(
    ("faults", "counter"),
    [
        ({5: "nan", 30: "nan"}, "n_repaired_train"),
        ({5: "inf", 40: "inf"}, "n_repaired_train"),
        ({7: "library", 20: "library", 50: "library"}, None),
        ({9: "zeros", 33: "zeros"}, None),
        ({12: "lr"}, "n_skipped_steps_train"),
    ],
    ids=["nan-counts", "inf-counts", "library-1e7", "all-zero-batch", "lr-blow-up"],
)
def test_training_survives_and_matches_the_clean_run(data, clean, faults, counter, trajvi_caplog):
    model = _fit(data, [FaultInjector(faults)])
    assert all(torch.isfinite(p).all() for p in model.module.parameters())
    assert np.isfinite(model.get_latent_representation()).all()
    if counter is not None:
        assert model.history[counter].iloc[:, 0].sum() >= len(faults)
        assert "Skipped" in trajvi_caplog.text or "replaced by 0" in trajvi_caplog.text
        assert "Training finished with" in trajvi_caplog.text
    faulty, reference = _heldout_reconstruction(model), _heldout_reconstruction(clean)
    assert abs(faulty - reference) / reference < 0.05, (faulty, reference)


def test_nan_batch_counts_exactly_the_bad_entries(data, trajvi_caplog):
    model = _fit(data, [FaultInjector({3: "nan"})])
    assert model.history["n_repaired_train"].iloc[:, 0].sum() == 8 * 5
    assert model.history["n_skipped_steps_train"].iloc[:, 0].sum() == 0
    assert "40 non-finite entries of the reconstruction term" in trajvi_caplog.text


def test_a_blown_up_step_is_undone_and_reported(data, trajvi_caplog):
    model = _fit(data, [FaultInjector({4: "lr"})])
    assert model.history["n_skipped_steps_train"].iloc[:, 0].sum() == 1
    assert "the step blew up" in trajvi_caplog.text
