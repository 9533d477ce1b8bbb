"""Scanpy-style plots over trajvi results."""

from ._fates import fate_probabilities, transitions
from ._history import history
from ._trajectories import trajectories
from ._trends import gene_trends

__all__ = ["fate_probabilities", "gene_trends", "history", "trajectories", "transitions"]
