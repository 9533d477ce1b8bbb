"""Fates, transitions and growth from trajvi's couplings and flow, against moscot and Waddington-OT, in one script.

Runs in the benchmark environment with moscot (not a trajvi dependency; see ``moscot_reference.py``)::

    python benchmarks/fates.py schiebinger|worm|klein [--seed 0] [--epochs 100]

* ``schiebinger``: days 10, 10.5, 11 with moscot's WOT regression maps (``uns["wot_reference"]``: moscot's plans on
  WOT's costs, eps 0.5, lambda1 1, lambda2 10, local PCA 50). Against them: trajvi's kept couplings (its latent;
  exact and unbalanced OT), trajvi's flow, trajvi's coupler on a global 30-PC PCA (unbalanced, eps 0.5, WOT's
  space but one PCA for all days) and moscot on that PCA. Scores per pair (10->10.5, 10.5->11, 10->11 chained):
  Pearson r of the flattened plans (mass 1 each), of the cell_type transition matrices (moscot's
  ``cell_transition`` normalisation for every method) and of the descendant masses (each cell type's cells
  pushed to the target cells, every type's vector concatenated).
* ``worm``: Packer 2019 amphid neurons, conditions = embryo-time bins at their mid times, one path through all
  bins. Per progenitor cell (ADL_parent, Neuroblast_ASG_AWA at 210-270 and 270-330) the distribution over the cell
  types at 510-580 (and, as a check not looked at while choosing anything, at 580-650): share of mass on the fates
  its lineage allows (ADL_parent -> ADL; Neuroblast_ASG_AWA -> ASG, AWA, ASG_AWA) and accuracy of the most likely
  fate. Methods: trajvi coupling and flow, moscot (eps 0.05, WOT's lambdas, PCA 30; its best setting in
  ``moscot_reference.py``), and the cell types of the 10 nearest target-bin cells in that PCA.
  ``--adversarial-weight`` / ``--adversarial-target`` set the count model's adversary (written to
  ``fates_worm_adv<setting>_seed<seed>.json``); ``--skip-moscot`` leaves moscot out. Every worm run also
  records criteria for choosing those settings without the fate labels (``criterion``: a time bin held out of
  phase 2 and predicted by the flow, energy distance in a PCA of expression; a probe reading the time bin from
  the latent).
* ``klein``: Klein 2015, days 0/2/4/7, leiden clusters within each day (resolution 0.3 on the shared PCA).
  Transition matrices between consecutive days by trajvi (coupling, flow) and moscot (eps 0.05, WOT's lambdas),
  their correlation; growth: trajvi with ``ot_method="unbalanced"`` against moscot's row-mass ratio (Spearman).

Writes ``benchmarks/results/fates_<dataset>_seed<seed>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

import _common
import _moscot as M
from _common import log, write_json
from moscot_reference import WORM_ALLOWED, WORM_BIN_MID


def _r(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.ravel(x), np.ravel(y)
    return float(pearsonr(x, y)[0]) if x.std() > 0 and y.std() > 0 else float("nan")


def fit_trajvi(
    adata: ad.AnnData,
    path: list[str],
    *,
    seed: int,
    epochs: int,
    batch_key: str | None,
    model_kwargs: dict[str, Any] | None = None,
    **phase2: Any,
):
    """A trajvi model on ``adata`` (``obs['stage']`` conditions, ``obs['t']`` times) with one path.

    ``model_kwargs`` go to :class:`trajvi.TrajVI` (e.g. ``adversarial_weight``); the default is the package's.
    """
    import scvi

    import trajvi

    scvi.settings.seed = seed
    adata = adata.copy()
    trajvi.TrajVI.setup_anndata(adata, "stage", batch_key=batch_key, time_key="t")
    model = trajvi.TrajVI(adata, n_latent=10, **(model_kwargs or {}))
    start = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    model.train_trajectories(path, seed=seed, max_epochs=epochs, enable_progress_bar=False, **phase2)
    log(f"  trajvi {phase2 or 'default'}: {time.perf_counter() - start:.1f}s, penalty {model.residual_penalty_}")
    return model, adata


def _descendants(plan: np.ndarray, source_labels: np.ndarray) -> np.ndarray:
    """Each source group's cells pushed through ``plan`` (rows as conditional distributions), concatenated."""
    rows = plan.sum(axis=1, keepdims=True)
    kernel = np.divide(plan, rows, out=np.zeros_like(plan), where=rows > 0)
    out = []
    for group in sorted(set(source_labels)):
        mask = source_labels == group
        if mask.sum() >= 3:
            pushed = kernel[mask].sum(axis=0)
            out.append(pushed / max(pushed.sum(), 1e-300))
    return np.concatenate(out)


def _compare(plan: np.ndarray, ref: np.ndarray, src_labels: np.ndarray, tgt_labels: np.ndarray) -> dict[str, float]:
    groups_s, groups_t = sorted(set(src_labels)), sorted(set(tgt_labels))
    tm = M.aggregate_plan(plan, src_labels, tgt_labels, source_groups=groups_s, target_groups=groups_t).fillna(0)
    tm_ref = M.aggregate_plan(ref, src_labels, tgt_labels, source_groups=groups_s, target_groups=groups_t).fillna(0)
    return {
        "plan_r": _r(plan / plan.sum(), ref / ref.sum()),
        "transition_r": _r(tm.to_numpy(), tm_ref.to_numpy()),
        "transition_mae": float(np.abs(tm.to_numpy() - tm_ref.to_numpy()).mean()),
        "descendant_r": _r(_descendants(plan, src_labels), _descendants(ref, src_labels)),
    }


# ------------------------------------------------------------------------------------------------ schiebinger
def run_schiebinger(seed: int, epochs: int) -> dict[str, Any]:
    """Trajvi's couplings and flow against the WOT regression maps and moscot, days 10 -> 10.5 -> 11."""
    from trajvi.transport import couple_sets

    adata = ad.read_h5ad(_common.data_file("schiebinger2019_moscot_subset_counts.h5ad"))
    adata.obs["t"] = adata.obs["day"].astype(float)
    adata.obs["stage"] = adata.obs["t"].map(lambda d: f"{d:g}").astype("category")
    path = ["10", "10.5", "11"]
    refs = adata.uns["wot_reference"]
    reference = {
        ("10", "10.5"): refs["tmap_10_105"],
        ("10.5", "11"): refs["tmap_105_11"],
        ("10", "11"): refs["tmap_10_11"],
    }
    cells = {s: adata.obs_names[(adata.obs["stage"] == s).to_numpy()] for s in path}
    types = adata.obs["cell_type"].astype(str)

    plans: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    model, _ = fit_trajvi(adata, path, seed=seed, epochs=epochs, batch_key=None)
    plans["trajvi_coupling_exact"] = {k: model.get_coupling(*k).matrix.toarray() for k in reference}
    plans["trajvi_flow"] = {k: model.transport_map(*k, method="flow").matrix.toarray() for k in reference}
    model.train_trajectories(path, seed=seed, max_epochs=epochs, ot_method="unbalanced", enable_progress_bar=False)
    plans["trajvi_coupling_unbalanced"] = {k: model.get_coupling(*k).matrix.toarray() for k in reference}

    data = M.preprocess(adata, n_pcs=30, seed=seed)
    pca = pd.DataFrame(data.obsm["X_pca"], index=data.obs_names)
    plans["trajvi_coupler_on_pca"] = {}
    for s, t in reference:
        coupling = couple_sets(
            pca.loc[cells[s]].to_numpy(),
            pca.loc[cells[t]].to_numpy(),
            method="unbalanced",
            epsilon=0.5,
            reg_m=1.0,
            standardize_sets=False,
            rng=seed,
        )
        plans["trajvi_coupler_on_pca"][(s, t)] = coupling.to_dense()
    tau_a, tau_b = M.wot_taus(0.5, 1.0, 10.0)
    problem = M.solve_temporal(data, "t", obsm_key="X_pca", epsilon=0.5, tau_a=tau_a, tau_b=tau_b, seed=seed)
    plans["moscot_pca30"] = {}
    for s, t in reference:
        if (s, t) == ("10", "11"):
            first, second = plans["moscot_pca30"][("10", "10.5")], plans["moscot_pca30"][("10.5", "11")]
            inv = np.divide(1.0, second.sum(1), out=np.zeros(second.shape[0]), where=second.sum(1) > 0)
            plans["moscot_pca30"][(s, t)] = first @ (inv[:, None] * second)
        else:
            plans["moscot_pca30"][(s, t)] = M.coupling(problem, float(s), float(t))[0]

    results: dict[str, Any] = {}
    for method, by_pair in plans.items():
        results[method] = {}
        for (s, t), plan in by_pair.items():
            score = _compare(
                plan, np.asarray(reference[(s, t)]), types[cells[s]].to_numpy(), types[cells[t]].to_numpy()
            )
            results[method][f"{s}->{t}"] = score
            log(f"  {method:28s} {s}->{t}: " + ", ".join(f"{k} {v:.3f}" for k, v in score.items()))
    return {"results": results, "note": "the 10->11 reference is a direct map; the methods chain 10->10.5->11"}


# ------------------------------------------------------------------------------------------------------- worm
def _fate_scores(fates: pd.DataFrame, kinds: np.ndarray) -> dict[str, Any]:
    allowed = np.array(
        [fates.iloc[i][[f for f in WORM_ALLOWED[k] if f in fates.columns]].sum() for i, k in enumerate(kinds)]
    )
    best = fates.columns[fates.to_numpy().argmax(axis=1)]
    correct = np.array([b in WORM_ALLOWED[k] for b, k in zip(best, kinds)])
    out: dict[str, Any] = {
        "n_cells": len(kinds),
        "allowed_share": float(allowed.mean()),
        "accuracy": float(correct.mean()),
    }
    for kind in WORM_ALLOWED:
        mask = kinds == kind
        out[kind] = {"allowed_share": float(allowed[mask].mean()), "accuracy": float(correct[mask].mean())}
    return out


WORM_HELD_BINS = ("270-330", "330-390", "390-450", "450-510", "510-580", "580-650")


def _worm_criterion(model: Any, registered: ad.AnnData, adata: ad.AnnData, seed: int, epochs: int) -> dict[str, Any]:
    """Fate-label-free criteria for the count model's settings, computed inside the training data.

    * Leave one bin out of phase 2, for every bin of ``WORM_HELD_BINS`` in turn: the path without it, its
      previous bin pushed by the flow to the held-out time (3 NB samples per cell), energy distance to the
      held-out bin's cells in a 30-PC PCA of log-normalised expression fitted on all cells (the previous and
      next bins unchanged as references). Phase 1 has seen the bin's counts (its condition too); only the flow
      has not. Summary: the mean over the bins of the flow's distance divided by the previous bin's.
    * Time probe: multinomial logistic regression reading the time bin from the latent means, accuracy on a
      held-out quarter of the cells (how much of the time axis the latent keeps).

    Call it last: it retrains phase 2.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from _metrics import energy_distance, log_normalize

    bins = adata.obs["embryo_time_bin"].astype(str).to_numpy()
    order = list(WORM_BIN_MID)
    pca = PCA(n_components=30, random_state=0).fit(log_normalize(adata.X))

    def embed(x: Any) -> np.ndarray:
        return pca.transform(log_normalize(x))

    per_bin: dict[str, dict[str, float]] = {}
    for held in WORM_HELD_BINS:
        k = order.index(held)
        previous, following = order[k - 1], order[k + 1]
        truth = embed(adata.X[bins == held])
        model.train_trajectories(
            [b for b in order if b != held], seed=seed, max_epochs=epochs, enable_progress_bar=False
        )
        pred = model.predict(
            registered,
            source=previous,
            t_span=(WORM_BIN_MID[previous], WORM_BIN_MID[held]),
            indices=np.flatnonzero(bins == previous),
            n_samples=3,
        )
        per_bin[held] = {
            "trajvi_flow": energy_distance(embed(pred.X), truth),
            "previous_bin": energy_distance(embed(adata.X[bins == previous]), truth),
            "next_bin": energy_distance(embed(adata.X[bins == following]), truth),
        }
        per_bin[held]["ratio_to_previous"] = per_bin[held]["trajvi_flow"] / per_bin[held]["previous_bin"]
        log(f"  held out {held}: " + ", ".join(f"{k} {v:.3f}" for k, v in per_bin[held].items()))
    out: dict[str, Any] = {
        "energy_distance_pca30": per_bin,
        "mean_ratio_to_previous": float(np.mean([v["ratio_to_previous"] for v in per_bin.values()])),
    }
    latent = model.get_latent_representation(registered)
    x_tr, x_te, y_tr, y_te = train_test_split(latent, bins, test_size=0.25, random_state=seed, stratify=bins)
    probe = LogisticRegression(max_iter=2000).fit(x_tr, y_tr)
    out["time_probe_accuracy"] = float(probe.score(x_te, y_te))
    out["time_probe_chance"] = float(pd.Series(y_te).value_counts(normalize=True).max())
    history = getattr(model, "history_", None) or getattr(model, "history", None) or {}
    out["phase1_history_last"] = {  # the discriminator's accuracy, the fooling term, the reconstruction loss
        key: float(np.asarray(frame).ravel()[-1])
        for key, frame in history.items()
        if any(word in key for word in ("accuracy", "fool", "reconstruction"))
    }
    log(f"  criterion: {out}")
    return out


def run_worm(
    seed: int, epochs: int, *, model_kwargs: dict[str, Any] | None = None, skip_moscot: bool = False
) -> dict[str, Any]:
    """Progenitor fates over the embryo-time bins: trajvi coupling and flow, moscot, nearest neighbours."""
    import trajvi

    adata = ad.read_h5ad(_common.data_file("packer2019_worm_amphid_counts.h5ad"))
    bins = adata.obs["embryo_time_bin"].astype(str)
    adata.obs["t"] = bins.map(WORM_BIN_MID).astype(float).to_numpy()
    adata.obs["stage"] = pd.Categorical(bins, categories=list(WORM_BIN_MID))
    path = list(WORM_BIN_MID)
    model, registered = fit_trajvi(adata, path, seed=seed, epochs=epochs, batch_key="batch", model_kwargs=model_kwargs)
    data = M.preprocess(adata, n_pcs=30, seed=seed)
    if not skip_moscot:
        tau_a, tau_b = M.wot_taus(0.05, 1.0, 50.0)
        problem = M.solve_temporal(data, "t", obsm_key="X_pca", epsilon=0.05, tau_a=tau_a, tau_b=tau_b, seed=seed)
    from sklearn.neighbors import NearestNeighbors

    targets, sources = ("510-580", "580-650"), ("210-270", "270-330")
    computed: dict[tuple[str, str, str], pd.DataFrame] = {}

    def trajvi_fates(label: str) -> None:
        for target, source in itertools.product(targets, sources):
            for method in ("coupling", "flow"):
                computed[(f"trajvi_{label}{method}", target, source)] = trajvi.tl.fate_probabilities(
                    registered, model, source, target=target, groupby="cell_type", method=method
                )

    trajvi_fates("")
    # the same count model, phase 2 with entropic couplings (smoother per-cell rows than exact OT)
    model.train_trajectories(path, seed=seed, max_epochs=epochs, ot_method="sinkhorn", enable_progress_bar=False)
    trajvi_fates("sinkhorn_")
    labels = sorted({key[0] for key in computed})

    results: dict[str, Any] = {}
    for target in targets:
        target_cells = adata.obs_names[(bins == target).to_numpy()]
        knn = NearestNeighbors(n_neighbors=10).fit(data[target_cells].obsm["X_pca"])
        reference = ("knn",) if skip_moscot else ("moscot", "knn")
        by_method: dict[str, list[pd.DataFrame]] = {k: [] for k in (*labels, *reference)}
        kinds_all = []
        for source in sources:
            prog = adata.obs_names[
                (bins == source).to_numpy() & adata.obs["cell_type"].isin(list(WORM_ALLOWED)).to_numpy()
            ]
            kinds_all.append(adata.obs.loc[prog, "cell_type"].astype(str).to_numpy())
            for label in labels:
                by_method[label].append(computed[(label, target, source)].loc[prog])
            if not skip_moscot:
                by_method["moscot"].append(
                    M.cell_fates(problem, WORM_BIN_MID[source], WORM_BIN_MID[target], "cell_type", prog)
                )
            idx = knn.kneighbors(data[prog].obsm["X_pca"], return_distance=False)
            labels_knn = adata.obs.loc[target_cells, "cell_type"].astype(str).to_numpy()[idx]
            table = pd.DataFrame([pd.Series(row).value_counts(normalize=True) for row in labels_knn], index=prog)
            by_method["knn"].append(table.fillna(0))
        kinds = np.concatenate(kinds_all)
        results[target] = {}
        for method, parts in by_method.items():
            fates = pd.concat(parts).fillna(0.0)
            score = _fate_scores(fates, kinds)
            results[target][method] = score
            log(
                f"  to {target} {method:26s}: allowed share {score['allowed_share']:.3f}, "
                f"accuracy {score['accuracy']:.3f}"
                f" (ADL_parent {score['ADL_parent']['allowed_share']:.3f}/{score['ADL_parent']['accuracy']:.3f},"
                f" Neuroblast {score['Neuroblast_ASG_AWA']['allowed_share']:.3f}/"
                f"{score['Neuroblast_ASG_AWA']['accuracy']:.3f})"
            )
    penalty = model.residual_penalty_
    criterion = _worm_criterion(model, registered, adata, seed, epochs)
    return {
        "results": results,
        "residual_penalty": penalty,
        "allowed": WORM_ALLOWED,
        "model_kwargs": model_kwargs or {},
        "criterion": criterion,
    }


# ------------------------------------------------------------------------------------------------------ klein
def run_klein(seed: int, epochs: int) -> dict[str, Any]:
    """Transitions between leiden clusters of consecutive days and growth: trajvi against moscot."""
    import scanpy as sc

    import trajvi

    adata = ad.read_h5ad(_common.data_file("klein2015_mesc_lif_counts.h5ad"))
    adata.obs["t"] = adata.obs["day"].astype(float)
    adata.obs["stage"] = adata.obs["t"].map(lambda d: f"{d:g}").astype("category")
    path = ["0", "2", "4", "7"]
    data = M.preprocess(adata, n_pcs=30, seed=seed)
    clusters = pd.Series("", index=adata.obs_names, dtype=object)
    for day in path:
        part = data[(data.obs["stage"] == day).to_numpy()].copy()
        sc.pp.neighbors(part, n_neighbors=15, use_rep="X_pca", random_state=seed)
        sc.tl.leiden(part, resolution=0.3, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
        clusters[part.obs_names] = [f"d{day}_{c}" for c in part.obs["leiden"]]
    adata.obs["cluster"] = clusters.to_numpy()
    data.obs["cluster"] = clusters.to_numpy()
    log("clusters: " + str(pd.Series(clusters).value_counts().sort_index().to_dict()))
    model, registered = fit_trajvi(adata, path, seed=seed, epochs=epochs, batch_key=None)
    tau_a, tau_b = M.wot_taus(0.05, 1.0, 50.0)
    problem = M.solve_temporal(data, "t", obsm_key="X_pca", epsilon=0.05, tau_a=tau_a, tau_b=tau_b, seed=seed)
    results: dict[str, Any] = {"transitions": {}, "growth": {}}
    for s, t in itertools.pairwise(path):
        ref = M.transition_matrix(problem, float(s), float(t), "cluster").fillna(0)
        row: dict[str, Any] = {"moscot": ref.round(4).to_dict()}
        for method in ("coupling", "flow"):
            tm = trajvi.tl.transition_matrix(registered, model, s, target=t, groupby="cluster", method=method)
            tm = tm.reindex(index=ref.index, columns=ref.columns).fillna(0)
            row[f"trajvi_{method}"] = {
                "r": _r(tm.to_numpy(), ref.to_numpy()),
                "mae": float(np.abs(tm - ref).to_numpy().mean()),
            }
            score = row[f"trajvi_{method}"]
            log(f"  {s}->{t} trajvi {method}: r {score['r']:.3f}, mae {score['mae']:.3f}")
        # trajvi's coupler in moscot's space (the PCA, not standardised): the solver against the space
        on_pca = _coupler_on_pca(data, s, t, seed)
        src_labels = data.obs.loc[on_pca.source_cells, "cluster"].to_numpy()
        tgt_labels = data.obs.loc[on_pca.target_cells, "cluster"].to_numpy()
        tm = M.aggregate_plan(on_pca.matrix.toarray(), src_labels, tgt_labels).reindex(
            index=ref.index, columns=ref.columns
        )
        growth = pd.Series(on_pca.growth(), index=on_pca.source_cells)
        theirs = M.growth_rates(problem, float(s), float(t))["mass_ratio"].reindex(growth.index)
        row["trajvi_coupler_on_pca"] = {
            "r": _r(tm.fillna(0).to_numpy(), ref.to_numpy()),
            "mae": float(np.abs(tm.fillna(0) - ref).to_numpy().mean()),
            "growth_spearman": float(spearmanr(growth.to_numpy(), theirs.to_numpy())[0]),
        }
        score = row["trajvi_coupler_on_pca"]
        log(
            f"  {s}->{t} trajvi coupler on PCA: r {score['r']:.3f}, mae {score['mae']:.3f}, "
            f"growth {score['growth_spearman']:.3f}"
        )
        results["transitions"][f"{s}->{t}"] = row
    model.train_trajectories(path, seed=seed, max_epochs=epochs, ot_method="unbalanced", enable_progress_bar=False)
    for s, t in itertools.pairwise(path):
        trajvi.tl.growth_rates(registered, model, s, target=t)
        ours = registered.obs["trajvi_growth"].dropna()
        theirs = M.growth_rates(problem, float(s), float(t))["mass_ratio"].reindex(ours.index)
        rho = float(spearmanr(ours.to_numpy(), theirs.to_numpy())[0])
        results["growth"][f"{s}->{t}"] = {
            "spearman": rho,
            "trajvi_q05_q95": [float(ours.quantile(0.05)), float(ours.quantile(0.95))],
            "moscot_q05_q95": [float(theirs.quantile(0.05)), float(theirs.quantile(0.95))],
        }
        log(f"  growth {s}->{t}: Spearman {rho:.3f}")
    return results


def _coupler_on_pca(data: ad.AnnData, source: str, target: str, seed: int):
    """The unbalanced coupler of trajvi (eps 0.05, reg_m 1) on the PCA of two days, as a TransportMap."""
    from trajvi.trajectory import map_from_coupling
    from trajvi.transport import couple_sets

    src = data.obs_names[(data.obs["stage"] == source).to_numpy()]
    tgt = data.obs_names[(data.obs["stage"] == target).to_numpy()]
    coupling = couple_sets(
        data[src].obsm["X_pca"],
        data[tgt].obsm["X_pca"],
        method="unbalanced",
        epsilon=0.05,
        reg_m=1.0,
        standardize_sets=False,
        rng=seed,
    )
    return map_from_coupling(coupling, source, target, src, tgt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=("schiebinger", "worm", "klein"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="phase 1 and 2 epochs (default 300/100/100)")
    parser.add_argument("--adversarial-weight", type=float, default=None, help="worm: TrajVI adversarial_weight")
    parser.add_argument(
        "--adversarial-target", choices=("condition", "batch"), default=None, help="worm: TrajVI adversarial_target"
    )
    parser.add_argument("--skip-moscot", action="store_true", help="worm: leave moscot out (its numbers are stored)")
    args = parser.parse_args()
    model_kwargs: dict[str, Any] = {}
    suffix = ""
    if args.adversarial_weight is not None:
        model_kwargs["adversarial_weight"] = args.adversarial_weight
        suffix += f"_adv{args.adversarial_weight:g}"
    if args.adversarial_target is not None:
        model_kwargs["adversarial_target"] = args.adversarial_target
        suffix += f"_adv{args.adversarial_target}"
    if (model_kwargs or args.skip_moscot) and args.dataset != "worm":
        parser.error("--adversarial-weight, --adversarial-target and --skip-moscot apply to the worm data set only")
    _common.set_threads(1)
    _common.quiet_lightning()
    epochs = args.epochs or {"schiebinger": 300, "worm": 100, "klein": 100}[args.dataset]
    run = {"schiebinger": run_schiebinger, "worm": run_worm, "klein": run_klein}[args.dataset]
    start = time.perf_counter()
    if args.dataset == "worm":
        payload = run_worm(args.seed, epochs, model_kwargs=model_kwargs, skip_moscot=args.skip_moscot)
    else:
        payload = run(args.seed, epochs)
    payload.update(
        dataset=args.dataset,
        seed=args.seed,
        epochs=epochs,
        seconds=time.perf_counter() - start,
        versions=_common.versions(),
    )
    out = Path(__file__).resolve().parent / "results" / f"fates_{args.dataset}{suffix}_seed{args.seed}.json"
    write_json(out, payload)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
