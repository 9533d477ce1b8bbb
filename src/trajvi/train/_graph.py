"""A training step replayed as a CUDA graph.

A trajvi step launches a few hundred small kernels; at the batch sizes people train with, the GPU finishes
them faster than Python can launch them. Once the step is free of host synchronisation (see
:mod:`trajvi.train._guards`), it can be recorded once and replayed: every later step is one copy of the
minibatch into fixed input tensors and one graph launch. Minibatches of another shape (the last, shorter
one of an epoch) run eagerly through the same function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from trajvi._logging import logger

if TYPE_CHECKING:
    from collections.abc import Callable


def _signature(leaves: list[Any]) -> tuple:
    return tuple((tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else x for x in leaves)


class CapturedStep:
    """Run ``step(batch)`` eagerly for a few warm-up calls, then record it and replay it.

    Parameters
    ----------
    step
        The training step. It must not read device values on the host, allocate tensors it keeps
        across calls, or change which tensors it writes to between calls.
    warmup
        Eager calls (on a side stream, as CUDA graphs require) before the capture.
    on_capture
        Called just before the capture (for example to freeze the set of logged metrics).
    """

    def __init__(self, step: Callable[[Any], None], *, warmup: int = 3, on_capture: Callable[[], None] | None = None):
        self.step = step
        self.warmup = int(warmup)
        self.on_capture = on_capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self._calls = 0
        self._static: list[Any] | None = None  # the captured batch's leaves (tensors and others)
        self._spec: Any = None
        self._signature: tuple | None = None
        self.n_replays = 0
        self.n_eager = 0

    def __call__(self, batch: Any) -> None:
        """Run one step on ``batch``: replayed when it has the captured shapes, eagerly otherwise."""
        leaves, spec = tree_flatten(batch)
        signature = _signature(leaves)
        if self._signature is None:
            self._signature = signature
        if self.failed or signature != self._signature:
            self.n_eager += 1
            self.step(batch)
            return
        self._calls += 1
        if self._calls <= self.warmup:
            self.n_eager += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step(batch)
            torch.cuda.current_stream().wait_stream(side)
            return
        if self.graph is None:
            self._capture(leaves, spec, batch)
            if self.graph is None:
                return
        else:
            assert self._static is not None  # set with the graph
            for static, x in zip(self._static, leaves, strict=True):
                if isinstance(x, torch.Tensor):
                    static.copy_(x, non_blocking=True)
        self.graph.replay()
        self.n_replays += 1

    def _capture(self, leaves: list[Any], spec: Any, batch: Any) -> None:
        self._static = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        self._spec = spec
        static_batch = tree_unflatten(self._static, spec)
        if self.on_capture is not None:
            self.on_capture()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step(static_batch)
        except RuntimeError as err:  # an operation that cannot be captured: train on without the graph
            self.failed = True
            logger.warning("Could not capture the training step as a CUDA graph (%s); training goes on without.", err)
            torch.cuda.synchronize()
            self.n_eager += 1
            self.step(batch)
            return
        self.graph = graph
        logger.info("Training step captured as a CUDA graph after %d warm-up steps.", self.warmup)
