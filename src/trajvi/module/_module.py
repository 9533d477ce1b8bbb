"""The trajvi module: encoder, gene-attention decoder and the condition discriminator.

Everything the model needs at load time lives here, because scvi-tools saves the module's state
dict, never the training plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from scvi.distributions import NegativeBinomial
from scvi.module import Classifier
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal

from trajvi._constants import REGISTRY_KEYS

from ._decoder import GeneAttentionDecoder
from ._encoder import Encoder
from ._losses import (
    THETA_MAX,
    THETA_MIN,
    Repair,
    gaussian_kl,
    labels_to_indices,
    negative_binomial_log_likelihood,
)
from ._velocity import VelocityField

if TYPE_CHECKING:
    from trajvi._types import Composition


@dataclass
class TrajVILossOutput(LossOutput):
    """:class:`scvi.module.base.LossOutput` plus the records of what the loss repaired."""

    repairs: tuple[Repair, ...] = field(default_factory=tuple)


class TrajVIModule(BaseModuleClass):
    """Negative-binomial VAE with a gene-attention decoder and a latent discriminator.

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches (1 when no batch key is registered).
    n_conditions
        Number of condition categories.
    n_latent, n_hidden, n_layers, dropout_rate
        Sizes of the encoder and decoder.
    n_attention
        Width ``d_k`` of the decoder's queries and keys.
    decode_condition
        Whether the decoder sees the condition (through a learned embedding).
    n_condition_embed
        Width of that embedding.
    n_adversary_classes
        Number of classes the discriminator predicts from the latent (conditions or batches).
    n_hidden_adversary
        Width of the discriminator's two hidden layers.
    n_hidden_velocity, n_layers_velocity
        Size of the velocity field's residual network (phase 2).
    n_condition_velocity, composition
        Width of the velocity field's condition vector and how a combination's components compose.
    use_size_factor
        Whether library sizes come from registered size factors instead of the observed totals.
    """

    def __init__(
        self,
        n_input: int,
        *,
        n_batch: int = 1,
        n_conditions: int = 2,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        n_attention: int = 64,
        decode_condition: bool = True,
        n_condition_embed: int = 16,
        n_adversary_classes: int = 2,
        n_hidden_adversary: int = 64,
        n_hidden_velocity: int = 128,
        n_layers_velocity: int = 3,
        n_condition_velocity: int = 16,
        composition: Composition = "sum",
        use_size_factor: bool = False,
    ) -> None:
        super().__init__()
        self.n_input = n_input
        self.n_batch = n_batch
        self.n_conditions = n_conditions
        self.n_latent = n_latent
        self.decode_condition = decode_condition
        self.n_adversary_classes = n_adversary_classes
        self.use_size_factor = use_size_factor

        self.encoder = Encoder(
            n_input, n_latent, n_batch=n_batch, n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate
        )
        self.condition_embedding = nn.Embedding(n_conditions, n_condition_embed) if decode_condition else None
        self.decoder = GeneAttentionDecoder(
            n_latent,
            n_input,
            n_batch=n_batch,
            n_condition_embed=n_condition_embed if decode_condition else 0,
            n_hidden=n_hidden,
            n_layers=n_layers,
            n_attention=n_attention,
        )
        self.log_theta = nn.Parameter(torch.zeros(n_input))
        self.discriminator = Classifier(
            n_input=n_latent,
            n_hidden=n_hidden_adversary,
            n_labels=max(n_adversary_classes, 1),
            n_layers=2,
            dropout_rate=0.0,
            logits=True,
            use_batch_norm=False,
        )
        self.velocity = VelocityField(
            n_latent,
            n_hidden=n_hidden_velocity,
            n_layers=n_layers_velocity,
            n_condition=n_condition_velocity,
            composition=composition,
        )

    # -- parameter groups (one optimizer each) -------------------------------------------------
    def vae_parameters(self) -> list[nn.Parameter]:
        """Parameters of the count model: encoder, decoder, condition embedding, dispersion."""
        excluded = {id(p) for p in self.discriminator.parameters()} | {id(p) for p in self.velocity.parameters()}
        return [p for p in self.parameters() if id(p) not in excluded]

    def velocity_parameters(self) -> list[nn.Parameter]:
        """Parameters of the velocity field."""
        return list(self.velocity.parameters())

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of the discriminator."""
        return list(self.discriminator.parameters())

    @property
    def theta(self) -> torch.Tensor:
        """Gene-wise NB inverse dispersion, bounded away from zero and infinity."""
        return torch.exp(self.log_theta.float()).clamp(THETA_MIN, THETA_MAX)

    # -- scvi-tools interface --------------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "size_factor": tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY),
        }

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "condition_index": tensors[REGISTRY_KEYS.CONDITION_KEY],
        }

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        size_factor: torch.Tensor | None = None,
        n_samples: int = 1,
    ) -> dict[str, torch.Tensor | Normal]:
        """Encode counts: posterior ``qz``, a sample ``z`` and the log library size.

        Non-finite counts (a corrupted batch) enter the encoder and the library size as zeros; the loss
        leaves them out and counts them (see :func:`~trajvi.module.negative_binomial_log_likelihood`).
        """
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        mean, logvar = self.encoder(x, batch_index)
        qz = Normal(mean, torch.exp(0.5 * logvar), validate_args=False)  # validation would sync the device
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        if self.use_size_factor and size_factor is not None:
            library = torch.log(size_factor)
        else:
            library = torch.log(x.sum(dim=-1, keepdim=True))
        if n_samples > 1:
            library = library.unsqueeze(0).expand(n_samples, *library.shape)
        return {"z": z, "qz": qz, "qzm": mean, "qz_logvar": logvar, "library": library}

    def embed_condition(self, condition_index: torch.Tensor) -> torch.Tensor | None:
        """Condition embedding of each cell (``None`` when the decoder does not see the condition).

        Outside training, codes beyond the trained conditions (cells of a condition the model never saw,
        registered with the model's conditions extended) raise a ValueError instead of an indexing error.
        """
        if self.condition_embedding is None:
            return None
        codes = labels_to_indices(condition_index, self.n_conditions)
        if not self.training and codes.numel() and bool((codes >= self.n_conditions).any()):
            msg = (
                "some cells are of a condition the model was not trained on, and this model's decoder reads the "
                "condition (decode_condition=True): it cannot decode them under their own condition. Decode them "
                "under a trained condition (simulate_trajectory/predict with a trained source), or leave them out."
            )
            raise ValueError(msg)
        return self.condition_embedding(codes)

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
        condition_index: torch.Tensor,
        transform_batch: int | None = None,
        transform_condition: int | None = None,
    ) -> dict[str, torch.Tensor | NegativeBinomial]:
        """Decode latent states into the NB distribution of counts.

        Parameters
        ----------
        z
            ``(n, n_latent)`` or ``(n_samples, n, n_latent)`` latent states.
        library
            Log library sizes, shaped like ``z`` but with one column.
        batch_index, condition_index
            ``(n, 1)`` codes of each cell.
        transform_batch
            Decode every cell as if from this batch code (scvi-tools' ``get_normalized_expression`` passes it).
        transform_condition
            Decode every cell as if in this condition code (a counterfactual; it matters only when the decoder
            sees the condition).
        """
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        if transform_condition is not None:
            condition_index = torch.full_like(condition_index, int(transform_condition))
        condition_embedding = self.embed_condition(condition_index)
        lead = z.shape[:-1]
        flat_z = z.reshape(-1, z.shape[-1])
        n_rep = flat_z.shape[0] // batch_index.shape[0]
        if n_rep > 1:
            batch_index = batch_index.repeat(n_rep, 1)
            if condition_embedding is not None:
                condition_embedding = condition_embedding.repeat(n_rep, 1)
        px_scale = self.decoder(flat_z, batch_index, condition_embedding).reshape(*lead, -1)
        px_rate = torch.exp(library.float()) * px_scale
        theta = self.theta
        px = NegativeBinomial(mu=px_rate, theta=theta, scale=px_scale)
        return {"px": px, "px_scale": px_scale, "px_rate": px_rate, "theta": theta}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
        kl_weight: float | torch.Tensor = 1.0,
    ) -> TrajVILossOutput:
        """Negative ELBO per cell (NB reconstruction + weighted Gaussian KL), in float32, repaired."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        ll, rec_repair = negative_binomial_log_likelihood(x, generative_outputs["px_rate"], generative_outputs["theta"])
        reconstruction = -ll.sum(dim=-1)
        kl, kl_repair = gaussian_kl(inference_outputs["qzm"], inference_outputs["qz_logvar"])
        loss = (reconstruction + kl_weight * kl).mean()
        n_repaired = rec_repair.n_repaired + kl_repair.n_repaired
        return TrajVILossOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            kl_local=kl,
            extra_metrics={"n_repaired": n_repaired.float()},
            repairs=(rec_repair, kl_repair),
        )

    def adversary_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Discriminator logits over the adversarial classes."""
        return self.discriminator(z)

    @torch.inference_mode()
    def sample(
        self,
        tensors: dict[str, torch.Tensor],
        n_samples: int = 1,
        generative_kwargs: dict[str, object] | None = None,
    ) -> torch.Tensor:
        """Posterior predictive counts on the CPU, ``(n, n_genes)`` or ``(n, n_genes, n_samples)``."""
        _, generative_outputs = self.forward(
            tensors,
            inference_kwargs={"n_samples": n_samples},
            generative_kwargs=generative_kwargs,
            compute_loss=False,
        )
        counts = generative_outputs["px"].sample()
        return (counts.permute(1, 2, 0) if n_samples > 1 else counts).cpu()
