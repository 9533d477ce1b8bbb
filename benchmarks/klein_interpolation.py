"""Klein 2015 mESC time course: predict a held-out day from its neighbours and score it against real cells.

Runs every selected method of :data:`_klein.METHODS` (baselines ``previous_day``, ``ot_interpolation``) and
the noise floor (W1 between halves of the real held-out cells), scores them with Wasserstein-1 in 5 whitened
PCs (see ``_klein.py`` for the exact protocol), prints a table and writes JSON. Reads
``../shared/data/klein2015_mesc_lif_counts.h5ad``.

Usage::

    python benchmarks/klein_interpolation.py [--held-out-day 4] [--seed 0] [--n-samples 5] \
        [--methods previous_day,ot_interpolation] [--out benchmarks/results/klein_d4.json]

Other methods (trajvi's predictions) are added by registering them in ``_klein.METHODS`` before calling
:func:`main`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import _klein
from _common import format_table, log, parse_methods, quiet_lightning, set_threads, versions, write_json

COLUMNS = [
    ("method", "method", ""),
    ("w1", "W1 (5 whitened PCs)", ".4f"),
    ("w1_sd", "sd", ".4f"),
    ("n_cells_scored", "cells", "d"),
    ("wall_seconds", "wall s", ".2f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out-day", type=int, default=4, help="intermediate day to hold out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-samples", type=int, default=5, help="count samples per predicted cell")
    parser.add_argument("--floor-splits", type=int, default=10, help="random halves for the W1 floor")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"methods to run (space or comma separated; default all registered: {', '.join(_klein.METHODS)})",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="PyTorch threads (1: robust on a shared 2-core machine)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default benchmarks/results/klein_d<day>.json)"
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("benchmarks/results") / f"klein_d{args.held_out_day}.json"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    names = parse_methods(args.methods, _klein.METHODS)
    quiet_lightning()
    set_threads(args.torch_threads)
    start = time.perf_counter()

    log(f"loading {_klein.DATA_NAME}")
    adata = _klein.load_klein()
    split = _klein.make_split(adata, args.held_out_day, seed=args.seed, n_samples=args.n_samples)
    sizes = split.sizes()
    log(
        f"held out day {split.t_held:g} (from day {split.t_prev:g} to day {split.t_next:g}, s = {split.fraction:.3f}): "
        f"train {sizes['train']}, sources {sizes['sources']}, end point {sizes['endpoint']}, truth {sizes['truth']}"
    )
    evaluation = _klein.KleinEvaluation.build(split)
    floor = evaluation.floor(args.floor_splits, seed=args.seed)
    log(f"floor (W1 between halves of the truth, {len(floor)} splits): {np.mean(floor):.4f} +- {np.std(floor):.4f}")

    results = _klein.run_methods(split, evaluation, names)
    total = time.perf_counter() - start
    floor_row = {
        "method": "floor (truth half vs half)",
        "w1": float(np.mean(floor)),
        "w1_sd": float(np.std(floor)),
        "n_cells_scored": len(evaluation.truth_coords) // 2,
    }

    print()
    print(f"Klein 2015, day {split.t_held:g} held out (day {split.t_prev:g} -> {split.t_next:g}), seed {args.seed}")
    print(format_table([*results, floor_row], COLUMNS))
    print()

    payload = {
        "benchmark": "klein_interpolation",
        "data": _klein.DATA_NAME,
        "held_out_day": split.t_held,
        "previous_day": split.t_prev,
        "next_day": split.t_next,
        "interpolation_fraction": split.fraction,
        "seed": args.seed,
        "n_samples": args.n_samples,
        "methods": names,
        "set_sizes": sizes,
        "pca": {
            "n_components": int(split.pca.n_components_),
            "whiten": True,
            "fit_on": "all real cells of the file (all days, including the held-out day), log1p(normalize_total 1e4)",
            "explained_variance_ratio": split.pca.explained_variance_ratio_,
        },
        "floor": {"w1_mean": float(np.mean(floor)), "w1_sd": float(np.std(floor)), "w1_splits": floor},
        "results": results,
        "total_wall_seconds": total,
        "versions": versions(),
        "command": vars(args),
    }
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
