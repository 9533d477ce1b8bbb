"""Scanpy-style plots over trajvi results."""

from ._history import history
from ._trajectories import trajectories
from ._trends import gene_trends

__all__ = ["gene_trends", "history", "trajectories"]
