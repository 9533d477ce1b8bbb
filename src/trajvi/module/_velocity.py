"""The latent velocity field ``v(z, t, c)``: a drift in ``(t, c)`` plus a penalised state-dependent residual.

``c`` describes what a path does. It is composed from the field's *components* (perturbations, or branches
of a time course): each component has a vector, learned (one per component) or computed from user-supplied
features of the component (so that a component never seen in training gets one), and a path's ``c`` is the
composition of its components' vectors weighted by dose: ``weights @ vectors`` (``composition="sum"``), or a
small network over that sum (``"deepset"``). A combination ``"A+B"`` thus has a vector although it was never
trained, and so does an unseen dose.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from trajvi._types import COMPOSITIONS, Composition, check_option


def _mlp(n_in: int, n_out: int, n_hidden: int, n_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, n_hidden), nn.SELU()]
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class VelocityField(nn.Module):
    """``v(z, t, c) = drift(t, c) + residual(z, t, c)`` on the latent space.

    The drift depends on time and the condition only: a field made of it alone moves every cell of a path by
    the same shift, which is latent arithmetic, the special case that has to be recoverable. The residual
    depends on the state; the phase-2 loss penalises its size, so its strength is a choice (selected by
    leave-one-out validation), and it starts at zero.

    Time enters through Fourier features of ``(t - time_offset) / time_scale``, with the offset and scale
    stored as buffers (saved with the module) and set from the training paths.

    Parameters
    ----------
    n_latent
        Dimension of the latent space.
    n_hidden, n_layers
        Width and depth of the residual network (the drift network has one hidden layer).
    n_frequencies
        Number of sine/cosine pairs encoding time.
    n_condition
        Width of the condition vector ``c`` (0: an unconditional field ``v(z, t)``).
    composition
        How a path's components combine: ``"sum"`` of their dose-weighted vectors, or ``"deepset"`` (a network
        applied to each vector, summed with the weights, then another network).
    """

    time_offset: torch.Tensor
    time_scale: torch.Tensor
    frequencies: torch.Tensor
    features: torch.Tensor

    def __init__(
        self,
        n_latent: int,
        *,
        n_hidden: int = 128,
        n_layers: int = 3,
        n_frequencies: int = 4,
        n_condition: int = 16,
        composition: Composition = "sum",
    ) -> None:
        super().__init__()
        check_option(composition, COMPOSITIONS, "composition")
        self.n_latent = n_latent
        self.n_condition = int(n_condition)
        self.composition = composition
        self.register_buffer("frequencies", math.pi * torch.arange(1, n_frequencies + 1, dtype=torch.float32))
        self.register_buffer("time_offset", torch.zeros(()))
        self.register_buffer("time_scale", torch.ones(()))
        self.register_buffer("features", torch.zeros(0, 0))  # (n_components, n_features); empty: learned vectors
        self._sizes = (n_hidden, n_layers, 1 + 2 * n_frequencies)
        self._build(self.n_condition)

    def _build(self, n_condition: int) -> None:
        """The networks for a condition vector of width ``n_condition`` (fresh weights, no components)."""
        n_hidden, n_layers, n_time = self._sizes
        device = self.time_offset.device
        self.n_condition = int(n_condition)
        self.drift = _mlp(n_time + self.n_condition, self.n_latent, n_hidden, 1).to(device)
        self.residual = _mlp(self.n_latent + n_time + self.n_condition, self.n_latent, n_hidden, n_layers).to(device)
        self.vectors = nn.Parameter(torch.zeros(0, self.n_condition, device=device))  # learned vector per component
        self.feature_map: nn.Module | None = None  # features -> vector, when the components have features
        if self.composition == "deepset" and self.n_condition:
            self.inner = _mlp(self.n_condition, self.n_condition, self.n_condition, 1).to(device)
            self.outer = _mlp(self.n_condition, self.n_condition, self.n_condition, 1).to(device)
        self.reset_parameters()

    # -- components ------------------------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        """Number of components (perturbations, branches) the field knows."""
        return int(self.features.shape[0]) if self.features.numel() else int(self.vectors.shape[0])

    def set_components(self, n_components: int, features: torch.Tensor | None = None) -> None:
        """Size the component table: ``n_components`` learned vectors, or a map from ``features`` (one row each).

        Parameters
        ----------
        n_components
            Number of components.
        features
            ``(n_components, n_features)`` features of the components; their vectors are then a learned linear
            map of the features (so a component outside the table gets a vector from its own features), instead
            of being learned one by one. A linear map needs no more components than features to be pinned down
            and extrapolates predictably; a network over a handful of components did not (measured on the
            synthetic panel).
        """
        device = self.time_offset.device
        if features is not None:
            features = torch.as_tensor(features, dtype=torch.float32, device=device)
            if features.shape[0] != n_components:
                msg = f"features has {features.shape[0]} rows for {n_components} components."
                raise ValueError(msg)
            self.features = features
            self.vectors = nn.Parameter(torch.zeros(0, self.n_condition, device=device))
            self.feature_map = nn.Linear(features.shape[1], self.n_condition).to(device)
        else:
            self.features = torch.zeros(0, 0, device=device)
            self.vectors = nn.Parameter(torch.empty(n_components, self.n_condition, device=device))
            self.feature_map = None
        self.reset_parameters()

    def component_vectors(self, features: torch.Tensor | None = None) -> torch.Tensor:
        """``(n_components, n_condition)`` vectors of the components (of ``features`` rows when given)."""
        if features is not None:
            if self.feature_map is None:
                msg = "this field's components have no features; it cannot place a component from its features."
                raise ValueError(msg)
            return self.feature_map(torch.as_tensor(features, dtype=torch.float32, device=self.time_offset.device))
        if self.feature_map is not None:
            return self.feature_map(self.features)
        return self.vectors

    def condition(self, weights: torch.Tensor | None, n: int, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, n_condition)`` condition vectors from ``(n, n_components)`` (or ``(n_components,)``) weights.

        A weight is a component's dose in the path (1 for a plain perturbation, 0 when absent). ``vectors``
        replaces the component table (for example with vectors of unseen components appended).
        """
        if not self.n_condition:
            return torch.zeros(n, 0, device=self.time_offset.device)
        if weights is None or weights.shape[-1] == 0:
            return torch.zeros(n, self.n_condition, device=self.time_offset.device)
        vectors = self.component_vectors() if vectors is None else vectors
        weights = weights.to(vectors.dtype).reshape(-1, vectors.shape[0]).expand(n, -1)
        if self.composition == "deepset":
            return self.outer(weights @ self.inner(vectors))
        return weights @ vectors

    # -- the field -----------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Fresh weights (PyTorch's default init), with the residual's output layer at zero."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        if self.vectors.numel():
            nn.init.normal_(self.vectors, std=1.0 / math.sqrt(max(self.n_condition, 1)))
        last = cast("nn.Linear", self.residual[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

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

    def components(
        self, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The drift and the residual at ``(z, t, c)``, each ``(n, n_latent)``.

        ``c`` is ``(n, n_condition)`` or ``(1, n_condition)`` (from :meth:`condition`); ``None`` is the zero
        condition.
        """
        n = z.shape[0]
        feats = self.time_features(t, n).to(z.dtype)
        if c is None:
            c = torch.zeros(n, self.n_condition, device=z.device, dtype=z.dtype)
        else:
            c = c.to(z.dtype).expand(n, -1)
        tc = torch.cat([feats, c], dim=-1)
        return self.drift(tc), self.residual(torch.cat([z, tc], dim=-1))

    def forward(self, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity ``dz/dt`` at latent states ``z`` ``(n, n_latent)``, time ``t`` and condition ``c``."""
        drift, residual = self.components(z, t, c)
        return drift + residual

    def bind(self, c: torch.Tensor | None) -> Any:
        """``f(z, t) = self(z, t, c)``: the field of one condition, for the integrators."""

        def field(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self(z, t, c)

        return field

    # -- loading a field whose component table has another size --------------------------------------
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Size the condition width and the component table (and the feature map) like the saved ones first.

        A field saved before fields had conditions (its drift reads time only) loads as an unconditional one.
        """
        drift_in = state_dict.get(prefix + "drift.0.weight")
        if drift_in is not None and drift_in.shape[1] != self._sizes[2] + self.n_condition:
            self._build(drift_in.shape[1] - self._sizes[2])
        if drift_in is not None and prefix + "vectors" not in state_dict:  # saved before fields had components
            state_dict[prefix + "vectors"] = torch.zeros(0, self.n_condition)
            state_dict[prefix + "features"] = torch.zeros(0, 0)
        features = state_dict.get(prefix + "features")
        vectors = state_dict.get(prefix + "vectors")
        if features is not None and features.numel():
            self.set_components(features.shape[0], features)
        elif vectors is not None and vectors.shape != self.vectors.shape:
            self.set_components(vectors.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def flow_matching_loss(
    field: VelocityField,
    z0: torch.Tensor,
    z1: torch.Tensor,
    t0: torch.Tensor,
    t1: torch.Tensor,
    *,
    residual_penalty: float = 0.0,
    tau: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flow-matching loss on the straight paths between paired latents.

    For a pair ``(z0, z1)`` at times ``(t0, t1)`` and ``tau ~ U(0, 1)``, the path point is
    ``z = z0 + tau (z1 - z0)`` at time ``t0 + tau (t1 - t0)`` and the target velocity is
    ``(z1 - z0) / (t1 - t0)``. The loss is the squared error of the field (under each pair's condition
    ``c``) summed over latent dimensions, plus ``residual_penalty`` times the squared size of the residual,
    both averaged over pairs.

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
    drift, residual = field.components(z, t.reshape(-1), c)
    fm = (drift + residual - target).square().sum(dim=-1).mean()
    res = residual.square().sum(dim=-1).mean()
    return fm + residual_penalty * res, fm.detach(), res.detach()
