"""The latent velocity field: a state-independent drift plus a penalised state-dependent residual."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn


def _mlp(n_in: int, n_out: int, n_hidden: int, n_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, n_hidden), nn.SELU()]
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class VelocityField(nn.Module):
    """``v(z, t) = drift(t) + residual(z, t)`` on the latent space.

    The drift depends on time only: a field made of it alone moves every cell by the same shift, which is
    latent arithmetic, the special case that has to be recoverable. The residual depends on the state; the
    phase-2 loss penalises its size, so its strength is a choice (selected by leave-one-group-out validation),
    and it starts at zero.

    Time enters through Fourier features of ``(t - time_offset) / time_scale``, with the offset and scale
    stored as buffers (saved with the module) and set from the training path.

    Parameters
    ----------
    n_latent
        Dimension of the latent space.
    n_hidden, n_layers
        Width and depth of the residual network (the drift network has one hidden layer).
    n_frequencies
        Number of sine/cosine pairs encoding time.
    """

    # buffers registered in __init__ (declared for the type checker: nn.Module's __getattr__ is untyped)
    frequencies: torch.Tensor
    time_offset: torch.Tensor
    time_scale: torch.Tensor

    def __init__(self, n_latent: int, *, n_hidden: int = 128, n_layers: int = 3, n_frequencies: int = 4) -> None:
        super().__init__()
        self.n_latent = n_latent
        self.register_buffer("frequencies", math.pi * torch.arange(1, n_frequencies + 1, dtype=torch.float32))
        self.register_buffer("time_offset", torch.zeros(()))
        self.register_buffer("time_scale", torch.ones(()))
        n_time = 1 + 2 * n_frequencies
        self.drift = _mlp(n_time, n_latent, n_hidden, 1)
        self.residual = _mlp(n_latent + n_time, n_latent, n_hidden, n_layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh weights (PyTorch's default init), with the residual's output layer at zero."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        out = cast("nn.Linear", self.residual[-1])  # _mlp ends with a Linear layer
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)

    def set_time_range(self, t_min: float, t_max: float) -> None:
        """Map ``[t_min, t_max]`` to ``[0, 1]`` before the time features."""
        span = float(t_max) - float(t_min)
        self.time_offset.fill_(float(t_min))
        self.time_scale.fill_(span if span > 0 else 1.0)

    def time_features(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """``(n, 1 + 2 n_frequencies)`` features of ``t`` (a scalar or one time per row)."""
        t = torch.as_tensor(t, dtype=self.time_offset.dtype, device=self.time_offset.device)
        t = ((t - self.time_offset) / self.time_scale).reshape(-1, 1).expand(n, 1)
        angles = t * self.frequencies
        return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=-1)

    def components(self, z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The drift and the residual at ``(z, t)``, each ``(n, n_latent)``."""
        feats = self.time_features(t, z.shape[0]).to(z.dtype)
        return self.drift(feats), self.residual(torch.cat([z, feats], dim=-1))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity ``dz/dt`` at latent states ``z`` ``(n, n_latent)`` and time ``t`` (scalar or ``(n,)``)."""
        drift, residual = self.components(z, t)
        return drift + residual


def flow_matching_loss(
    field: VelocityField,
    z0: torch.Tensor,
    z1: torch.Tensor,
    t0: torch.Tensor,
    t1: torch.Tensor,
    *,
    residual_penalty: float = 0.0,
    tau: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flow-matching loss on the straight paths between paired latents.

    For a pair ``(z0, z1)`` at times ``(t0, t1)`` and ``tau ~ U(0, 1)``, the path point is
    ``z = z0 + tau (z1 - z0)`` at time ``t0 + tau (t1 - t0)`` and the target velocity is
    ``(z1 - z0) / (t1 - t0)``. The loss is the squared error of the field summed over latent dimensions,
    plus ``residual_penalty`` times the squared size of the residual, both averaged over pairs.

    Returns
    -------
    The total loss, the flow-matching term and the residual term (the last two detached).
    """
    if tau is None:
        tau = torch.rand(z0.shape[0], 1, device=z0.device, dtype=z0.dtype)
    dt = (t1 - t0).reshape(-1, 1)
    z = z0 + tau * (z1 - z0)
    t = t0.reshape(-1, 1) + tau * dt
    target = (z1 - z0) / dt
    drift, residual = field.components(z, t.reshape(-1))
    fm = (drift + residual - target).square().sum(dim=-1).mean()
    res = residual.square().sum(dim=-1).mean()
    return fm + residual_penalty * res, fm.detach(), res.detach()
