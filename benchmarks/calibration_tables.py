"""Tables of ``calibration_validation.py`` results: how each criterion chooses, and choosing among fits.

Usage::

    python benchmarks/calibration_tables.py benchmarks/results/calibration_validation_*.json

Prints, over the files given: for every criterion, how often it chose the rule best on the truth's energy distance
and the mean truth scores of its choices (next to always applying one rule); then, per held-out pair, every
fit's (seed's) :meth:`~trajvi.TrajVI.score_held_out_groups` mean and the truth of its calibrated prediction (the
rule trajvi chose), and the truth of the fit the score picks, against the mean over fits.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from _common import format_table


def _criteria(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for criterion in runs[0]["chosen"]:
        chosen = [run["truth"][run["chosen"][criterion]] for run in runs]
        hits = sum(run["chosen"][criterion] == run["best_on_truth"]["energy"] for run in runs)
        rows.append(
            {
                "criterion": criterion,
                "best": f"{hits}/{len(runs)}",
                "pcc": float(np.mean([c["pcc_delta_deg"] for c in chosen])),
                "energy": float(np.mean([c["energy"] for c in chosen])),
            }
        )
    for rule in runs[0]["truth"]:
        scores = [run["truth"][rule] for run in runs]
        hits = sum(run["best_on_truth"]["energy"] == rule for run in runs)
        rows.append(
            {
                "criterion": f"always {rule}",
                "best": f"{hits}/{len(runs)}",
                "pcc": float(np.mean([s["pcc_delta_deg"] for s in scores])),
                "energy": float(np.mean([s["energy"] for s in scores])),
            }
        )
    return rows


def _selection(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pairs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        pairs[f"{run['group']} x {run['perturbation']}"].append(run)
    rows = []
    for pair, fits in sorted(pairs.items()):
        fits = sorted(fits, key=lambda run: run["seed"])
        truth = [run["truth"][run["split_halves"]["rule"]] for run in fits]
        picked = int(np.argmin([run["fit_score"]["mean"] for run in fits]))
        rows.append(
            {
                "pair": pair,
                "fits": " / ".join(
                    f"s{run['seed']} {run['fit_score']['mean']:.3f}: {t['pcc_delta_deg']:.3f}, {t['energy']:.3f}"
                    for run, t in zip(fits, truth, strict=True)
                ),
                "picked": f"s{fits[picked]['seed']}",
                "picked_pcc": truth[picked]["pcc_delta_deg"],
                "picked_energy": truth[picked]["energy"],
                "mean_pcc": float(np.mean([t["pcc_delta_deg"] for t in truth])),
                "mean_energy": float(np.mean([t["energy"] for t in truth])),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.files]
    print(
        format_table(
            _criteria(runs),
            [
                ("criterion", "criterion", ""),
                ("best", "best rule", ""),
                ("pcc", "PCC-delta", ".3f"),
                ("energy", "energy", ".3f"),
            ],
        )
    )
    with_scores = [run for run in runs if "fit_score" in run]
    if with_scores:
        print()
        print(
            format_table(
                _selection(with_scores),
                [
                    ("pair", "held out", ""),
                    ("fits", "seed score: PCC-delta, energy", ""),
                    ("picked", "picked", ""),
                    ("picked_pcc", "PCC-delta", ".3f"),
                    ("picked_energy", "energy", ".3f"),
                    ("mean_pcc", "mean of fits", ".3f"),
                    ("mean_energy", "", ".3f"),
                ],
            )
        )


if __name__ == "__main__":
    main()
