"""Scoring a fit by how well one query carries to a group whose response it has to borrow.

A (group, perturbation) whose cells were never measured, such as a cell type's response to an infection measured
only in other cell types, is predicted from the group's source cells and calibrated with the mean miss of the
groups that were measured (:mod:`trajvi.model._calibration`). :meth:`GroupScoresMixin.score_held_out_groups` plays
that out on every measured group in turn: the group's prediction is calibrated with the *other* groups' mean miss,
shrunk by the rule the calibration chooses for borrowed misses, and compared with the group's real target cells
by energy distance in principal components of the cells phase 2 used. The field has seen every one of these groups,
so the scores rank fits (seeds, settings, epochs) rather than estimate a held-out error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trajvi._constants import REGISTRY_KEYS
from trajvi.data._blocks import read_rows
from trajvi.metrics import energy_distance_unbiased

from ._calibration import SHRINKAGE_RULES, Calibration, _Miss, log_normalized, shift_counts

if TYPE_CHECKING:
    from anndata import AnnData

    from trajvi._types import Integrator, PredictMode

#: Cells the principal components are fit on, at most (a random subset of the cells phase 2 used).
PCA_CELLS = 5_000
#: Cells of each side an energy distance is computed on, at most (drawn at random; its cost is quadratic).
MAX_CELLS = 2_000


def _components(counts: Any, rows: np.ndarray, n_comps: int, seed: int) -> Any:
    """A PCA (scikit-learn) of ``log1p(CP10k)`` over ``rows`` (at most :data:`PCA_CELLS` of them, drawn at random)."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    if len(rows) > PCA_CELLS:
        rows = np.sort(rng.choice(rows, PCA_CELLS, replace=False))
    values = log_normalized(read_rows(counts, rows))
    return PCA(n_components=min(n_comps, *values.shape), random_state=seed).fit(values)


class GroupScoresMixin:
    """:meth:`score_held_out_groups` for TrajVI (see the module docstring)."""

    if TYPE_CHECKING:
        # Provided by the model class; declared here for the type checker only.
        adata: AnnData
        couple_within_: str | None

        def get_from_registry(self, adata: AnnData, registry_key: str) -> Any: ...

    def score_held_out_groups(
        self,
        *,
        source: str,
        target: str,
        path: str | None = None,
        mode: PredictMode = "transfer",
        n_steps: int = 100,
        method: Integrator = "euler",
        batch_size: int = 1024,
        n_comps: int = 50,
        seed: int = 0,
    ) -> pd.DataFrame:
        """How well ``predict(source=..., target=..., calibrate=True)`` carries to a group it must borrow for.

        Every group of ``couple_within`` with cells of both ``source`` and ``target`` among the cells phase 2
        used is predicted from its ``source`` cells (as :meth:`predict` would, with ``mode``) and calibrated with
        the mean miss of the *other* groups, as a group without real ``target`` cells would be; the rule that
        shrinks it is the one :meth:`predict` chooses for such borrowed misses (split halves of the cells). Each
        group's score is the energy distance of its calibrated prediction to its real ``target`` cells in the top
        ``n_comps`` principal components of ``log1p(CP10k)`` of the cells phase 2 used (at most 5,000 of them,
        drawn with ``seed``; scikit-learn's PCA), on at most 2,000 cells of each side.

        The field was trained on every group scored, so the scores are not the error of a group never measured;
        they rank fits of the same data (phase-1 seeds, settings): lower is better. Compare fits by the mean of
        ``"energy"``.

        Parameters
        ----------
        source, target
            The query, as in :meth:`predict`; ``target`` is a condition phase 2 trained on (not a combination).
        path, mode, n_steps, method, batch_size
            As in :meth:`predict`.
        n_comps
            Principal components the energy distance is measured in.
        seed
            Seed of the cells the components and the distances are computed on (when there are more) and of the
            PCA's solver.

        Returns
        -------
        pandas.DataFrame
            One row per group scored (index: the group): ``"energy"`` (calibrated with the other groups' mean
            miss), ``"energy_uncalibrated"``, ``"n_source"`` and ``"n_target"`` (cells). ``df.attrs["rule"]`` is the
            shrinkage rule used.

        Raises
        ------
        ValueError
            If fewer than two groups have cells of both conditions among the cells phase 2 used (nothing to borrow
            from), or if phase 2 was not trained with ``couple_within``.
        """
        if self.couple_within_ is None:
            msg = (
                "score_held_out_groups compares groups of couple_within, and the last train_trajectories had none; "
                "train phase 2 with couple_within=<obs column> (cell types, cell lines, ...)."
            )
            raise ValueError(msg)
        settings = {"mode": mode, "n_samples": 1, "n_steps": n_steps, "method": method, "batch_size": batch_size}
        calibration = Calibration(self, source, path, settings)
        if not calibration._has(target):
            msg = f"target={target!r} has no cells among the cells phase 2 used; give a condition it trained on."
            raise ValueError(msg)
        kept: dict[str, Any] = {}
        misses = calibration._misses(target, keep=kept)
        if len(misses) < 2:
            msg = (
                f"score_held_out_groups needs at least two groups with cells of both {source!r} and {target!r} "
                f"(found {sorted(misses)}): each group's miss is borrowed from the others."
            )
            raise ValueError(msg)
        borrowed = {g: _Miss.mean([m for h, m in misses.items() if h != g]) for g in misses}
        rule_name = calibration._choose(borrowed, {g: kept[g][0].shape[0] for g in misses})
        rule = SHRINKAGE_RULES[rule_name]
        counts = self.get_from_registry(self.adata, REGISTRY_KEYS.X_KEY)
        used = np.flatnonzero(pd.notna(calibration.labels))  # None marks cells phase 2 did not use
        pca = _components(counts, used, n_comps, seed)

        def project(values: np.ndarray) -> np.ndarray:
            return pca.transform(log_normalized(values))

        rows = []
        for group, (predicted, real_rows) in kept.items():
            real = project(read_rows(counts, real_rows))
            predicted_counts = predicted.toarray() if hasattr(predicted, "toarray") else np.asarray(predicted)
            calibrated = shift_counts(predicted_counts, rule(*borrowed[group].full))
            rows.append(
                {
                    "group": group,
                    "energy": energy_distance_unbiased(project(calibrated), real, max_cells=MAX_CELLS, seed=seed),
                    "energy_uncalibrated": energy_distance_unbiased(
                        project(predicted_counts), real, max_cells=MAX_CELLS, seed=seed
                    ),
                    "n_source": int(predicted_counts.shape[0]),
                    "n_target": len(real_rows),
                }
            )
        table = pd.DataFrame(rows).set_index("group")
        table.attrs["rule"] = rule_name
        return table
