"""Integration of a latent velocity field: fixed-step Euler and RK4, or adaptive dopri5 (torchdiffeq)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torchdiffeq import odeint

from trajvi._types import INTEGRATORS, Integrator, check_option

#: The integrators, in the order of :data:`trajvi._types.Integrator`.
METHODS: tuple[str, ...] = INTEGRATORS

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(t_start: float, t_end: float, n_steps: int) -> torch.Tensor:
    """``n_steps + 1`` evenly spaced times from ``t_start`` to ``t_end`` (float32)."""
    if int(n_steps) < 1:
        msg = f"n_steps={n_steps}; it must be at least 1."
        raise ValueError(msg)
    if float(t_start) == float(t_end):
        msg = f"t_start and t_end are both {t_start}; give two different times."
        raise ValueError(msg)
    return torch.linspace(float(t_start), float(t_end), int(n_steps) + 1)


def integrate(
    field: Field,
    z0: torch.Tensor,
    times: torch.Tensor,
    *,
    method: Integrator = "euler",
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> torch.Tensor:
    """Solve ``dz/dt = field(z, t)`` from ``z0`` and return the states at ``times``.

    Parameters
    ----------
    field
        ``field(z, t)`` with ``z`` of shape ``(n, d)`` and a scalar time ``t``.
    z0
        ``(n, d)`` initial states at ``times[0]``.
    times
        ``(T,)`` increasing or decreasing times. The fixed-step methods take one step per interval of
        this grid; dopri5 adapts its own steps and reports the states at these times.
    method
        ``"euler"``, ``"rk4"`` (torchdiffeq's fourth-order Runge-Kutta, 3/8 rule) or ``"dopri5"``.
    rtol, atol
        Tolerances of dopri5.

    Returns
    -------
    ``(T, n, d)`` states; ``[0]`` is ``z0``.
    """
    check_option(method, INTEGRATORS, "method")
    if z0.dim() != 2:
        msg = f"z0 must be (n_cells, n_latent); got shape {tuple(z0.shape)}."
        raise ValueError(msg)
    times = torch.as_tensor(times, dtype=z0.dtype, device=z0.device)

    def rhs(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return field(z, t)

    options = {"rtol": rtol, "atol": atol} if method == "dopri5" else {}
    return odeint(rhs, z0, times, method=method, **options)


def simulate(
    field: Field,
    z0: torch.Tensor,
    times: torch.Tensor,
    *,
    method: Integrator = "euler",
    batch_size: int | None = 4096,
    with_grad: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> torch.Tensor:
    """:func:`integrate` over the cells in batches, with or without a graph.

    Parameters
    ----------
    field, times, method, rtol, atol
        As in :func:`integrate`.
    z0
        ``(n, d)`` initial states.
    batch_size
        Cells integrated at once (``None``: all).
    with_grad
        ``False`` runs under :func:`torch.inference_mode`; ``True`` keeps the graph so that a loss on the
        result can be backpropagated to the field's parameters.

    Returns
    -------
    ``(T, n, d)`` latent paths.
    """
    if batch_size is not None and int(batch_size) < 1:
        msg = f"batch_size={batch_size}; it must be at least 1 or None."
        raise ValueError(msg)
    step = z0.shape[0] if batch_size is None else int(batch_size)
    context = nullcontext() if with_grad else torch.inference_mode()
    with context:
        parts = [
            integrate(field, z0[i : i + step], times, method=method, rtol=rtol, atol=atol)
            for i in range(0, z0.shape[0], max(step, 1))
        ]
    return torch.cat(parts, dim=1)
