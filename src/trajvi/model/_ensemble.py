"""Predictions of several fits of the same data, averaged cell by cell.

Two fits of one AnnData that differ only in their seeds can predict a held-out response quite differently; on
the held-out (cell type, infection) pairs of Haber 2017 most of that spread comes from phase 1 (the latent), not
from the velocity field. A transferred prediction (``predict(mode="transfer")``) is the source cell's own
``log1p(CP10k)`` expression moved by a change, so the fits' predictions of one source cell are the same cell
moved by different changes, and they can be averaged: :func:`predict_ensemble` moves each source cell by the
mean, over the fits, of its moved expression in that space, which keeps what the fits agree on and averages out
what depends on the seed (the benchmarks page measures three fits against one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from trajvi._constants import ADATA_KEYS, REGISTRY_KEYS
from trajvi._logging import logger
from trajvi.data._blocks import read_rows

from ._transfer import TARGET_SUM, _log_normalized

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from trajvi._types import Integrator

    from ._model import TrajVI

__all__ = ["predict_ensemble"]

#: obs column of :func:`predict_ensemble`'s AnnData: how much the fits disagree on each predicted cell.
SPREAD_COLUMN = "ensemble_sd"


def predict_ensemble(
    models: Sequence[TrajVI],
    adata: AnnData | None = None,
    *,
    source: str,
    target: str | None = None,
    t_span: tuple[float, float] | None = None,
    path: str | None = None,
    indices: Sequence[int] | None = None,
    n_steps: int = 100,
    method: Integrator = "euler",
    batch_size: int = 1024,
    calibrate: bool = False,
    layer_key: str = ADATA_KEYS.PREDICTED_MEAN,
) -> AnnData:
    """Transferred predictions of several fits of the same data, averaged per source cell.

    Every model predicts the same source cells with ``predict(mode="transfer")`` (and ``calibrate``); each
    predicted cell is then the source cell's measured expression moved, in ``log1p(CP10k)`` space, by the mean
    over the models of where each moved it, back on the count scale with the cell's own library size. Train the
    models on the same AnnData with different seeds (``scvi.settings.seed`` before :meth:`~trajvi.TrajVI.train`,
    ``seed=`` of :meth:`~trajvi.TrajVI.train_trajectories`); three fits of phase 1 and phase 2 are what the
    benchmarks measure. Sampled predictions are random draws, not the same cell moved, and are not averaged:
    this function has no ``mode``.

    Parameters
    ----------
    models
        Trained :class:`~trajvi.TrajVI` models (phase 2 included) with the same genes in the same order.
    adata
        AnnData holding the source cells (default: each model's own, which must then hold the same cells at
        ``indices``).
    source, target, t_span, path, indices, n_steps, method, batch_size, calibrate
        As in :meth:`~trajvi.TrajVI.predict`, for every model.
    layer_key
        Layer that receives the models' mean NB means at the end state.

    Returns
    -------
    AnnData as :meth:`~trajvi.TrajVI.predict` returns it (``mode="transfer"``, one cell per source cell), with
    ``X`` the averaged cells (float counts, CSR), ``layers[layer_key]`` the mean of the models' NB means,
    ``obs["ensemble_sd"]`` the disagreement of the models on each cell (the root mean square over genes of the
    standard deviation over models of the moved ``log1p(CP10k)`` expression), and
    ``uns["trajvi_predict"]["params"]`` the first model's parameters plus ``"n_models"`` and, with ``calibrate``,
    ``"calibration_rules"`` (each model's shrinkage rule).

    Raises
    ------
    ValueError
        Without models, with models of different genes, or when the models' predictions start from different
        source cells (their own AnnData differ at ``indices``: pass ``adata``).
    """
    models = list(models)
    if not models:
        msg = "predict_ensemble needs at least one trained model; got none."
        raise ValueError(msg)
    genes = [list(m.adata.var_names) for m in models]
    mismatched = [i for i, g in enumerate(genes) if g != genes[0]]
    if mismatched:
        msg = (
            f"models {mismatched} have other genes (or another gene order) than model 0; an ensemble averages "
            "fits of the same data: train every model on the same AnnData."
        )
        raise ValueError(msg)
    query: dict[str, Any] = {
        "source": source,
        "target": target,
        "t_span": t_span,
        "path": path,
        "indices": indices,
        "n_steps": n_steps,
        "method": method,
        "batch_size": batch_size,
        "calibrate": calibrate,
        "layer_key": layer_key,
    }
    first = models[0].predict(adata, mode="transfer", **query)
    cells = first.obs[ADATA_KEYS.SOURCE_CELL].to_numpy()
    registered = models[0]._validate_anndata(adata)
    counts = models[0].get_from_registry(registered, REGISTRY_KEYS.X_KEY)
    library = read_rows(counts, registered.obs_names.get_indexer(cells)).astype(np.float64).sum(axis=1, keepdims=True)
    # each prediction's log1p(CP10k) with the source cell's library: where the cell was moved (shift_counts inverted)
    total, squares, means = np.zeros(first.shape), np.zeros(first.shape), np.zeros(first.shape)
    rules = []
    for i, model in enumerate(models):
        pred = first if i == 0 else model.predict(adata, mode="transfer", **query)
        if not np.array_equal(pred.obs[ADATA_KEYS.SOURCE_CELL].to_numpy(), cells):
            msg = (
                f"model {i} predicted from other source cells than model 0 (their AnnData differ at these "
                "indices); pass the AnnData that holds the source cells as adata=..."
            )
            raise ValueError(msg)
        moved = _log_normalized(pred.X.toarray().astype(np.float64), library, TARGET_SUM)
        total += moved
        squares += np.square(moved)
        means += pred.layers[layer_key]
        rules.append(pred.uns[ADATA_KEYS.PREDICT_UNS]["params"]["calibration_shrinkage"].get("rule"))
    n = len(models)
    average = total / n
    variance = np.maximum(squares / n - np.square(average), 0.0) * n / max(n - 1, 1)
    out = first
    out.X = sparse.csr_matrix((np.expm1(average) * library / TARGET_SUM).astype(np.float32))
    out.layers[layer_key] = (means / n).astype(np.float32)
    out.obs[SPREAD_COLUMN] = np.sqrt(variance.mean(axis=1))
    params = out.uns[ADATA_KEYS.PREDICT_UNS]["params"]
    params["n_models"] = n
    if calibrate:
        params["calibration_rules"] = rules
    logger.info(
        f"Averaged the transferred predictions of {n} models over {len(cells)} cells (median disagreement "
        f"{float(np.median(out.obs[SPREAD_COLUMN])):.3f} in log1p(CP10k), root mean square over genes)."
    )
    return out
