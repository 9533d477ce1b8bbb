"""Kang 2018 IFN-beta hold-out-cell-type benchmark: split, scoring, baselines and the method registry.

Protocol (``kang_pbmc_union_counts.h5ad``, 4508 cells x 4805 genes, raw counts):

- **training set**: every cell except the stimulated cells of the held-out type (``cell_type == held_out``),
  whatever their label source;
- **sources**: the control cells of the held-out type (all label sources); methods predict the stimulated
  state of these cells;
- **ground truth**: the stimulated cells of the held-out type with ``cell_type_source == "scgen"`` (strict
  labels, see the data README);
- **reference control**: the control cells of the held-out type with ``cell_type_source == "scgen"``; used for
  the DEGs and as the control of the log-fold changes.

Scores (:class:`KangEvaluation`), all on log1p(normalize_total 1e4) expression:

- ``r2_all``: squared Pearson of the per-gene means, all genes;
- ``r2_deg``: the same over the top-100 DEGs: ``scanpy.tl.rank_genes_groups(method="wilcoxon")`` of the ground
  truth ("stimulated") against the reference control ("control"), the 100 highest scores of "stimulated"
  (i.e. the most up-regulated genes);
- ``r2_lfc_deg``: squared Pearson of predicted vs real log-fold changes (mean minus reference-control mean)
  over those DEGs;
- ``energy``: energy distance (:func:`_metrics.energy_distance`) in 50 principal components. The PCA
  (``sklearn.decomposition.PCA``, centred, not scaled nor whitened, ``random_state=0``) is fitted on the
  log-normalised expression of **all real cells of the file** (both conditions, every cell type, including
  the held-out cells, since it only defines the evaluation space); predicted cells are projected with it.

Adding a method: write a function ``f(split: KangSplit) -> Prediction`` and register it,
``METHODS["name"] = f``. The function may use ``split.train`` (raw counts) and ``split.sources`` only, never
``split.truth`` or ``split.reference_control`` (those are for scoring). It returns predicted cells for the
source cells, in ``split.train.var_names`` order, preferably as ``split.n_samples`` sampled count matrices
(``Prediction(counts=[...])``); the harness normalises and scores them exactly like the real cells.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import PCA

from _common import Prediction, data_file, log
from _metrics import energy_distance, lfc_r2, log_normalize, mean_r2, score_as_cells

if TYPE_CHECKING:
    from collections.abc import Callable

DATA_NAME = "kang_pbmc_union_counts.h5ad"
CONDITION_KEY = "condition"
CELL_TYPE_KEY = "cell_type"
LABEL_SOURCE_KEY = "cell_type_source"
CONTROL = "control"
STIMULATED = "stimulated"
STRICT_LABEL = "scgen"


def _dense(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@dataclass
class KangSplit:
    """One hold-out-cell-type split of the Kang data, as the methods see it.

    Attributes
    ----------
    train
        Training cells (a copy, raw integer counts in ``X``, the file's ``obs``): every cell except the
        stimulated cells of the held-out type.
    sources
        The control cells of the held-out type (all label sources; a subset of ``train``, same ``obs_names``).
        Predictions are the stimulated counterparts of these cells.
    truth
        Ground truth, for scoring only: stimulated held-out cells with strict (scGen) labels.
    reference_control
        For scoring only: control held-out cells with strict (scGen) labels (DEGs, log-fold changes).
    held_out
        The held-out cell type, e.g. ``"CD4T"``.
    seed
        Random seed the method should use.
    n_samples
        Number of count samples per source cell a generative method should return.
    max_epochs
        Training epochs for model-based methods.
    """

    train: ad.AnnData
    sources: ad.AnnData
    truth: ad.AnnData
    reference_control: ad.AnnData
    held_out: str
    seed: int = 0
    n_samples: int = 5
    max_epochs: int = 100

    @property
    def other_cell_types(self) -> list[str]:
        """Cell types of the training set other than the held-out one that have both conditions."""
        obs = self.train.obs
        out = []
        for cell_type in sorted(obs[CELL_TYPE_KEY].astype(str).unique()):
            if cell_type == self.held_out:
                continue
            conditions = set(obs.loc[obs[CELL_TYPE_KEY] == cell_type, CONDITION_KEY].astype(str))
            if {CONTROL, STIMULATED} <= conditions:
                out.append(cell_type)
        return out

    def sizes(self) -> dict[str, Any]:
        """Numbers of cells in every set, with the training set broken down by type and condition."""
        obs = self.train.obs
        table = pd.crosstab(obs[CELL_TYPE_KEY].astype(str), obs[CONDITION_KEY].astype(str))
        return {
            "train": self.train.n_obs,
            "sources": self.sources.n_obs,
            "truth": self.truth.n_obs,
            "reference_control": self.reference_control.n_obs,
            "genes": self.train.n_vars,
            "train_by_type": {ct: {c: int(n) for c, n in row.items()} for ct, row in table.iterrows()},
        }


def load_kang() -> ad.AnnData:
    """Read ``kang_pbmc_union_counts.h5ad`` from ``../shared/data`` (exit with a message if absent)."""
    adata = ad.read_h5ad(data_file(DATA_NAME))
    for key in (CONDITION_KEY, CELL_TYPE_KEY, LABEL_SOURCE_KEY):
        adata.obs[key] = adata.obs[key].astype(str)
    return adata


def make_split(
    adata: ad.AnnData, held_out: str, *, seed: int = 0, n_samples: int = 5, max_epochs: int = 100
) -> KangSplit:
    """Build the :class:`KangSplit` for one held-out cell type (see the module docstring for the protocol).

    Parameters
    ----------
    adata
        The full Kang file (raw counts).
    held_out
        Cell type to hold out; must be one of ``adata.obs["cell_type"]``.
    seed, n_samples, max_epochs
        Stored on the split for the methods.

    Returns
    -------
    KangSplit
        Copies of the sets; ``adata`` is not modified.
    """
    obs = adata.obs
    if held_out not in set(obs[CELL_TYPE_KEY]):
        msg = f"--held-out {held_out!r} is not a cell type of the file: {sorted(set(obs[CELL_TYPE_KEY]))}"
        raise SystemExit(msg)
    is_type = (obs[CELL_TYPE_KEY] == held_out).to_numpy()
    is_stim = (obs[CONDITION_KEY] == STIMULATED).to_numpy()
    is_ctrl = (obs[CONDITION_KEY] == CONTROL).to_numpy()
    strict = (obs[LABEL_SOURCE_KEY] == STRICT_LABEL).to_numpy()
    split = KangSplit(
        train=adata[~(is_type & is_stim)].copy(),
        sources=adata[is_type & is_ctrl].copy(),
        truth=adata[is_type & is_stim & strict].copy(),
        reference_control=adata[is_type & is_ctrl & strict].copy(),
        held_out=held_out,
        seed=seed,
        n_samples=n_samples,
        max_epochs=max_epochs,
    )
    for name in ("sources", "truth", "reference_control"):
        if getattr(split, name).n_obs < 2:
            msg = f"held-out type {held_out!r} has fewer than two {name} cells"
            raise SystemExit(msg)
    return split


def rank_degs(reference_log: np.ndarray, truth_log: np.ndarray, var_names: pd.Index, n_degs: int = 100) -> list[str]:
    """Top up-regulated genes of the ground truth against the reference control (Wilcoxon, by score).

    Parameters
    ----------
    reference_log, truth_log
        Log-normalised real control and stimulated cells of the held-out type.
    var_names
        Gene names (columns).
    n_degs
        How many genes to return.

    Returns
    -------
    list[str]
        The ``n_degs`` genes with the highest Wilcoxon scores of the "stimulated" group.
    """
    tmp = ad.AnnData(
        X=np.vstack([reference_log, truth_log]),
        obs=pd.DataFrame(
            {CONDITION_KEY: pd.Categorical([CONTROL] * len(reference_log) + [STIMULATED] * len(truth_log))},
            index=[f"c{i}" for i in range(len(reference_log) + len(truth_log))],
        ),
        var=pd.DataFrame(index=var_names.astype(str)),
    )
    tmp.uns["log1p"] = {"base": None}
    sc.tl.rank_genes_groups(tmp, CONDITION_KEY, groups=[STIMULATED], reference=CONTROL, method="wilcoxon")
    table = sc.get.rank_genes_groups_df(tmp, group=STIMULATED).sort_values("scores", ascending=False)
    return table["names"].astype(str).head(n_degs).tolist()


@dataclass
class KangEvaluation:
    """Everything needed to score predictions of one split; built once per run by :meth:`build`.

    Attributes
    ----------
    truth_log, reference_log
        Log-normalised ground-truth and reference-control cells.
    deg_names, deg_idx
        Top DEGs (names and column indices), most up-regulated first.
    pca
        PCA fitted on all real cells of the file (log-normalised).
    truth_pcs
        Ground truth in the PCA coordinates.
    n_genes
        Number of genes a prediction must have.
    """

    truth_log: np.ndarray
    reference_log: np.ndarray
    deg_names: list[str]
    deg_idx: np.ndarray
    pca: PCA
    truth_pcs: np.ndarray
    n_genes: int

    @classmethod
    def build(cls, adata: ad.AnnData, split: KangSplit, *, n_pcs: int = 50, n_degs: int = 100) -> KangEvaluation:
        """Log-normalise the real sets, rank the DEGs and fit the PCA on all real cells of ``adata``."""
        truth_log = log_normalize(split.truth.X)
        reference_log = log_normalize(split.reference_control.X)
        deg_names = rank_degs(reference_log, truth_log, split.truth.var_names, n_degs)
        deg_idx = split.truth.var_names.get_indexer(deg_names)
        pca = PCA(n_components=n_pcs, random_state=0).fit(log_normalize(adata.X))
        return cls(
            truth_log=truth_log,
            reference_log=reference_log,
            deg_names=deg_names,
            deg_idx=deg_idx,
            pca=pca,
            truth_pcs=pca.transform(truth_log),
            n_genes=adata.n_vars,
        )

    def predicted_log(self, prediction: Prediction) -> np.ndarray:
        """The predicted cells in log-normalised space (sampled counts are normalised and stacked)."""
        kind = prediction.kind()
        if kind == "counts":
            out = score_as_cells(prediction.counts)
        elif kind == "log_norm":
            out = np.asarray(prediction.log_norm, dtype=np.float32)
        else:
            msg = "Kang predictions must be sampled counts or log-normalised cells, not PC coordinates"
            raise ValueError(msg)
        if out.ndim != 2 or out.shape[1] != self.n_genes:
            msg = f"predicted cells must have shape (n, {self.n_genes}), got {out.shape}"
            raise ValueError(msg)
        return out

    def score(self, prediction: Prediction) -> dict[str, float]:
        """All metrics of one prediction (see the module docstring)."""
        pred_log = self.predicted_log(prediction)
        pred_pcs = self.pca.transform(pred_log)
        return {
            "r2_all": mean_r2(pred_log, self.truth_log),
            "r2_deg": mean_r2(pred_log, self.truth_log, self.deg_idx),
            "r2_lfc_deg": lfc_r2(pred_log, self.truth_log, self.reference_log, self.deg_idx),
            "energy": energy_distance(pred_pcs, self.truth_pcs),
            "n_cells_scored": int(pred_log.shape[0]),
        }

    def truth_halves_energy(self, n_splits: int = 5, seed: int = 0) -> list[float]:
        """Energy distance between random halves of the ground truth (a noise floor for ``energy``)."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n_splits):
            perm = rng.permutation(len(self.truth_pcs))
            half = len(perm) // 2
            out.append(energy_distance(self.truth_pcs[perm[:half]], self.truth_pcs[perm[half:]]))
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------------------------------


def predict_control(split: KangSplit) -> Prediction:
    """Baseline ``control``: the real control cells of the held-out type (the sources), unchanged."""
    return Prediction(counts=[_dense(split.sources.X)], info={"note": "real source counts, one 'sample'"})


def _per_type_difference(values: np.ndarray, obs: pd.DataFrame, cell_types: list[str]) -> tuple[np.ndarray, dict]:
    """Average over cell types of (mean of stimulated rows - mean of control rows) of ``values``."""
    diffs, counts = [], {}
    for cell_type in cell_types:
        in_type = (obs[CELL_TYPE_KEY] == cell_type).to_numpy()
        stim = in_type & (obs[CONDITION_KEY] == STIMULATED).to_numpy()
        ctrl = in_type & (obs[CONDITION_KEY] == CONTROL).to_numpy()
        diffs.append(values[stim].mean(axis=0) - values[ctrl].mean(axis=0))
        counts[cell_type] = {"control": int(ctrl.sum()), "stimulated": int(stim.sum())}
    return np.mean(diffs, axis=0), counts


def predict_mean_shift(split: KangSplit) -> Prediction:
    """Baseline ``mean_shift``: control cells plus the average per-type stimulation shift, in log space.

    In log-normalised space, the shift is the mean over the other cell types of (mean stimulated - mean
    control) of that type (each type weighs the same, whatever its size). Each source cell plus the shift
    is clipped at 0 (log1p expression cannot be negative). Returned as log-normalised cells, no sampling.
    """
    train_log = log_normalize(split.train.X)
    shift, counts = _per_type_difference(train_log, split.train.obs, split.other_cell_types)
    pred = np.clip(log_normalize(split.sources.X) + shift[None, :], 0.0, None)
    return Prediction(log_norm=pred, info={"cells_per_type": counts, "shift_l2": float(np.linalg.norm(shift))})


def predict_scvi_arithmetic(split: KangSplit) -> Prediction:
    """Baseline ``scvi_arithmetic``: latent vector arithmetic with scvi-tools' SCVI, decoded to sampled counts.

    Trains ``SCVI(gene_likelihood="nb", n_latent=10)`` (default hidden size, ``max_epochs=split.max_epochs``,
    ``scvi.settings.seed = split.seed``) on the training set. The latent shift is the mean over the other
    cell types of (mean posterior-mean latent of stimulated - of control). Predicted latents are the source
    cells' posterior means plus the shift; they are decoded with ``module.generative(z, library,
    batch_index)``, where ``library`` is the source cells' observed log library size (what SCVI's inference
    passes with ``use_observed_lib_size=True``), into the NB distribution ``px``, from which
    ``split.n_samples`` count matrices are drawn.
    """
    import scvi
    import torch

    scvi.settings.seed = split.seed
    adata = split.train.copy()
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata, gene_likelihood="nb", n_latent=10)
    t0 = time.perf_counter()
    model.train(max_epochs=split.max_epochs, enable_progress_bar=False)
    train_s = time.perf_counter() - t0
    log(f"  scvi: trained {split.max_epochs} epochs in {train_s:.1f}s")

    latent = model.get_latent_representation(adata)
    shift, counts = _per_type_difference(latent, adata.obs, split.other_cell_types)
    src = adata.obs_names.get_indexer(split.sources.obs_names)
    if (src < 0).any():
        msg = "source cells must be part of the training set"
        raise ValueError(msg)

    module = model.module
    module.eval()
    source_counts = _dense(adata.X[src]).astype(np.float32)
    device = module.device
    z = torch.as_tensor(latent[src] + shift[None, :], dtype=torch.float32, device=device)
    library = torch.log(torch.as_tensor(source_counts.sum(axis=1, keepdims=True), device=device))
    batch_index = torch.as_tensor(adata.obs["_scvi_batch"].to_numpy()[src, None], dtype=torch.float32, device=device)
    torch.manual_seed(split.seed)
    with torch.no_grad():
        px = module.generative(z, library, batch_index)["px"]
        samples = [px.sample().cpu().numpy() for _ in range(split.n_samples)]
    history = model.history
    info = {
        "train_seconds": train_s,
        "epochs": split.max_epochs,
        "elbo_train_last": float(history["elbo_train"].iloc[-1, 0]) if "elbo_train" in history else None,
        "elbo_validation_last": float(history["elbo_validation"].iloc[-1, 0]) if "elbo_validation" in history else None,
        "latent_shift_l2": float(np.linalg.norm(shift)),
        "cells_per_type": counts,
        "n_samples": split.n_samples,
    }
    return Prediction(counts=samples, info=info)


#: Method registry: name -> function(split) returning a :class:`Prediction` for the source cells.
#: Register new methods with ``METHODS["name"] = function``; they run in insertion order.
METHODS: dict[str, Callable[[KangSplit], Prediction]] = {
    "control": predict_control,
    "mean_shift": predict_mean_shift,
    "scvi_arithmetic": predict_scvi_arithmetic,
}


def run_methods(
    split: KangSplit, evaluation: KangEvaluation, names: list[str], methods: dict[str, Callable] | None = None
) -> list[dict[str, Any]]:
    """Run and score the named methods; one result dict per method (metrics, wall seconds, info).

    Parameters
    ----------
    split
        The split the methods receive.
    evaluation
        Scoring context of the same split.
    names
        Registered method names, in the order to run them.
    methods
        Registry to take them from (default :data:`METHODS`).

    Returns
    -------
    list[dict]
        ``{"method", "wall_seconds", "score_seconds", <metrics>, "info"}`` per method.
    """
    registry = METHODS if methods is None else methods
    results = []
    for name in names:
        log(f"method {name}: predicting")
        t0 = time.perf_counter()
        prediction = registry[name](split)
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        scores = evaluation.score(prediction)
        score_s = time.perf_counter() - t1
        log(
            f"method {name}: {wall:.1f}s; R2 all {scores['r2_all']:.4f}, R2 DEG {scores['r2_deg']:.4f}, "
            f"R2 LFC {scores['r2_lfc_deg']:.4f}, energy {scores['energy']:.4f} (scored in {score_s:.1f}s)"
        )
        results.append(
            {
                "method": name,
                **scores,
                "wall_seconds": wall,
                "score_seconds": score_s,
                "prediction": prediction.kind(),
                "info": prediction.info,
            }
        )
    return results
