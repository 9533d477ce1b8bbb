"""Shared checks of the scanpy-style functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trajvi._distributed import global_rank
from trajvi._logging import logger

if TYPE_CHECKING:
    from anndata import AnnData

    from trajvi.model import TrajVI


def check_model(model: TrajVI, adata: AnnData) -> None:
    """Check that ``model`` is a trained :class:`~trajvi.TrajVI` whose genes are those of ``adata``."""
    from trajvi.model import TrajVI
    from trajvi.model._compat import check_genes

    if not isinstance(model, TrajVI):
        msg = f"model must be a trajvi.TrajVI, not {type(model).__name__}."
        raise TypeError(msg)
    if not model.is_trained:
        msg = "The model is not trained. Run model.train() first."
        raise RuntimeError(msg)
    if model.adata is not None:
        check_genes(adata, model.adata.var_names)


def skip_on_other_ranks(name: str) -> bool:
    """Whether this process must not write results into the user's AnnData (any rank but 0 under DDP)."""
    rank = global_rank()
    if rank == 0:
        return False
    logger.debug("%s skipped on process rank %d: only rank 0 writes into the AnnData.", name, rank)
    return True
