"""The scvi-tools model class."""

from ._model import TrajVI

__all__ = ["TrajVI"]
