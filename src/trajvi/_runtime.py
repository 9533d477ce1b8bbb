"""What surrounds every fit and prediction trajvi launches: its torch threads, subnormals, a quiet terminal.

:func:`fit_context` sets the torch thread count chosen by :func:`resolve_num_threads` and, where
``trajvi.settings.flush_denormal`` is on, flushes subnormal float32 values to zero (restoring the caller's
thread count and mode afterwards); for the duration of the fit only, it hides third-party output that
trajvi's users cannot act on:

- torch (2.13 here) deprecates constructing ``LeafSpec()``, which Lightning 2.6.6 (the newest release)
  still does whenever it sets up a fit's dataloaders: a ``FutureWarning`` once per phase-2 epoch. No
  Lightning release avoids it with this torch, so it is filtered by message and category;
- Lightning's warning that an epoch has fewer minibatches than its logging interval: trajvi's metrics are
  epoch sums, so short epochs lose nothing (filtered by message and category);
- Lightning's hardware lines ("GPU available: ...", "TPU available: ..."), its advertisements ("💡 Tip:
  ... litlogger / litmodels"), the "`Trainer.fit` stopped" line and the "Seed set to" line: dropped by
  message from Lightning's rank-zero and seed loggers.

Lightning's other warnings and messages, and everything outside trajvi's fits, are untouched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

from trajvi._settings import DEFAULT_NUM_THREADS, settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

F = TypeVar("F", bound="Callable[..., Any]")

#: Lightning's rank-zero loggers (pytorch and fabric) and the info lines trajvi's fits drop from them.
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)
QUIET_LINES = re.compile(
    r"^(GPU available: |TPU available: |HPU available: |💡 Tip: |`Trainer.fit` stopped: |Seed set to )"
)
LEAFSPEC_MESSAGE = r".*isinstance\(treespec, LeafSpec\)` is deprecated"
LOGGING_INTERVAL_MESSAGE = r".*smaller than the logging interval"


class _DropLightningLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and QUIET_LINES.match(record.getMessage()))


def resolve_num_threads() -> int:
    """Torch threads for trajvi's fits: ``trajvi.settings.num_threads``, else scvi-tools', else the default."""
    if settings.num_threads is not None:
        return settings.num_threads
    from scvi import settings as scvi_settings

    chosen = scvi_settings.num_threads
    return int(chosen) if chosen else DEFAULT_NUM_THREADS


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def flush_denormal_enabled() -> bool:
    """Whether this thread flushes subnormal float32 values to zero (torch has a setter but no getter)."""
    import torch

    # 1e-39 is subnormal in float32: kept (halved) in the normal mode, read or written as zero when flushed
    return bool((torch.tensor([1e-39]) * 0.5).item() == 0.0)


@contextlib.contextmanager
def flushed_denormals(flush: bool = True) -> Iterator[None]:
    """Run the block with subnormal flushing on (``flush=True``) or as it is, then restore the caller's mode."""
    import torch

    previous = flush_denormal_enabled()
    if flush and not previous:
        torch.set_flush_denormal(True)  # returns False (and changes nothing) on CPUs without the mode
    try:
        yield
    finally:
        if flush_denormal_enabled() != previous:
            torch.set_flush_denormal(previous)


@contextlib.contextmanager
def quiet_fit() -> Iterator[None]:
    """Hide the third-party lines listed in this module while the block runs (nothing else)."""
    drop = _DropLightningLines()
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    for log in loggers:
        log.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=LEAFSPEC_MESSAGE, category=FutureWarning)
            warnings.filterwarnings("ignore", message=LOGGING_INTERVAL_MESSAGE, category=UserWarning)
            yield
    finally:
        for log in loggers:
            log.removeFilter(drop)


@contextlib.contextmanager
def fit_context() -> Iterator[None]:
    """Threads, subnormal flushing and :func:`quiet_fit` around one of trajvi's fits (see the module)."""
    with torch_threads(resolve_num_threads()), flushed_denormals(settings.flush_denormal), quiet_fit():
        yield


def in_fit_context(method: F) -> F:
    """Decorator: run ``method`` inside :func:`fit_context`."""

    @wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with fit_context():
            return method(*args, **kwargs)

    return cast("F", wrapper)
