"""Query mapping (scArches) of a batch the reference never saw, on the synthetic perturbation data.

A reference is trained on batches 0 and 1 (both phases); the cells of batch 2 are the query. The generator's
batch effects are mild (a shift of scale 0.3 on 30% of the genes' logits); batch 2's counts are drawn again with
its shift multiplied by ``--batch-scale`` (default 5), a batch effect the reference cannot absorb. Three ways to get
the query cells into a latent, each scored on the query cells:

- ``mapped``: ``TrajVI.load_query_data(query, reference)`` then ``train`` (only the new batch's columns);
- ``as_batch_0``: the reference as it is, the query cells relabelled as batch 0 (what one can do without mapping);
- ``de_novo``: a model trained on all three batches (it saw the query cells: an upper bound for integration).

Scores: cell-type accuracy of a 15-nearest-neighbour classifier fitted on the reference cells' latents; mixing
(the share of reference cells among each query cell's 30 nearest neighbours in the joint latent, over the
reference's share of all cells: 1 is perfectly mixed, 0 apart); and the energy distance between the query's real
stimulated cells and those predicted from the query's control cells (sampled counts, log-normalised, all genes;
lower is better), with the distance between the real control and stimulated cells as the scale.

Run from the repository root: ``python benchmarks/query_mapping.py [--seeds 0 1]``; writes
``benchmarks/results/query_mapping.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

import trajvi
from _common import log, quiet_lightning, set_threads
from _metrics import energy_distance, log_normalize
from trajvi.data import true_expression

PATH = ["control", "stimulated"]
TRAIN_KW = {"enable_progress_bar": False, "enable_model_summary": False}


def _fit(adata, epochs: int):
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata)
    model.train(max_epochs=epochs, **TRAIN_KW)
    model.train_trajectories(PATH, residual_penalty=1.0, max_epochs=epochs, **TRAIN_KW)
    return model


def _scores(z_ref, z_query, ref, query, predicted_counts) -> dict[str, float]:
    knn = KNeighborsClassifier(n_neighbors=15).fit(z_ref, ref.obs["cell_type"].astype(str))
    accuracy = float((knn.predict(z_query) == query.obs["cell_type"].astype(str).to_numpy()).mean())
    joint = np.vstack([z_ref, z_query])
    _, idx = NearestNeighbors(n_neighbors=31).fit(joint).kneighbors(z_query)
    share = (idx[:, 1:] < len(z_ref)).mean()
    mixing = float(share / (len(z_ref) / len(joint)))
    real = log_normalize(query[query.obs["condition"] == "stimulated"].X)
    energy = energy_distance(log_normalize(predicted_counts), real, rng=0)
    return {"celltype_knn_accuracy": accuracy, "mixing": mixing, "energy_distance_stimulated": energy}


def _strengthen_batch_2(full, scale: float, seed: int) -> None:
    """Draw batch 2's counts again with its batch shift multiplied by ``scale`` (NB, the generator's dispersion)."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(full.obs["batch"] == "batch_2")
    code = list(full.obs["batch"].cat.categories).index("batch_2")
    logits = (
        np.log(true_expression(full, full.obsm["true_latent"][rows])) + scale * full.varm["true_batch_effect"][:, code]
    )
    freq = np.exp(logits - logits.max(axis=1, keepdims=True))
    mu = full.obs["true_library"].to_numpy()[rows, None] * freq / freq.sum(axis=1, keepdims=True)
    theta = full.var["true_dispersion"].to_numpy()
    counts = rng.poisson(rng.gamma(theta, mu / theta)).astype(np.float32)
    x = full.X.toarray() if hasattr(full.X, "toarray") else np.asarray(full.X)
    x[rows] = counts
    full.X = type(full.X)(x) if hasattr(full.X, "toarray") else x


def run(args: argparse.Namespace, seed: int) -> dict[str, dict[str, float]]:
    import scvi

    scvi.settings.seed = seed
    epochs = args.epochs
    full = trajvi.data.synthetic(args.n_cells, args.n_genes, n_batches=3, seed=seed)
    _strengthen_batch_2(full, args.batch_scale, seed)
    ref = full[full.obs["batch"] != "batch_2"].copy()
    query = full[full.obs["batch"] == "batch_2"].copy()
    query.obs["batch"] = query.obs["batch"].cat.remove_unused_categories()
    controls = np.flatnonzero(query.obs["condition"] == "control")
    out: dict[str, dict[str, float]] = {}

    log(f"seed {seed}: reference on {ref.n_obs} cells")
    reference = _fit(ref, epochs)
    z_ref = reference.get_latent_representation()

    log("mapped")
    mapped = trajvi.TrajVI.load_query_data(query.copy(), reference)
    mapped.train(max_epochs=args.query_epochs or epochs, lr=args.query_lr, **TRAIN_KW)
    pred = mapped.predict(source="control", target="stimulated")
    out["mapped"] = _scores(z_ref, mapped.get_latent_representation(), ref, query, pred.X)

    log("as batch 0")
    relabelled = query.copy()
    relabelled.obs["batch"] = relabelled.obs["batch"].cat.rename_categories(["batch_0"])
    pred = reference.predict(relabelled, source="control", target="stimulated", indices=controls)
    out["as_batch_0"] = _scores(z_ref, reference.get_latent_representation(relabelled), ref, query, pred.X)

    log("de novo on all batches")
    both = full.copy()
    model = _fit(both, epochs)
    z = model.get_latent_representation()
    in_query = (both.obs["batch"] == "batch_2").to_numpy()
    query_controls = np.flatnonzero(in_query & (both.obs["condition"] == "control").to_numpy())
    pred = model.predict(source="control", target="stimulated", indices=query_controls)
    out["de_novo"] = _scores(z[~in_query], z[in_query], ref, query, pred.X)

    real_control = log_normalize(query[controls].X)
    real_stim = log_normalize(query[query.obs["condition"] == "stimulated"].X)
    out["no_change"] = {"energy_distance_stimulated": energy_distance(real_control, real_stim, rng=0)}
    for name, scores in out.items():
        log(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-cells", type=int, default=3000)
    parser.add_argument("--n-genes", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-scale", type=float, default=5.0)
    parser.add_argument("--query-epochs", type=int, default=None, help="query training epochs (default: --epochs)")
    parser.add_argument("--query-lr", type=float, default=1e-3)
    parser.add_argument("--out", default="query_mapping.json", help="file name in benchmarks/results")
    args = parser.parse_args()
    quiet_lightning()
    set_threads(1)
    results = {str(s): run(args, s) for s in args.seeds}
    path = Path(__file__).parent / "results" / args.out
    path.write_text(json.dumps({"settings": vars(args), "results": results}, indent=2) + "\n")
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
