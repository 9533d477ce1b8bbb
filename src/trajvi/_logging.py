"""The package logger: every message from trajvi goes through it, never through print.

The ``"trajvi"`` logger follows scvi-tools' verbosity (``scvi.settings.verbosity``) unless a level is set on it
directly (``logging.getLogger("trajvi").setLevel(...)``, which wins), and propagates to the root logger, so
that an application's logging configuration (``logging.basicConfig``, pytest's ``caplog``) receives its
records. When nothing would show them (no handler on the root logger), a fallback handler writes them the
way scvi-tools writes its own: through the ``"scvi"`` logger's handlers once scvi-tools is imported (plain
scripts and notebooks alike), otherwise to standard error.
"""

from __future__ import annotations

import logging
import sys

_SCVI = "scvi"


class _FollowsScvi(logging.Logger):
    """A logger whose level, unless set on it, is the ``"scvi"`` logger's (INFO before scvi-tools is imported)."""

    def getEffectiveLevel(self) -> int:
        if self.level != logging.NOTSET:
            return self.level
        return logging.getLogger(_SCVI).level or logging.INFO


class _Fallback(logging.Handler):
    """Shows a record only when the root logger has no handler to show it (like ``logging.lastResort``)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s [trajvi] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return  # the record propagates there
        scvi_handlers = logging.getLogger(_SCVI).handlers
        if scvi_handlers:
            for handler in scvi_handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 (logging's contract: a failing handler reports, never raises)
            self.handleError(record)


logger = logging.getLogger("trajvi")
logger.__class__ = _FollowsScvi  # same instance (handlers and levels set before import are kept), new lookup
logger.propagate = True
if not any(isinstance(h, _Fallback) for h in logger.handlers):
    logger.addHandler(_Fallback())
