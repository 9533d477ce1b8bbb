"""Scanpy-style plots over trajvi results."""

from ._history import history

__all__ = ["history"]
