"""Integrators and trajectory simulation in the latent space."""

from ._integrate import METHODS, integrate, simulate, time_grid

__all__ = ["METHODS", "integrate", "simulate", "time_grid"]
