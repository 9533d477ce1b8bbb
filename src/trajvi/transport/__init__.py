"""Optimal-transport coupling between two sets of latent cell states."""

from ._couple import OTMethod, couple
from ._coupling import Coupling, couple_sets
from ._standardize import standardize

__all__ = ["Coupling", "OTMethod", "couple", "couple_sets", "standardize"]
