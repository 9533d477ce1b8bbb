"""Plumbing shared by the accuracy benchmarks: data location, logging, the prediction container, tables, versions.

The benchmark scripts are run as ``python benchmarks/<script>.py`` from the repository root, so this module is
imported as a top-level module (``import _common``) from the ``benchmarks/`` folder.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

#: ``../shared/data`` beside the checkout; the benchmarks never copy these files into the repository.
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_T0 = time.perf_counter()


def data_file(name: str) -> Path:
    """Path of a file in ``../shared/data``; exit with a clear message when it is absent.

    Parameters
    ----------
    name
        File name inside the shared data folder, e.g. ``"kang_pbmc_union_counts.h5ad"``.

    Returns
    -------
    Path
        The absolute path of the file.
    """
    path = DATA_DIR / name
    if not path.exists():
        msg = (
            f"{path} not found. The accuracy benchmarks read the real data from ../shared/data beside the "
            "checkout (see shared/data/README.md); it is not part of the repository."
        )
        raise SystemExit(msg)
    return path


def log(message: str) -> None:
    """Print ``message`` with the wall-clock time and the seconds since the script started."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp} +{time.perf_counter() - _T0:7.1f}s] {message}", flush=True)


def quiet_lightning() -> None:
    """Silence Lightning's info logging (GPU availability, tips) and its known harmless warnings.

    Lightning sets its logger to INFO when it is imported, so this imports it first.
    """
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401

    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*__version__.*deprecated.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def set_threads(n_threads: int) -> None:
    """Limit PyTorch's intra-op threads.

    On a small shared machine, PyTorch's OpenMP threads slow down by an order of magnitude as soon as
    another process holds one of the cores (measured here: 2 SCVI epochs on Kang took 3.8 s with one
    thread and 56 s with two while another process was busy), so the benchmarks default to one thread.
    """
    import torch

    torch.set_num_threads(n_threads)


@dataclass
class Prediction:
    """What a benchmark method returns: predicted cells in one of three forms (set exactly one).

    Attributes
    ----------
    counts
        Sampled count matrices for the predicted cells, one ``(n_cells, n_genes)`` array per sample (the
        genes in the order of the split's ``var_names``). The harness log-normalises each sample exactly
        like the real cells (:func:`_metrics.log_normalize`) and stacks them (:func:`_metrics.score_as_cells`).
        This is the form every generative model should use: log1p of a decoded mean is not the mean of
        log1p of counts.
    log_norm
        Cells already in log-normalised space (log1p of counts normalised to 1e4 per cell),
        ``(n_cells, n_genes)``. For baselines that work in that space directly (Kang's ``mean_shift``).
    coords
        Cells already in the benchmark's evaluation embedding (Klein: the 5 whitened PCs),
        ``(n_cells, n_components)``. For baselines that work there directly (Klein's ``ot_interpolation``).
    info
        Free-form JSON-serialisable details the method wants recorded (hyperparameters, training loss,
        per-stage timings, ...). Copied into the results file.
    """

    counts: list[np.ndarray] | None = None
    log_norm: np.ndarray | None = None
    coords: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def kind(self) -> str:
        """Name of the one populated field; raise if none or several are set."""
        set_fields = [name for name in ("counts", "log_norm", "coords") if getattr(self, name) is not None]
        if len(set_fields) != 1:
            msg = f"a Prediction must set exactly one of counts, log_norm, coords; got {set_fields or 'none'}"
            raise ValueError(msg)
        return set_fields[0]


def versions() -> dict[str, str]:
    """Versions of Python, the platform, the relevant packages and the checkout's git commit."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in (
        "numpy",
        "scipy",
        "scanpy",
        "anndata",
        "scikit-learn",
        "pot",
        "torch",
        "lightning",
        "scvi-tools",
        "trajvi",
    ):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        out["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = "unknown"
    return out


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Render rows as a fixed-width text table.

    Parameters
    ----------
    rows
        One dict per row.
    columns
        ``(key, header, format)`` triples; ``format`` is a format spec such as ``".3f"`` (``""`` for text).
        Missing or ``None`` values print as ``-``.

    Returns
    -------
    str
        The table, header and separator included.
    """
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, spec))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (numpy values converted) as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    log(f"wrote {path}")


def parse_methods(requested: list[str] | None, available: dict[str, Any]) -> list[str]:
    """Validate the ``--methods`` selection against a registry (``None`` means all, in registry order)."""
    if not requested:
        return list(available)
    names = [name for item in requested for name in item.split(",") if name]
    unknown = [name for name in names if name not in available]
    if unknown:
        msg = f"unknown method(s) {unknown}; registered: {list(available)}"
        raise SystemExit(msg)
    return names
