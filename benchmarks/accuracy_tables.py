"""Markdown tables (mean and per-seed values) from the JSON files of the Kang and Klein accuracy benchmarks.

Usage::

    python benchmarks/accuracy_tables.py benchmarks/results/trajvi_kang_seed*.json
    python benchmarks/accuracy_tables.py benchmarks/results/trajvi_klein_seed*.json

Every file is one run of ``kang_perturbation.py`` / ``klein_interpolation.py`` (or ``trajvi_accuracy.py``);
methods are matched by name across the files, and each seed's value is listed next to the mean.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

KANG = (("r2_all", "R2 all genes", True), ("r2_deg", "R2 top-100 DEGs", True), ("r2_lfc_deg", "R2 LFC DEGs", True))
KANG_ENERGY = ("energy", "energy distance", False)
KLEIN = (("w1", "W1 to real day", False),)


def table(paths: list[Path]) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    kind = runs[0]["benchmark"]
    metrics = (*KANG, KANG_ENERGY) if kind == "kang_perturbation" else KLEIN
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, list[float]] = defaultdict(list)
    seeds = [run["seed"] for run in runs]
    for run in runs:
        for result in run["results"]:
            for key, _, _ in metrics:
                values[result["method"]][key].append(result[key])
            seconds[result["method"]].append(result["wall_seconds"])
    header = ["method", *(f"{label} (mean; seeds {', '.join(map(str, seeds))})" for _, label, _ in metrics)]
    header.append("wall s (mean)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, by_key in values.items():
        cells = [method]
        for key, _, _ in metrics:
            v = by_key[key]
            cells.append(f"{sum(v) / len(v):.4f} ({' / '.join(f'{x:.4f}' for x in v)})")
        cells.append(f"{sum(seconds[method]) / len(seconds[method]):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        msg = "usage: accuracy_tables.py RESULT.json [RESULT.json ...]"
        raise SystemExit(msg)
    print(table(paths))


if __name__ == "__main__":
    main()
