"""Shared checks of the scanpy-style functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData

    from trajvi.model import TrajVI


def check_model(model: TrajVI, adata: AnnData) -> None:
    """Check that ``model`` is a trained :class:`~trajvi.TrajVI` whose genes are those of ``adata``."""
    from trajvi.model import TrajVI

    if not isinstance(model, TrajVI):
        msg = f"model must be a trajvi.TrajVI, not {type(model).__name__}."
        raise TypeError(msg)
    if not model.is_trained:
        msg = "The model is not trained. Run model.train() first."
        raise RuntimeError(msg)
    model_genes = model.adata.var_names if model.adata is not None else None
    if model_genes is not None and not adata.var_names.equals(model_genes):
        n_common = len(adata.var_names.intersection(model_genes))
        msg = (
            f"adata has {adata.n_vars} genes and the model was trained on {len(model_genes)} "
            f"({n_common} in common, or in another order). Subset adata to the model's genes: "
            "adata[:, model.adata.var_names]."
        )
        raise ValueError(msg)
