"""Gradient checks: per-parameter norms, non-finite and zero gradients, with a compact logged report."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import torch

from trajvi._logging import logger
from trajvi._types import GRADIENT_BLOCKS, GradientBlock, check_option

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


class GradientCheck(NamedTuple):
    """Result of :func:`check_gradients` (unpacks as ``grad_norms, has_nan_grad, has_zero_grad``)."""

    grad_norms: dict[str, float]
    has_nan_grad: bool
    has_zero_grad: bool


class _PhasedModule(Protocol):
    """A module whose parameters are split by phase, as :class:`~trajvi.module.TrajVIModule`'s are."""

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Every parameter, with its name (as :meth:`torch.nn.Module.named_parameters`)."""
        ...

    def vae_parameters(self) -> Iterable[torch.nn.Parameter]:
        """Parameters of the VAE (encoder, decoder, embeddings, dispersion)."""
        ...

    def discriminator_parameters(self) -> Iterable[torch.nn.Parameter]:
        """Parameters of the discriminator."""
        ...


def parameter_groups(module: _PhasedModule) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Named parameters of each phase: ``"vae"``, ``"adversary"`` (discriminator), ``"flow"`` (velocity field).

    ``module`` is a :class:`~trajvi.module.TrajVIModule`, or any module with the same ``vae_parameters()``
    and ``discriminator_parameters()`` methods; the rest of its parameters count as the velocity field's.
    """
    vae = {id(p) for p in module.vae_parameters()}
    disc = {id(p) for p in module.discriminator_parameters()}
    groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {"vae": [], "adversary": [], "flow": []}
    for name, param in module.named_parameters():
        key = "vae" if id(param) in vae else "adversary" if id(param) in disc else "flow"
        groups[key].append((name, param))
    return groups


def block_of(name: str) -> str:
    """The block a parameter belongs to (``encoder``, ``decoder``, ``log_theta``, ``discriminator``, ...)."""
    return name.split(".", 1)[0]


def check_gradients(
    model: _PhasedModule | Any,
    *,
    phase_name: str | None = None,
    blocks: GradientBlock | None = None,
    log: bool = True,
    n_show: int = 3,
) -> GradientCheck:
    """Inspect the gradients currently held by the parameters of the model.

    Call it after a backward pass (``loss.backward()``, or inside training through the callback that
    ``train(check_gradients_every_n_epochs=...)`` installs)::

        check_gradients(model, phase_name="Phase 1, Epoch 10")

    Parameters
    ----------
    model
        A :class:`~trajvi.TrajVI` (anything with a ``module`` attribute) or its module.
    phase_name
        A free label for the report (``"Phase 1, Epoch 10"``); default: the blocks checked.
    blocks
        Which parameters to check: ``"vae"`` (encoder, decoder, embeddings, dispersion), ``"adversary"``
        (discriminator), ``"flow"`` (velocity field) or ``"all"``. ``None`` (default): every one of these
        blocks in which at least one parameter holds a gradient (all of them when none does), so that the
        blocks a backward pass did not reach are not reported as missing.
    log
        Log a compact report: the largest and smallest norms, and every non-finite or zero gradient.
    n_show
        How many of the largest and smallest norms the report names.

    Returns
    -------
    GradientCheck
        ``(grad_norms, has_nan_grad, has_zero_grad)``: the L2 norm of each parameter's gradient (``nan`` when
        it has non-finite entries, ``0`` when it has none), whether any gradient is non-finite, and whether any
        parameter of the checked blocks has no or an all-zero gradient.
    """
    if blocks is None and phase_name in GRADIENT_BLOCKS:
        warnings.warn(
            f"check_gradients(phase_name={phase_name!r}) selecting the parameters is deprecated: phase_name is a "
            f"label for the report; pass blocks={phase_name!r} to select them.",
            FutureWarning,
            stacklevel=2,
        )
        blocks = cast("GradientBlock", phase_name)
    if blocks is not None:
        check_option(blocks, GRADIENT_BLOCKS, "blocks")
    module = getattr(model, "module", model)
    groups = parameter_groups(module)
    if blocks is None:
        chosen = [k for k, items in groups.items() if any(p.grad is not None for _, p in items)] or list(groups)
    else:
        chosen = list(groups) if blocks == "all" else [blocks]
    named = [item for key in chosen for item in groups[key]]
    norms: dict[str, float] = {}
    nonfinite: list[str] = []
    zero: list[str] = []
    for name, param in named:
        if not param.requires_grad:
            continue
        grad = param.grad
        if grad is None:
            norms[name] = 0.0
            zero.append(name)
            continue
        grad = grad.detach().float()
        if not torch.isfinite(grad).all():
            norms[name] = math.nan
            nonfinite.append(name)
            continue
        value = float(torch.linalg.vector_norm(grad))
        norms[name] = value
        if value == 0.0:
            zero.append(name)
    check = GradientCheck(norms, bool(nonfinite), bool(zero))
    if log:
        finite = sorted(((v, k) for k, v in norms.items() if not math.isnan(v) and v > 0), reverse=True)
        largest = ", ".join(f"{k}={v:.3g}" for v, k in finite[:n_show]) or "none"
        smallest = ", ".join(f"{k}={v:.3g}" for v, k in finite[::-1][:n_show]) or "none"
        label = "+".join(chosen) if phase_name is None else f"{phase_name}; {'+'.join(chosen)}"
        logger.info(
            "Gradients (%s, %d parameters): largest %s; smallest %s; non-finite %s; zero or missing %s.",
            label,
            len(norms),
            largest,
            smallest,
            nonfinite or "none",
            zero or "none",
        )
    return check
