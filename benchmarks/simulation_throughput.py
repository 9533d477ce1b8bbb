"""Trajectory simulation throughput: cells x steps per second for Euler, RK4 and dopri5, with and without decoding.

A model is trained briefly on synthetic counts (phase 1, then phase 2 with a fixed residual penalty), then
``model.simulate_trajectory`` runs from ``--n-sim-cells`` control cells to the stimulated condition with each
integrator, without decoding, decoding a subset of genes (``--n-genes-decoded``) and decoding all genes.
Throughput is ``cells x n_steps / seconds`` (the reported intervals; dopri5 chooses its own steps, so its
velocity-field evaluations are counted too: ``field_rows_per_s`` is cells x evaluations per second). Every
setting runs ``--repeats`` times; the best time is kept. The GPU is synchronised before each timer read and
its peak memory read from ``torch.cuda.max_memory_allocated``; on the CPU the process's peak RSS is reset
before each setting (Linux ``clear_refs``).

Usage::

    python benchmarks/simulation_throughput.py [--quick] [--accelerator auto] [--threads 1] \
        [--n-sim-cells 4000] [--n-steps 20] [--out benchmarks/results/simulation_throughput.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

import _common
import _perf
import trajvi
from trajvi._types import INTEGRATORS


def build_model(args: argparse.Namespace, accelerator: str):
    _perf.log(f"synthetic data {args.n_cells} x {args.n_genes}")
    adata = trajvi.data.synthetic(args.n_cells, args.n_genes, seed=args.seed)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=args.n_latent)
    fit = {"accelerator": accelerator, "devices": 1, "enable_progress_bar": False}
    model.train(max_epochs=args.phase1_epochs, batch_size=128, train_size=1.0, **fit)
    model.train_trajectories(
        ["control", "stimulated"], max_epochs=args.phase2_epochs, residual_penalty=1.0, ot_batch_size=1024, **fit
    )
    _perf.log(f"model trained on {model.module.device}")
    return adata, model


def time_setting(
    model, cells: np.ndarray, *, method: str, decode: str, genes: list[str] | None, args
) -> dict[str, Any]:
    calls = {"rows": 0, "calls": 0}

    def count(_module: Any, inputs: tuple, _output: Any) -> None:
        calls["rows"] += int(inputs[0].shape[0])
        calls["calls"] += 1

    hook = model.module.velocity.register_forward_hook(count)
    seconds = []
    try:
        for _ in range(args.repeats):
            calls["rows"] = calls["calls"] = 0
            _perf.reset_peak_memory()
            start = _perf.now()
            result = model.simulate_trajectory(
                indices=cells,
                source="control",
                target="stimulated",
                n_steps=args.n_steps,
                method=method,
                decode=decode != "none",
                genes=genes,
                batch_size=args.batch_size,
            )
            seconds.append(_perf.now() - start)
    finally:
        hook.remove()
    best = min(seconds)
    n = len(cells)
    return {
        "method": method,
        "decode": decode,
        "n_cells": n,
        "n_steps": args.n_steps,
        "n_genes_decoded": 0 if result.expression is None else int(result.expression.shape[-1]),
        "seconds": seconds,
        "cell_steps_per_s": n * args.n_steps / best,
        "field_evaluations_per_cell": calls["rows"] / n,
        "field_rows_per_s": calls["rows"] / best,
        "peak_cuda_gb": _perf.peak_cuda_gb(),
        "peak_rss_gb": _perf.peak_rss_gb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _perf.add_common_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check that the script runs")
    parser.add_argument("--n-cells", type=int, default=10_000)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--phase1-epochs", type=int, default=2)
    parser.add_argument("--phase2-epochs", type=int, default=5)
    parser.add_argument("--n-sim-cells", type=int, default=4000)
    parser.add_argument("--n-steps", type=int, default=20)
    parser.add_argument("--n-genes-decoded", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1024, help="simulate_trajectory's batch_size")
    parser.add_argument("--methods", nargs="+", default=list(INTEGRATORS), choices=INTEGRATORS)
    parser.add_argument("--max-decode-gb", type=float, default=1.0, help="skip decoding all genes above this")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulation_throughput.json"))
    args = parser.parse_args()
    if args.quick:
        args.n_cells, args.n_genes, args.phase1_epochs, args.phase2_epochs = 2000, 300, 1, 1
        args.n_sim_cells, args.n_steps, args.repeats = 500, 10, 1
        if args.out == parser.get_default("out"):
            args.out = Path("benchmarks/results/simulation_throughput_quick.json")
    accelerator = _perf.setup(args)
    machine = _perf.machine(args.threads)
    adata, model = build_model(args, accelerator)
    control = np.flatnonzero(adata.obs["condition"].to_numpy() == "control")
    cells = np.random.default_rng(args.seed).choice(control, min(args.n_sim_cells, control.size), replace=False)
    subset = list(adata.var_names[: args.n_genes_decoded])
    full_gb = (args.n_steps + 1) * len(cells) * adata.n_vars * 4 / 1e9

    rows = []
    for method in args.methods:
        for decode, genes in (("none", None), ("subset", subset), ("all", None)):
            if decode == "all" and full_gb > args.max_decode_gb:
                _perf.log(f"skip decoding all genes: {full_gb:.2f} GB > --max-decode-gb {args.max_decode_gb}")
                continue
            row = time_setting(model, cells, method=method, decode=decode, genes=genes, args=args)
            rows.append(row)
            _perf.log(
                f"{method:6s} decode={decode:6s}: {row['cell_steps_per_s']:12,.0f} cell-steps/s, "
                f"{row['field_evaluations_per_cell']:.0f} field evaluations per cell"
            )
    columns = [
        ("method", "method", ""),
        ("decode", "decode", ""),
        ("n_genes_decoded", "genes", "d"),
        ("cell_steps_per_s", "cells x steps / s", ",.0f"),
        ("field_evaluations_per_cell", "field evals/cell", ".0f"),
        ("field_rows_per_s", "field rows / s", ",.0f"),
        ("peak_rss_gb", "peak RSS GB", ".2f"),
        ("peak_cuda_gb", "peak GPU GB", ".2f"),
    ]
    print()
    print(_common.format_table(rows, columns))
    _common.write_json(
        args.out,
        {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "device": str(model.module.device),
            "rows": rows,
            "machine": machine,
            "load_average_at_end": _perf.load_now(),
            "versions": _common.versions(),
        },
    )


if __name__ == "__main__":
    main()
