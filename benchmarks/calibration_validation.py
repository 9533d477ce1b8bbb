"""Which validation inside the training data chooses the calibration's shrinkage rule that wins on the truth.

``predict(calibrate=True)`` adds the field's mean miss on the other groups to a held-out (group, perturbation)
and shrinks it by one of the rules in :data:`trajvi.model._calibration.SHRINKAGE_RULES`, chosen by split-half
validation. On Haber's Stem x Salmonella the unshrunk miss scores best on the truth and the chosen rule (one
James-Stein factor) does not; on Enterocyte x Salmonella the reverse. This script asks whether any validation that
a user could run inside the training data would choose better. For one held-out pair it fits the benchmark's
``trajvi`` model (:func:`_heldout.predict_trajvi`) and reports, for every rule (plus ``zero``: no calibration):

- ``truth``: PCC-delta (top-100 DEGs) and energy distance of the transferred prediction shifted by the rule
  applied to the mean miss of the other groups (the scores of ``heldout_perturbation.py``'s ablations);
- ``split_halves``: trajvi's own criterion (the losses ``predict(calibrate=True)`` records);
- ``logo_trained``: leave one group out on the fitted field: each other group's miss predicted from the mean of
  the rest, shrunk by the rule; scored as squared error of the mean over genes (``sq``), the same in 50 PCs of
  the training cells (``pc``), and the energy distance of that group's shifted transferred cells to its real
  ones in those PCs (``energy``);
- ``fit_score``: :meth:`~trajvi.TrajVI.score_held_out_groups` of the fit (the mean over the other groups of the
  energy distance above, with the rule trajvi chooses), the score that ranks fits of the same data;
- ``logo_refit``: the same with phase 2 refit without the left-out group's cells of the perturbation (residual
  penalty fixed at the chosen one), so that its miss is that of a response the field never saw, as for the
  held-out pair;
- ``phase2_seeds`` (with ``--phase2-seeds N``): the calibrated prediction's truth after refitting phase 2 on every
  training cell with seeds ``0..N-1`` (same phase 1, penalty fixed), to separate phase 2's seed spread from
  phase 1's.

Usage::

    python benchmarks/calibration_validation.py haber --group Stem --perturbation Salmonella --seed 0

Writes ``benchmarks/results/calibration_validation_<data>_<group>_<perturbation>_seed<seed>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA

import _common
import _heldout
from _common import Prediction, format_table, log, write_json
from heldout_perturbation import PANELS, load

if TYPE_CHECKING:
    from collections.abc import Callable

CRITERIA = ("sq", "pc", "energy")


def _dense(x: Any) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _rules() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    from trajvi.model._calibration import SHRINKAGE_RULES

    return {"zero": lambda miss, noise: np.zeros_like(miss), **SHRINKAGE_RULES}


class _Groups:
    """The training cells of the held-out perturbation's other groups, and their misses under a fitted field."""

    def __init__(self, split: _heldout.HeldOutSplit) -> None:
        from trajvi.model._calibration import log_normalized

        obs = split.train.obs
        self.split = split
        self.group = obs[split.panel.group_key].astype(str).to_numpy()
        self.label = obs[split.panel.condition_key].astype(str).to_numpy()
        control, perturbation = split.panel.control, split.perturbation
        self.names = sorted(
            g
            for g in set(self.group[self.label == perturbation])
            if np.any((self.group == g) & (self.label == control))
        )
        self.counts = split.train.X
        self.pca = PCA(n_components=50, random_state=0).fit(log_normalized(_dense(self.counts)))

    def rows(self, group: str, condition: str) -> np.ndarray:
        return np.flatnonzero((self.group == group) & (self.label == condition))

    def misses(self, model: Any) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
        """Per group: the transferred prediction's miss (real minus predicted mean, and its noise), and the cells."""
        from trajvi.model._calibration import log_normalized_moments

        split = self.split
        misses, predicted = {}, {}
        for g in self.names:
            pred = model.predict(
                source=split.panel.control,
                target=split.perturbation,
                indices=self.rows(g, split.panel.control).tolist(),
                n_steps=50,
                mode="transfer",
            )
            predicted[g] = _dense(pred.X)
            real_mean, real_noise = log_normalized_moments(self.counts, self.rows(g, split.perturbation))
            pred_mean, pred_noise = log_normalized_moments(predicted[g])
            misses[g] = (real_mean - pred_mean, real_noise + pred_noise)
        return misses, predicted

    def losses(
        self,
        left_out: str,
        misses: dict[str, tuple[np.ndarray, np.ndarray]],
        predicted: dict[str, np.ndarray],
    ) -> dict[str, dict[str, float]]:
        """Each rule's error in predicting ``left_out``'s miss from the mean of the other groups' misses."""
        from trajvi.metrics import energy_distance_unbiased
        from trajvi.model._calibration import log_normalized, shift_counts

        others = [g for g in self.names if g != left_out]
        mean = np.mean([misses[g][0] for g in others], axis=0)
        noise = np.sum([misses[g][1] for g in others], axis=0) / len(others) ** 2
        real = self.pca.transform(log_normalized(_dense(self.counts[self.rows(left_out, self.split.perturbation)])))
        out = {}
        for name, rule in _rules().items():
            shift = rule(mean, noise)
            error = shift - misses[left_out][0]
            moved = self.pca.transform(log_normalized(shift_counts(predicted[left_out], shift)))
            out[name] = {
                "sq": float(np.square(error).sum()),
                "pc": float(np.square(error @ self.pca.components_.T).sum()),
                "energy": float(energy_distance_unbiased(moved, real)),
            }
        return out


def _add(total: dict[str, dict[str, float]], part: dict[str, dict[str, float]], n: int) -> None:
    for rule, scores in part.items():
        for key, value in scores.items():
            total.setdefault(rule, dict.fromkeys(CRITERIA, 0.0))[key] += value / n


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", choices=list(PANELS))
    parser.add_argument("--group", required=True)
    parser.add_argument("--perturbation", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--phase2-seeds", type=int, default=0, help="also refit phase 2 on all cells with N seeds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    _common.quiet_lightning()
    _common.set_threads(args.torch_threads)
    import scvi

    from trajvi.model._calibration import shift_counts

    adata, panel = load(args.data)
    split = _heldout.make_split(
        adata, panel, args.group, args.perturbation, seed=args.seed, n_samples=1, max_epochs=args.max_epochs
    )
    if len(split.components()) > 1:
        msg = "a held-out combination borrows nothing from other groups: give a single perturbation"
        raise SystemExit(msg)
    evaluation = _heldout.Evaluation.build(adata, split)
    t0 = time.perf_counter()
    _heldout.predict_trajvi(split)
    control = panel.control
    conditions = sorted(set(split.train.obs[panel.condition_key].astype(str)) - {control})
    model = split.extra[f"model:{len(conditions)}"]
    penalty = model.residual_penalty_
    sources = model.adata.obs_names.get_indexer(split.sources.obs_names)
    query = {"source": control, "target": split.perturbation, "indices": sources, "n_steps": 50, "mode": "transfer"}
    plain = _dense(model.predict(**query).X)
    chosen = model.predict(**query, calibrate=True).uns["trajvi_predict"]["params"]["calibration_shrinkage"]
    scores = model.score_held_out_groups(source=control, target=split.perturbation, n_steps=50)
    fit_score = {"mean": float(scores["energy"].mean()), "rule": scores.attrs["rule"], "groups": scores.to_dict()}
    log(f"score_held_out_groups: mean energy {fit_score['mean']:.3f} (rule {fit_score['rule']})")
    groups = _Groups(split)
    misses, predicted = groups.misses(model)
    mean = np.mean([m for m, _ in misses.values()], axis=0)
    noise = np.sum([v for _, v in misses.values()], axis=0) / len(misses) ** 2
    truth = {}
    for name, rule in _rules().items():
        scores = evaluation.score(Prediction(counts=[shift_counts(plain, rule(mean, noise))], info={}))
        truth[name] = {k: scores[k] for k in ("pcc_delta_deg", "energy", "r2_all")}
    trained: dict[str, dict[str, float]] = {}
    for g in groups.names:
        _add(trained, groups.losses(g, misses, predicted), len(groups.names))
    log(f"fit and leave-one-group-out on the fitted field: {time.perf_counter() - t0:.0f}s")
    paths = [[control, c] for c in conditions]

    def refit(seed: int, indices: np.ndarray | None = None) -> None:
        """Phase 2 again on the same phase 1, the residual penalty fixed at the one chosen."""
        scvi.settings.seed = seed
        model.train_trajectories(
            paths,
            couple_within=panel.group_key,
            combination_delimiter=panel.delimiter,
            max_epochs=args.max_epochs,
            residual_penalty=penalty,
            indices=None if indices is None else indices.tolist(),
            seed=seed,
            enable_progress_bar=False,
        )

    refit_losses: dict[str, dict[str, float]] = {}
    for g in groups.names:
        refit(args.seed, np.flatnonzero(~((groups.group == g) & (groups.label == split.perturbation))))
        refit_misses, refit_predicted = groups.misses(model)
        _add(refit_losses, groups.losses(g, refit_misses, refit_predicted), len(groups.names))
        log(f"  refit without {g} x {split.perturbation}: done ({time.perf_counter() - t0:.0f}s)")
    phase2_seeds = []  # the same phase 1, phase 2 refit on every training cell with other seeds
    for phase2_seed in range(args.phase2_seeds):
        refit(phase2_seed)
        calibrated = _dense(model.predict(**query, calibrate=True).X)
        truth_scores = evaluation.score(Prediction(counts=[calibrated], info={}))
        kept = {k: truth_scores[k] for k in ("pcc_delta_deg", "energy", "r2_all")}
        phase2_seeds.append({"seed": phase2_seed, **kept})
        log(f"  phase 2 seed {phase2_seed}: {phase2_seeds[-1]}")
    rows = []
    for name in truth:
        row: dict[str, Any] = {"rule": name, **{f"truth_{k}": v for k, v in truth[name].items()}}
        row["split_halves"] = chosen["validation_loss"].get(name)
        row.update({f"trained_{k}": trained[name][k] for k in CRITERIA})
        row.update({f"refit_{k}": refit_losses[name][k] for k in CRITERIA})
        rows.append(row)
    columns = [
        ("rule", "rule", ""),
        ("truth_pcc_delta_deg", "PCC-delta", ".3f"),
        ("truth_energy", "energy", ".3f"),
        ("split_halves", "halves", ".0f"),
        *[(f"trained_{k}", f"LOGO {k}", ".3f") for k in CRITERIA],
        *[(f"refit_{k}", f"refit {k}", ".3f") for k in CRITERIA],
    ]
    print()
    print(format_table(rows, columns))
    choices = {"split_halves": chosen["rule"]}
    for kind, losses in (("logo_trained", trained), ("logo_refit", refit_losses)):
        for k in CRITERIA:
            choices[f"{kind}_{k}"] = min(losses, key=lambda name, k=k, losses=losses: losses[name][k])
    best = {
        k: min(truth, key=lambda n, k=k: truth[n][k] * (-1 if k != "energy" else 1))
        for k in ("pcc_delta_deg", "energy")
    }
    log(f"chosen: {choices}; best on the truth: {best}")
    out = args.out or Path("benchmarks/results") / (
        f"calibration_validation_{args.data}_{args.group}_{args.perturbation}_seed{args.seed}.json"
    )
    payload = {
        "benchmark": "calibration_validation",
        "data": args.data,
        "group": args.group,
        "perturbation": args.perturbation,
        "seed": args.seed,
        "max_epochs": args.max_epochs,
        "residual_penalty": penalty,
        "groups": groups.names,
        "truth": truth,
        "split_halves": chosen,
        "logo_trained": trained,
        "logo_refit": refit_losses,
        "chosen": choices,
        "fit_score": fit_score,
        "phase2_seeds": phase2_seeds,
        "best_on_truth": best,
        "versions": _common.versions(),
    }
    write_json(out, payload)
    return payload


if __name__ == "__main__":
    main()
