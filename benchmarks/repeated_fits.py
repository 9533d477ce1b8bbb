"""Repeated fits in one process: phase-1 speed of each Kang held-out split, in a row and each in a fresh process.

Notebooks and benchmark scripts fit several models in one process (the second fit of a process was once
reported 13x slower than the same split in a fresh process). This benchmark runs the Kang hold-out-cell-type
protocol of ``_kang.py`` / ``_trajvi_methods.py`` for several held-out types (default: the stimulated CD4T, B,
NK and CD8T cells) as full fits:

1. ``TrajVI(split.train, n_latent=10)``, ``train(max_epochs=--epochs)`` (phase 1);
2. ``train_trajectories(["control", "stimulated"], couple_within="cell_type", max_epochs=--phase2-epochs)``;
3. ``predict`` of the stimulated counterparts of the held-out type's control cells (5 samples, 50 steps);

- ``sequence``: all splits one after the other in **one** process (a subprocess of this script);
- ``fresh``: each split in its **own** fresh process.

Every fit sets ``scvi.settings.seed = --seed`` first (as ``_trajvi_methods`` does), so a split computes the same
thing in both settings; the checksum of the phase-1 parameters is recorded to show it (``same`` in the table).
Only the process state differs. ``--seed-once`` seeds the process once instead, as a notebook usually does.

Recorded per fit: wall time and number of batches of every phase-1 epoch (:class:`_perf.EpochTimer`), hence
steps/s per epoch; the process's resident memory after every epoch and before/after the fit, and its peak
(``VmHWM``); the phase-2 and predict times; at the end of phase 1, the subnormal float32 values in the
parameters and the Adam state, torch's thread count, the live Python threads and the warning filters.
The parent prints one line per fit and a table that puts each split's in-a-row speed next to its fresh-process
speed, and writes JSON.

Usage::

    python benchmarks/repeated_fits.py [--splits CD4T B NK CD8T] [--epochs 100] [--phase2-epochs 100] \
        [--fresh | --sequence-only] [--seed-once] [--keep-models] [--keep-denormals] [--threads 1] \
        [--out benchmarks/results/repeated_fits.json]

Four full fits in a row take about 15 minutes on one core of the 2-core development machine (phase 1 at about
18 steps/s); ``--epochs 30 --phase2-epochs 30`` takes about a third of that.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import _common
import _kang
import _perf
import trajvi
from _trajvi_methods import Phase1, Phase2

SPLITS = ["CD4T", "B", "NK", "CD8T"]
TINY = torch.finfo(torch.float32).tiny


def subnormal_count(tensors: list[torch.Tensor]) -> tuple[int, int]:
    """Number of subnormal float32 entries (non-zero, smaller in magnitude than the smallest normal) and of entries."""
    n = total = 0
    for x in tensors:
        if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
            n += int(((x != 0) & (x.abs() < TINY)).sum())
            total += x.numel()
    return n, total


class Phase1Recorder(_perf.EpochTimer):
    """:class:`_perf.EpochTimer` plus the resident memory after every epoch and a look at the state at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.rss_gb: list[float] = []
        self.end: dict[str, Any] = {}

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Time the epoch, then read the resident memory."""
        super().on_train_epoch_end(trainer, pl_module)
        self.rss_gb.append(_perf.current_rss_gb())

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Count the subnormal values left in the parameters and in the optimizers' state."""
        params = list(pl_module.module.parameters())
        adam = [v for opt in trainer.optimizers for s in opt.state.values() for k, v in s.items() if k != "step"]
        self.end = {
            "subnormal_params": subnormal_count(params)[0],
            "subnormal_adam_state": subnormal_count(adam)[0],
            "adam_state_entries": subnormal_count(adam)[1],
        }


def process_state() -> dict[str, Any]:
    """Process-wide settings a fit could leave behind."""
    return {
        "torch_threads": torch.get_num_threads(),
        "python_threads": threading.active_count(),
        "warning_filters": len(warnings.filters),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "rss_gb": _perf.current_rss_gb(),
    }


def checksum(module: torch.nn.Module) -> str:
    """First 12 hex digits of the MD5 of all parameters (same digits: the same computation)."""
    digest = hashlib.md5()
    for p in module.parameters():
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def fit_split(
    adata: Any, held_out: str, args: argparse.Namespace, accelerator: str, position: int
) -> tuple[dict[str, Any], Any]:
    """One full fit of a held-out split (phase 1, phase 2, predict), with its timings and the state around it."""
    import scvi

    import trajvi

    p1, p2 = Phase1(epochs=args.epochs), Phase2(epochs=args.phase2_epochs)
    split = _kang.make_split(adata, held_out, seed=args.seed)
    before = process_state()
    _perf.reset_peak_memory()
    if not args.seed_once:
        scvi.settings.seed = args.seed
    train = split.train.copy()
    trajvi.TrajVI.setup_anndata(train, condition_key="condition")
    model = trajvi.TrajVI(
        train,
        n_latent=p1.n_latent,
        adversarial_weight=p1.adversarial_weight,
        adversarial_target=p1.adversarial_target,
        decode_condition=p1.decode_condition,
    )
    recorder = Phase1Recorder()
    t0 = time.perf_counter()
    model.train(max_epochs=p1.epochs, accelerator=accelerator, enable_progress_bar=False, callbacks=[recorder])
    t1 = time.perf_counter()
    params = checksum(model.module)
    model.train_trajectories(
        ["control", "stimulated"],
        couple_within=p2.couple_within,
        ot_method=p2.ot_method,
        residual_penalty=p2.residual_penalty,
        group_weighting=p2.group_weighting,
        max_epochs=p2.epochs,
        seed=None if args.seed_once else args.seed,
        accelerator=accelerator,
        enable_progress_bar=False,
    )
    t2 = time.perf_counter()
    idx = model.adata.obs_names.get_indexer(split.sources.obs_names)
    model.predict(source="control", target="stimulated", indices=idx, n_samples=split.n_samples, n_steps=p2.n_steps)
    t3 = time.perf_counter()
    steps_per_s = [b / s for b, s in zip(recorder.batches, recorder.epoch_seconds, strict=True)]
    window = min(10, len(steps_per_s))
    record = {
        "split": held_out,
        "position": position,
        "phase1_seconds": t1 - t0,
        "phase2_seconds": t2 - t1,
        "predict_seconds": t3 - t2,
        "epoch_seconds": recorder.epoch_seconds,
        "epoch_batches": recorder.batches,
        "epoch_steps_per_s": steps_per_s,
        "epoch_rss_gb": recorder.rss_gb,
        "median_steps_per_s": float(np.median(steps_per_s)),
        "slowest_window_steps_per_s": float(
            min(np.mean(steps_per_s[i : i + window]) for i in range(len(steps_per_s) - window + 1))
        ),
        "phase1_params_md5": params,
        "phase1_end": recorder.end,
        "state_before": before,
        "state_after": process_state(),
        "peak_rss_gb": _perf.peak_rss_gb(),
        "load_after": _perf.load_now(),
    }
    return record, model


def worker(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit ``args.splits`` one after the other in this process."""
    accelerator = _perf.setup(args)
    if args.keep_denormals:
        trajvi.settings.flush_denormal = False
    adata = _kang.load_kang()
    kept, records = [], []
    for position, held_out in enumerate(args.splits):
        record, model = fit_split(adata, held_out, args, accelerator, position)
        _perf.log(
            f"  {held_out} (fit {position + 1} of this process): phase 1 {record['phase1_seconds']:.1f} s, "
            f"median {record['median_steps_per_s']:.2f} steps/s (slowest 10 epochs "
            f"{record['slowest_window_steps_per_s']:.2f}); phase 2 {record['phase2_seconds']:.1f} s; "
            f"RSS {record['state_after']['rss_gb']:.2f} GB"
        )
        records.append(record)
        if args.keep_models:  # as a notebook, or the phase-1 cache of _trajvi_methods, does
            kept.append(model)
        del model
        gc.collect()
    return records


def run_worker(splits: list[str], passthrough: list[str]) -> list[dict[str, Any]]:
    """Run :func:`worker` on ``splits`` in a new Python process and return its records."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        command = [sys.executable, __file__, "--worker", f"--worker-out={out}", "--splits", *splits, *passthrough]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _perf.add_common_arguments(parser)
    parser.add_argument("--splits", nargs="+", default=SPLITS, help="held-out cell types, fitted in this order")
    parser.add_argument("--epochs", type=int, default=100, help="phase-1 epochs of every fit")
    parser.add_argument("--phase2-epochs", type=int, default=100, help="phase-2 epochs of every fit")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fresh", action="store_true", help="only fit each split in its own fresh process")
    mode.add_argument("--sequence-only", action="store_true", help="only fit all splits in a row in one process")
    parser.add_argument("--seed-once", action="store_true", help="seed scvi-tools once per process, not per fit")
    parser.add_argument("--keep-models", action="store_true", help="keep every fitted model alive until the end")
    parser.add_argument(
        "--keep-denormals",
        action="store_true",
        help="fit with trajvi.settings.flush_denormal = False (subnormal float32 values kept, as before that setting)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/repeated_fits.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.worker_out.write_text(json.dumps(_common._jsonable(worker(args))))
        return
    if args.out is None:
        args.out = Path("benchmarks/results/repeated_fits.json")
    passthrough = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k in ("accelerator", "threads", "seed", "epochs", "phase2_epochs")
    ]
    flags = ("seed_once", "keep_models", "keep_denormals")
    passthrough += [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k)]
    machine = _perf.machine(args.threads)
    sequence: list[dict[str, Any]] = []
    fresh: list[dict[str, Any]] = []
    if not args.fresh:
        _perf.log(f"=== {len(args.splits)} fits in a row in one process: {', '.join(args.splits)} ===")
        sequence = run_worker(args.splits, passthrough)
    if not args.sequence_only:
        for held_out in args.splits:
            _perf.log(f"=== {held_out} in a fresh process ===")
            fresh += run_worker([held_out], passthrough)

    rows = []
    by_split = {r["split"]: r for r in fresh}
    for held_out in args.splits:
        s = next((r for r in sequence if r["split"] == held_out), None)
        f = by_split.get(held_out)
        row: dict[str, Any] = {"split": held_out}
        if s is not None:
            row |= {
                "position": s["position"] + 1,
                "seq": s["median_steps_per_s"],
                "seq_slow": s["slowest_window_steps_per_s"],
                "seq_rss": s["state_after"]["rss_gb"],
                "seq_p1_s": s["phase1_seconds"],
            }
        if f is not None:
            row |= {
                "fresh": f["median_steps_per_s"],
                "fresh_slow": f["slowest_window_steps_per_s"],
                "fresh_rss": f["state_after"]["rss_gb"],
                "fresh_p1_s": f["phase1_seconds"],
            }
        if s is not None and f is not None:
            row["ratio"] = s["median_steps_per_s"] / f["median_steps_per_s"]
            row["same"] = "yes" if s["phase1_params_md5"] == f["phase1_params_md5"] else "no"
        rows.append(row)
    columns = [
        ("split", "held out", ""),
        ("position", "fit # in row", "d"),
        ("seq", "in a row steps/s", ".2f"),
        ("seq_slow", "(slowest 10 ep.)", ".2f"),
        ("fresh", "fresh steps/s", ".2f"),
        ("fresh_slow", "(slowest 10 ep.)", ".2f"),
        ("ratio", "in a row / fresh", ".2f"),
        ("seq_p1_s", "phase 1 s (row)", ".1f"),
        ("fresh_p1_s", "phase 1 s (fresh)", ".1f"),
        ("seq_rss", "RSS GB (row)", ".2f"),
        ("fresh_rss", "RSS GB (fresh)", ".2f"),
        ("same", "same params", ""),
    ]
    print()
    print(_common.format_table(rows, columns))
    _common.write_json(
        args.out,
        {
            "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "worker_out")},
            "machine": machine,
            "table": rows,
            "sequence": sequence,
            "fresh": fresh,
            "versions": _common.versions(),
        },
    )


if __name__ == "__main__":
    main()
