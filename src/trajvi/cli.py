"""The ``trajvi`` command.

``trajvi fit INPUT.h5ad --condition-key K --path A B [C ...] --out OUT.h5ad`` runs both phases on your data;
``trajvi demo --out DIR`` does the same on built-in synthetic data whose answer is known and prints how close
the model came to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trajvi._constants import ADATA_KEYS
from trajvi._logging import logger
from trajvi._types import OT_METHODS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from trajvi._types import OTMethod


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        msg = f"{value!r} is not a positive integer"
        raise argparse.ArgumentTypeError(msg)
    return number


def _add_training_options(parser: argparse.ArgumentParser, *, epochs: int, flow_epochs: int) -> None:
    parser.add_argument("--epochs", type=_positive_int, default=epochs, help=f"phase-1 epochs (default: {epochs})")
    parser.add_argument(
        "--flow-epochs", type=_positive_int, default=flow_epochs, help=f"phase-2 epochs (default: {flow_epochs})"
    )
    parser.add_argument("--ot-method", choices=OT_METHODS, default="exact")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trajvi`` command."""
    parser = argparse.ArgumentParser(prog="trajvi", description="Learn how single cells move between conditions.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit both phases on an h5ad of raw counts and write the results")
    fit.add_argument("input", type=Path, help="h5ad with raw counts")
    fit.add_argument("--condition-key", required=True, help="obs column with the condition of each cell")
    fit.add_argument(
        "--path",
        nargs="+",
        action="append",
        required=True,
        metavar="CONDITION",
        help="ordered conditions (2 or more); repeat --path for several paths in one model",
    )
    fit.add_argument("--layer", default=None, help="layer with the raw counts (default: X)")
    fit.add_argument("--batch-key", default=None, help="obs column with a nuisance batch")
    fit.add_argument("--time-key", default=None, help="numeric obs column: time of each condition")
    fit.add_argument("--dose-key", default=None, help="numeric obs column: dose of each cell's perturbation")
    fit.add_argument("--couple-within", default=None, help="obs column: couple only cells of the same group")
    fit.add_argument("--out", type=Path, required=True, help="output h5ad (predictions go to OUT_predicted.h5ad)")
    fit.add_argument("--save-model", type=Path, default=None, metavar="DIR", help="also save the model here")
    _add_training_options(fit, epochs=100, flow_epochs=100)

    demo = sub.add_parser("demo", help="fit trajvi on built-in synthetic data with a known answer")
    demo.add_argument("--out", type=Path, default=Path("trajvi_demo"), help="output folder (default: trajvi_demo)")
    demo.add_argument("--n-cells", type=_positive_int, default=3000, help="number of cells (default: 3000)")
    demo.add_argument("--n-genes", type=_positive_int, default=500, help="number of genes (default: 500)")
    _add_training_options(demo, epochs=60, flow_epochs=50)
    return parser


def _fit_and_write(
    adata: Any,
    *,
    condition_key: str,
    paths: list[list[str]],
    layer: str | None,
    batch_key: str | None,
    time_key: str | None,
    dose_key: str | None = None,
    couple_within: str | None,
    epochs: int,
    flow_epochs: int,
    ot_method: OTMethod,
    seed: int,
    progress: bool,
) -> tuple[Any, Any]:
    """Both phases, then latent, trajectories and predictions; returns the model and the predicted cells.

    With several paths, one field is trained on all; ``obsm`` gets the trajectories of the first path and the
    predicted cells hold every path's end, predicted from its start.
    """
    import anndata as ad
    import scvi

    import trajvi
    from trajvi.trajectory import resolve_paths

    scvi.settings.seed = seed
    trajvi.TrajVI.setup_anndata(
        adata, condition_key, layer=layer, batch_key=batch_key, time_key=time_key, dose_key=dose_key
    )
    model = trajvi.TrajVI(adata)
    named = resolve_paths(paths, model.conditions)  # fail before training, not after it
    logger.info("Phase 1: the count model, %d epochs.", epochs)
    model.train(max_epochs=epochs, enable_progress_bar=progress)
    shown = "; ".join(" -> ".join(p) for p in named.values())
    logger.info("Phase 2: coupling %s and fitting the velocity field, %d epochs.", shown, flow_epochs)
    model.train_trajectories(
        named, couple_within=couple_within, ot_method=ot_method, max_epochs=flow_epochs, enable_progress_bar=progress
    )
    trajvi.tl.latent(adata, model)
    first = next(iter(named))
    trajvi.tl.trajectories(adata, model, source=named[first][0], path=first)
    parts = [model.predict(source=conds[0], path=name) for name, conds in named.items()]
    predicted = parts[0] if len(parts) == 1 else ad.concat(parts, merge="same", uns_merge="first")
    return model, predicted


def run_fit(args: argparse.Namespace) -> int:
    """``trajvi fit``."""
    import anndata as ad

    if not args.input.exists():
        logger.error("Input file %s does not exist.", args.input)
        return 2
    if any(len(path) < 2 for path in args.path):
        logger.error("each --path needs at least two conditions, in order.")
        return 2
    adata = ad.read_h5ad(args.input)
    try:
        model, predicted = _fit_and_write(
            adata,
            condition_key=args.condition_key,
            paths=[list(p) for p in args.path],
            layer=args.layer,
            batch_key=args.batch_key,
            time_key=args.time_key,
            dose_key=args.dose_key,
            couple_within=args.couple_within,
            epochs=args.epochs,
            flow_epochs=args.flow_epochs,
            ot_method=args.ot_method,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except (KeyError, ValueError, TypeError) as err:
        logger.error("%s", err.args[0] if err.args else err)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(args.out)
    predicted_path = args.out.with_name(args.out.stem + "_predicted.h5ad")
    predicted.write_h5ad(predicted_path)
    if args.save_model is not None:
        model.save(args.save_model, overwrite=True, save_anndata=False)
    print(f"trajvi fit: wrote {args.out} (obsm X_trajvi, trajvi) and {predicted_path} ({predicted.n_obs} cells)")
    return 0


def _save_figure(fig: Figure | Axes | list[Axes] | None, path: Path) -> None:
    """Write a figure returned by a ``trajvi.pl`` function called with ``return_fig=True``."""
    from matplotlib.figure import Figure as FigureType

    assert isinstance(fig, FigureType)  # return_fig=True returns the figure
    fig.savefig(path, dpi=120, bbox_inches="tight")


def run_demo(
    out: Path,
    *,
    epochs: int = 60,
    flow_epochs: int = 50,
    n_cells: int = 3000,
    n_genes: int = 500,
    seed: int = 0,
    ot_method: OTMethod = "exact",
    progress: bool = True,
) -> dict[str, Any]:
    """Fit both phases on synthetic data and write ``demo.h5ad``, ``predicted.h5ad``, figures and metrics.

    Returns
    -------
    The metrics written to ``metrics.json``, each against the known answer: k-NN accuracy of the true cell
    types in the latent, the share of the true latent recovered, and the energy distance (20 PCs of
    log-normalised expression) from the real stimulated cells to the predicted ones and to the control cells.
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import scanpy as sc

    import trajvi

    out.mkdir(parents=True, exist_ok=True)
    logger.info("Simulating %d cells x %d genes (seed %d).", n_cells, n_genes, seed)
    adata = trajvi.data.synthetic(n_cells, n_genes, seed=seed)
    model, predicted = _fit_and_write(
        adata,
        condition_key="condition",
        paths=[["control", "stimulated"]],
        layer=None,
        batch_key="batch",
        time_key=None,
        couple_within="cell_type",
        epochs=epochs,
        flow_epochs=flow_epochs,
        ot_method=ot_method,
        seed=seed,
        progress=progress,
    )
    stim = (adata.obs["condition"] == "stimulated").to_numpy()
    metrics = {
        "cell_type_knn_accuracy": trajvi.metrics.knn_accuracy(adata.obsm[ADATA_KEYS.LATENT], adata.obs["cell_type"]),
        "true_latent_r2": trajvi.metrics.linear_r2(adata.obsm[ADATA_KEYS.LATENT], adata.obsm["true_latent"]),
        "energy_distance_predicted_to_stimulated": trajvi.metrics.expression_energy_distance(
            predicted.X, adata.X[stim], reference=adata.X
        ),
        "energy_distance_control_to_stimulated": trajvi.metrics.expression_energy_distance(
            adata.X[~stim], adata.X[stim], reference=adata.X
        ),
        "residual_penalty": model.residual_penalty_,
        "epochs": epochs,
        "flow_epochs": flow_epochs,
        "n_cells": n_cells,
        "n_genes": n_genes,
        "seed": seed,
    }
    sc.pp.neighbors(adata, use_rep=ADATA_KEYS.LATENT, random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    fig = sc.pl.umap(adata, color=["cell_type", "condition", "batch"], show=False, return_fig=True)
    fig.savefig(out / "latent.png", dpi=120, bbox_inches="tight")
    _save_figure(trajvi.pl.trajectories(adata, color="condition", return_fig=True), out / "trajectories.png")
    effect = np.abs(
        adata.varm["true_loadings"] @ np.diff(adata.obsm["true_latent_by_condition"].mean(axis=0), axis=0)[0]
    )
    genes = list(adata.var_names[np.argsort(effect)[::-1][:4]])
    trajvi.tl.gene_trends(adata, model, genes, groupby="cell_type")
    _save_figure(trajvi.pl.gene_trends(adata, return_fig=True), out / "gene_trends.png")
    _save_figure(trajvi.pl.history(model, return_fig=True), out / "history.png")
    adata.write_h5ad(out / "demo.h5ad")
    predicted.write_h5ad(out / "predicted.h5ad")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trajvi`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "fit":
        return run_fit(args)
    metrics = run_demo(
        args.out,
        epochs=args.epochs,
        flow_epochs=args.flow_epochs,
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        seed=args.seed,
        ot_method=args.ot_method,
        progress=not args.no_progress,
    )
    print(f"trajvi demo: results in {args.out}/ (demo.h5ad, predicted.h5ad, PNG figures, metrics.json)")
    for key, value in metrics.items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
