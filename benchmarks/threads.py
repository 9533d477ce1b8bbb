"""Phase-1 seconds per epoch at 1 and 2 torch threads, on a quiet CPU and under load, against scvi-tools' SCVI.

"Under load" starts a busy background process (a numpy matrix-product loop with 2 BLAS threads) for the
duration of those runs, as other work on a shared machine would. For every (load, threads) setting, trajvi's
phase 1 and scvi-tools' SCVI (same cells, batch size, hidden and latent sizes) train in turn, ``--repeats``
times, alternating, and the median epoch time (epochs after the first) is kept. The load average of the
machine is recorded before each setting: on a machine shared with other jobs, "quiet" means "without the
benchmark's own load". trajvi's threads are set with ``trajvi.settings.num_threads``, SCVI's with
``scvi.settings.num_threads``. Prints a table and writes JSON.

Usage::

    python benchmarks/threads.py [--n-cells 3000] [--n-genes 500] [--epochs 4] [--repeats 2] \
        [--out benchmarks/results/threads.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scvi
import torch
from lightning.pytorch.callbacks import Callback

import trajvi
from trajvi._settings import DEFAULT_NUM_THREADS

BUSY_LOOP = "import numpy as np\na = np.random.rand(600, 600)\nwhile True:\n    a @ a\n"


class EpochTimes(Callback):
    """Wall time of every training epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        """Start the clock."""
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Record the epoch's time."""
        self.times.append(time.perf_counter() - self._start)


def start_load(threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    env["MKL_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=env)


def epoch_seconds(model_name: str, adata, threads: int, epochs: int, batch_size: int) -> float:
    timer = EpochTimes()
    kwargs = {"max_epochs": epochs, "batch_size": batch_size, "train_size": 1.0, "accelerator": "cpu"}
    kwargs |= {"enable_progress_bar": False, "callbacks": [timer]}
    if model_name == "trajvi":
        trajvi.settings.num_threads = threads
        model = trajvi.TrajVI(adata, n_latent=10, n_hidden=128)
    else:
        scvi.settings.num_threads = threads
        model = scvi.model.SCVI(adata, n_latent=10, n_hidden=128)
    model.train(**kwargs)
    return float(np.median(timer.times[1:] if len(timer.times) > 1 else timer.times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=3000)
    parser.add_argument("--n-genes", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--load-threads", type=int, default=2, help="BLAS threads of the background load")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "threads.json")
    args = parser.parse_args()

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(args.n_cells, args.n_genes, seed=0)
    adata.layers["counts"] = adata.X.copy()
    trajvi.TrajVI.setup_anndata(adata, "condition", layer="counts")
    scvi_data = adata.copy()
    scvi.model.SCVI.setup_anndata(scvi_data, layer="counts")

    rows = []
    for load in ("quiet", "loaded"):
        busy = start_load(args.load_threads) if load == "loaded" else None
        try:
            if busy is not None:
                time.sleep(3)  # let the load settle
            for threads in args.threads:
                load_average = os.getloadavg()[0]
                times: dict[str, list[float]] = {"trajvi": [], "scvi": []}
                for _ in range(args.repeats):
                    times["scvi"].append(epoch_seconds("scvi", scvi_data, threads, args.epochs, args.batch_size))
                    times["trajvi"].append(epoch_seconds("trajvi", adata, threads, args.epochs, args.batch_size))
                row = {
                    "load": load,
                    "threads": threads,
                    "load_average_1min": round(load_average, 2),
                    "trajvi_s_per_epoch": float(np.median(times["trajvi"])),
                    "scvi_s_per_epoch": float(np.median(times["scvi"])),
                    "trajvi_runs": times["trajvi"],
                    "scvi_runs": times["scvi"],
                }
                row["ratio_trajvi_to_scvi"] = row["trajvi_s_per_epoch"] / row["scvi_s_per_epoch"]
                rows.append(row)
                print(
                    f"{load:6s} threads={threads}  trajvi {row['trajvi_s_per_epoch']:.3f} s/epoch  "
                    f"SCVI {row['scvi_s_per_epoch']:.3f} s/epoch  ratio {row['ratio_trajvi_to_scvi']:.2f}  "
                    f"(load average {load_average:.2f})",
                    flush=True,
                )
        finally:
            if busy is not None:
                busy.terminate()
                busy.wait()

    result = {
        "benchmark": "threads",
        "n_cells": args.n_cells,
        "n_genes": args.n_genes,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "load_threads": args.load_threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "scvi_tools": scvi.__version__,
        "platform": platform.platform(),
        "default_num_threads": DEFAULT_NUM_THREADS,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
