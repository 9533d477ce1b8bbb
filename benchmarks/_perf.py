"""Plumbing shared by the performance benchmarks: device choice, timers, peak memory, the machine description.

Imported as a top-level module (``import _perf``) by the scripts in ``benchmarks/``, which are run from the
repository root as ``python benchmarks/<script>.py``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import Callback

if TYPE_CHECKING:
    import argparse

_T0 = time.perf_counter()


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--accelerator``, ``--threads`` (alias ``--torch-threads``) and ``--seed`` to a parser."""
    parser.add_argument(
        "--accelerator",
        "--device",
        dest="accelerator",
        choices=["auto", "cpu", "gpu", "cuda"],
        default="auto",
        help="auto: the GPU when torch sees one, else the CPU",
    )
    parser.add_argument(
        "--threads",
        "--torch-threads",
        dest="threads",
        type=int,
        default=1,
        help="torch intra-op threads and BLAS threads (default 1: the machines here are shared)",
    )
    parser.add_argument("--seed", type=int, default=0)


def setup(args: argparse.Namespace) -> str:
    """Apply the thread limits, silence Lightning, seed scvi-tools; return the Lightning accelerator name."""
    import scvi

    import _common

    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    _common.quiet_lightning()
    import warnings

    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # phase 2: the frozen encoder
    scvi.settings.seed = args.seed
    if args.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if args.accelerator == "cuda" else args.accelerator


def torch_device(accelerator: str) -> torch.device:
    """The torch device that a Lightning accelerator name stands for."""
    return torch.device("cuda" if accelerator == "gpu" else "cpu")


def sync(device: torch.device | str | None = None) -> None:
    """Wait for the GPU (no-op on the CPU), so that a timer read after it sees finished work."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def now(device: torch.device | str | None = None) -> float:
    """``time.perf_counter()`` after :func:`sync`."""
    sync(device)
    return time.perf_counter()


def reset_peak_memory() -> None:
    """Reset the peak-memory counters: CUDA's allocator, and the process high-water mark (Linux ``clear_refs``)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_gb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_memory` (GB; ``VmHWM``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def current_rss_gb() -> float:
    """Resident memory of this process now (GB; ``VmRSS``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return float("nan")


def peak_cuda_gb() -> float | None:
    """Peak memory allocated by torch on the GPU since the last reset (GB), or ``None`` without a GPU."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 1e9


def machine(threads: int) -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, load, memory, GPU, thread settings."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "threads_requested": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) * 1024 / 1e9, 1)
                break
    except OSError:
        pass
    return info


def load_now() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (how busy the shared machine was)."""
    return os.getloadavg()


class EpochTimer(Callback):
    """A Lightning callback that records the wall time of every training epoch and its number of batches.

    An epoch's time runs from the end of the previous epoch (or the start of training) to its own end, so it
    includes the dataloader reload (phase 2 redraws its pairs there). The GPU is synchronised before each read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch_seconds: list[float] = []
        self.batches: list[int] = []
        self._last = 0.0
        self._n = 0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._last = now()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self._n += 1

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        t = now()
        self.epoch_seconds.append(t - self._last)
        self.batches.append(self._n)
        self._last, self._n = t, 0


def log(message: str) -> None:
    """Print a message with the seconds since the script started and the current load average."""
    load = os.getloadavg()[0]
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - _T0:7.1f}s load {load:4.2f}] {message}", flush=True)
