"""The count generator of the synthetic data: NB counts from true latent states, and the AnnData around them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData

UNS_KEY = "synthetic"
_CHUNK = 20_000


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def assemble(
    rng: np.random.Generator,
    z_true: np.ndarray,
    by_condition: np.ndarray,
    obs_columns: dict[str, Any],
    *,
    kind: str,
    seed: int,
    n_genes: int,
    n_batches: int,
    effect_size: float,
    library_size: float,
    dispersion: float,
    uns: dict[str, Any],
) -> AnnData:
    """Counts from true latent states (the generator of :func:`true_expression`), and the AnnData around them.

    ``uns['synthetic']`` records the kind, the seed and the generator's settings, then ``uns``.
    """
    from anndata import AnnData

    n_cells, d = z_true.shape
    loadings = rng.normal(scale=1.0 / np.sqrt(d), size=(n_genes, d)) * 1.5
    bias = rng.normal(scale=1.0, size=n_genes)
    batch_effect = rng.normal(scale=0.3, size=(n_genes, n_batches)) * (rng.random((n_genes, 1)) < 0.3)
    batch_of = np.asarray(rng.integers(n_batches, size=int(n_cells)))
    batch_depth = np.exp(rng.normal(scale=0.2, size=n_batches))
    library = library_size * batch_depth[batch_of] * np.exp(rng.normal(scale=0.3, size=n_cells))
    theta = dispersion * np.exp(rng.normal(scale=0.5, size=n_genes))

    # counts are drawn in chunks of cells and stored sparse, so that 10^6 cells never exist as a dense matrix
    chunks = []
    for start in range(0, n_cells, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n_cells))
        rho = softmax(z_true[sl] @ loadings.T + bias + batch_effect[:, batch_of[sl]].T)
        mu = rho * library[sl, None]
        chunks.append(sparse.csr_matrix(rng.poisson(rng.gamma(shape=theta, scale=mu / theta)).astype(np.float32)))
    counts = sparse.vstack(chunks, format="csr") if len(chunks) > 1 else chunks[0]

    columns = dict(obs_columns)
    first = {k: columns.pop(k) for k in ("condition", "cell_type")}
    obs = pd.DataFrame(
        {
            **first,
            "batch": pd.Categorical.from_codes(batch_of, categories=[f"batch_{b}" for b in range(n_batches)]),
            "true_library": library.astype(np.float32),
            **columns,
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    var = pd.DataFrame(
        {"true_bias": bias, "true_dispersion": theta},
        index=pd.Index([f"gene_{g}" for g in range(n_genes)]),
    )
    adata = AnnData(X=counts, obs=obs, var=var)
    adata.obsm["true_latent"] = z_true.astype(np.float32)
    adata.obsm["true_latent_by_condition"] = by_condition.astype(np.float32)
    adata.varm["true_loadings"] = loadings
    adata.varm["true_batch_effect"] = batch_effect
    adata.uns[UNS_KEY] = {
        "kind": kind,
        "seed": seed,
        "n_latent": d,
        "effect_size": effect_size,
        "library_size": library_size,
        "dispersion": dispersion,
        **uns,
    }
    return adata
