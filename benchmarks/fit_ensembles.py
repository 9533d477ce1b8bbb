"""Several fits of one held-out (group, perturbation): keep the best by an in-data score, or average them.

Most of the seed spread of a calibrated held-out prediction comes from phase 1 (``calibration_validation.py
--phase2-seeds``). Two ways to use several fits, neither of which looks at the held-out cells:

- ``selected``: of ``--block`` fits (phase-1 and phase-2 seeds), the one with the lowest mean
  :meth:`~trajvi.TrajVI.score_held_out_groups` (each measured group predicted with the other groups' miss);
- ``ensemble``: :func:`trajvi.predict_ensemble` of the block's fits (each source cell moved by the fits' mean move
  in ``log1p(CP10k)`` space, each fit calibrated); with more seeds than one block, also the ensemble of all.

For one held-out pair, the script fits the benchmark's ``trajvi`` (one field over every path, ``couple_within``
the groups) with every seed of ``--seeds``, predicts the held-out cells with ``predict(mode="transfer",
calibrate=True)``, and scores each fit, each block's selected fit and each block's ensemble against the truth,
beside the mean-shift baseline (the protocol and metrics of ``_heldout.py``). Blocks are consecutive seeds
(``--seeds 0 1 2 3 4 5 --block 3``: blocks 0-2 and 3-5). A held-out combination (``A+B``) is compared with the
additive baseline instead, and has no ``selected`` fit (it was never trained, so no measured group scores it).

Usage::

    python benchmarks/fit_ensembles.py haber --group Stem --perturbation Salmonella --seeds 0 1 2 3 4 5 6 7 8
    python benchmarks/fit_ensembles.py perturbench --group K562 --perturbation KLF1+MAP2K6 --seeds 0 1 2

Writes ``benchmarks/results/fit_ensembles_<data>_<group>_<perturbation>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import _common
import _heldout
from _common import Prediction, format_table, log, write_json
from _metrics import score_as_cells
from heldout_perturbation import PANELS, load

KEPT = ("pcc_delta_deg", "energy", "r2_all", "pcc_delta_all", "mean_distance", "energy_at_true_mean")


def _fit(adata: Any, panel: _heldout.Panel, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One fit: its calibrated transferred prediction (log-normalised like real cells) and its in-data score."""
    split = _heldout.make_split(
        adata, panel, args.group, args.perturbation, seed=seed, n_samples=1, max_epochs=args.max_epochs
    )
    t0 = time.perf_counter()
    model = _heldout._trajvi_phase1(split)
    _heldout._PHASE1.clear()
    control = panel.control
    conditions = sorted(set(split.train.obs[panel.condition_key].astype(str)) - {control})
    _heldout.train_field(split, model, [[control, c] for c in conditions])
    idx = model.adata.obs_names.get_indexer(split.sources.obs_names)
    pred = model.predict(
        source=control, target=args.perturbation, indices=idx, n_steps=50, mode="transfer", calibrate=True
    )
    rule = pred.uns["trajvi_predict"]["params"]["calibration_shrinkage"]["rule"]
    if len(split.components()) > 1:  # a combination never trained: no measured group to score it on
        scores = pd.DataFrame({"energy": [np.nan]})
    else:
        scores = model.score_held_out_groups(source=control, target=args.perturbation, n_steps=50)
    return {
        "seed": seed,
        "model": model,
        "sources": idx,
        "log_norm": score_as_cells([pred.X.toarray()]),
        "fit_score": float(scores["energy"].mean()),
        "group_scores": scores["energy"].to_dict(),
        "rule": rule,
        "residual_penalty": model.residual_penalty_,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", choices=list(PANELS))
    parser.add_argument("--group", required=True)
    parser.add_argument("--perturbation", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--block", type=int, default=3, help="fits per selection / ensemble")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import trajvi

    _common.quiet_lightning()
    _common.set_threads(args.torch_threads)
    adata, panel = load(args.data)
    split = _heldout.make_split(adata, panel, args.group, args.perturbation, seed=0, n_samples=1, max_epochs=1)
    combination = len(split.components()) > 1
    evaluation = _heldout.Evaluation.build(adata, split)

    def score(log_norm: np.ndarray) -> dict[str, float]:
        scores = evaluation.score(Prediction(log_norm=log_norm))
        return {k: float(scores[k]) for k in KEPT}

    def averaged(block: list[dict[str, Any]]) -> dict[str, float]:
        prediction = trajvi.predict_ensemble(
            [f["model"] for f in block],
            source=panel.control,
            target=args.perturbation,
            indices=block[0]["sources"],
            n_steps=50,
            calibrate=True,
        )
        return score(score_as_cells([prediction.X.toarray()]))

    baseline_name = "additive" if combination else "mean_shift"
    baseline = score(_heldout.METHODS[baseline_name](split).log_norm)
    log(f"{baseline_name}: {baseline}")
    fits, blocks = [], []
    for seed in args.seeds:
        fit = _fit(adata, panel, args, seed)
        fit["truth"] = score(fit["log_norm"])
        log(f"seed {seed}: fit score {fit['fit_score']:.3f}, truth {fit['truth']} ({fit['seconds']:.0f}s)")
        fits.append(fit)
        if len(fits) % args.block:
            continue
        block = fits[-args.block :]
        best = None if combination else min(block, key=lambda f: f["fit_score"])
        ensemble = averaged(block)
        log(f"ensemble of seeds {[f['seed'] for f in block]}: {ensemble}")
        blocks.append(
            {
                "seeds": [f["seed"] for f in block],
                "selected_seed": None if best is None else best["seed"],
                "selected": None if best is None else best["truth"],
                "ensemble": ensemble,
                "single_mean": {k: float(np.mean([f["truth"][k] for f in block])) for k in KEPT},
            }
        )
    every = averaged(fits) if len(fits) > args.block else None
    rows = [{"method": baseline_name, **baseline}]
    rows += [{"method": f"seed {f['seed']} (score {f['fit_score']:.3f})", **f["truth"]} for f in fits]
    for b in blocks:
        name = "-".join(map(str, b["seeds"]))
        rows.append({"method": f"mean of {name}", **b["single_mean"]})
        if b["selected"] is not None:
            rows.append({"method": f"selected of {name} (seed {b['selected_seed']})", **b["selected"]})
        rows.append({"method": f"ensemble of {name}", **b["ensemble"]})
    if every is not None:
        rows.append({"method": f"ensemble of all {len(fits)}", **every})
    columns = [("method", "method", ""), *[(k, k, ".3f") for k in KEPT]]
    print()
    print(format_table(rows, columns))
    out = args.out or Path("benchmarks/results") / f"fit_ensembles_{args.data}_{args.group}_{args.perturbation}.json"
    payload = {
        "benchmark": "fit_ensembles",
        "data": args.data,
        "group": args.group,
        "perturbation": args.perturbation,
        "max_epochs": args.max_epochs,
        "block": args.block,
        baseline_name: baseline,
        "fits": [{k: v for k, v in f.items() if k not in ("log_norm", "model", "sources")} for f in fits],
        "blocks": blocks,
        "ensemble_of_all": every,
        "versions": _common.versions(),
    }
    write_json(out, payload)
    return payload


if __name__ == "__main__":
    main()
