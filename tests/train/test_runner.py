import pytest

import trajvi
from tests.conftest import TRAIN_KW

pytest.importorskip("lightning.pytorch.loggers")


@pytest.mark.usefixtures("seeded")
def test_a_user_logger_keeps_the_history_of_both_phases(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    adata = trajvi.data.synthetic(200, 30, seed=0)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=4)
    model.train(max_epochs=2, logger=CSVLogger(tmp_path, name="phase1"), **TRAIN_KW)
    model.train_trajectories(
        ["control", "stimulated"],
        max_epochs=2,
        residual_penalty=1.0,
        logger=CSVLogger(tmp_path, name="phase2"),
        **TRAIN_KW,
    )
    history = model.history
    for key in ("elbo_train", "n_repaired_train", "flow_matching_loss_train"):
        assert key in history, sorted(history)
    assert len(history["elbo_train"]) == 2
    assert len(history["flow_matching_loss_train"]) == 2
    # the user's logger received the metrics too
    for phase, key in (("phase1", "elbo_train"), ("phase2", "flow_matching_loss_train")):
        (metrics,) = (tmp_path / phase).rglob("metrics.csv")
        assert key in metrics.read_text().splitlines()[0]


@pytest.mark.usefixtures("seeded")
def test_checkpoints_save_a_model_that_loads(tmp_path, monkeypatch):
    import scvi

    monkeypatch.setattr(scvi.settings, "logging_dir", str(tmp_path))
    adata = trajvi.data.synthetic(150, 20, seed=0)
    trajvi.TrajVI.setup_anndata(adata, "condition")
    model = trajvi.TrajVI(adata, n_latent=3)
    model.train(
        max_epochs=2,
        enable_checkpointing=True,
        checkpointing_monitor="elbo_validation",
        check_val_every_n_epoch=1,
        **TRAIN_KW,
    )
    saved = sorted(tmp_path.rglob("model.pt"))
    assert saved, "no checkpoint written"
    loaded = trajvi.TrajVI.load(str(saved[-1].parent), adata)
    assert loaded.get_latent_representation().shape == (150, 3)
