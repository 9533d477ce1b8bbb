"""Bar chart of phase-1 cells per second on a GPU: SCVI, trajvi, and trajvi without the CUDA graph.

Reads the JSON files that ``phase1_throughput.py --eager-too`` wrote (one per data set and batch size) and
writes one PNG.

Usage::

    python benchmarks/plot_gpu_throughput.py benchmarks/results/phase1_throughput_*_h100_b*_graph.json \
        --out docs/_static/performance_gpu_phase1.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

SERIES = (("scvi", "SCVI (NB)"), ("trajvi", "trajvi (CUDA graph)"), ("trajvi_eager", "trajvi (eager)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/_static/performance_gpu_phase1.png"))
    args = parser.parse_args()
    runs = sorted((json.loads(p.read_text()) for p in args.results), key=lambda r: (r["data"], r["batch_size"]))
    labels = [f"{r['data']}\n{r['shape'][0]:,} x {r['shape'][1]:,}\nbatch {r['batch_size']}" for r in runs]
    x = np.arange(len(runs))
    width = 0.27
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (key, name) in enumerate(SERIES):
        values = [r["cells_per_second"].get(key, np.nan) / 1e3 for r in runs]
        bars = ax.bar(x + (i - 1) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("thousand cells / s")
    card = runs[0]["machine"].get("cuda") or "CPU"
    ax.set_title(f"Phase-1 training throughput, {card}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
