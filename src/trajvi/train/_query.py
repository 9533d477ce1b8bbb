"""Phase 1 of a query model (scArches): only the weights of the categories the reference never saw train.

:meth:`trajvi.TrajVI.load_query_data` leaves the reference's parameters frozen (``requires_grad=False``) except
the weight matrices that read the batch (and, when the decoder reads it, the condition embedding), whose
gradients it masks to the new batches' columns (the new conditions' rows). This plan optimizes those
matrices alone, without weight decay: decay would move their frozen entries, whose gradient is zero (scvi-tools'
scArches tutorials turn it off for the same reason). There is no adversary: the query's cells are of the new
batches only, so a discriminator on them would have nothing to tell apart, and the reference's discriminator
stays as it was.

Batch normalisation uses the reference's statistics in training too (its layers are held in eval mode): a
minibatch of the query holds one batch, whose column adds the same shift to every cell, and normalising by
the minibatch's own statistics would remove that shift, leaving the new columns without a gradient
(measured: the columns moved by 1e-7 in three epochs). With the reference's statistics the query cells are
normalised in training as they are at inference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ._base import fused_adam
from ._vae import TrajVITrainingPlan

if TYPE_CHECKING:
    import torch


class QueryTrainingPlan(TrajVITrainingPlan):
    """Training plan of phase 1 for a model mapped onto a reference with :meth:`~trajvi.TrajVI.load_query_data`.

    One optimizer (Adam, no weight decay) over the count model's parameters that still require gradients,
    and no discriminator step; batch normalisation with the reference's statistics. Takes the arguments of
    :class:`TrajVITrainingPlan`; ``weight_decay``, ``adversary_lr``, ``adversary_steps`` and
    ``adversarial_weight`` have no effect.
    """

    def guarded_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]]:
        """Adam over the trainable count-model parameters (the new categories' weights), without weight decay."""
        params = [p for p in self.module.vae_parameters() if p.requires_grad]
        if not params:
            msg = (
                "this query model has no parameter left to train: load_query_data() makes the new batches' "
                "weights trainable, and none are (set requires_grad back on the parameters you want to train)."
            )
            raise RuntimeError(msg)
        vae = fused_adam(params, lr=self.lr, eps=self.eps, weight_decay=0.0)
        return {"vae": (vae, params)}

    def guard_names(self) -> dict[str, str]:
        """Report name of the one guard."""
        return {"vae": "VAE"}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Hold the batch-norm layers in eval mode (Lightning puts the module in train mode every epoch)."""
        for layer in self.module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()

    @property
    def use_adversary(self) -> bool:
        """Never: the reference's discriminator stays frozen (see the module docstring)."""
        return False
