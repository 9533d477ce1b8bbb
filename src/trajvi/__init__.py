"""trajvi: how single cells move between conditions, learned from raw counts."""

from importlib.metadata import PackageNotFoundError, version

from . import data, datasets, diagnostics, metrics, pl, tl
from ._logging import logger
from .model import TrajVI

try:
    __version__ = version("trajvi")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"


__all__ = ["TrajVI", "__version__", "data", "datasets", "diagnostics", "logger", "metrics", "pl", "tl"]
