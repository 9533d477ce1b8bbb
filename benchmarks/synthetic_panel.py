"""The synthetic perturbation panel with known answers: combinations, unseen perturbations, compositions.

On ``trajvi.data.synthetic(kind="perturbations", n_perturbations=8)`` (8 perturbations with 4 features each, at 3
doses, and additive pairs), for each seed and each ``composition`` (``"sum"``, ``"deepset"``):

- ``pair``: ``P0+P1`` held out of phase 2 and predicted from the controls by composing its trained components
  (energy distance to the real ``P0+P1`` cells, 20 PCs of log-normalised expression; ``pair_control``: the
  controls themselves);
- ``unseen``: ``P7`` held out and predicted from its features (``perturbation_features``; the field maps
  features to vectors linearly); ``unseen_control``: the controls.

Usage::

    python benchmarks/synthetic_panel.py [--seeds 0 1 2] [--out benchmarks/results/synthetic_panel.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import _common
from _common import log, write_json

KW = {"enable_progress_bar": False, "enable_model_summary": False}


def run(seed: int, composition: str) -> dict[str, float]:
    import scvi

    import trajvi
    from trajvi.metrics import expression_energy_distance

    scvi.settings.seed = seed
    adata = trajvi.data.synthetic(3000, 120, kind="perturbations", n_perturbations=8, n_cell_types=2, seed=10 + seed)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch", dose_key="dose")
    model = trajvi.TrajVI(adata, n_latent=8, composition=composition)
    model.train(max_epochs=50, **KW)
    cond = adata.obs["condition"].to_numpy()
    ctrl = np.flatnonzero(cond == "control")

    def distance(target: str, cells: np.ndarray) -> float:
        pred = model.predict(source="control", target=target, indices=ctrl, n_samples=2)
        return expression_energy_distance(pred.X, adata.X[cells], reference=adata.X)

    def to_control(cells: np.ndarray) -> float:
        return expression_energy_distance(adata.X[ctrl], adata.X[cells], reference=adata.X)

    keep = np.flatnonzero(~np.isin(cond, ["P0+P1", "P7"]))
    paths = [["control", c] for c in adata.obs["condition"].cat.categories if c not in ("control", "P0+P1", "P7")]
    model.train_trajectories(paths, indices=keep, residual_penalty=1.0, max_epochs=50, seed=seed, **KW)
    pair = np.flatnonzero(cond == "P0+P1")
    out = {"pair": distance("P0+P1", pair), "pair_control": to_control(pair)}
    singles = [["control", f"P{i}"] for i in range(7)]
    features = adata.uns["synthetic"]["perturbation_features"]
    model.train_trajectories(
        singles, indices=keep, perturbation_features=features, residual_penalty=1.0, max_epochs=50, seed=seed, **KW
    )
    unseen = np.flatnonzero(cond == "P7")
    out |= {"unseen": distance("P7", unseen), "unseen_control": to_control(unseen)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--compositions", nargs="+", default=["sum", "deepset"])
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synthetic_panel.json"))
    args = parser.parse_args()
    _common.quiet_lightning()
    _common.set_threads(args.torch_threads)
    results = {}
    for seed in args.seeds:
        for composition in args.compositions:
            record = run(seed, composition)
            results[f"{composition}_seed{seed}"] = record
            log(f"{composition}, seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in record.items()))
    write_json(args.out, {"benchmark": "synthetic_panel", "results": results, "versions": _common.versions()})


if __name__ == "__main__":
    main()
