"""Worm progenitor fates by coupling: does the space or the solver decide how sharp they are.

The fate benchmark (``fates.py worm``) found trajvi's kept couplings as good as moscot's maps on the share of a
progenitor's mass that reaches the fates its lineage allows, and far worse on how often its most likely fate is
an allowed one. This script separates the two things that differ between them: the space the cells are coupled in
(trajvi's latent, or a 30-PC PCA of log-normalised expression, moscot's space in ``fates.py``) and the solver's
settings (exact OT, entropic, unbalanced with epsilon 0.05 and ``reg_m`` 1; each time bin z-scored on its own, as
phase 2 does, or not). Every map is trajvi's own coupler (:func:`trajvi.transport.couple_sets`) chained over the
consecutive time bins; no velocity field is involved and moscot is not needed. Scores as in ``fates.py``
(progenitors at 210-270 and 270-330, fates read at 510-580 and, as a check, at 580-650).

Usage::

    python benchmarks/worm_fate_spaces.py [--seed 0] [--epochs 100]

Writes ``benchmarks/results/worm_fate_spaces_seed<seed>.json``.
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

import _common
import _moscot as M
from _common import log, write_json
from fates import _fate_scores
from moscot_reference import WORM_ALLOWED, WORM_BIN_MID

SOLVERS = ("exact", "sinkhorn", "unbalanced")
SOURCES = ("210-270", "270-330")
TARGETS = ("510-580", "580-650")


def chained_fates(
    adata: ad.AnnData, embedding: np.ndarray, method: str, *, standardize: bool, seed: int
) -> dict[str, Any]:
    """Fate scores of the progenitors through the chained couplings of consecutive bins in ``embedding``."""
    from trajvi.trajectory import map_from_coupling
    from trajvi.transport import couple_sets

    bins = adata.obs["embryo_time_bin"].astype(str).to_numpy()
    order = list(WORM_BIN_MID)
    steps = []
    for source, target in itertools.pairwise(order):
        src, tgt = np.flatnonzero(bins == source), np.flatnonzero(bins == target)
        coupling = couple_sets(
            embedding[src],
            embedding[tgt],
            method=method,
            epsilon=0.05,
            reg_m=1.0,
            standardize_sets=standardize,
            rng=seed,
        )
        steps.append(map_from_coupling(coupling, source, target, adata.obs_names[src], adata.obs_names[tgt]))
    cell_types = adata.obs["cell_type"].astype(str)
    progenitor = adata.obs["cell_type"].isin(list(WORM_ALLOWED)).to_numpy()
    out = {}
    for target in TARGETS:
        parts, kinds = [], []
        for source in SOURCES:
            chained = steps[order.index(source)]
            for step in steps[order.index(source) + 1 : order.index(target)]:
                chained = chained.then(step)
            fates = chained.cell_fates(cell_types.loc[chained.target_cells].to_numpy())
            cells = adata.obs_names[(bins == source) & progenitor]
            parts.append(fates.loc[cells])
            kinds.append(cell_types.loc[cells].to_numpy())
        out[target] = _fate_scores(pd.concat(parts).fillna(0.0), np.concatenate(kinds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=100, help="phase-1 epochs")
    args = parser.parse_args()
    _common.set_threads(1)
    _common.quiet_lightning()
    import scvi

    import trajvi

    start = time.perf_counter()
    adata = ad.read_h5ad(_common.data_file("packer2019_worm_amphid_counts.h5ad"))
    bins = adata.obs["embryo_time_bin"].astype(str)
    adata.obs["t"] = bins.map(WORM_BIN_MID).astype(float).to_numpy()
    adata.obs["stage"] = pd.Categorical(bins, categories=list(WORM_BIN_MID))
    spaces = {"pca30": M.preprocess(adata, n_pcs=30, seed=args.seed).obsm["X_pca"]}
    scvi.settings.seed = args.seed
    registered = adata.copy()
    trajvi.TrajVI.setup_anndata(registered, "stage", batch_key="batch", time_key="t")
    model = trajvi.TrajVI(registered, n_latent=10)
    model.train(max_epochs=args.epochs, enable_progress_bar=False)
    spaces["latent"] = model.get_latent_representation(registered)
    results: dict[str, Any] = {}
    for (space, embedding), method, standardize in itertools.product(spaces.items(), SOLVERS, (True, False)):
        label = f"{space}_{method}_{'standardized' if standardize else 'raw'}"
        results[label] = chained_fates(adata, embedding, method, standardize=standardize, seed=args.seed)
        for target, score in results[label].items():
            log(
                f"  {label:32s} to {target}: allowed share {score['allowed_share']:.3f}, "
                f"accuracy {score['accuracy']:.3f} (ADL_parent {score['ADL_parent']['allowed_share']:.3f}/"
                f"{score['ADL_parent']['accuracy']:.3f}, Neuroblast {score['Neuroblast_ASG_AWA']['allowed_share']:.3f}"
                f"/{score['Neuroblast_ASG_AWA']['accuracy']:.3f})"
            )
    payload = {
        "results": results,
        "seed": args.seed,
        "epochs": args.epochs,
        "seconds": time.perf_counter() - start,
        "versions": _common.versions(),
    }
    out = Path(__file__).resolve().parent / "results" / f"worm_fate_spaces_seed{args.seed}.json"
    write_json(out, payload)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
