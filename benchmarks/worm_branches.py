"""C. elegans amphid neurons (Packer 2019): a branching time course in one model, a held-out time bin predicted.

Cells are grouped by branch and embryo-time bin into conditions ``"<branch>@<bin>"`` at the bin's mid time:
``ADL`` (ADL_parent and ADL), ``AWB``, ``AWC`` (AWC and AWC_ON), and ``ASG`` and ``AWA``, which share their start,
the progenitors (Neuroblast_ASG_AWA, ASG_AWA; conditions ``"prog@<bin>"``). Conditions with fewer than 15 cells
are dropped. Each branch is a path through its conditions in time (``ASG`` and ``AWA`` through the progenitor bins
first). One bin of one branch is held out: the methods predict it from the branch's previous bin.

Methods, in this process on the same split: the previous bin unchanged; exact-OT displacement interpolation between
the previous and next bins of the branch (log-normalised expression of the coupled pairs, at the held-out time);
trajvi with one field over every branch; trajvi on the held-out branch alone. Scores as in ``_heldout.py``
(the "control" of PCC-delta is the previous bin).

Usage::

    python benchmarks/worm_branches.py --branch AWC --bin 450-510 [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import ot

import _common
import _heldout
from _common import Prediction, format_table, log, write_json
from _metrics import log_normalize

BRANCH_OF = {
    "ADL_parent": "ADL",
    "ADL": "ADL",
    "Neuroblast_ASG_AWA": "prog",
    "ASG_AWA": "prog",
    "ASG": "ASG",
    "AWA": "AWA",
    "AWB": "AWB",
    "AWC": "AWC",
    "AWC_ON": "AWC",
}
MIN_CELLS = 15


def _mid(label: str) -> float:
    if label.startswith(">"):
        return float(label[1:]) + 50.0
    lo, hi = (float(x) for x in label.split("-"))
    return (lo + hi) / 2


def load() -> tuple[ad.AnnData, dict[str, list[str]]]:
    """The worm data with ``condition`` (branch@bin) and ``time`` columns, and the path of every branch."""
    adata = ad.read_h5ad(_common.data_file("packer2019_worm_amphid_counts.h5ad"))
    branch = adata.obs["cell_type"].astype(str).map(BRANCH_OF)
    bins = adata.obs["embryo_time_bin"].astype(str)
    adata.obs["branch"] = branch.to_numpy()
    adata.obs["condition"] = (branch + "@" + bins).to_numpy()
    counts = adata.obs["condition"].value_counts()
    adata = adata[adata.obs["condition"].map(counts).to_numpy() >= MIN_CELLS].copy()
    adata.obs["time"] = [_mid(c.split("@")[1]) for c in adata.obs["condition"]]
    order = sorted(set(adata.obs["condition"]), key=lambda c: _mid(c.split("@")[1]))
    prog = [c for c in order if c.startswith("prog@")]
    paths = {}
    for name in ("ADL", "AWB", "AWC"):
        paths[name] = [c for c in order if c.startswith(name + "@")]
    for name in ("ASG", "AWA"):
        own = [c for c in order if c.startswith(name + "@")]
        last_prog = max(_mid(c.split("@")[1]) for c in prog)
        paths[name] = prog + [c for c in own if _mid(c.split("@")[1]) > last_prog]
    return adata, {k: v for k, v in paths.items() if len(v) >= 2}


def ot_interpolation(split: _heldout.HeldOutSplit, previous: str, following: str, fraction: float) -> Prediction:
    """Exact-OT displacement interpolation between two bins, in log-normalised expression."""
    cond = split.train.obs["condition"].to_numpy()
    a_log = log_normalize(split.train.X[cond == previous])
    b_log = log_normalize(split.train.X[cond == following])
    cost = ot.dist(a_log, b_log)
    plan = ot.emd(np.full(len(a_log), 1 / len(a_log)), np.full(len(b_log), 1 / len(b_log)), cost / cost.mean())
    rows, cols = np.nonzero(plan > 1e-12)
    pred = (1 - fraction) * a_log[rows] + fraction * b_log[cols]
    return Prediction(log_norm=pred.astype(np.float32), info={"pairs": len(rows)})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", default="AWC")
    parser.add_argument("--bin", default="450-510")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--n-samples", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    _common.quiet_lightning()
    _common.set_threads(args.torch_threads)
    import scvi

    import trajvi

    adata, paths = load()
    held = f"{args.branch}@{args.bin}"
    path = paths[args.branch]
    if held not in path[1:-1]:
        msg = f"{held} is not an interior condition of the {args.branch} path {path}"
        raise SystemExit(msg)
    k = path.index(held)
    previous, following = path[k - 1], path[k + 1]
    panel = _heldout.Panel("worm", condition_key="condition", group_key="branch", control=previous)
    cond = adata.obs["condition"].to_numpy()
    split = _heldout.HeldOutSplit(
        train=adata[cond != held].copy(),
        sources=adata[cond == previous].copy(),
        truth=adata[cond == held].copy(),
        group=args.branch,
        perturbation=held,
        panel=panel,
        seed=args.seed,
        n_samples=args.n_samples,
        max_epochs=args.max_epochs,
    )
    t_prev, t_held, t_next = (_mid(c.split("@")[1]) for c in (previous, held, following))
    log(f"held out {held} ({split.truth.n_obs} cells), from {previous} ({split.sources.n_obs}); paths: {paths}")
    evaluation = _heldout.Evaluation.build(adata, split)
    ceiling = evaluation.ceiling()
    results = []

    def record(name: str, run: callable) -> None:
        log(f"method {name}")
        t0 = time.perf_counter()
        prediction = run()
        scores = evaluation.score(prediction)
        log(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float)))
        results.append({"method": name, **scores, "wall_seconds": time.perf_counter() - t0, "info": prediction.info})

    record("previous_bin", lambda: Prediction(counts=[split.sources.X.toarray()]))
    record(
        "ot_interpolation", lambda: ot_interpolation(split, previous, following, (t_held - t_prev) / (t_next - t_prev))
    )

    scvi.settings.seed = args.seed
    train = split.train.copy()
    trajvi.TrajVI.setup_anndata(train, "condition", batch_key="batch", time_key="time")
    model = trajvi.TrajVI(train, n_latent=10)
    model.train(max_epochs=args.max_epochs, enable_progress_bar=False)
    sources = train.obs_names.get_indexer(split.sources.obs_names)

    def trajvi_run(branches: dict[str, list[str]]) -> Prediction:
        fitted = {name: [c for c in conds if c != held] for name, conds in branches.items()}
        model.train_trajectories(fitted, seed=args.seed, max_epochs=args.max_epochs, enable_progress_bar=False)
        pred = model.predict(
            source=previous, path=args.branch, t_span=(t_prev, t_held), indices=sources, n_samples=args.n_samples
        )
        sample = pred.obs["sample"].to_numpy()
        x = pred.X.toarray()
        info = {"residual_penalty_chosen": model.residual_penalty_, "paths": len(fitted)}
        return Prediction(counts=[x[sample == s] for s in range(args.n_samples)], info=info)

    record("trajvi", lambda: trajvi_run(paths))
    record("trajvi_one_path", lambda: trajvi_run({args.branch: path}))
    print()
    print(format_table([*results, {"method": "noise ceiling", **ceiling}], _heldout_columns()))
    out = args.out or Path("benchmarks/results") / f"worm_{args.branch}_{args.bin}_seed{args.seed}.json"
    payload = {
        "benchmark": "worm_branches",
        "held_out": held,
        "previous": previous,
        "following": following,
        "seed": args.seed,
        "paths": paths,
        "sizes": {"train": split.train.n_obs, "sources": split.sources.n_obs, "truth": split.truth.n_obs},
        "ceiling": ceiling,
        "results": results,
        "versions": _common.versions(),
    }
    write_json(out, payload)
    return payload


def _heldout_columns() -> list[tuple[str, str, str]]:
    import heldout_perturbation

    return heldout_perturbation.COLUMNS


if __name__ == "__main__":
    main()
