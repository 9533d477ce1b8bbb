"""The package logger: every message from trajvi goes through it, never through print."""

from __future__ import annotations

import logging

logger = logging.getLogger("trajvi")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s [trajvi] %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
