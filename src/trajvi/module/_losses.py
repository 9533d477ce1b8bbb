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
        0-d tensor: how many entries were non-finite and replaced by zero.
    values
        The term before the repair (detached), kept so that its range can be reported when
        ``n_repaired > 0`` without computing it on every step.
    """

    term: str
    n_repaired: torch.Tensor
    values: torch.Tensor

    def finite_range(self) -> tuple[float, float]:
        """Smallest and largest finite entry of the term before the repair (``nan`` when none)."""
        finite = self.values[torch.isfinite(self.values)]
        if finite.numel() == 0:
            return float("nan"), float("nan")
        return float(finite.min()), float(finite.max())

    def describe(self) -> str:
        """One line for the logger: how many entries were repaired and the range of the rest."""
        lo, hi = self.finite_range()
        n_nan = int(torch.isnan(self.values).sum())
        return (
            f"{int(self.n_repaired)} non-finite entr{'y' if int(self.n_repaired) == 1 else 'ies'} of the "
            f"{self.term} term ({n_nan} NaN, the rest infinite) replaced by 0; finite entries ranged over "
            f"[{lo:.4g}, {hi:.4g}]"
        )


def repair_nonfinite(
    values: torch.Tensor, term: str, bad_inputs: torch.Tensor | None = None
) -> tuple[torch.Tensor, Repair]:
    """Replace non-finite entries by zero; return the repaired tensor and what was done.

    Parameters
    ----------
    values
        Any tensor.
    term
        Name used in reports.
    bad_inputs
        Entries already known to come from non-finite inputs (computed from safe stand-ins so that
        their gradient is zero rather than NaN); they are zeroed and counted too.
    """
    bad = ~torch.isfinite(values)
    if bad_inputs is not None:
        bad = bad | bad_inputs
    repaired = torch.where(bad, torch.zeros_like(values), values)
    reported = values.detach() if bad_inputs is None else values.detach().masked_fill(bad_inputs, float("nan"))
    return repaired, Repair(term, bad.sum(), reported)


def _safe_inputs(*tensors: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Entries where any (broadcast) input is not finite, and the inputs with those entries set to 1.

    Computing a loss from the stand-ins and zeroing those entries afterwards keeps the gradient
    finite: ``torch.where`` alone would pass ``0 * NaN = NaN`` back to shared parameters.
    """
    tensors = [t.float() for t in tensors]
    bad = ~torch.isfinite(tensors[0])
    for t in tensors[1:]:
        bad = bad | ~torch.isfinite(t)
    return bad, [torch.where(bad, torch.ones_like(bad, dtype=t.dtype), t) for t in tensors]


def negative_binomial_log_likelihood(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor
) -> tuple[torch.Tensor, Repair]:
    """Log-likelihood of counts under NB(mean ``mu``, inverse dispersion ``theta``), per entry.

    Uses the lgamma form
    ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) + theta log(theta / (theta + mu)) + x log(mu / (theta + mu))``
    in float32, with ``mu`` clamped to ``[1e-8, 1e12]``, ``theta`` to ``[1e-4, 1e6]`` and counts to
    ``[0, 1e12]``.

    Returns
    -------
    The per-entry log-likelihood (non-finite entries replaced by 0) and the :class:`Repair` record.
    """
    bad, (x, mu, theta) = _safe_inputs(x, mu, theta)
    x = x.clamp(0.0, COUNT_MAX)
    mu = mu.clamp(MU_MIN, MU_MAX)
    theta = theta.clamp(THETA_MIN, THETA_MAX)
    log_theta_mu = torch.log(theta + mu)
    ll = (
        theta * (torch.log(theta) - log_theta_mu)
        + x * (torch.log(mu) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )
    return repair_nonfinite(ll, "reconstruction", bad)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, Repair]:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per cell, summed over latent dimensions.

    The log-variance is clamped to ``[-30, 20]`` and the mean to ``[-100, 100]``, in float32.
    """
    bad, (mean, logvar) = _safe_inputs(mean, logvar)
    mean = mean.clamp(-MEAN_ABS_MAX, MEAN_ABS_MAX)
    logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
    kl = 0.5 * (torch.exp(logvar) + mean.square() - 1.0 - logvar).sum(dim=-1)
    return repair_nonfinite(kl, "kl", bad.any(dim=-1))


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
