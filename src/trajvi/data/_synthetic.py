"""Synthetic counts from a known latent process, with the ground truth stored beside them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trajvi._types import SYNTHETIC_KINDS, check_option

from ._generator import UNS_KEY, assemble, random_rotation, softmax
from ._synthetic_paths import branching, perturbation_panel

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from trajvi._types import SyntheticKind


def synthetic(
    n_cells: int = 2000,
    n_genes: int = 500,
    *,
    kind: SyntheticKind = "perturbation",
    n_cell_types: int = 4,
    n_batches: int = 2,
    n_latent: int = 6,
    n_time_points: int = 4,
    effect_size: float = 1.0,
    library_size: float = 2000.0,
    dispersion: float = 5.0,
    n_perturbations: int = 5,
    combinations: Sequence[tuple[int, int]] = ((0, 1), (1, 2), (2, 3)),
    doses: Sequence[float] = (0.5, 1.0, 2.0),
    n_branches: int = 2,
    seed: int = 0,
) -> AnnData:
    """Simulate negative-binomial counts from a known latent process.

    Each cell has a true latent state ``z`` drawn around its cell type's centre. Expression is
    ``mu = library * softmax(W z + b + batch effect)``, and counts are negative binomial with gene-wise
    dispersion. The condition acts on the latent:

    - ``"perturbation"``: conditions ``control`` and ``stimulated``. The response of a cell is
      ``z + effect_size * (d + d_k) + A_k (z - c_k)``: a shift shared by all types, a shift of its own
      type ``k``, and a state-dependent part, so it is neither a plain shift nor the same in every type.
    - ``"time_course"``: conditions ``t0, t1, ...`` at times ``0, 1, ...`` (``obs['time']``). Every cell
      moves along a curved path ``z(t) = z + t v_k + t^2 a_k / 2 + t A_k (z - c_k)``; it is observed at one
      time point.
    - ``"perturbations"``: a panel of ``n_perturbations`` perturbations ``P0, P1, ...`` given at ``doses``
      (``obs['dose']``, 0 for controls), and the additive pairs of ``combinations`` (``"P0+P1"``, dose 1).
      Effects are linear in the dose, and a perturbation's shift is a linear map of its features
      (``uns['synthetic']['perturbation_features']``); see :func:`trajvi.data._synthetic_paths.perturbation_panel`.
    - ``"branching"``: progenitors (``prog``) branching into ``n_branches`` fates observed at times
      ``1, ..., n_time_points - 1`` (conditions ``F<b>_t<i>``); ``uns['synthetic']['branches']`` lists the
      paths and ``obs['true_fate']`` each cell's fate.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the data.
    kind
        ``"perturbation"`` (two conditions) or ``"time_course"`` (``n_time_points`` conditions).
    n_cell_types
        Number of cell types (``obs['cell_type']``).
    n_batches
        Number of batches (``obs['batch']``); each shifts library sizes and the expression of some genes.
    n_latent
        Dimension of the true latent space.
    n_time_points
        Number of time points (at least 3) for ``kind="time_course"``.
    effect_size
        Scale of the condition effect in the latent.
    library_size
        Median library size.
    dispersion
        Median gene-wise NB dispersion ``theta`` (smaller is noisier).
    n_perturbations, combinations, doses
        The panel of ``kind="perturbations"``.
    n_branches
        Number of fates of ``kind="branching"``.
    seed
        Random seed; the same seed gives the same data.

    Returns
    -------
    AnnData
        Raw counts in ``X`` (CSR, float32) and

        - ``obs``: ``condition``, ``cell_type``, ``batch``, ``true_library`` (and ``time`` for a time course);
        - ``obsm['true_latent']``: the latent state of each cell as observed;
        - ``obsm['true_latent_by_condition']``: ``(n_cells, n_conditions, n_latent)``, the state of each cell
          under every condition, in the order of ``obs['condition'].cat.categories`` (the counterparts);
        - ``varm['true_loadings']``, ``var['true_bias']``, ``var['true_dispersion']``,
          ``varm['true_batch_effect']``: the generator, see :func:`true_expression`;
        - ``uns['synthetic']``: the parameters used.
    """
    check_option(kind, SYNTHETIC_KINDS, "kind")
    if kind in ("time_course", "branching") and n_time_points < 3:
        msg = f"n_time_points={n_time_points}; a time course needs at least 3."
        raise ValueError(msg)
    for name, value in {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_cell_types": n_cell_types,
        "n_batches": n_batches,
        "n_latent": n_latent,
    }.items():
        if int(value) < 1:
            msg = f"{name}={value}; it must be at least 1."
            raise ValueError(msg)

    rng = np.random.default_rng(seed)
    common: dict[str, Any] = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_batches": n_batches,
        "n_latent": n_latent,
        "effect_size": effect_size,
        "library_size": library_size,
        "dispersion": dispersion,
        "seed": seed,
    }
    if kind == "perturbations":
        return perturbation_panel(
            rng,
            n_cell_types=n_cell_types,
            n_perturbations=n_perturbations,
            combinations=combinations,
            doses=doses,
            **common,
        )
    if kind == "branching":
        return branching(rng, n_branches=n_branches, n_time_points=n_time_points, **common)
    d = n_latent
    centres = rng.normal(scale=2.0, size=(n_cell_types, d))
    type_of = rng.choice(n_cell_types, size=n_cells, p=rng.dirichlet(np.full(n_cell_types, 5.0)))
    z_base = centres[type_of] + rng.normal(scale=0.5, size=(n_cells, d))

    # state-dependent response: a contraction/rotation of the within-type deviation
    response = np.stack([0.4 * random_rotation(rng, d) for _ in range(n_cell_types)])
    deviation = z_base - centres[type_of]
    state_part = np.einsum("nij,nj->ni", response[type_of], deviation)

    if kind == "perturbation":
        categories = ["control", "stimulated"]
        times = np.array([0.0, 1.0])
        shared = rng.normal(size=d)
        shared *= 1.5 / np.linalg.norm(shared)
        per_type = rng.normal(scale=0.6, size=(n_cell_types, d))
        z_stim = z_base + effect_size * (shared + per_type[type_of]) + effect_size * state_part
        by_condition = np.stack([z_base, z_stim], axis=1)
    else:
        categories = [f"t{i}" for i in range(n_time_points)]
        times = np.arange(n_time_points, dtype=float)
        velocity = rng.normal(size=(n_cell_types, d))
        velocity *= 0.8 / np.linalg.norm(velocity, axis=1, keepdims=True)
        accel = rng.normal(scale=0.25, size=(n_cell_types, d))
        t = times[None, :, None]
        by_condition = z_base[:, None, :] + effect_size * (
            t * velocity[type_of][:, None, :]
            + 0.5 * t**2 * accel[type_of][:, None, :]
            + 0.5 * t * state_part[:, None, :]
        )
    n_conditions = len(categories)
    condition_of = rng.integers(n_conditions, size=n_cells)
    z_true = by_condition[np.arange(n_cells), condition_of]

    obs = {
        "condition": pd.Categorical.from_codes(condition_of, categories=categories, ordered=kind == "time_course"),
        "cell_type": pd.Categorical.from_codes(type_of, categories=[f"type_{k}" for k in range(n_cell_types)]),
    }
    if kind == "time_course":
        obs["time"] = times[condition_of]
    return assemble(
        rng,
        z_true,
        by_condition,
        obs,
        kind=kind,
        seed=seed,
        n_genes=n_genes,
        n_batches=n_batches,
        effect_size=effect_size,
        library_size=library_size,
        dispersion=dispersion,
        uns={"conditions": categories, "times": times},
    )


def true_expression(adata: AnnData, latent: np.ndarray, batch: np.ndarray | None = None) -> np.ndarray:
    """Expression frequencies (rows sum to one) that the generator of :func:`synthetic` gives a latent.

    Parameters
    ----------
    adata
        An AnnData made by :func:`synthetic` (its generator is read from ``varm`` and ``var``).
    latent
        ``(n, n_latent)`` true latent states, e.g. a slice of ``obsm['true_latent_by_condition']``.
    batch
        Batch code of each row (``obs['batch'].cat.codes``); ``None`` leaves out the batch effect.

    Returns
    -------
    ``(n, n_genes)`` frequencies; multiply by a library size for NB means.
    """
    if UNS_KEY not in adata.uns or "true_loadings" not in adata.varm:
        msg = "adata was not made by trajvi.data.synthetic(): it lacks uns['synthetic'] and varm['true_loadings']."
        raise KeyError(msg)
    logits = np.asarray(latent, dtype=np.float64) @ adata.varm["true_loadings"].T + adata.var["true_bias"].to_numpy()
    if batch is not None:
        logits = logits + adata.varm["true_batch_effect"][:, np.asarray(batch)].T
    return softmax(logits)
