"""Synthetic counts from a known latent process, with the ground truth stored beside them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from trajvi._types import SYNTHETIC_KINDS, check_option

if TYPE_CHECKING:
    from anndata import AnnData

    from trajvi._types import SyntheticKind

_UNS_KEY = "synthetic"
_CHUNK = 20_000


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


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
    from anndata import AnnData

    check_option(kind, SYNTHETIC_KINDS, "kind")
    if kind == "time_course" and n_time_points < 3:
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
    d = n_latent
    centres = rng.normal(scale=2.0, size=(n_cell_types, d))
    type_of = rng.choice(n_cell_types, size=n_cells, p=rng.dirichlet(np.full(n_cell_types, 5.0)))
    z_base = centres[type_of] + rng.normal(scale=0.5, size=(n_cells, d))

    # state-dependent response: a contraction/rotation of the within-type deviation
    response = np.stack([0.4 * _random_rotation(rng, d) for _ in range(n_cell_types)])
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

    loadings = rng.normal(scale=1.0 / np.sqrt(d), size=(n_genes, d)) * 1.5
    bias = rng.normal(scale=1.0, size=n_genes)
    batch_effect = rng.normal(scale=0.3, size=(n_genes, n_batches)) * (rng.random((n_genes, 1)) < 0.3)
    batch_of = rng.integers(n_batches, size=n_cells)
    batch_depth = np.exp(rng.normal(scale=0.2, size=n_batches))
    library = library_size * batch_depth[batch_of] * np.exp(rng.normal(scale=0.3, size=n_cells))
    theta = dispersion * np.exp(rng.normal(scale=0.5, size=n_genes))

    # counts are drawn in chunks of cells and stored sparse, so that 10^6 cells never exist as a dense matrix
    chunks = []
    for start in range(0, n_cells, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n_cells))
        rho = _softmax(z_true[sl] @ loadings.T + bias + batch_effect[:, batch_of[sl]].T)
        mu = rho * library[sl, None]
        chunks.append(sparse.csr_matrix(rng.poisson(rng.gamma(shape=theta, scale=mu / theta)).astype(np.float32)))
    counts = sparse.vstack(chunks, format="csr") if len(chunks) > 1 else chunks[0]

    obs = pd.DataFrame(
        {
            "condition": pd.Categorical.from_codes(condition_of, categories=categories, ordered=kind == "time_course"),
            "cell_type": pd.Categorical.from_codes(type_of, categories=[f"type_{k}" for k in range(n_cell_types)]),
            "batch": pd.Categorical.from_codes(batch_of, categories=[f"batch_{b}" for b in range(n_batches)]),
            "true_library": library.astype(np.float32),
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    if kind == "time_course":
        obs["time"] = times[condition_of]
    var = pd.DataFrame(
        {"true_bias": bias, "true_dispersion": theta},
        index=pd.Index([f"gene_{g}" for g in range(n_genes)]),
    )
    adata = AnnData(X=counts, obs=obs, var=var)
    adata.obsm["true_latent"] = z_true.astype(np.float32)
    adata.obsm["true_latent_by_condition"] = by_condition.astype(np.float32)
    adata.varm["true_loadings"] = loadings
    adata.varm["true_batch_effect"] = batch_effect
    adata.uns[_UNS_KEY] = {
        "kind": kind,
        "seed": seed,
        "n_latent": d,
        "effect_size": effect_size,
        "library_size": library_size,
        "dispersion": dispersion,
        "conditions": categories,
        "times": times,
    }
    return adata


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
    if _UNS_KEY not in adata.uns or "true_loadings" not in adata.varm:
        msg = "adata was not made by trajvi.data.synthetic(): it lacks uns['synthetic'] and varm['true_loadings']."
        raise KeyError(msg)
    logits = np.asarray(latent, dtype=np.float64) @ adata.varm["true_loadings"].T + adata.var["true_bias"].to_numpy()
    if batch is not None:
        logits = logits + adata.varm["true_batch_effect"][:, np.asarray(batch)].T
    return _softmax(logits)
