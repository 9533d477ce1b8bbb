"""Fits leave the process as they found it, so the next fit computes and runs like one in a fresh process."""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings

import torch

import trajvi
from tests.conftest import TRAIN_KW
from trajvi._runtime import flush_denormal_enabled


def _process_state() -> dict:
    """The process-wide settings a fit could change and that the next fit would inherit."""
    logger = logging.getLogger("trajvi")
    return {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "flush_denormal": flush_denormal_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "grad": torch.is_grad_enabled(),
        "python_threads": threading.active_count(),
        "warning_filters": list(warnings.filters),
        "trajvi_handlers": list(logger.handlers),
        "trajvi_level": logger.level,
    }


def _full_fit(n_cells: int = 400, n_genes: int = 50, epochs: int = 2, callbacks: list | None = None) -> trajvi.TrajVI:
    import scvi

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(n_cells, n_genes, seed=1)
    trajvi.TrajVI.setup_anndata(adata, "condition")
    model = trajvi.TrajVI(adata, n_latent=4, n_hidden=32)
    model.train(max_epochs=epochs, callbacks=callbacks or [], **TRAIN_KW)
    # blocks of 10 cells, solved two at a time in threads, as on a machine with two or more cores
    model.train_trajectories(
        ["control", "stimulated"],
        couple_within="cell_type",
        max_epochs=2,
        validation_epochs=2,
        ot_batch_size=10,
        ot_n_jobs=2,
        **TRAIN_KW,
    )
    model.predict(source="control", target="stimulated", n_samples=2)
    return model


def _checksum(model: trajvi.TrajVI) -> str:
    digest = hashlib.md5()
    for p in model.module.parameters():
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_a_full_fit_leaves_the_process_state_alone():
    import scvi

    old = scvi.settings.seed
    before = _process_state()
    try:
        _full_fit()
    finally:
        scvi.settings.seed = old
    assert _process_state() == before


def test_the_second_fit_of_a_process_computes_what_the_first_did():
    import scvi

    old = scvi.settings.seed
    try:
        first, second = _checksum(_full_fit()), _checksum(_full_fit())
    finally:
        scvi.settings.seed = old
    assert first == second
