"""Scanpy-style tools over a trained :class:`~trajvi.TrajVI`."""

from ._latent import latent
from ._scores import knn_accuracy, linear_r2

__all__ = ["knn_accuracy", "latent", "linear_r2"]
