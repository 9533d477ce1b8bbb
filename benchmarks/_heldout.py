"""Held-out (group x perturbation) prediction on panels of perturbations: split, scoring, baselines, methods.

Protocol. One (group, perturbation) cell of a panel is held out: its perturbed cells are removed from training
(the ground truth); every other cell is kept, including the same perturbation in other groups and other
perturbations in the same group. Methods predict the held-out cells from the group's control cells (the
sources). Groups are cell types (Haber 2017) or cell lines (PerturBench's K562 and glioblastoma lines).

Scores (:class:`Evaluation`), on log1p(normalize_total 1e4) expression of the predicted cells (sampled counts
are normalised like real cells):

- ``r2_all`` / ``r2_deg``: squared Pearson of per-gene means, all genes / top-100 DEGs;
- ``pcc_delta_deg`` / ``pcc_delta_all``: Pearson of (prediction mean - control mean) against (truth mean - control
  mean), over the top-100 DEGs / all genes (the controls are the sources);
- ``energy``: unbiased energy distance in 50 principal components fit on every real cell of the file;
- ``mean_distance``: Euclidean distance between the prediction's and the truth's mean in those components, and
  ``energy_at_true_mean``: the energy distance once the prediction is moved to the truth's mean there (what of
  ``energy`` is the cells' spread and shape rather than their mean; negative values are the unbiased estimator's
  noise around zero);
- ``deg_overlap``: fraction of the true top-100 DEGs among the predicted top-100.
The DEGs are the 100 genes with the largest absolute Wilcoxon scores of the truth against the sources
(``scanpy.tl.rank_genes_groups``); the predicted DEGs are the 100 genes whose predicted mean moves most from the
sources' mean (a Wilcoxon test of a deterministic prediction, such as a mean shift, ranks every shifted gene
alike). The noise ceiling scores one random half of the truth as the prediction of the other half.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import PCA

from _common import Prediction, log
from _metrics import energy_distance, log_normalize, mean_r2, score_as_cells
from trajvi import metrics

if TYPE_CHECKING:
    from collections.abc import Callable


def _dense(x: Any) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@dataclass
class Panel:
    """How a panel's AnnData is read: its condition and group columns, the control and the combination delimiter."""

    name: str
    condition_key: str
    group_key: str
    control: str
    delimiter: str = "+"
    batch_key: str | None = None


@dataclass
class HeldOutSplit:
    """One held-out (group, perturbation): what the methods see, and the truth for scoring.

    Attributes
    ----------
    train
        Every cell but the held-out ones (raw counts).
    sources
        The group's control cells (a subset of ``train``); predictions are their perturbed counterparts.
    truth
        For scoring only: the held-out cells.
    group, perturbation
        The held-out pair.
    panel
        Column names and the control.
    seed, n_samples, max_epochs
        For the methods.
    """

    train: ad.AnnData
    sources: ad.AnnData
    truth: ad.AnnData
    group: str
    perturbation: str
    panel: Panel
    seed: int = 0
    n_samples: int = 3
    max_epochs: int = 100
    extra: dict[str, Any] = field(default_factory=dict)

    def cells(self, group: str | None, condition: str) -> np.ndarray:
        """Boolean mask of the training cells of a (group, condition); ``group=None``: every group."""
        obs = self.train.obs
        mask = (obs[self.panel.condition_key] == condition).to_numpy()
        if group is not None:
            mask &= (obs[self.panel.group_key] == group).to_numpy()
        return mask

    def components(self) -> list[str]:
        """The held-out perturbation's components (``"A+B"`` -> ``["A", "B"]``)."""
        return self.perturbation.split(self.panel.delimiter)

    def other_groups(self, condition: str) -> list[str]:
        """Groups other than the held-out one with cells of both the control and ``condition`` in training."""
        out = []
        for group in sorted(self.train.obs[self.panel.group_key].astype(str).unique()):
            if (
                group != self.group
                and self.cells(group, condition).any()
                and self.cells(group, self.panel.control).any()
            ):
                out.append(group)
        return out


def make_split(
    adata: ad.AnnData, panel: Panel, group: str, perturbation: str, *, seed: int, n_samples: int, max_epochs: int
) -> HeldOutSplit:
    """The split of one held-out (group, perturbation); ``adata`` is not modified."""
    obs = adata.obs
    in_group = (obs[panel.group_key] == group).to_numpy()
    held = in_group & (obs[panel.condition_key] == perturbation).to_numpy()
    sources = in_group & (obs[panel.condition_key] == panel.control).to_numpy()
    if held.sum() < 4 or sources.sum() < 4:
        msg = f"({group}, {perturbation}) has {held.sum()} cells and {sources.sum()} controls; too few to score."
        raise SystemExit(msg)
    return HeldOutSplit(
        train=adata[~held].copy(),
        sources=adata[sources].copy(),
        truth=adata[held].copy(),
        group=group,
        perturbation=perturbation,
        panel=panel,
        seed=seed,
        n_samples=n_samples,
        max_epochs=max_epochs,
    )


def top_degs(control_log: np.ndarray, other_log: np.ndarray, n: int = 100) -> np.ndarray:
    """Column indices of the ``n`` genes with the largest absolute Wilcoxon scores of ``other`` against ``control``."""
    x = np.vstack([control_log, other_log])
    labels = ["control"] * len(control_log) + ["other"] * len(other_log)
    tmp = ad.AnnData(X=x, obs=pd.DataFrame({"g": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(x))]))
    tmp.uns["log1p"] = {"base": None}
    sc.tl.rank_genes_groups(tmp, "g", groups=["other"], reference="control", method="wilcoxon", n_genes=x.shape[1])
    names = np.asarray(tmp.uns["rank_genes_groups"]["names"]["other"]).astype(int)
    scores = np.asarray(tmp.uns["rank_genes_groups"]["scores"]["other"], dtype=float)
    order = np.argsort(-np.abs(np.nan_to_num(scores)), kind="stable")
    return names[order[:n]]


@dataclass
class Evaluation:
    """Scoring context of one split (built once per run)."""

    truth_log: np.ndarray
    control_log: np.ndarray
    deg_idx: np.ndarray
    pca: PCA
    truth_pcs: np.ndarray
    n_degs: int = 100

    @classmethod
    def build(cls, adata: ad.AnnData, split: HeldOutSplit, *, n_pcs: int = 50, n_degs: int = 100) -> Evaluation:
        """Log-normalise the real sets, rank the DEGs, fit the PCA on all real cells."""
        truth_log = log_normalize(split.truth.X)
        control_log = log_normalize(split.sources.X)
        deg_idx = top_degs(control_log, truth_log, n_degs)
        all_log = log_normalize(adata.X)
        pca = PCA(n_components=min(n_pcs, *all_log.shape), random_state=0).fit(all_log)
        return cls(truth_log, control_log, deg_idx, pca, pca.transform(truth_log), n_degs)

    def _scores(self, pred_log: np.ndarray, truth_log: np.ndarray, truth_pcs: np.ndarray, deg_idx: np.ndarray) -> dict:
        pred_pcs = self.pca.transform(pred_log)
        return {
            "r2_all": mean_r2(pred_log, truth_log),
            "r2_deg": mean_r2(pred_log, truth_log, deg_idx),
            "pcc_delta_deg": metrics.pcc_delta(pred_log, truth_log, self.control_log, deg_idx),
            "pcc_delta_all": metrics.pcc_delta(pred_log, truth_log, self.control_log),
            "energy": energy_distance(pred_pcs, truth_pcs),
            "mean_distance": float(np.linalg.norm(pred_pcs.mean(axis=0) - truth_pcs.mean(axis=0))),
            "energy_at_true_mean": energy_distance(
                pred_pcs - pred_pcs.mean(axis=0) + truth_pcs.mean(axis=0), truth_pcs
            ),
            "deg_overlap": metrics.deg_overlap(pred_log, self.control_log, deg_idx),
        }

    def score(self, prediction: Prediction) -> dict[str, float]:
        """Every metric of one prediction."""
        if prediction.kind() == "counts":
            pred_log = score_as_cells(prediction.counts)
        else:
            pred_log = np.asarray(prediction.log_norm, dtype=np.float32)
        out = self._scores(pred_log, self.truth_log, self.truth_pcs, self.deg_idx)
        out["n_cells_scored"] = int(pred_log.shape[0])
        return out

    def ceiling(self, n_splits: int = 5, seed: int = 0) -> dict[str, float]:
        """The metrics of one random half of the truth predicting the other (mean over ``n_splits`` halvings)."""
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(n_splits):
            perm = rng.permutation(len(self.truth_log))
            a, b = perm[: len(perm) // 2], perm[len(perm) // 2 :]
            degs = top_degs(self.control_log, self.truth_log[b], self.n_degs)
            rows.append(self._scores(self.truth_log[a], self.truth_log[b], self.truth_pcs[b], degs))
        return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}


# -- baselines ------------------------------------------------------------------------------------------------
def predict_control(split: HeldOutSplit) -> Prediction:
    """``control``: the group's control cells, unchanged."""
    return Prediction(counts=[_dense(split.sources.X)], info={})


def _log_shift(split: HeldOutSplit, train_log: np.ndarray, group: str | None, condition: str) -> np.ndarray:
    ctrl = split.cells(group, split.panel.control)
    return train_log[split.cells(group, condition)].mean(axis=0) - train_log[ctrl].mean(axis=0)


def predict_mean_shift(split: HeldOutSplit) -> Prediction:
    """``mean_shift``: controls plus the perturbation's mean log shift, averaged over the other groups that have it."""
    groups = split.other_groups(split.perturbation)
    if not groups:
        msg = f"no other group has {split.perturbation!r}: mean_shift cannot be computed"
        raise RuntimeError(msg)
    train_log = log_normalize(split.train.X)
    shift = np.mean([_log_shift(split, train_log, g, split.perturbation) for g in groups], axis=0)
    pred = np.clip(log_normalize(split.sources.X) + shift, 0.0, None)
    return Prediction(log_norm=pred, info={"groups": groups})


def predict_additive(split: HeldOutSplit) -> Prediction:
    """``additive``: controls plus the sum of the components' mean log shifts in the held-out group."""
    parts = split.components()
    if len(parts) < 2:
        msg = f"{split.perturbation!r} is not a combination: additive applies to combinations only"
        raise RuntimeError(msg)
    train_log = log_normalize(split.train.X)
    shift = sum(_log_shift(split, train_log, split.group, p) for p in parts)
    pred = np.clip(log_normalize(split.sources.X) + shift, 0.0, None)
    return Prediction(log_norm=pred, info={"components": parts})


def predict_scvi_arithmetic(split: HeldOutSplit) -> Prediction:
    """``scvi_arithmetic``: SCVI latent shift of the perturbation, decoded to sampled counts.

    The shift is the mean over the other groups that have the perturbation; for a combination, the sum of its
    components' shifts in the held-out group.
    """
    import scvi
    import torch

    scvi.settings.seed = split.seed
    adata = split.train.copy()
    scvi.model.SCVI.setup_anndata(adata, batch_key=split.panel.batch_key)
    model = scvi.model.SCVI(adata, gene_likelihood="nb", n_latent=10)
    model.train(max_epochs=split.max_epochs, enable_progress_bar=False)
    latent = model.get_latent_representation(adata)

    def shift(group: str, condition: str) -> np.ndarray:
        ctrl = split.cells(group, split.panel.control)
        return latent[split.cells(group, condition)].mean(axis=0) - latent[ctrl].mean(axis=0)

    parts = split.components()
    if len(parts) > 1:
        delta = sum(shift(split.group, p) for p in parts)
    else:
        groups = split.other_groups(split.perturbation)
        if not groups:
            msg = f"no other group has {split.perturbation!r}: scvi_arithmetic cannot be computed"
            raise RuntimeError(msg)
        delta = np.mean([shift(g, split.perturbation) for g in groups], axis=0)
    src = adata.obs_names.get_indexer(split.sources.obs_names)
    module = model.module
    module.eval()
    counts = _dense(adata.X[src]).astype(np.float32)
    device = module.device
    z = torch.as_tensor(latent[src] + delta, dtype=torch.float32, device=device)
    library = torch.log(torch.as_tensor(np.maximum(counts.sum(axis=1, keepdims=True), 1.0), device=device))
    batch = torch.as_tensor(adata.obs["_scvi_batch"].to_numpy()[src, None], dtype=torch.float32, device=device)
    torch.manual_seed(split.seed)
    with torch.no_grad():
        px = module.generative(z, library, batch)["px"]
        samples = [px.sample().cpu().numpy() for _ in range(split.n_samples)]
    return Prediction(counts=samples, info={"latent_shift_l2": float(np.linalg.norm(delta))})


# -- trajvi ----------------------------------------------------------------------------------------------------
_PHASE1: dict[int, Any] = {}


def _trajvi_phase1(split: HeldOutSplit) -> Any:
    import scvi

    import trajvi

    cached = _PHASE1.get(id(split))
    if cached is not None:
        return cached
    scvi.settings.seed = split.seed
    adata = split.train.copy()
    trajvi.TrajVI.setup_anndata(adata, split.panel.condition_key, batch_key=split.panel.batch_key)
    model = trajvi.TrajVI(adata, n_latent=10)
    t0 = time.perf_counter()
    model.train(max_epochs=split.max_epochs, enable_progress_bar=False)
    log(f"  trajvi phase 1: {time.perf_counter() - t0:.1f}s")
    _PHASE1[id(split)] = model
    return model


def train_field(split: HeldOutSplit, model: Any, paths: list[list[str]]) -> float:
    """Phase 2 of the benchmark's trajvi on ``paths`` (coupled within the groups); returns its seconds."""
    import scvi

    scvi.settings.seed = split.seed
    t0 = time.perf_counter()
    model.train_trajectories(
        paths,
        couple_within=split.panel.group_key,
        combination_delimiter=split.panel.delimiter,
        max_epochs=split.max_epochs,
        seed=split.seed,
        enable_progress_bar=False,
    )
    return time.perf_counter() - t0


def _trajvi_predict(split: HeldOutSplit, model: Any, paths: list[list[str]]) -> Prediction:
    seconds = train_field(split, model, paths)
    idx = model.adata.obs_names.get_indexer(split.sources.obs_names)
    pred = model.predict(
        source=split.panel.control, target=split.perturbation, indices=idx, n_samples=split.n_samples, n_steps=50
    )
    sample = pred.obs["sample"].to_numpy()
    x = pred.X.toarray()
    info = {
        "paths": len(paths),
        "phase2_seconds": seconds,
        "residual_penalty_chosen": model.residual_penalty_,
        "validation_means": {k: v["mean"] for k, v in (model.trajectory_validation_ or {}).items()},
    }
    # the same fitted field, the source cells' measured expression moved instead of sampled (no refit)
    moved = model.predict(
        source=split.panel.control, target=split.perturbation, indices=idx, n_steps=50, mode="transfer"
    )
    split.extra[f"transfer:{len(paths)}"] = Prediction(counts=[moved.X.toarray()], info={**info, "mode": "transfer"})
    split.extra[f"model:{len(paths)}"] = model
    return Prediction(counts=[x[sample == s] for s in range(split.n_samples)], info=info)


def predict_trajvi(split: HeldOutSplit) -> Prediction:
    """``trajvi``: one model, one field over every perturbation of the training set (``control -> X`` each)."""
    model = _trajvi_phase1(split)
    control = split.panel.control
    conditions = sorted(set(split.train.obs[split.panel.condition_key].astype(str)) - {control})
    return _trajvi_predict(split, model, [[control, c] for c in conditions])


def predict_trajvi_one_path(split: HeldOutSplit) -> Prediction:
    """``trajvi_one_path``: the same phase 1, phase 2 on the held-out perturbation's path alone (singles only)."""
    if len(split.components()) > 1:
        msg = "a combination never seen has no path of its own: trajvi_one_path applies to single perturbations"
        raise RuntimeError(msg)
    model = _trajvi_phase1(split)
    return _trajvi_predict(split, model, [[split.panel.control, split.perturbation]])


def predict_trajvi_transfer(split: HeldOutSplit) -> Prediction:
    """``trajvi_transfer``: the ``trajvi`` field, each control cell's measured expression moved along its path.

    ``predict(mode="transfer")`` on the model ``trajvi`` fitted (fitted here when ``trajvi`` did not run first).
    """
    control = split.panel.control
    conditions = sorted(set(split.train.obs[split.panel.condition_key].astype(str)) - {control})
    key = f"transfer:{len(conditions)}"
    if key not in split.extra:
        predict_trajvi(split)
    return split.extra[key]


def _calibrated(split: HeldOutSplit, mode: str, *, rule: str | None = None) -> Prediction:
    """``predict(calibrate=True)`` on the model ``trajvi`` fitted: the prediction plus the field's mean miss.

    The miss is measured on the trained (group, perturbation) pairs the prediction is built from (the other groups
    for a held-out single perturbation, the held-out group's components for a combination); see
    :mod:`trajvi.model._calibration`. ``rule`` (an ablation, not a trajvi option) forces one shrinkage rule of
    ``SHRINKAGE_RULES`` (``"none"``, ``"per_gene"``, ``"whole"``) instead of trajvi's split-half choice.
    """
    from trajvi.model import _calibration

    control = split.panel.control
    conditions = sorted(set(split.train.obs[split.panel.condition_key].astype(str)) - {control})
    key = f"model:{len(conditions)}"
    if key not in split.extra:
        predict_trajvi(split)
    model = split.extra[key]
    idx = model.adata.obs_names.get_indexer(split.sources.obs_names)
    n = 1 if mode == "transfer" else split.n_samples
    rules = _calibration.SHRINKAGE_RULES
    _calibration.SHRINKAGE_RULES = rules if rule is None else {rule: rules[rule]}
    try:
        pred = model.predict(
            source=control, target=split.perturbation, indices=idx, n_steps=50, mode=mode, n_samples=n, calibrate=True
        )
    finally:
        _calibration.SHRINKAGE_RULES = rules
    sample = pred.obs["sample"].to_numpy()
    x = pred.X.toarray()
    params = pred.uns["trajvi_predict"]["params"]
    info = {"mode": mode, "calibrated_on": list(params["calibrated_on"]), "shrinkage": params["calibration_shrinkage"]}
    return Prediction(counts=[x[sample == s] for s in range(n)], info=info)


METHODS: dict[str, Callable[[HeldOutSplit], Prediction]] = {
    "trajvi_calibrated": lambda split: _calibrated(split, "sample"),
    "trajvi_transfer_calibrated": lambda split: _calibrated(split, "transfer"),
    "trajvi_transfer_calibrated_unshrunk": lambda split: _calibrated(split, "transfer", rule="none"),
    "trajvi_transfer_calibrated_gene1": lambda split: _calibrated(split, "transfer", rule="per_gene"),
    "trajvi_transfer_calibrated_whole": lambda split: _calibrated(split, "transfer", rule="whole"),
    "control": predict_control,
    "mean_shift": predict_mean_shift,
    "additive": predict_additive,
    "scvi_arithmetic": predict_scvi_arithmetic,
    "trajvi": predict_trajvi,
    "trajvi_transfer": predict_trajvi_transfer,
    "trajvi_one_path": predict_trajvi_one_path,
}
