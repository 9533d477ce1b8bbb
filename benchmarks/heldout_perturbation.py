"""Held-out (group x perturbation) prediction on Haber 2017 and PerturBench, trajvi against the baselines.

One (group, perturbation) pair is held out (see ``_heldout.py`` for the protocol and the metrics); every method
runs in this process on the same split: the controls unchanged, the mean log shift from the other groups, the
additive baseline for combinations, scVI latent arithmetic, trajvi with one field over every path (sampled,
``trajvi``; transferred, ``trajvi_transfer``; each also calibrated, ``trajvi_calibrated`` and
``trajvi_transfer_calibrated``: ``predict(calibrate=True)``), and trajvi on the held-out path alone.

Usage::

    python benchmarks/heldout_perturbation.py haber --group Stem --perturbation Salmonella [--seed 0]
    python benchmarks/heldout_perturbation.py perturbench --group K562 --perturbation KLF1+MAP2K6
    python benchmarks/heldout_perturbation.py perturbench --group T98G --perturbation MAPK1_KO   # no effect

Data (``../shared/data``): ``haber2017_scgen_valid_counts.h5ad`` (condition Control / Hpoly.Day10 / Salmonella,
8 cell types); ``perturbench_devel_counts.h5ad`` (K562 CRISPRa singles and doubles, and three glioblastoma lines
with knock-outs of 9 genes; a knock-out is renamed ``<gene>_KO`` there, since the same gene name means activation
in K562).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad

import _common
import _heldout
from _common import format_table, log, write_json

PANELS = {
    "haber": (
        "haber2017_scgen_valid_counts.h5ad",
        _heldout.Panel("haber", condition_key="condition", group_key="cell_type", control="Control"),
    ),
    "perturbench": (
        "perturbench_devel_counts.h5ad",
        _heldout.Panel("perturbench", condition_key="condition", group_key="cell_type", control="control"),
    ),
}
COLUMNS = [
    ("method", "method", ""),
    ("r2_all", "R2 all", ".4f"),
    ("r2_deg", "R2 DEG", ".4f"),
    ("pcc_delta_deg", "PCC-d DEG", ".4f"),
    ("pcc_delta_all", "PCC-d all", ".4f"),
    ("energy", "energy", ".3f"),
    ("deg_overlap", "DEG overlap", ".2f"),
    ("wall_seconds", "s", ".0f"),
]


def load(name: str) -> tuple[ad.AnnData, _heldout.Panel]:
    """Read a panel from ``../shared/data`` with string labels (knock-outs renamed on PerturBench)."""
    file, panel = PANELS[name]
    adata = ad.read_h5ad(_common.data_file(file))
    for key in (panel.condition_key, panel.group_key):
        adata.obs[key] = adata.obs[key].astype(str)
    if name == "perturbench":
        knockout = (adata.obs["perturbation_type"].astype(str) == "CRISPRi").to_numpy()
        knockout &= (adata.obs[panel.condition_key] != panel.control).to_numpy()
        adata.obs.loc[knockout, panel.condition_key] = adata.obs.loc[knockout, panel.condition_key] + "_KO"
    return adata, panel


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", choices=list(PANELS))
    parser.add_argument("--group", required=True)
    parser.add_argument("--perturbation", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--n-samples", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    _common.quiet_lightning()
    _common.set_threads(args.torch_threads)
    methods = _common.parse_methods(args.methods, _heldout.METHODS)
    adata, panel = load(args.data)
    split = _heldout.make_split(
        adata,
        panel,
        args.group,
        args.perturbation,
        seed=args.seed,
        n_samples=args.n_samples,
        max_epochs=args.max_epochs,
    )
    log(
        f"{args.data}: held out ({args.group}, {args.perturbation}): train {split.train.n_obs}, "
        f"sources {split.sources.n_obs}, truth {split.truth.n_obs}, genes {adata.n_vars}"
    )
    evaluation = _heldout.Evaluation.build(adata, split)
    ceiling = evaluation.ceiling()
    log("noise ceiling (half vs half of the truth): " + ", ".join(f"{k} {v:.3f}" for k, v in ceiling.items()))
    results = []
    for name in methods:
        log(f"method {name}")
        t0 = time.perf_counter()
        try:
            prediction = _heldout.METHODS[name](split)
        except RuntimeError as err:  # a baseline that does not apply to this pair
            log(f"  {name} does not apply: {err}")
            results.append({"method": name, "not_applicable": str(err)})
            continue
        wall = time.perf_counter() - t0
        scores = evaluation.score(prediction)
        log(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float)))
        results.append({"method": name, **scores, "wall_seconds": wall, "info": prediction.info})
    print()
    print(format_table([*results, {"method": "noise ceiling", **ceiling}], COLUMNS))
    out = (
        args.out
        or Path("benchmarks/results") / f"heldout_{args.data}_{args.group}_{args.perturbation}_seed{args.seed}.json"
    )
    payload = {
        "benchmark": "heldout_perturbation",
        "data": args.data,
        "group": args.group,
        "perturbation": args.perturbation,
        "seed": args.seed,
        "max_epochs": args.max_epochs,
        "n_samples": args.n_samples,
        "sizes": {"train": split.train.n_obs, "sources": split.sources.n_obs, "truth": split.truth.n_obs},
        "ceiling": ceiling,
        "results": results,
        "versions": _common.versions(),
    }
    write_json(out, payload)
    return payload


if __name__ == "__main__":
    main()
