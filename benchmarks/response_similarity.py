"""How alike the groups' responses to one perturbation are: what a held-out group can borrow from the others.

For every group with cells of both the control and the perturbation, the response is the mean ``log1p(CP10k)``
expression of its perturbed cells minus that of its controls (all genes, every cell of the file: a description
of the data, not a prediction). The script prints the Pearson correlation of every pair of groups' responses and
of each group's response with the mean of the other groups' (what the mean-shift baseline, and the calibration of
a held-out group, start from), and the norm of each response.

Usage::

    python benchmarks/response_similarity.py haber --perturbation Hpoly.Day10

Writes ``benchmarks/results/response_similarity_<data>_<perturbation>.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import _common
from _common import format_table, write_json
from _metrics import log_normalize
from heldout_perturbation import PANELS, load


def responses(data: str, perturbation: str) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int]]]:
    """Each group's mean response (perturbed minus control, ``log1p(CP10k)``) and its (control, perturbed) sizes."""
    adata, panel = load(data)
    values = log_normalize(adata.X)
    condition = adata.obs[panel.condition_key].to_numpy()
    group = adata.obs[panel.group_key].to_numpy()
    out, sizes = {}, {}
    for g in sorted(set(group)):
        control = (group == g) & (condition == panel.control)
        perturbed = (group == g) & (condition == perturbation)
        if control.any() and perturbed.any():
            out[g] = values[perturbed].mean(axis=0) - values[control].mean(axis=0)
            sizes[g] = (int(control.sum()), int(perturbed.sum()))
    if len(out) < 2:
        msg = f"fewer than two groups have cells of {perturbation!r} and of the control"
        raise SystemExit(msg)
    return out, sizes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", choices=list(PANELS))
    parser.add_argument("--perturbation", required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    shifts, sizes = responses(args.data, args.perturbation)
    names = list(shifts)
    matrix = np.array([shifts[n] for n in names])
    correlation = np.corrcoef(matrix)
    rows = []
    for i, name in enumerate(names):
        others = np.delete(matrix, i, axis=0).mean(axis=0)
        rows.append(
            {
                "group": name,
                "n_control": sizes[name][0],
                "n_perturbed": sizes[name][1],
                "norm": float(np.linalg.norm(matrix[i])),
                "r_mean_of_others": float(np.corrcoef(matrix[i], others)[0, 1]),
                **{f"r_{other}": float(correlation[i, j]) for j, other in enumerate(names)},
            }
        )
    columns = [
        ("group", "group", ""),
        ("n_control", "controls", "d"),
        ("n_perturbed", "perturbed", "d"),
        ("norm", "norm", ".2f"),
        ("r_mean_of_others", "r (others' mean)", ".2f"),
    ]
    print(format_table(rows, columns))
    out = args.out or Path("benchmarks/results") / f"response_similarity_{args.data}_{args.perturbation}.json"
    payload = {
        "benchmark": "response_similarity",
        "data": args.data,
        "perturbation": args.perturbation,
        "groups": rows,
        "versions": _common.versions(),
    }
    write_json(out, payload)
    return payload


if __name__ == "__main__":
    main()
