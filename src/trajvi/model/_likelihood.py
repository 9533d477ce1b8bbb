"""scvi-tools' likelihood getters for TrajVI's count model (the inherited ones assume scVI's own module)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.distributions import Normal

from trajvi._constants import REGISTRY_KEYS
from trajvi.module import negative_binomial_log_likelihood

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from anndata import AnnData

    from trajvi.module import TrajVIModule


class LikelihoodMixin:
    """:meth:`get_likelihood_parameters`, :meth:`get_marginal_ll` and :meth:`get_latent_library_size` for TrajVI.

    scvi-tools' versions read attributes of its own VAE module (``gene_likelihood``, ``marginal_ll``, a latent
    library ``ql``); these compute the same quantities from trajvi's module: NB means and inverse dispersions,
    an importance-sampled log-likelihood, and the observed library size (trajvi does not model the library).
    """

    if TYPE_CHECKING:
        # Provided by the model class (scvi-tools' base classes); declared here for the type checker only.
        module: TrajVIModule

        def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData: ...
        def _make_data_loader(
            self,
            adata: AnnData,
            indices: Sequence[int] | np.ndarray | None = None,
            batch_size: int | None = None,
            **kwargs: Any,
        ) -> Iterable[dict[str, torch.Tensor]]: ...
        def _check_if_trained(self, warn: bool = True, message: str = ...) -> None: ...

    def _batches(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
        dataloader: Iterable[dict[str, torch.Tensor]] | None,
    ) -> Iterable[dict[str, torch.Tensor]]:
        if dataloader is not None:
            return dataloader
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        return self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)

    @torch.inference_mode()
    def get_likelihood_parameters(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_samples: int = 1,
        give_mean: bool = False,
        batch_size: int | None = None,
        dataloader: Iterable[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Parameters of the negative binomial of each cell's counts, as scvi-tools returns them.

        Parameters
        ----------
        adata
            AnnData with the model's genes (default: the model's own).
        indices
            Cells to use (default: all).
        n_samples
            Latent samples per cell (``1``: one sample of the posterior).
        give_mean
            With ``n_samples > 1``, average the parameters over the samples.
        batch_size
            Cells per minibatch (default: ``scvi.settings.batch_size``).
        dataloader
            Minibatches to use instead of ``adata`` and ``indices``.

        Returns
        -------
        ``{"mean": ..., "dispersions": ...}``: NB means and gene-wise inverse dispersions (theta, repeated for
        every cell), ``(n_cells, n_genes)``, or ``(n_samples, n_cells, n_genes)`` when ``n_samples > 1`` and not
        ``give_mean``.
        """
        means, dispersions = [], []
        for tensors in self._batches(adata, indices, batch_size, dataloader):
            inference = self.module.inference(**self.module._get_inference_input(tensors), n_samples=int(n_samples))
            generative = self.module.generative(
                inference["z"],
                inference["library"],
                tensors[REGISTRY_KEYS.BATCH_KEY],
                tensors[REGISTRY_KEYS.CONDITION_KEY],
            )
            rate = generative["px_rate"].float()
            means.append(rate.cpu().numpy())
            dispersions.append(generative["theta"].float().expand_as(rate).cpu().numpy())
        mean, dispersion = np.concatenate(means, axis=-2), np.concatenate(dispersions, axis=-2)
        if give_mean and int(n_samples) > 1:
            mean, dispersion = mean.mean(0), dispersion.mean(0)
        return {"mean": mean, "dispersions": dispersion}

    @torch.inference_mode()
    def get_marginal_ll(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_mc_samples: int = 1000,
        batch_size: int | None = None,
        return_mean: bool = True,
        dataloader: Iterable[dict[str, torch.Tensor]] | None = None,
        n_mc_samples_per_pass: int = 50,
    ) -> float | torch.Tensor:
        """Importance-sampled estimate of each cell's log-likelihood ``log p(x)`` under the count model.

        ``log p(x) ~ logsumexp_k [log p(x | z_k) + log p(z_k) - log q(z_k | x)] - log K`` over ``K =
        n_mc_samples`` draws from the encoder's posterior, with the NB likelihood, the standard normal prior
        and the cell's observed library size (a lower bound that tightens as ``K`` grows and is at least the
        ELBO in expectation). Higher is better; it is not the negative log-likelihood.

        Parameters
        ----------
        adata, indices, batch_size, dataloader
            As in :meth:`get_likelihood_parameters`.
        n_mc_samples
            Posterior draws per cell.
        return_mean
            Return the mean over the cells (a float) instead of one value per cell (a ``(n_cells,)`` tensor).
        n_mc_samples_per_pass
            Draws decoded at once (memory grows with it times ``batch_size`` times the number of genes).
        """
        n_mc_samples, per_pass = int(n_mc_samples), int(n_mc_samples_per_pass)
        if n_mc_samples < 1 or per_pass < 1:
            msg = f"n_mc_samples={n_mc_samples}, n_mc_samples_per_pass={per_pass}; both must be at least 1."
            raise ValueError(msg)
        values = []
        for tensors in self._batches(adata, indices, batch_size, dataloader):
            log_weights = []
            for start in range(0, n_mc_samples, per_pass):
                log_weights.append(self._log_importance_weights(tensors, min(per_pass, n_mc_samples - start)))
            values.append((torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(n_mc_samples)).cpu())
        per_cell = torch.cat(values)
        return float(per_cell.mean()) if return_mean else per_cell

    def _log_importance_weights(self, tensors: dict[str, torch.Tensor], n_samples: int) -> torch.Tensor:
        """``log p(x | z) + log p(z) - log q(z | x)`` for ``n_samples`` posterior draws, ``(n_samples, n_cells)``."""
        inference = self.module.inference(**self.module._get_inference_input(tensors), n_samples=n_samples)
        z, library = inference["z"], inference["library"]
        if n_samples == 1:
            z, library = z.unsqueeze(0), library.unsqueeze(0)
        generative = self.module.generative(
            z, library, tensors[REGISTRY_KEYS.BATCH_KEY], tensors[REGISTRY_KEYS.CONDITION_KEY]
        )
        x = tensors[REGISTRY_KEYS.X_KEY].to(z.device)
        log_px, _ = negative_binomial_log_likelihood(x, generative["px_rate"], generative["theta"])
        qz = inference["qz"]
        log_pz = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale)).log_prob(z).sum(-1)
        return log_px.sum(-1) + log_pz - qz.log_prob(z).sum(-1)

    @torch.inference_mode()
    def get_latent_library_size(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
        dataloader: Iterable[dict[str, torch.Tensor]] | None = None,
    ) -> np.ndarray:
        """Library size of each cell used by the decoder, ``(n_cells, 1)``.

        trajvi does not infer a latent library: this is the observed one (the cell's total count, or its
        registered size factor), the same with ``give_mean`` or not.

        Parameters
        ----------
        adata, indices, batch_size, dataloader
            As in :meth:`get_likelihood_parameters`.
        give_mean
            Accepted for scvi-tools' signature; the library is observed, not sampled.
        """
        parts = []
        for tensors in self._batches(adata, indices, batch_size, dataloader):
            library = self.module.inference(**self.module._get_inference_input(tensors))["library"]
            parts.append(torch.exp(library.float()).cpu())
        return torch.cat(parts).numpy()
