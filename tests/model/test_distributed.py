"""Both phases under 2-process CPU DDP (gloo, launched by torchrun): identical replicas, each process on its own
share of the data, faults on one process skipped by all, rank-0-only writes, and a saved model that loads and
predicts."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW
from tests.model._ddp_script import _checksums
from trajvi._distributed import all_processes_agree, check_strategy

SCRIPT = Path(__file__).with_name("_ddp_script.py")
BLOCKS = {"encoder", "decoder", "log_theta", "discriminator", "velocity"}

needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run the script on 2 processes once; return its output folder and what each rank reported."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback: no dependence on the host name resolving
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*command, str(SCRIPT), str(out)], cwd=out, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"DDP run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return out, [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@needs_gloo
def test_replicas_end_with_identical_parameters(ddp_run):
    _, (rank0, rank1) = ddp_run
    assert set(rank0["checksums"]) == BLOCKS
    assert rank0["checksums"] == rank1["checksums"]
    assert rank0["residual_penalty"] == rank1["residual_penalty"] == 1.0  # rank 0's value, broadcast


@needs_gloo
def test_each_process_trains_on_its_own_share(ddp_run):
    _, (rank0, rank1) = ddp_run
    assert rank0["n_train"] == rank1["n_train"] == 360
    for rank in (rank0, rank1):  # phase 1: half of the training cells each (DistributedSampler over cells)
        assert sum(n for n, _ in rank["phase1_batches"]) == 180
    assert rank0["phase1_batches"] != rank1["phase1_batches"]
    # phase 2: every process draws the same pairs; each trains on every second minibatch of them
    assert len(rank0["phase2_batches"]) == len(rank1["phase2_batches"]) == 2
    assert rank0["phase2_batches"] != rank1["phase2_batches"]


@needs_gloo
def test_a_fault_on_one_process_is_skipped_by_all(ddp_run):
    _, (rank0, _) = ddp_run
    # rank 1 alone had out-of-range labels, then a blown-up VAE step; rank 0 skipped and undid them too
    assert rank0["skips"] == {"n_discriminator_skips_train": 1.0, "n_skipped_steps_train": 1.0}


@needs_gloo
def test_only_rank_zero_writes(ddp_run):
    out, (rank0, rank1) = ddp_run
    for key in ("reconstruction_loss_train", "elbo_validation", "discriminator_accuracy_validation"):
        assert key in rank0["history"], key
    assert "flow_matching_loss_train" in rank0["history"]
    assert rank1["history"] == []
    assert rank0["tl_latent_wrote"] and not rank1["tl_latent_wrote"]
    assert (out / "model" / "model.pt").exists()


@needs_gloo
def test_saved_model_loads_and_predicts(ddp_run):
    out, (rank0, _) = ddp_run
    adata = ad.read_h5ad(out / "adata.h5ad")
    model = trajvi.TrajVI.load(str(out / "model"), adata=adata, accelerator="cpu")
    assert _checksums(model.module) == rank0["checksums"]
    assert model.residual_penalty_ == 1.0 and model.trajectory_path_ == ["control", "stimulated"]
    n_source = int((adata.obs["condition"] == "control").sum())
    predicted = model.predict(source="control", target="stimulated", n_steps=10)
    assert predicted.shape == (n_source, adata.n_vars)
    means = predicted.layers["trajvi_mean"]
    assert np.isfinite(means).all() and (means >= 0).all()
    assert np.isfinite(predicted.X.toarray()).all()


# -- without processes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy", ["ddp", "ddp_spawn", "ddp_notebook", "ddp_find_unused_parameters_false", "ddp_fork"]
)
def test_a_strategy_without_unused_parameter_detection_is_refused(strategy):
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        check_strategy(strategy)


def test_strategies_that_work_pass_the_check():
    from lightning.pytorch.strategies import DDPStrategy

    for strategy in (None, "auto", "ddp_find_unused_parameters_true", DDPStrategy(find_unused_parameters=True)):
        check_strategy(strategy)
    with pytest.raises(ValueError, match="unused parameters"):
        check_strategy(DDPStrategy())


def test_one_process_agrees_with_itself_without_communication():
    assert all_processes_agree(torch.tensor(True), 1)
    assert not all_processes_agree(torch.tensor(False), 1)


def test_pair_minibatches_are_dealt_out_to_the_processes():
    from trajvi.train import PairDataModule, Segment
    from trajvi.transport import couple_sets

    z = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    segments = [Segment("a->b", z, z + 1.0, 0.0, 1.0, couple_sets(z, z + 1.0, rng=0))]
    shares = []
    for rank in (0, 1):
        data = PairDataModule(segments, pairs_per_epoch=1000, batch_size=128, seed=2)
        data.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        shares.append(list(data.train_dataloader()))
    whole = list(PairDataModule(segments, pairs_per_epoch=1000, batch_size=128, seed=2).train_dataloader())
    assert len(whole) == 8 and len(shares[0]) == len(shares[1]) == 4
    for rank, share in enumerate(shares):  # every second minibatch of the same draw
        for mine, reference in zip(share, whole[rank::2], strict=True):
            torch.testing.assert_close(mine[0], reference[0])


def test_ddp_needs_a_seeded_split(synthetic_adata):
    import scvi

    old = scvi.settings.seed
    try:
        scvi.settings.seed = None  # unset, as in a fresh session
        trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
        model = trajvi.TrajVI(synthetic_adata, n_latent=2, n_hidden=8, n_attention=4)
        with pytest.raises(ValueError, match=r"scvi\.settings\.seed"):
            model.train(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true")
    finally:
        scvi.settings._seed = old  # restored without reseeding the global generators


def test_only_rank_zero_saves_and_writes_into_the_anndata(synthetic_adata, seeded, tmp_path, monkeypatch):
    import trajvi.model._model as model_module
    import trajvi.tl._utils as tl_utils

    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=2, n_hidden=8, n_attention=4)
    model.train(max_epochs=1, batch_size=200, **TRAIN_KW)
    monkeypatch.setattr(model_module, "global_rank", lambda: 1)
    monkeypatch.setattr(tl_utils, "global_rank", lambda: 1)
    model.save(str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()
    assert trajvi.tl.latent(synthetic_adata, model) is None
    assert "X_trajvi" not in synthetic_adata.obsm
    copy = trajvi.tl.latent(synthetic_adata, model, copy=True)  # a copy is the caller's own: computed anywhere
    assert copy.obsm["X_trajvi"].shape == (synthetic_adata.n_obs, 2)
    monkeypatch.setattr(model_module, "global_rank", lambda: 0)
    model.save(str(tmp_path / "m"))
    assert (tmp_path / "m" / "model.pt").exists()
