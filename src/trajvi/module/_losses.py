"""Losses of the count model, computed in float32 with clamped inputs and counted repairs.

Every function here is pure torch. A non-finite entry of a loss term is replaced by zero and
counted; the count and the range of the term travel with the result (:class:`Repair`) so that the
training plan can log them and put them in the history. A repair is never silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Bounds applied before the losses are evaluated (see docs/numerical_stability.md).
LOGVAR_MAX = 20.0
LOGVAR_MIN = -30.0
MEAN_ABS_MAX = 100.0
THETA_MIN = 1e-4
THETA_MAX = 1e6
MU_MIN = 1e-8
MU_MAX = 1e12
COUNT_MAX = 1e12


@dataclass(frozen=True)
class Repair:
    """What was repaired in one loss term.

    Attributes
    ----------
    term
        Name of the loss term.
    n_repaired
        0-d tensor: how many entries were non-finite (or came from non-finite inputs) and were
        replaced by zero.
    values
        The term before the repair (detached), kept so that its range can be reported when
        ``n_repaired > 0`` without computing it on every step.
    mask
        Entries that were replaced (``None``: the non-finite entries of ``values``).
    """

    term: str
    n_repaired: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor | None = None

    def finite_range(self) -> tuple[float, float]:
        """Smallest and largest kept entry of the term (``nan`` when none was kept)."""
        keep = torch.isfinite(self.values)
        if self.mask is not None:
            keep = keep & ~self.mask
        kept = self.values[keep]
        if kept.numel() == 0:
            return float("nan"), float("nan")
        return float(kept.min()), float(kept.max())

    def describe(self) -> str:
        """One line for the logger: how many entries were repaired and the range of the rest."""
        lo, hi = self.finite_range()
        n = int(self.n_repaired)
        return (
            f"{n} non-finite entr{'y' if n == 1 else 'ies'} of the {self.term} term replaced by 0 "
            f"(non-finite inputs or results); the other entries ranged over [{lo:.4g}, {hi:.4g}]"
        )


def repair_nonfinite(values: torch.Tensor, term: str) -> tuple[torch.Tensor, Repair]:
    """Replace non-finite entries by zero; return the repaired tensor and what was done.

    Use it on terms whose inputs were already made safe: ``torch.where`` passes ``0 * NaN = NaN``
    back to the inputs of a non-finite entry, so the loss functions below zero the inputs of bad
    entries before they compute (see :func:`negative_binomial_log_likelihood`).

    Parameters
    ----------
    values
        Any tensor.
    term
        Name used in reports.
    """
    bad = ~torch.isfinite(values)
    repaired = torch.where(bad, torch.zeros_like(values), values)
    return repaired, Repair(term, bad.sum(), values.detach())


def negative_binomial_log_likelihood(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor
) -> tuple[torch.Tensor, Repair]:
    """Log-likelihood of counts under NB(mean ``mu``, inverse dispersion ``theta``), per entry.

    Uses the lgamma form
    ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) + theta log(theta / (theta + mu)) + x log(mu / (theta + mu))``
    in float32, with ``mu`` clamped to ``[1e-8, 1e12]``, ``theta`` to ``[1e-4, 1e6]`` and counts to
    ``[0, 1e12]``. With the parameters clamped, only a NaN parameter or a non-finite count can make an
    entry non-finite: such entries are computed from stand-in values (so their gradient is exactly zero,
    not NaN), set to zero and counted.

    Returns
    -------
    The per-entry log-likelihood and the :class:`Repair` record.
    """
    x = x.float()
    mu = mu.float().clamp(MU_MIN, MU_MAX)
    theta = theta.float()
    bad_theta = torch.isnan(theta)
    bad = ~torch.isfinite(x) | torch.isnan(mu) | bad_theta  # clamp keeps NaN; an infinite count is bad data
    x = x.clamp(0.0, COUNT_MAX)
    x = torch.where(bad, 0.0, x)
    mu = torch.where(bad, 1.0, mu)
    theta = torch.where(bad_theta, 1.0, theta).clamp(THETA_MIN, THETA_MAX)
    log_theta_mu = torch.log(theta + mu)
    ll = (
        theta * (torch.log(theta) - log_theta_mu)
        + x * (torch.log(mu) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )
    ll = torch.where(bad, 0.0, ll)
    return ll, Repair("reconstruction", bad.sum(), ll.detach(), bad)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, Repair]:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per cell, summed over latent dimensions.

    The log-variance is clamped to ``[-30, 20]`` and the mean to ``[-100, 100]``, in float32. A cell
    with a NaN input is computed from stand-ins (zero gradient), set to zero and counted.
    """
    mean = mean.float().clamp(-MEAN_ABS_MAX, MEAN_ABS_MAX)
    logvar = logvar.float().clamp(LOGVAR_MIN, LOGVAR_MAX)
    bad_entries = torch.isnan(mean + logvar)
    mean = torch.where(bad_entries, 0.0, mean)
    logvar = torch.where(bad_entries, 0.0, logvar)
    kl = 0.5 * (torch.exp(logvar) + mean.square() - 1.0 - logvar).sum(dim=-1)
    bad = bad_entries.any(dim=-1)
    kl = torch.where(bad, 0.0, kl)
    return kl, Repair("kl", bad.sum(), kl.detach(), bad)


def labels_to_indices(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Coerce condition labels to a 1-d tensor of class indices.

    Accepts one-hot ``(N, n_classes)``, ``(N, 1)`` or ``(N,)`` labels, integer or float (scvi-tools
    hands categorical obs fields over as float32 ``(N, 1)``).
    """
    if labels.dim() == 2 and labels.shape[1] == n_classes and n_classes > 1:
        return labels.argmax(dim=1)
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 1:
        msg = f"labels of shape {tuple(labels.shape)} are neither one-hot ({n_classes} columns), (N, 1) nor (N,)."
        raise ValueError(msg)
    if labels.is_floating_point():
        labels = torch.nan_to_num(labels, nan=-1.0).round()
    return labels.long()


def labels_in_range(indices: torch.Tensor, n_classes: int) -> torch.Tensor:
    """0-d bool tensor: whether every index lies in ``[0, n_classes)``."""
    return ((indices >= 0) & (indices < n_classes)).all()


def discriminator_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the discriminator on its target classes (mean over cells), in float32."""
    return F.cross_entropy(logits.float(), target)


def confusion_loss(logits: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Bounded fooling term: cross-entropy between the uniform distribution and the discriminator.

    ``-(1/K) sum_k log(p_k + eps) + log(1/K + eps)``, averaged over cells. It is 0 when the
    discriminator is at chance, and at most ``log(1/eps)``, so a confident discriminator cannot drive
    the VAE's loss to infinity; unlike ``-p(true class)`` it does not saturate when the discriminator
    is confident.
    """
    n_classes = logits.shape[-1]
    probs = torch.softmax(logits.float(), dim=-1)
    at_chance = -math.log(1.0 / n_classes + eps)
    return (-torch.log(probs + eps).mean(dim=-1) - at_chance).mean()
