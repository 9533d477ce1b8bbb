"""Encoder: log1p counts (+ batch one-hot) to the mean and log-variance of q(z | x)."""

from __future__ import annotations

import torch
from scvi.nn import FCLayers
from torch import nn

from ._losses import LOGVAR_MAX, LOGVAR_MIN, MEAN_ABS_MAX


class Encoder(nn.Module):
    """Map counts to a diagonal Gaussian posterior over the latent state.

    Parameters
    ----------
    n_input
        Number of genes.
    n_latent
        Dimension of the latent space.
    n_batch
        Number of batches (one-hot injected into every layer; 1 means none).
    n_hidden, n_layers, dropout_rate
        Size of the fully connected body.
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int,
        *,
        n_batch: int = 1,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.body = FCLayers(
            n_in=n_input,
            n_out=n_hidden,
            n_cat_list=[n_batch],
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
        )
        self.mean = nn.Linear(n_hidden, n_latent)
        self.logvar = nn.Linear(n_hidden, n_latent)

    def forward(self, x: torch.Tensor, batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the posterior mean and log-variance, both clamped to finite ranges.

        Parameters
        ----------
        x
            ``(n, n_input)`` raw counts.
        batch_index
            ``(n, 1)`` batch codes.
        """
        h = self.body(torch.log1p(x), batch_index)
        mean = self.mean(h).clamp(-MEAN_ABS_MAX, MEAN_ABS_MAX)
        logvar = self.logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)
        return mean, logvar
