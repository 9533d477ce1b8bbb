"""The ``trajvi`` command.

``trajvi fit INPUT.h5ad --condition-key K --path A B [C ...] --out OUT.h5ad`` runs both phases on your data;
``trajvi demo --out DIR`` does the same on built-in synthetic data whose answer is known and prints how close
the model came to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from trajvi._types import PREDICT_MODES, OTMethod

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The first bytes of every HDF5 file (h5ad files are HDF5).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


class CLIError(Exception):
    """A problem the command reports as one line on standard error (exit status 2)."""


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        msg = f"{value!r} is not a positive integer"
        raise argparse.ArgumentTypeError(msg)
    return number


def _penalty(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0 or number == float("inf"):
        msg = f"{value!r} is neither 'auto' nor a finite number >= 0"
        raise argparse.ArgumentTypeError(msg)
    return number


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trajvi")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0"


def _add_training_options(parser: argparse.ArgumentParser, *, epochs: int, flow_epochs: int) -> None:
    parser.add_argument("--epochs", type=_positive_int, default=epochs, help=f"phase-1 epochs (default: {epochs})")
    parser.add_argument(
        "--flow-epochs", type=_positive_int, default=flow_epochs, help=f"phase-2 epochs (default: {flow_epochs})"
    )
    parser.add_argument("--ot-method", choices=get_args(OTMethod), default="exact")
    parser.add_argument("--n-latent", type=_positive_int, default=10, help="latent dimensions (default: 10)")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=128, help="phase-1 cells per minibatch (default: 128)"
    )
    parser.add_argument(
        "--residual-penalty",
        type=_penalty,
        default="auto",
        metavar="auto|P",
        help="residual penalty of the velocity field, or 'auto' to choose it by validation (default: auto)",
    )
    parser.add_argument("--accelerator", choices=ACCELERATORS, default="auto", help="training hardware (default: auto)")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: scvi.settings.num_threads if set, else 1; see trajvi.settings)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trajvi`` command."""
    parser = argparse.ArgumentParser(prog="trajvi", description="Learn how single cells move between conditions.")
    parser.add_argument("--version", action="version", version=f"trajvi {_version()}")
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
    fit.add_argument(
        "--save-model", type=Path, default=None, metavar="DIR", help="model folder (default: OUT_model beside OUT)"
    )
    fit.add_argument(
        "--predict-mode",
        choices=PREDICT_MODES,
        default=None,
        help="predicted cells: NB samples of the decoded means (sample, the default for one fit) or the measured "
        "source cells moved by the decoded change (transfer, the default and the only mode for --n-fits > 1)",
    )
    fit.add_argument(
        "--n-fits",
        type=_positive_int,
        default=1,
        metavar="N",
        help="fit both phases N times (seeds SEED, SEED+1, ...) and average the transferred predictions "
        "(trajvi.predict_ensemble); models go to DIR/seed_<seed> (default: 1)",
    )
    fit.add_argument(
        "--calibrate",
        action="store_true",
        help="add to the predicted cells the field's mean miss on the real target cells of each --couple-within "
        "group (predict(calibrate=True))",
    )
    _add_training_options(fit, epochs=100, flow_epochs=100)

    demo = sub.add_parser("demo", help="fit trajvi on built-in synthetic data with a known answer")
    demo.add_argument("--out", type=Path, default=Path("trajvi_demo"), help="output folder (default: trajvi_demo)")
    demo.add_argument("--n-cells", type=_positive_int, default=3000, help="number of cells (default: 3000)")
    demo.add_argument("--n-genes", type=_positive_int, default=500, help="number of genes (default: 500)")
    _add_training_options(demo, epochs=60, flow_epochs=50)
    return parser


def _check_writable_folder(folder: Path, what: str) -> None:
    """Check, before any training, that ``folder`` can be created (if missing) and written into."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        msg = f"cannot write the {what} into {folder}: {probe} exists and is not a folder"
        raise CLIError(msg)
    if not os.access(probe, os.W_OK | os.X_OK):
        msg = f"cannot write the {what} into {folder}: no permission to write in {probe}"
        raise CLIError(msg)


def _check_output_file(path: Path, what: str) -> None:
    if path.is_dir():
        msg = f"cannot write the {what} to {path}: it is a folder"
        raise CLIError(msg)
    if path.exists() and not os.access(path, os.W_OK):
        msg = f"cannot write the {what} to {path}: permission denied"
        raise CLIError(msg)
    _check_writable_folder(path.parent, what)


def _read_h5ad(path: Path) -> Any:
    """Read an h5ad file, or raise :class:`CLIError` saying why it cannot be read."""
    if not path.exists():
        msg = f"input file {path} does not exist"
        raise CLIError(msg)
    if path.is_dir():
        msg = f"input {path} is a folder, not an h5ad file"
        raise CLIError(msg)
    try:
        with path.open("rb") as handle:
            head = handle.read(len(HDF5_SIGNATURE))
    except OSError as err:
        msg = f"cannot read {path}: {err.strerror or err}"
        raise CLIError(msg) from err
    if head != HDF5_SIGNATURE:
        msg = f"{path} is not an h5ad file (no HDF5 signature); convert it with anndata or scanpy first"
        raise CLIError(msg)
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except Exception as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        msg = f"cannot read {path} as h5ad (damaged or incomplete file?): {detail}"
        raise CLIError(msg) from err


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
    n_latent: int = 10,
    batch_size: int = 128,
    residual_penalty: float | str = "auto",
    accelerator: str = "auto",
    predict_mode: str = "sample",
    calibrate: bool = False,
    n_fits: int = 1,
) -> tuple[list[Any], Any]:
    """Both phases, then latent, trajectories and predictions; returns the models and the predicted cells.

    With several paths, one field is trained on all; ``obsm`` gets the trajectories of the first path and the
    predicted cells hold every path's end, predicted from its start. With ``n_fits > 1`` both phases are fitted
    with seeds ``seed, seed + 1, ...`` on the same cells, the latent and trajectories written are the first fit's,
    and each predicted cell is :func:`trajvi.predict_ensemble` of all fits (``predict_mode`` must be "transfer").
    """
    import anndata as ad
    import scvi

    import trajvi
    from trajvi._logging import logger
    from trajvi._runtime import quiet_fit
    from trajvi.trajectory import resolve_paths

    models = []
    for k in range(n_fits):
        with quiet_fit():  # Lightning's "Seed set to" line
            scvi.settings.seed = seed + k
        trajvi.TrajVI.setup_anndata(
            adata, condition_key, layer=layer, batch_key=batch_key, time_key=time_key, dose_key=dose_key
        )
        model = trajvi.TrajVI(adata, n_latent=n_latent)
        named = resolve_paths(paths, model.conditions)  # fail before training, not after it
        if n_fits > 1:
            logger.info("Fit %d of %d (seed %d).", k + 1, n_fits, seed + k)
        logger.info("Phase 1: the count model, %d epochs.", epochs)
        model.train(max_epochs=epochs, batch_size=batch_size, accelerator=accelerator, enable_progress_bar=progress)
        shown = "; ".join(" -> ".join(p) for p in named.values())
        logger.info("Phase 2: coupling %s and fitting the velocity field, %d epochs.", shown, flow_epochs)
        model.train_trajectories(
            named,
            couple_within=couple_within,
            ot_method=ot_method,
            max_epochs=flow_epochs,
            residual_penalty=residual_penalty,  # type: ignore[arg-type]  # "auto" or a float, checked by the parser
            accelerator=accelerator,
            enable_progress_bar=progress,
        )
        models.append(model)
    trajvi.tl.latent(adata, models[0])
    first = next(iter(named))
    trajvi.tl.trajectories(adata, models[0], source=named[first][0], path=first)
    mode: Any = predict_mode  # the parser's choices
    parts = [
        models[0].predict(source=conds[0], target=conds[-1], path=name, mode=mode, calibrate=calibrate)
        if n_fits == 1
        else trajvi.predict_ensemble(models, source=conds[0], target=conds[-1], path=name, calibrate=calibrate)
        for name, conds in named.items()
    ]
    # the same source cell is predicted along each path: the path name keeps the cell names unique
    predicted = (
        parts[0]
        if len(parts) == 1
        else ad.concat(parts, merge="same", uns_merge="first", keys=list(named), index_unique="-")
    )
    return models, predicted


def _training_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "epochs": args.epochs,
        "flow_epochs": args.flow_epochs,
        "ot_method": args.ot_method,
        "seed": args.seed,
        "progress": not args.no_progress,
        "n_latent": args.n_latent,
        "batch_size": args.batch_size,
        "residual_penalty": args.residual_penalty,
        "accelerator": args.accelerator,
    }


def run_fit(args: argparse.Namespace) -> int:
    """``trajvi fit``: check the input and the outputs, fit, write; one line on standard error on failure."""
    if any(len(path) < 2 for path in args.path):
        msg = "each --path needs at least two conditions, in order"
        raise CLIError(msg)
    predict_mode = args.predict_mode or ("transfer" if args.n_fits > 1 else "sample")
    if args.n_fits > 1 and predict_mode != "transfer":
        msg = (
            f"--n-fits {args.n_fits} averages transferred predictions (the same source cell moved by each fit); "
            "sampled cells are random draws and cannot be averaged: use --predict-mode transfer, or --n-fits 1"
        )
        raise CLIError(msg)
    model_dir = args.save_model or args.out.with_name(args.out.stem + "_model")
    predicted_path = args.out.with_name(args.out.stem + "_predicted.h5ad")
    _check_output_file(args.out, "results")
    _check_output_file(predicted_path, "predicted cells")
    _check_writable_folder(model_dir, "model")
    adata = _read_h5ad(args.input)
    models, predicted = _fit_and_write(
        adata,
        condition_key=args.condition_key,
        paths=[list(p) for p in args.path],
        layer=args.layer,
        batch_key=args.batch_key,
        time_key=args.time_key,
        dose_key=args.dose_key,
        couple_within=args.couple_within,
        predict_mode=predict_mode,
        calibrate=args.calibrate,
        n_fits=args.n_fits,
        **_training_kwargs(args),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(args.out)
    predicted.write_h5ad(predicted_path)
    if len(models) == 1:
        models[0].save(str(model_dir), overwrite=True, save_anndata=False)
        where = f"model in {model_dir}/"
    else:
        for k, model in enumerate(models):
            model.save(str(model_dir / f"seed_{args.seed + k}"), overwrite=True, save_anndata=False)
        where = f"{len(models)} models in {model_dir}/seed_*/"
    print(
        f"trajvi fit: {where}; results in {args.out} (obsm X_trajvi, trajvi) and "
        f"{predicted_path} ({predicted.n_obs} predicted cells)"
    )
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
    n_latent: int = 10,
    batch_size: int = 128,
    residual_penalty: float | str = "auto",
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Fit both phases on synthetic data and write ``demo.h5ad``, ``predicted.h5ad``, the model, figures and metrics.

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
    from trajvi._constants import ADATA_KEYS
    from trajvi._logging import logger

    _check_writable_folder(out, "demo results")
    out.mkdir(parents=True, exist_ok=True)
    logger.info("Simulating %d cells x %d genes (seed %d).", n_cells, n_genes, seed)
    adata = trajvi.data.synthetic(n_cells, n_genes, seed=seed)
    (model,), predicted = _fit_and_write(
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
        n_latent=n_latent,
        batch_size=batch_size,
        residual_penalty=residual_penalty,
        accelerator=accelerator,
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
    model.save(str(out / "model"), overwrite=True, save_anndata=False)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        from trajvi._settings import settings

        settings.num_threads = args.threads
    if args.command == "fit":
        return run_fit(args)
    metrics = run_demo(args.out, n_cells=args.n_cells, n_genes=args.n_genes, **_training_kwargs(args))
    for key, value in metrics.items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    print(
        f"trajvi demo: model in {args.out / 'model'}/; results in {args.out}/ "
        "(demo.h5ad, predicted.h5ad, PNG figures, metrics.json)"
    )
    return 0


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split())
    return text or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trajvi`` command.

    Returns the exit status: 0 on success; 2 for a problem with the arguments, the input or the outputs
    (one line on standard error); 1 for a failure during the fit (one line naming the error's type);
    130 when interrupted. Never a traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except CLIError as err:
        print(f"trajvi {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, TypeError) as err:
        print(f"trajvi {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trajvi {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (the command's contract: one line, never a traceback)
        print(f"trajvi {args.command}: error ({type(err).__name__}): {_one_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
