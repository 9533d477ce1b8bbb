"""Errors raised by the numerical guards of training."""

from __future__ import annotations


class NonFiniteTrainingError(RuntimeError):
    """Raised when too many consecutive steps had a non-finite loss or gradient, or blew up and were undone.

    The message names the last reasons and what to try (a lower learning rate, the input counts, the
    precision); see the troubleshooting page.
    """
