"""Pure torch: the encoder, the gene-attention decoder, the module and its losses."""

from ._decoder import GeneAttentionDecoder
from ._encoder import Encoder
from ._losses import (
    Repair,
    confusion_loss,
    discriminator_loss,
    gaussian_kl,
    labels_in_range,
    labels_to_indices,
    negative_binomial_log_likelihood,
    repair_nonfinite,
)
from ._module import TrajVILossOutput, TrajVIModule

__all__ = [
    "Encoder",
    "GeneAttentionDecoder",
    "Repair",
    "TrajVILossOutput",
    "TrajVIModule",
    "confusion_loss",
    "discriminator_loss",
    "gaussian_kl",
    "labels_in_range",
    "labels_to_indices",
    "negative_binomial_log_likelihood",
    "repair_nonfinite",
]
