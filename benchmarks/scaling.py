"""Scaling: time and peak memory of every stage for 10^4, 10^5 and 10^6 synthetic cells (sparse counts).

Each size runs in a fresh subprocess (``--worker``), so that peak memory is per size. Inside it, the peak
resident memory of every stage is read from ``VmHWM`` after resetting it (Linux ``clear_refs``), and the GPU's
from ``torch.cuda.max_memory_allocated`` after a reset. The stages:

1. ``data``: :func:`trajvi.data.synthetic` (CSR float32 counts, drawn in chunks of cells);
2. ``setup``: ``setup_anndata`` (input checks) and the model;
3. ``phase1_epoch``: one full epoch of ``model.train`` (all cells, batch 128);
4. ``latent``: ``get_latent_representation`` of all cells;
5. ``phase2``: ``train_trajectories`` for one epoch (exact OT in blocks of ``--ot-batch-size``; pairs per
   epoch = the control cells; fixed residual penalty, no validation fits); the OT solves are timed apart;
6. ``simulate``: ``simulate_trajectory`` from every control cell (Euler, ``--sim-steps`` steps, in batches of
   ``--sim-batch-size``), decoding ``--sim-genes`` genes along the path.

The parent prints a table, writes JSON, and plots time per epoch and peak memory against cells.

Usage::

    python benchmarks/scaling.py [--sizes 10000 100000 1000000] [--n-genes 2000] [--threads 1] \
        [--accelerator auto] [--plot docs/_static/performance_scaling.png] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import _common
import _perf


def stage(record: dict[str, Any], name: str):
    """Context manager that records a stage's seconds and peak memory into ``record[name]``."""

    class _Stage:
        def __enter__(self) -> dict[str, Any]:
            _perf.reset_peak_memory()
            self.info: dict[str, Any] = {}
            self.start = _perf.now()
            _perf.log(f"{name} ...")
            return self.info

        def __exit__(self, *exc: object) -> None:
            self.info["seconds"] = _perf.now() - self.start
            self.info["peak_rss_gb"] = _perf.peak_rss_gb()
            self.info["rss_after_gb"] = _perf.current_rss_gb()
            self.info["peak_cuda_gb"] = _perf.peak_cuda_gb()
            record[name] = self.info
            _perf.log(f"{name}: {self.info['seconds']:.1f}s, peak RSS {self.info['peak_rss_gb']:.2f} GB")

    return _Stage()


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import scipy.sparse as sp

    import trajvi

    accelerator = _perf.setup(args)
    n = args.n_cells
    record: dict[str, Any] = {"n_cells": n, "n_genes": args.n_genes, "machine": _perf.machine(args.threads)}
    with stage(record, "data") as info:
        adata = trajvi.data.synthetic(n, args.n_genes, seed=args.seed)
        info["sparse"] = bool(sp.issparse(adata.X))
        info["format"] = type(adata.X).__name__
        info["nnz"] = int(adata.X.nnz) if sp.issparse(adata.X) else int(np.count_nonzero(adata.X))
        info["density"] = info["nnz"] / (adata.n_obs * adata.n_vars)
        info["counts_gb"] = (adata.X.data.nbytes + adata.X.indices.nbytes + adata.X.indptr.nbytes) / 1e9

    fit = {"accelerator": accelerator, "devices": 1, "enable_progress_bar": False}
    with stage(record, "setup"):
        trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
        model = trajvi.TrajVI(adata, n_latent=args.n_latent)

    with stage(record, "phase1_epoch") as info:
        timer = _perf.EpochTimer()
        model.train(max_epochs=1, batch_size=128, train_size=1.0, callbacks=[timer], **fit)
        info["epoch_seconds"] = timer.epoch_seconds[0]
        info["cells_per_s"] = n / timer.epoch_seconds[0]

    with stage(record, "latent") as info:
        z = model.get_latent_representation(batch_size=args.latent_batch_size)
        info["shape"] = list(z.shape)

    record["latent"]["cells_per_s"] = n / record["latent"]["seconds"]

    with stage(record, "phase2") as info:
        timer = _perf.EpochTimer()
        model.train_trajectories(
            ["control", "stimulated"],
            ot_method="exact",
            ot_batch_size=args.ot_batch_size,
            batch_size=args.phase2_batch_size,
            max_epochs=1,
            residual_penalty=1.0,
            seed=args.seed,
            callbacks=[timer],
            **fit,
        )
        # the coupling's own timing, as train_trajectories recorded it (trajvi.trajectory.TrajectoryFit.timing)
        info["ot_seconds"] = model.trajectory_timing_["coupling_s"]
        info["ot_blocks_sum_s"] = model.trajectory_timing_["coupling_blocks_s"]
        info["ot_blocks"] = int(model.trajectory_timing_["n_blocks"])
        info["epoch_seconds"] = timer.epoch_seconds[0]

    with stage(record, "simulate") as info:
        genes = list(adata.var_names[: args.sim_genes])
        result = model.simulate_trajectory(  # every control cell (the cells a control -> stimulated path starts from)
            source="control",
            target="stimulated",
            n_steps=args.sim_steps,
            method="euler",
            genes=genes,
            batch_size=args.sim_batch_size,
        )
        info["n_cells"] = n_simulated = len(result.cells)
        info["latent_gb"] = result.latent.nbytes / 1e9
        info["expression_gb"] = result.expression.nbytes / 1e9
        del result
    record["simulate"]["cell_steps_per_s"] = n_simulated * args.sim_steps / record["simulate"]["seconds"]
    return record


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = np.array([r["n_cells"] for r in records], dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    for key, label in (
        ("phase1_epoch", "phase 1, one epoch"),
        ("latent", "latent of all cells"),
        ("phase2", "phase 2 (coupling + one epoch)"),
        ("simulate", "simulate + decode (control cells)"),
    ):
        ax.loglog(cells, [r[key]["seconds"] for r in records], "o-", label=label)
    ref = records[0]["phase1_epoch"]["seconds"] * cells / cells[0]
    ax.loglog(cells, ref, "k:", label="linear in cells")
    ax.set_xlabel("cells")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    ax.set_title("time")
    ax = axes[1]
    for key in ("data", "setup", "phase1_epoch", "latent", "phase2", "simulate"):
        ax.semilogx(cells, [r[key]["peak_rss_gb"] for r in records], "o-", label=key)
    ax.axhline(24, color="r", ls="--", label="24 GB (machine)")
    ax.set_xlabel("cells")
    ax.set_ylabel("peak resident memory (GB)")
    ax.legend(fontsize=8)
    ax.set_title("peak memory per stage")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _perf.log(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _perf.add_common_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check that the script runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--latent-batch-size", type=int, default=1024)
    parser.add_argument("--ot-batch-size", type=int, default=1024)
    parser.add_argument("--phase2-batch-size", type=int, default=1024)
    parser.add_argument("--sim-steps", type=int, default=10)
    parser.add_argument("--sim-genes", type=int, default=20)
    parser.add_argument("--sim-batch-size", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scaling.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/_static/performance_scaling.png"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n-cells", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.worker_out.write_text(json.dumps(_common._jsonable(worker(args))))
        return
    if args.quick:
        args.sizes, args.n_genes = [1000, 4000], 200
        if args.out == parser.get_default("out"):
            args.out = Path("benchmarks/results/scaling_quick.json")
        if args.plot == parser.get_default("plot"):
            args.plot = Path("benchmarks/results/scaling_quick.png")

    records = []
    passthrough = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k
        in (
            "accelerator",
            "threads",
            "seed",
            "n_genes",
            "n_latent",
            "latent_batch_size",
            "ot_batch_size",
            "phase2_batch_size",
            "sim_steps",
            "sim_genes",
            "sim_batch_size",
        )
    ]
    for n in args.sizes:
        _perf.log(f"=== {n} cells (subprocess) ===")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "record.json"
            command = [sys.executable, __file__, "--worker", f"--n-cells={n}", f"--worker-out={out}", *passthrough]
            subprocess.run(command, check=True)
            record = json.loads(out.read_text())
        stages = [v for v in record.values() if isinstance(v, dict) and "peak_rss_gb" in v]
        record["process_peak_rss_gb"] = max(v["peak_rss_gb"] for v in stages)
        records.append(record)
        _common.write_json(args.out, {"settings": vars(args), "records": records, "versions": _common.versions()})

    rows = []
    for r in records:
        rows.append(
            {
                "cells": r["n_cells"],
                "data_s": r["data"]["seconds"],
                "counts_gb": r["data"]["counts_gb"],
                "epoch_s": r["phase1_epoch"]["epoch_seconds"],
                "epoch_per_1e5": r["phase1_epoch"]["epoch_seconds"] / r["n_cells"] * 1e5,
                "p1_peak": r["phase1_epoch"]["peak_rss_gb"],
                "latent_s": r["latent"]["seconds"],
                "ot_s": r["phase2"]["ot_seconds"],
                "p2_epoch_s": r["phase2"]["epoch_seconds"],
                "p2_peak": r["phase2"]["peak_rss_gb"],
                "sim_s": r["simulate"]["seconds"],
                "sim_peak": r["simulate"]["peak_rss_gb"],
                "peak": r["process_peak_rss_gb"],
            }
        )
    columns = [
        ("cells", "cells", ",d"),
        ("data_s", "data s", ".1f"),
        ("counts_gb", "CSR GB", ".2f"),
        ("epoch_s", "phase-1 epoch s", ".1f"),
        ("epoch_per_1e5", "s per 1e5 cells", ".1f"),
        ("p1_peak", "phase-1 peak GB", ".2f"),
        ("latent_s", "latent s", ".1f"),
        ("ot_s", "OT s", ".1f"),
        ("p2_epoch_s", "phase-2 epoch s", ".1f"),
        ("p2_peak", "phase-2 peak GB", ".2f"),
        ("sim_s", "simulate s", ".1f"),
        ("sim_peak", "simulate peak GB", ".2f"),
        ("peak", "process peak GB", ".2f"),
    ]
    print()
    print(_common.format_table(rows, columns))
    if len(records) >= 2:
        cells = np.log([r["n_cells"] for r in records])
        slope = float(np.polyfit(cells, np.log([r["phase1_epoch"]["epoch_seconds"] for r in records]), 1)[0])
        print(f"log-log slope of phase-1 epoch time against cells: {slope:.3f} (1 = linear)")
    else:
        slope = None
    _common.write_json(
        args.out,
        {
            "settings": vars(args),
            "table": rows,
            "phase1_epoch_loglog_slope": slope,
            "records": records,
            "versions": _common.versions(),
        },
    )
    plot(records, args.plot)


if __name__ == "__main__":
    main()
