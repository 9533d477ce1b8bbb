"""Kang 2018 IFN-beta: predict the stimulated cells of a held-out cell type and score them against real cells.

Trains / runs every selected method of :data:`_kang.METHODS` on the split (baselines ``control``,
``mean_shift``, ``scvi_arithmetic``), scores them in the same process (R^2 of mean expression on all genes
and the top-100 DEGs, R^2 of the DEG log-fold changes, energy distance in 50 PCs; see ``_kang.py`` for the
exact protocol), prints a table and writes JSON. Reads ``../shared/data/kang_pbmc_union_counts.h5ad``.

Usage::

    python benchmarks/kang_perturbation.py [--held-out CD4T] [--seed 0] [--scvi-epochs 100] \
        [--n-samples 5] [--methods control,mean_shift,scvi_arithmetic] [--out benchmarks/results/kang_CD4T.json]

Other methods (trajvi's predictions) are added by registering them in ``_kang.METHODS`` before calling
:func:`main`, e.g. ``_kang.METHODS["trajvi"] = predict_trajvi; kang_perturbation.main()``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _kang
from _common import format_table, log, parse_methods, quiet_lightning, set_threads, versions, write_json

COLUMNS = [
    ("method", "method", ""),
    ("r2_all", "R2 all", ".4f"),
    ("r2_deg", "R2 top-100 DEG", ".4f"),
    ("r2_lfc_deg", "R2 LFC top-100", ".4f"),
    ("energy", "energy (50 PCs)", ".4f"),
    ("n_cells_scored", "cells", "d"),
    ("wall_seconds", "wall s", ".1f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", default="CD4T", help="cell type whose stimulated cells are held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scvi-epochs", type=int, default=100, help="max_epochs of model-based methods")
    parser.add_argument("--n-samples", type=int, default=5, help="count samples per predicted cell")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"methods to run (space or comma separated; default all registered: {', '.join(_kang.METHODS)})",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="PyTorch threads (1: robust on a shared 2-core machine)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default benchmarks/results/kang_<held_out>.json)"
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("benchmarks/results") / f"kang_{args.held_out}.json"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    names = parse_methods(args.methods, _kang.METHODS)
    quiet_lightning()
    set_threads(args.torch_threads)
    start = time.perf_counter()

    log(f"loading {_kang.DATA_NAME}")
    adata = _kang.load_kang()
    split = _kang.make_split(
        adata, args.held_out, seed=args.seed, n_samples=args.n_samples, max_epochs=args.scvi_epochs
    )
    sizes = split.sizes()
    log(
        f"held out {args.held_out}: train {sizes['train']}, sources {sizes['sources']}, truth {sizes['truth']}, "
        f"reference control {sizes['reference_control']}, genes {sizes['genes']}"
    )
    log("building the evaluation (DEGs, PCA on all real cells)")
    evaluation = _kang.KangEvaluation.build(adata, split)
    log(f"top DEGs: {', '.join(evaluation.deg_names[:10])}, ...")
    floor = evaluation.truth_halves_energy(seed=args.seed)
    log(f"energy distance between halves of the truth (floor): {sum(floor) / len(floor):.4f}")

    results = _kang.run_methods(split, evaluation, names)
    total = time.perf_counter() - start

    print()
    print(
        f"Kang 2018, {args.held_out} held out, seed {args.seed}, "
        f"scVI epochs {args.scvi_epochs}, {args.n_samples} samples per cell"
    )
    print(format_table(results, COLUMNS))
    print(f"energy distance floor (two halves of the truth, mean of {len(floor)}): {sum(floor) / len(floor):.4f}")
    print()

    payload = {
        "benchmark": "kang_perturbation",
        "data": _kang.DATA_NAME,
        "held_out": args.held_out,
        "seed": args.seed,
        "scvi_epochs": args.scvi_epochs,
        "n_samples": args.n_samples,
        "methods": names,
        "set_sizes": sizes,
        "n_degs": len(evaluation.deg_names),
        "degs": evaluation.deg_names,
        "pca": {
            "n_components": int(evaluation.pca.n_components_),
            "fit_on": "all real cells of the file, log1p(normalize_total 1e4), centred, not scaled",
            "explained_variance_ratio_sum": float(evaluation.pca.explained_variance_ratio_.sum()),
        },
        "energy_floor_truth_halves": floor,
        "results": results,
        "total_wall_seconds": total,
        "versions": versions(),
        "command": vars(args),
    }
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
