"""Synthetic data with several paths and a known answer.

A perturbation panel (combinations, doses, features) and a branching time course.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._generator import assemble, random_rotation

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

#: Features that place each perturbation (its shift in the latent is a fixed linear map of them).
N_FEATURES = 4


def perturbation_panel(
    rng: np.random.Generator,
    *,
    n_cells: int,
    n_genes: int,
    n_cell_types: int,
    n_batches: int,
    n_latent: int,
    n_perturbations: int,
    combinations: Sequence[tuple[int, int]],
    doses: Sequence[float],
    effect_size: float,
    library_size: float,
    dispersion: float,
    seed: int,
) -> AnnData:
    """Control, single perturbations ``P0, P1, ...`` at several doses, and additive pairs ``"Pi+Pj"``.

    A perturbation ``p`` at dose ``s`` moves a cell of type ``k`` to
    ``z + s * effect_size * (shift_p + type_shift_pk + 0.3 A_p (z - c_k))``: a shift of its own, a smaller one
    per cell type and a state-dependent part, all linear in the dose. ``shift_p`` is a fixed linear map of the
    perturbation's features (``uns['synthetic']['perturbation_features']``), so a perturbation's effect is known
    from its features. A pair ``"Pi+Pj"`` (dose 1) adds the two effects. Control cells have dose 0.
    """
    d = n_latent
    centres = rng.normal(scale=2.0, size=(n_cell_types, d))
    type_of = rng.choice(n_cell_types, size=n_cells, p=rng.dirichlet(np.full(n_cell_types, 5.0)))
    z_base = centres[type_of] + rng.normal(scale=0.5, size=(n_cells, d))
    deviation = z_base - centres[type_of]

    features = rng.normal(size=(n_perturbations, N_FEATURES))
    feature_map = rng.normal(size=(N_FEATURES, d)) / np.sqrt(N_FEATURES)
    shift = features @ feature_map
    shift *= 1.5 / np.linalg.norm(shift, axis=1, keepdims=True)
    type_shift = rng.normal(scale=0.3, size=(n_perturbations, n_cell_types, d))
    response = np.stack([0.3 * random_rotation(rng, d) for _ in range(n_perturbations)])

    def effect(p: int) -> np.ndarray:  # at dose 1, every cell
        state = np.einsum("ij,nj->ni", response[p], deviation)
        return effect_size * (shift[p] + type_shift[p, type_of] + state)

    singles = [f"P{p}" for p in range(n_perturbations)]
    pairs = [f"P{i}+P{j}" for i, j in combinations]
    categories = ["control", *singles, *pairs]
    effects = [np.zeros_like(z_base)] + [effect(p) for p in range(n_perturbations)]
    effects += [effects[1 + i] + effects[1 + j] for i, j in combinations]
    by_condition = z_base[:, None, :] + np.stack(effects, axis=1)  # at dose 1

    shares = np.ones(len(categories))
    shares[0] = 3.0  # controls are the source of every path: three times as many as of one perturbation
    condition_of = rng.choice(len(categories), size=n_cells, p=shares / shares.sum())
    dose = np.where(condition_of == 0, 0.0, 1.0)
    is_single = (condition_of >= 1) & (condition_of <= n_perturbations)
    dose[is_single] = rng.choice(np.asarray(doses, dtype=float), size=int(is_single.sum()))
    observed_effect = np.stack(effects, axis=1)[np.arange(n_cells), condition_of]
    z_true = z_base + dose[:, None] * observed_effect
    obs = {
        "condition": pd.Categorical.from_codes(condition_of, categories=categories),
        "cell_type": pd.Categorical.from_codes(type_of, categories=[f"type_{k}" for k in range(n_cell_types)]),
        "dose": dose.astype(np.float32),
    }
    table = pd.DataFrame(features, index=pd.Index(singles), columns=[f"feature_{i}" for i in range(N_FEATURES)])
    uns = {
        "conditions": categories,
        "doses": list(map(float, doses)),
        "perturbation_features": table,
        "true_shift": pd.DataFrame(shift, index=pd.Index(singles), columns=[f"dim_{i}" for i in range(d)]),
    }
    return assemble(
        rng,
        z_true,
        by_condition,
        obs,
        kind="perturbations",
        seed=seed,
        n_genes=n_genes,
        n_batches=n_batches,
        effect_size=effect_size,
        library_size=library_size,
        dispersion=dispersion,
        uns=uns,
    )


def branching(
    rng: np.random.Generator,
    *,
    n_cells: int,
    n_genes: int,
    n_batches: int,
    n_latent: int,
    n_branches: int,
    n_time_points: int,
    effect_size: float,
    library_size: float,
    dispersion: float,
    seed: int,
) -> AnnData:
    """Progenitors (``prog``, t = 0) that branch into ``n_branches`` fates observed at t = 1, 2, ...

    A progenitor's fate is set by its position (the branch whose direction its state points to most;
    ``obs['true_fate']``); on branch ``b`` it moves as ``z(t) = z + t v_b + t^2 a_b / 2``. Conditions are
    ``prog`` and ``F<b>_t<i>`` with the time in ``obs['time']``; ``obs['fate']`` is the branch of every cell
    (the progenitors' own fate included). ``obsm['true_latent_by_condition']`` holds each cell's state on every
    branch at every time (``(n_cells, n_conditions, n_latent)``, in the order of the condition categories),
    so the answer is known for every progenitor along every branch.
    """
    d = n_latent
    directions = rng.normal(size=(n_branches, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    z0 = rng.normal(scale=0.7, size=(n_cells, d))
    fate = np.argmax(z0 @ directions.T, axis=1)
    velocity = effect_size * 1.2 * directions
    accel = effect_size * rng.normal(scale=0.3, size=(n_branches, d))
    times = np.arange(1, n_time_points, dtype=float)
    categories = ["prog"] + [f"F{b}_t{int(t)}" for b in range(n_branches) for t in times]
    states = [z0]
    for b in range(n_branches):
        for t in times:
            states.append(z0 + t * velocity[b] + 0.5 * t**2 * accel[b])
    by_condition = np.stack(states, axis=1)
    # each cell is seen once: as a progenitor, or at one time on its own branch
    seen_at = rng.integers(n_time_points, size=n_cells)  # 0: progenitor
    condition_of = np.where(seen_at == 0, 0, 1 + fate * len(times) + (seen_at - 1))
    z_true = by_condition[np.arange(n_cells), condition_of]
    time_of = np.concatenate([[0.0], np.tile(times, n_branches)])
    fates = [f"F{b}" for b in range(n_branches)]
    obs = {
        "condition": pd.Categorical.from_codes(condition_of, categories=categories),
        "cell_type": pd.Categorical(
            np.where(seen_at == 0, "prog", np.asarray(fates)[fate]), categories=["prog", *fates]
        ),
        "time": time_of[condition_of],
        "fate": pd.Categorical.from_codes(fate, categories=fates),
        "true_fate": pd.Categorical.from_codes(fate, categories=fates),
    }
    uns = {
        "conditions": categories,
        "times": time_of,
        "branches": {f: ["prog", *(f"{f}_t{int(t)}" for t in times)] for f in fates},
        "fate_fractions": {f: float((fate == b).mean()) for b, f in enumerate(fates)},
    }
    return assemble(
        rng,
        z_true,
        by_condition,
        obs,
        kind="branching",
        seed=seed,
        n_genes=n_genes,
        n_batches=n_batches,
        effect_size=effect_size,
        library_size=library_size,
        dispersion=dispersion,
        uns=uns,
    )
