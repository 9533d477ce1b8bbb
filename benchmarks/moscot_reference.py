"""moscot's temporal OT on the real time courses, as the reference the trajvi fate benchmarks compare against.

Runs only in the separate benchmark environment with moscot (not a trajvi dependency)::

    python3.11 -m venv /work/bench_moscot && . /work/bench_moscot/bin/activate
    pip install torch==2.13.0 && pip install -e . && pip install -c /work/bench_moscot/constraints.txt moscot
    python benchmarks/moscot_reference.py --dataset schiebinger|worm|klein

Datasets (``../shared/data``, raw counts; see each file's ``.md``):

* ``schiebinger``: days 10, 10.5, 11 of Schiebinger 2019 with moscot's WOT regression fixture
  (``uns["wot_reference"]``). moscot is solved with the fixture's settings (per-pair PCA of 50 components on
  ``log1p(normalize_total(1e4))``, epsilon 0.5, WOT's lambda1 1 / lambda2 10 as ``tau_a``/``tau_b``, mean-scaled
  cost) and, second, with the helper's global 30-component PCA; reported: Pearson r of the flattened plans and of
  the cell_type transition matrices (both aggregated with moscot's ``cell_transition`` normalisation).
* ``worm``: Packer 2019 amphid neurons; time = midpoint of ``embryo_time_bin``. Transition by ``cell_type`` from
  210-270 to 510-580 (the consecutive maps chained), and per progenitor cell (ADL_parent, Neuroblast_ASG_AWA at
  210-270 and 270-330) the distribution over the cell types at 510-580: share of mass on the allowed fates
  (ADL_parent -> ADL; Neuroblast_ASG_AWA -> ASG, AWA or ASG_AWA) and accuracy of the most likely fate.
* ``klein``: Klein 2015 mESC after LIF withdrawal, days 0/2/4/7; leiden clusters (resolution 0.5) on the PCA;
  transition matrices between consecutive days and posterior growth rates (unbalanced, WOT's defaults).

Writes ``benchmarks/results/moscot_<dataset>.json`` (numbers, settings, versions, timings).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

import _common
import _moscot as M

logger = logging.getLogger("trajvi.benchmarks")

RESULTS = Path(__file__).resolve().parent / "results"

WORM_BIN_MID = {
    "210-270": 240.0,
    "270-330": 300.0,
    "330-390": 360.0,
    "390-450": 420.0,
    "450-510": 480.0,
    "510-580": 545.0,
    "580-650": 615.0,
    "> 650": 700.0,
}
WORM_ALLOWED = {"ADL_parent": ["ADL"], "Neuroblast_ASG_AWA": ["ASG", "AWA", "ASG_AWA"]}


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def _frame(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """A transition matrix as ``{row: {column: value}}`` for JSON."""
    return {str(r): {str(c): float(v) for c, v in row.items()} for r, row in df.iterrows()}


def _versions() -> dict[str, str]:
    out = _common.versions()
    for package in ("moscot", "ott-jax", "jax", "jaxlib", "leidenalg", "igraph"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


class _Timer:
    """Wall-clock seconds of named steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 3)
        logger.info("%s: %.2f s", name, self.seconds[name])
        return out


# --------------------------------------------------------------------------------------------- schiebinger
def run_schiebinger(seed: int, n_pcs: int) -> dict[str, Any]:
    """Compare moscot with the WOT regression fixture on Schiebinger days 10/10.5/11."""
    adata = ad.read_h5ad(_common.data_file("schiebinger2019_moscot_subset_counts.h5ad"))
    ref = adata.uns["wot_reference"]
    eps, lam1, lam2 = float(ref["eps"]), float(ref["lam1"]), float(ref["lam2"])
    tau_a, tau_b = M.wot_taus(eps, lam1, lam2)
    pairs = [(10.0, 10.5, "tmap_10_105"), (10.5, 11.0, "tmap_105_11"), (10.0, 11.0, "tmap_10_11")]
    timer = _Timer()
    variants = {
        "fixture_local_pca50": {"local_pca": True, "n_pcs": int(ref["local_pca"])},
        f"helper_global_pca{n_pcs}": {"local_pca": False, "n_pcs": n_pcs},
    }
    results: dict[str, Any] = {}
    for name, kw in variants.items():
        problem = timer(
            f"solve[{name}]",
            M.solve_temporal,
            adata,
            "day",
            epsilon=eps,
            tau_a=tau_a,
            tau_b=tau_b,
            seed=seed,
            policy="explicit",
            subset=[(s, t) for s, t, _ in pairs],
            **kw,
        )
        labels = problem.adata.obs["cell_type"].astype(str)
        out: dict[str, Any] = {}
        for src, tgt, key in pairs:
            plan, rows, cols = M.coupling(problem, src, tgt)
            wot = np.asarray(ref[key], dtype=np.float64)
            tm = M.transition_matrix(problem, src, tgt, "cell_type", forward=True)
            tm_ref = M.aggregate_plan(
                wot, labels[rows], labels[cols], source_groups=list(tm.index), target_groups=list(tm.columns)
            )
            tm_back = M.transition_matrix(problem, src, tgt, "cell_type", forward=False)
            tm_back_ref = M.aggregate_plan(
                wot,
                labels[rows],
                labels[cols],
                source_groups=list(tm_back.index),
                target_groups=list(tm_back.columns),
                forward=False,
            )
            out[f"{src:g}->{tgt:g}"] = {
                "plan_pearson": _pearson(plan, wot),
                "plan_max_abs_diff": float(np.abs(plan - wot).max()),
                "plan_total_mass": float(plan.sum()),
                "reference_total_mass": float(wot.sum()),
                "transition_pearson_forward": _pearson(tm.to_numpy(), tm_ref.to_numpy()),
                "transition_max_abs_diff_forward": float(np.nanmax(np.abs(tm.to_numpy() - tm_ref.to_numpy()))),
                "transition_pearson_backward": _pearson(tm_back.to_numpy(), tm_back_ref.to_numpy()),
                "transition_forward": _frame(tm),
                "transition_forward_reference": _frame(tm_ref),
            }
            logger.info(
                "%s %g->%g: plan r=%.6f, transition r fwd=%.6f bwd=%.6f",
                name,
                src,
                tgt,
                out[f"{src:g}->{tgt:g}"]["plan_pearson"],
                out[f"{src:g}->{tgt:g}"]["transition_pearson_forward"],
                out[f"{src:g}->{tgt:g}"]["transition_pearson_backward"],
            )
        # the two consecutive plans composed vs the direct 10 -> 11 reference
        p1, _, _ = M.coupling(problem, 10.0, 10.5)
        p2, _, _ = M.coupling(problem, 10.5, 11.0)
        composed = p1 @ (p2 / p2.sum(axis=1, keepdims=True))
        out["composed_10->10.5->11_vs_reference_10->11_pearson"] = _pearson(composed, ref["tmap_10_11"])
        logger.info("%s composed 10->10.5->11 vs direct reference: r=%.4f", name, out[list(out)[-1]])
        results[name] = out
    return {
        "dataset": "schiebinger2019_moscot_subset_counts.h5ad",
        "settings": {
            "epsilon": eps,
            "lambda1": lam1,
            "lambda2": lam2,
            "tau_a": tau_a,
            "tau_b": tau_b,
            "scale_cost": "mean",
            "cost": "sq_euclidean",
            "preprocessing": "normalize_total(1e4) + log1p on the recovered counts (= the fixture's X)",
            "variants": variants,
            "seed": seed,
            "note": (
                "the fixture's maps were computed by moscot from WOT's cost matrices and asserted there to "
                "correlate with WOT's own maps to 6 decimals (moscot tests/data/generate_gt_temporal_data.py)"
            ),
        },
        "results": results,
        "seconds": timer.seconds,
    }


# --------------------------------------------------------------------------------------------------- worm
def _worm_fates(problem: Any, src_time: float, tgt_time: float) -> dict[str, Any]:
    obs = problem.adata.obs
    at_src = np.isclose(obs["t"].to_numpy(float), src_time)
    cells = obs.index[at_src & obs["cell_type"].isin(list(WORM_ALLOWED)).to_numpy()]
    fates = M.cell_fates(problem, src_time, tgt_time, "cell_type", cells)
    kinds = obs.loc[cells, "cell_type"].astype(str).to_numpy()
    allowed = np.array(
        [fates.loc[c, [f for f in WORM_ALLOWED[k] if f in fates.columns]].sum() for c, k in zip(cells, kinds)]
    )
    argmax = fates.to_numpy().argmax(axis=1)
    correct = np.array([fates.columns[j] in WORM_ALLOWED[k] for j, k in zip(argmax, kinds)])
    out: dict[str, Any] = {
        "n_cells": len(cells),
        "allowed_mass_share": float(allowed.mean()),
        "argmax_accuracy": float(correct.mean()),
    }
    for kind in WORM_ALLOWED:
        mask = kinds == kind
        out[kind] = {
            "n_cells": int(mask.sum()),
            "allowed_mass_share": float(allowed[mask].mean()),
            "argmax_accuracy": float(correct[mask].mean()),
            "mean_distribution": {str(c): float(v) for c, v in fates.loc[mask].mean(axis=0).items()},
            "argmax_counts": {str(c): int(n) for c, n in pd.Series(fates.columns[argmax[mask]]).value_counts().items()},
        }
    return out


def run_worm(seed: int, n_pcs: int) -> dict[str, Any]:
    """Progenitor fates in the worm amphid lineages, chaining moscot's consecutive maps."""
    adata = ad.read_h5ad(_common.data_file("packer2019_worm_amphid_counts.h5ad"))
    adata.obs["t"] = adata.obs["embryo_time_bin"].astype(str).map(WORM_BIN_MID).astype(float)
    if adata.obs["t"].isna().any():
        msg = f"unknown embryo_time_bin values: {set(adata.obs['embryo_time_bin'].astype(str)) - set(WORM_BIN_MID)}"
        raise SystemExit(msg)
    timer = _Timer()
    data = timer("preprocess", M.preprocess, adata, n_pcs=n_pcs, seed=seed)
    src, mid, tgt = WORM_BIN_MID["210-270"], WORM_BIN_MID["270-330"], WORM_BIN_MID["510-580"]
    wot_lambdas = (M.WOT_DEFAULTS["lambda1"], M.WOT_DEFAULTS["lambda2"])
    settings = {}
    for eps in (0.05, 0.5):
        settings[f"eps{eps:g}_balanced"] = {"epsilon": eps, "tau_a": 1.0, "tau_b": 1.0}
        ta, tb = M.wot_taus(eps, *wot_lambdas)
        settings[f"eps{eps:g}_wot_unbalanced"] = {"epsilon": eps, "tau_a": ta, "tau_b": tb}
    results: dict[str, Any] = {}
    for name, kw in settings.items():
        problem = timer(f"solve[{name}]", M.solve_temporal, data, "t", obsm_key="X_pca", seed=seed, **kw)
        start = time.perf_counter()
        tm = M.transition_matrix(problem, src, tgt, "cell_type", forward=True)
        group_allowed = {
            k: float(tm.loc[k, [f for f in v if f in tm.columns]].sum())
            for k, v in WORM_ALLOWED.items()
            if k in tm.index
        }
        fates = {f"{s:g}": _worm_fates(problem, s, tgt) for s in (src, mid)}
        pooled_n = sum(f["n_cells"] for f in fates.values())
        pooled = {
            "n_cells": pooled_n,
            "allowed_mass_share": sum(f["allowed_mass_share"] * f["n_cells"] for f in fates.values()) / pooled_n,
            "argmax_accuracy": sum(f["argmax_accuracy"] * f["n_cells"] for f in fates.values()) / pooled_n,
        }
        timer.seconds[f"analysis[{name}]"] = round(time.perf_counter() - start, 3)
        converged = {f"{s:g}->{t:g}": bool(sol.converged) for (s, t), sol in problem.solutions.items()}
        results[name] = {
            "settings": kw,
            "converged": converged,
            "transition_210-270_to_510-580": _frame(tm),
            "group_allowed_mass_share": group_allowed,
            "cell_fates_to_510-580": fates,
            "cell_fates_pooled": pooled,
        }
        logger.info(
            "%s: group allowed share %s; cells (n=%d) allowed share %.3f, argmax accuracy %.3f; 240: %.3f/%.3f, "
            "300: %.3f/%.3f",
            name,
            {k: round(v, 3) for k, v in group_allowed.items()},
            pooled_n,
            pooled["allowed_mass_share"],
            pooled["argmax_accuracy"],
            fates[f"{src:g}"]["allowed_mass_share"],
            fates[f"{src:g}"]["argmax_accuracy"],
            fates[f"{mid:g}"]["allowed_mass_share"],
            fates[f"{mid:g}"]["argmax_accuracy"],
        )
    return {
        "dataset": "packer2019_worm_amphid_counts.h5ad",
        "settings": {
            "time": "midpoint of embryo_time_bin",
            "bin_midpoints": WORM_BIN_MID,
            "preprocessing": f"normalize_total(1e4) + log1p + PCA {n_pcs} (all 10000 genes), random_state={seed}",
            "policy": "sequential; 240->545 chains the 5 consecutive maps (moscot push, mass renormalised per step, "
            "no marginal scaling)",
            "scale_cost": "mean",
            "wot_lambdas": wot_lambdas,
            "allowed_fates": WORM_ALLOWED,
            "solves": settings,
            "seed": seed,
        },
        "results": results,
        "seconds": timer.seconds,
    }


# -------------------------------------------------------------------------------------------------- klein
def run_klein(seed: int, n_pcs: int) -> dict[str, Any]:
    """Leiden-cluster transitions and growth between consecutive days of Klein 2015."""
    import scanpy as sc

    adata = ad.read_h5ad(_common.data_file("klein2015_mesc_lif_counts.h5ad"))
    timer = _Timer()
    data = timer("preprocess", M.preprocess, adata, n_pcs=n_pcs, seed=seed)
    timer("neighbors", sc.pp.neighbors, data, n_neighbors=15, use_rep="X_pca", random_state=seed)
    timer(
        "leiden",
        sc.tl.leiden,
        data,
        resolution=0.5,
        random_state=seed,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    data.obs["day"] = data.obs["day"].astype(float)
    eps = M.WOT_DEFAULTS["epsilon"]
    tau_a, tau_b = M.wot_taus(eps, M.WOT_DEFAULTS["lambda1"], M.WOT_DEFAULTS["lambda2"])
    problem = timer(
        "solve", M.solve_temporal, data, "day", obsm_key="X_pca", epsilon=eps, tau_a=tau_a, tau_b=tau_b, seed=seed
    )
    composition = pd.crosstab(data.obs["leiden"], data.obs["day"])
    logger.info("leiden clusters x day:\n%s", composition.to_string())
    days = sorted(data.obs["day"].unique())
    transitions: dict[str, Any] = {}
    growth: dict[str, Any] = {}
    start = time.perf_counter()
    for s, t in itertools.pairwise(days):
        key = f"{s:g}->{t:g}"
        tm = M.transition_matrix(problem, s, t, "leiden", forward=True)
        transitions[key] = _frame(tm)
        logger.info(
            "transition d%s (rows: leiden at source, forward, rows sum to 1):\n%s", key, tm.round(3).to_string()
        )
        g = M.growth_rates(problem, s, t)
        clusters = data.obs.loc[g.index, "leiden"].astype(str)
        growth[key] = {
            "mass_ratio_quantiles": {
                str(q): float(v) for q, v in g["mass_ratio"].quantile([0.05, 0.25, 0.5, 0.75, 0.95]).items()
            },
            "growth_per_unit_time_quantiles": {
                str(q): float(v) for q, v in g["growth_per_unit_time"].quantile([0.05, 0.25, 0.5, 0.75, 0.95]).items()
            },
            "plan_total_mass": float(g["posterior_marginal"].sum()),
            "mean_mass_ratio_by_cluster": {
                str(c): float(v) for c, v in g["mass_ratio"].groupby(clusters).mean().items()
            },
            "mean_growth_per_unit_time_by_cluster": {
                str(c): float(v) for c, v in g["growth_per_unit_time"].groupby(clusters).mean().items()
            },
            "moscot_posterior_growth_median": float(g["moscot_posterior_growth"].median()),
        }
        logger.info(
            "growth d%s: plan mass %.3f, mass ratio median %.3f (5%%-95%%: %.3f-%.3f), by cluster %s",
            key,
            growth[key]["plan_total_mass"],
            growth[key]["mass_ratio_quantiles"]["0.5"],
            growth[key]["mass_ratio_quantiles"]["0.05"],
            growth[key]["mass_ratio_quantiles"]["0.95"],
            {c: round(v, 3) for c, v in growth[key]["mean_mass_ratio_by_cluster"].items()},
        )
    timer.seconds["analysis"] = round(time.perf_counter() - start, 3)
    return {
        "dataset": "klein2015_mesc_lif_counts.h5ad",
        "settings": {
            "time_key": "day",
            "preprocessing": f"normalize_total(1e4) + log1p + PCA {n_pcs} (all 900 genes), random_state={seed}",
            "clusters": "scanpy neighbors(15, X_pca) + leiden(resolution=0.5, random_state=seed, flavor='igraph', "
            "n_iterations=2, directed=False)",
            "epsilon": eps,
            "tau_a": tau_a,
            "tau_b": tau_b,
            "wot_lambdas": [M.WOT_DEFAULTS["lambda1"], M.WOT_DEFAULTS["lambda2"]],
            "marginals": "uniform prior",
            "scale_cost": "mean",
            "seed": seed,
        },
        "converged": {f"{s:g}->{t:g}": bool(sol.converged) for (s, t), sol in problem.solutions.items()},
        "clusters_by_day": {str(c): {f"{d:g}": int(n) for d, n in row.items()} for c, row in composition.iterrows()},
        "transitions": transitions,
        "growth": growth,
        "seconds": timer.seconds,
    }


RUNNERS = {"schiebinger": run_schiebinger, "worm": run_worm, "klein": run_klein}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--dataset schiebinger|worm|klein [--seed 0] [--n-pcs 30] [--out PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(RUNNERS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-pcs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/moscot_<dataset>.json")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import moscot  # noqa: F401  (moscot sets its own logger to INFO when imported)

    logging.getLogger("moscot._logging").setLevel(logging.WARNING)
    start = time.perf_counter()
    payload = RUNNERS[args.dataset](args.seed, args.n_pcs)
    payload["seconds"]["total"] = round(time.perf_counter() - start, 3)
    payload["versions"] = _versions()
    out = args.out or RESULTS / f"moscot_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    logger.info("total %.1f s; wrote %s", payload["seconds"]["total"], out)


if __name__ == "__main__":
    main()
