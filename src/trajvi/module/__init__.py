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
from ._velocity import VelocityField, flow_matching_loss

__all__ = [
    "Encoder",
    "GeneAttentionDecoder",
    "Repair",
    "TrajVILossOutput",
    "TrajVIModule",
    "VelocityField",
    "confusion_loss",
    "discriminator_loss",
    "flow_matching_loss",
    "gaussian_kl",
    "labels_in_range",
    "labels_to_indices",
    "negative_binomial_log_likelihood",
    "repair_nonfinite",
]
