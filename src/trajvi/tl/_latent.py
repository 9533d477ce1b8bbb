"""``tl.latent``: the latent state and the gene embeddings, written into an AnnData."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trajvi._constants import ADATA_KEYS
from trajvi._logging import logger

from ._utils import check_model, skip_on_other_ranks

if TYPE_CHECKING:
    from anndata import AnnData

    from trajvi.model import TrajVI


def latent(
    adata: AnnData,
    model: TrajVI,
    *,
    key_added: str = ADATA_KEYS.LATENT,
    batch_size: int | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Write the latent representation and the gene embeddings of a trained model into ``adata``.

    Parameters
    ----------
    adata
        AnnData with the genes the model was trained on (the model's own AnnData, or another one
        that scvi-tools can transfer the model's setup to).
    model
        A trained :class:`~trajvi.TrajVI`.
    key_added
        Key under which the results are stored.
    batch_size
        Cells per forward pass.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    AnnData or None
        ``None``, or the copy when ``copy=True``. Under distributed training only rank 0 writes into
        ``adata`` (the other processes return ``None`` at once; ``copy=True`` works on every process). Writes

        - ``obsm[key_added]``: posterior means of the latent, ``(n_cells, n_latent)``;
        - ``varm[key_added]``: the decoder's gene embeddings, ``(n_genes, n_hidden)``;
        - ``uns[key_added]['params']``: the parameters used.
    """
    check_model(model, adata)
    if not copy and skip_on_other_ranks("tl.latent"):
        return None
    if copy:
        adata = adata.copy()
    _write_latent(adata, model, key_added=key_added, batch_size=batch_size)
    return adata if copy else None


def _write_latent(adata: AnnData, model: TrajVI, *, key_added: str, batch_size: int | None) -> None:
    z = model.get_latent_representation(adata, batch_size=batch_size)
    adata.obsm[key_added] = z
    adata.varm[key_added] = model.get_gene_embeddings().to_numpy()
    adata.uns[key_added] = {
        "params": {
            "n_latent": int(z.shape[1]),
            "condition_key": model.registry_keys_setup["condition_key"],
            "adversarial_target": model.adversarial_target,
            "adversarial_weight": model.adversarial_weight,
        }
    }
    logger.info(
        "added %r, the latent (adata.obsm), the gene embeddings (adata.varm) and the parameters (adata.uns)",
        key_added,
    )
