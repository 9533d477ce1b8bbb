"""Both phases of trajvi under 2-process CPU DDP (gloo); launched by ``test_distributed.py`` through torchrun.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node=2 _ddp_script.py OUT_DIR``.

Every process trains both phases on the same tiny synthetic data, with faults injected on rank 1 only
(labels out of range, then a learning rate that blows the VAE step up), which the processes must skip or
undo together. Each process writes ``OUT_DIR/rank<r>.json``: checksums of its parameters per block, its
history keys, the residual penalty it trained with, what it saw of the first epoch of each phase, and
whether ``tl.latent`` wrote into its AnnData. ``save`` (rank 0 only) writes ``OUT_DIR/model``; rank 0
also writes ``OUT_DIR/adata.h5ad``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch


def _checksums(module: torch.nn.Module) -> dict[str, str]:
    """sha256 of the state dict, per top-level block."""
    digests: dict[str, Any] = {}
    for name, tensor in sorted(module.state_dict().items()):
        digest = digests.setdefault(name.split(".")[0], hashlib.sha256())
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {block: digest.hexdigest() for block, digest in digests.items()}


class Recorder(pl.Callback):
    """Records the size and sum of each first-epoch minibatch, and injects faults on rank 1."""

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.batches: list[list[float]] = []
        self.saved_lr: list[float] | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch != 0:
            return
        if self.phase == "vae":
            self.batches.append([int(batch["X"].shape[0]), float(batch["X"].sum())])
            if trainer.global_rank == 1 and batch_idx == 0:
                batch["condition"][:] = 99.0  # out of range: the discriminator step is skipped on every rank
            if trainer.global_rank == 1 and batch_idx == 1:
                opt = trainer.optimizers[0]
                self.saved_lr = [g["lr"] for g in opt.param_groups]
                for g in opt.param_groups:
                    g["lr"] = 1e30  # this rank's VAE step blows up: every rank must undo it
        else:
            self.batches.append([int(batch[0].shape[0]), float(batch[0].sum())])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.saved_lr is not None:
            for g, lr in zip(trainer.optimizers[0].param_groups, self.saved_lr, strict=True):
                g["lr"] = lr
            self.saved_lr = None


def main(out: Path) -> None:
    """Fit both phases with DDP on 2 CPU processes and write what the test checks."""
    torch.set_num_threads(1)
    import scvi

    import trajvi

    scvi.settings.seed = 0  # the same train/validation split on every process
    scvi.settings.dl_num_workers = 0
    rank = int(os.environ["RANK"])
    adata = trajvi.data.synthetic(400, 60, n_cell_types=2, seed=3)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(
        adata, n_latent=4, n_hidden=16, n_attention=8, n_hidden_velocity=16, n_layers_velocity=1, decode_condition=False
    )
    ddp = {
        "accelerator": "cpu",
        "devices": 2,
        "strategy": "ddp_find_unused_parameters_true",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_save_dir": str(out / "logs"),
    }
    phase1, phase2 = Recorder("vae"), Recorder("flow")
    model.train(max_epochs=2, batch_size=64, callbacks=[phase1], check_val_every_n_epoch=1, **ddp)
    model.train_trajectories(
        ["control", "stimulated"],
        couple_within="cell_type",
        max_epochs=2,
        batch_size=64,
        residual_penalty=1.0 if rank == 0 else 5.0,  # as if each process had chosen its own: rank 0's wins
        callbacks=[phase2],
        **ddp,
    )
    trajvi.tl.latent(adata, model)
    result = {
        "checksums": _checksums(model.module),
        "history": sorted(model.history),
        "skips": {k: float(model.history[k].iloc[:, 0].sum()) for k in model.history if "skip" in k},
        "residual_penalty": model.residual_penalty_,
        "phase1_batches": phase1.batches,
        "phase2_batches": phase2.batches,
        "n_train": len(model.train_indices),
        "tl_latent_wrote": "X_trajvi" in adata.obsm,
        "device": str(model.device),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    model.save(str(out / "model"), overwrite=True)
    if rank == 0:
        adata.write_h5ad(out / "adata.h5ad")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
