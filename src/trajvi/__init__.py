"""trajvi: how single cells move between conditions, learned from raw counts.

The subpackages (and :class:`TrajVI`) are imported on first use, so that ``trajvi --help`` and
``trajvi --version`` answer without loading torch and scvi-tools.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ._logging import logger
from ._settings import settings

if TYPE_CHECKING:
    from . import data, datasets, diagnostics, metrics, pl, tl
    from .model import TrajVI, predict_ensemble

try:
    __version__ = version("trajvi")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

#: Public names loaded on first access, and the module that defines each.
_LAZY = {
    "TrajVI": ".model",
    "data": ".data",
    "datasets": ".datasets",
    "diagnostics": ".diagnostics",
    "metrics": ".metrics",
    "pl": ".pl",
    "predict_ensemble": ".model",
    "tl": ".tl",
}

__all__ = [
    "TrajVI",
    "__version__",
    "data",
    "datasets",
    "diagnostics",
    "logger",
    "metrics",
    "pl",
    "predict_ensemble",
    "settings",
    "tl",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        msg = f"module 'trajvi' has no attribute {name!r}"
        raise AttributeError(msg)
    module = import_module(_LAZY[name], __name__)
    value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
