"""The ``trajvi`` command.

``trajvi demo --out DIR`` fits trajvi on the built-in synthetic data (whose answer is known), writes
an h5ad with the results and PNG figures, and prints how close the model came to the known answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trajvi._logging import logger


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        msg = f"{value!r} is not a positive integer"
        raise argparse.ArgumentTypeError(msg)
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trajvi`` command."""
    parser = argparse.ArgumentParser(prog="trajvi", description="Learn how single cells move between conditions.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="fit trajvi on built-in synthetic data with a known answer")
    demo.add_argument("--out", type=Path, default=Path("trajvi_demo"), help="output folder (default: trajvi_demo)")
    demo.add_argument("--epochs", type=_positive_int, default=60, help="phase-1 epochs (default: 60)")
    demo.add_argument("--n-cells", type=_positive_int, default=3000, help="number of cells (default: 3000)")
    demo.add_argument("--n-genes", type=_positive_int, default=500, help="number of genes (default: 500)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def run_demo(
    out: Path, *, epochs: int = 60, n_cells: int = 3000, n_genes: int = 500, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Fit phase 1 on synthetic data and write ``demo.h5ad``, ``latent.png``, ``history.png``, ``metrics.json``.

    Returns
    -------
    The metrics written to ``metrics.json``: k-NN accuracy of the true cell types in the latent and the
    share of the true latent that a linear map recovers from it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc
    import scvi

    import trajvi

    out.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = seed
    logger.info("Simulating %d cells x %d genes (seed %d).", n_cells, n_genes, seed)
    adata = trajvi.data.synthetic(n_cells, n_genes, seed=seed)
    trajvi.TrajVI.setup_anndata(adata, condition_key="condition", batch_key="batch")
    model = trajvi.TrajVI(adata)
    logger.info("Phase 1: fitting the count model for %d epochs.", epochs)
    model.train(max_epochs=epochs, enable_progress_bar=progress)
    trajvi.tl.latent(adata, model)

    metrics = {
        "cell_type_knn_accuracy": trajvi.tl.knn_accuracy(adata.obsm["X_trajvi"], adata.obs["cell_type"]),
        "true_latent_r2": trajvi.tl.linear_r2(adata.obsm["X_trajvi"], adata.obsm["true_latent"]),
        "condition_knn_accuracy": trajvi.tl.knn_accuracy(adata.obsm["X_trajvi"], adata.obs["condition"]),
        "epochs": epochs,
        "n_cells": n_cells,
        "n_genes": n_genes,
        "seed": seed,
    }
    sc.pp.neighbors(adata, use_rep="X_trajvi", random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    fig = sc.pl.umap(adata, color=["cell_type", "condition", "batch"], show=False, return_fig=True)
    fig.savefig(out / "latent.png", dpi=120, bbox_inches="tight")
    trajvi.pl.history(model, return_fig=True).savefig(out / "history.png", dpi=120, bbox_inches="tight")
    adata.write_h5ad(out / "demo.h5ad")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trajvi`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        metrics = run_demo(
            args.out,
            epochs=args.epochs,
            n_cells=args.n_cells,
            n_genes=args.n_genes,
            seed=args.seed,
            progress=not args.no_progress,
        )
        print(f"trajvi demo: results in {args.out}/ (demo.h5ad, latent.png, history.png, metrics.json)")
        for key, value in metrics.items():
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
