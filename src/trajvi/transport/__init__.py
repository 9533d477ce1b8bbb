"""Optimal-transport coupling between two sets of latent cell states."""

from trajvi._types import OTMethod

from ._couple import couple
from ._coupling import Coupling, available_cores, couple_sets
from ._standardize import standardize

__all__ = ["Coupling", "OTMethod", "available_cores", "couple", "couple_sets", "standardize"]
