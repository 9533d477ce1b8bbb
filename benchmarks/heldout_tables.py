"""Markdown tables from the JSON files of ``heldout_perturbation.py`` and ``worm_branches.py``.

Usage::

    python benchmarks/heldout_tables.py benchmarks/results/heldout_haber_Stem_Salmonella_seed*.json

Files of the same held-out pair (several seeds) give one table: the mean over the seeds, each seed's value in
brackets; the noise ceiling is the first file's (it does not depend on the seed).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = (
    ("r2_all", "R2 all"),
    ("r2_deg", "R2 top-100"),
    ("pcc_delta_deg", "PCC-delta top-100"),
    ("pcc_delta_all", "PCC-delta all"),
    ("energy", "energy"),
    ("deg_overlap", "DEG overlap"),
)


def table(paths: list[Path]) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for row in run["results"]:
            if "not_applicable" in row:
                continue
            for key, _ in METRICS:
                values[row["method"]][key].append(row[key])
    lines = ["| method | " + " | ".join(h for _, h in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for method, by_key in values.items():
        cells = []
        for key, _ in METRICS:
            v = np.asarray(by_key[key], dtype=float)
            mean = np.nanmean(v) if np.isfinite(v).any() else float("nan")
            text = "-" if np.isnan(mean) else f"{mean:.3f}"
            if len(v) > 1 and np.isfinite(v).any():
                text += " (" + " / ".join(f"{x:.3f}" for x in v) + ")"
            cells.append(text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    ceiling = runs[0]["ceiling"]
    lines.append("| noise ceiling | " + " | ".join(f"{ceiling[k]:.3f}" for k, _ in METRICS) + " |")
    return "\n".join(lines)


def main() -> None:
    print(table([Path(p) for p in sys.argv[1:]]))


if __name__ == "__main__":
    main()
