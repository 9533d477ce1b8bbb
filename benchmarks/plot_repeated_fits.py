"""Plot phase-1 steps/s per epoch of repeated fits in one process against fresh processes.

Usage::

    python benchmarks/plot_repeated_fits.py [benchmarks/results/repeated_fits.json] [docs/_static/repeated_fits.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    source = Path(argv[0] if argv else "benchmarks/results/repeated_fits.json")
    out = Path(argv[1] if len(argv) > 1 else "docs/_static/repeated_fits.png")
    data = json.loads(source.read_text())
    fig, axs = plt.subplots(1, len(data["sequence"]), figsize=(3.2 * len(data["sequence"]), 2.8), sharey=True)
    fresh = {f["split"]: f for f in data.get("fresh", [])}
    for ax, fit in zip(axs, data["sequence"], strict=True):
        ax.plot(fit["epoch_steps_per_s"], label="in a row, one process", lw=1)
        if fit["split"] in fresh:
            ax.plot(fresh[fit["split"]]["epoch_steps_per_s"], label="fresh process", lw=1, alpha=0.8)
        ax.set_title(f"{fit['split']} held out (fit {fit['position'] + 1} of the row)", fontsize="small")
        ax.set_xlabel("phase-1 epoch")
    axs[0].set_ylabel("steps / s (1 thread)")
    axs[0].set_ylim(bottom=0)
    axs[-1].legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
