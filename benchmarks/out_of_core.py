"""Out of core: phase 1 and phase 2 from a backed h5ad against the same file read into memory.

The parent writes a synthetic ``--n-cells`` x ``--n-genes`` h5ad (int32 CSR counts) into ``--dir`` (``/tmp`` by
default) in chunks of ``--chunk`` cells, never holding the matrix whole: each chunk is drawn by
:func:`trajvi.data.synthetic` with its own seed (so the file is a mixture of independently drawn synthetic
data sets, which changes nothing for throughput and memory) and appended to the file's ``X`` datasets with
h5py. With ``--distinct-cells`` only that many cells are drawn and the later chunks repeat them (drawing
10^6 cells took 25 minutes on the loaded benchmark machine). Then, in a fresh subprocess each (so that peak
memory is per run):

- ``backed``: ``anndata.read_h5ad(path, backed="r")``;
- ``memory``: the same file read whole (``--memory-cells`` reads only the first cells, when the full matrix
  does not fit; by default the same size);

each running the same stages: ``setup`` (the input checks, which read every count), ``phase1_epoch`` (one
full epoch, batch 128, all cells in training), ``latent`` (all cells), ``phase2`` (exact OT in blocks of
``--ot-batch-size``, one epoch, fixed residual penalty). Peak resident memory is read per stage (``VmHWM``
after a reset); the process peak is the largest of them (the stages cover the run after the imports).

Usage::

    python benchmarks/out_of_core.py [--n-cells 1000000] [--n-genes 2000] [--threads 1] [--dir /tmp] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common
import _perf
from scaling import stage


def generate(path: Path, n_cells: int, n_genes: int, *, chunk: int, seed: int, distinct: int) -> dict[str, Any]:
    """Write an h5ad of synthetic int32 CSR counts in chunks of cells; return its size and density.

    Chunks are drawn for the first ``distinct`` cells (rounded up to whole chunks); the chunks after them
    repeat the drawn ones in order, under new cell names, which costs a write instead of a draw. Only the
    drawn chunks (``distinct`` cells of CSR) are held, never the whole matrix.
    """
    import anndata as ad
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    import trajvi

    obs_parts, nnz, var, drawn = [], 0, None, []
    with h5py.File(path, "w") as f:
        group = f.create_group("X")
        group.attrs["encoding-type"] = "csr_matrix"
        group.attrs["encoding-version"] = "0.1.0"
        group.attrs["shape"] = np.array([n_cells, n_genes])
        # one index dtype for indices and indptr, as scipy keeps them: with int32 indices and int64 indptr
        # scipy casts all the indices to int64 on every row selection (24 ms per minibatch at 10^5 cells)
        index_dtype = np.int32 if n_cells * n_genes < 2**31 else np.int64
        data = group.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 18,))
        indices = group.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=index_dtype, chunks=(1 << 18,))
        indptr = group.create_dataset("indptr", shape=(n_cells + 1,), dtype=index_dtype)
        indptr[0] = 0
        for i, start in enumerate(range(0, n_cells, chunk)):
            stop = min(n_cells, start + chunk)
            if start < distinct:
                part = trajvi.data.synthetic(stop - start, n_genes, seed=seed * 100_000 + i)
                x = part.X.tocsr().astype(np.int32)
                x.sort_indices()
                labels = part.obs[["condition", "cell_type", "batch"]].copy()
                var = pd.DataFrame(index=part.var_names.copy()) if var is None else var
                drawn.append((x, labels))
                del part
            else:
                x, labels = drawn[i % len(drawn)]
                x, labels = x[: stop - start], labels.iloc[: stop - start]
            data.resize((nnz + x.nnz,))
            indices.resize((nnz + x.nnz,))
            data[nnz:] = x.data
            indices[nnz:] = x.indices.astype(index_dtype)
            indptr[start + 1 : stop + 1] = (nnz + x.indptr[1:].astype(np.int64)).astype(index_dtype)
            nnz += x.nnz
            obs = labels.copy()
            obs.index = [f"cell{j}" for j in range(start, stop)]
            obs_parts.append(obs)
            _perf.log(f"wrote cells {start:,}-{stop:,} ({nnz:,} non-zero so far)")
        obs = pd.concat(obs_parts)
        for key in ("condition", "cell_type", "batch"):
            obs[key] = obs[key].astype(str).astype("category")
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
    check = ad.read_h5ad(path, backed="r")
    assert check.shape == (n_cells, n_genes)
    check.file.close()
    return {"nnz": nnz, "density": nnz / (n_cells * n_genes), "file_gb": path.stat().st_size / 1e9}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import anndata as ad

    import trajvi

    accelerator = _perf.setup(args)
    record: dict[str, Any] = {"mode": args.mode, "machine": _perf.machine(args.threads)}
    with stage(record, "read") as info:
        if args.mode == "backed":
            adata = ad.read_h5ad(args.path, backed="r")
        elif args.memory_cells and args.memory_cells < args.n_cells:
            adata = ad.read_h5ad(args.path, backed="r")[: args.memory_cells].to_memory()
        else:
            adata = ad.read_h5ad(args.path)
        info["backed"] = bool(adata.isbacked)
    n = adata.n_obs
    record["n_cells"], record["n_genes"] = n, adata.n_vars
    fit = {"accelerator": accelerator, "devices": 1, "enable_progress_bar": False}
    with stage(record, "setup"):
        trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
        model = trajvi.TrajVI(adata, n_latent=args.n_latent)
    record["setup"]["cells_per_s"] = n / record["setup"]["seconds"]
    with stage(record, "phase1_epoch") as info:
        timer = _perf.EpochTimer()
        cpu = time.process_time()
        model.train(max_epochs=1, batch_size=128, train_size=1.0, callbacks=[timer], **fit)
        info["cpu_seconds"] = time.process_time() - cpu  # less sensitive than wall time to a shared machine
        info["epoch_seconds"] = timer.epoch_seconds[0]
        info["cells_per_s"] = n / timer.epoch_seconds[0]
        info["cells_per_cpu_s"] = n / info["cpu_seconds"]
        info["loader"] = type(model.trainer.datamodule).__name__ if model.trainer.datamodule is not None else None
    with stage(record, "latent") as info:
        model.get_latent_representation(batch_size=args.latent_batch_size)
    record["latent"]["cells_per_s"] = n / record["latent"]["seconds"]
    with stage(record, "phase2") as info:
        timer = _perf.EpochTimer()
        model.train_trajectories(
            ["control", "stimulated"],
            ot_method="exact",
            ot_batch_size=args.ot_batch_size,
            batch_size=args.phase2_batch_size,
            max_epochs=1,
            residual_penalty=1.0,
            seed=args.seed,
            callbacks=[timer],
            **fit,
        )
        info["ot_seconds"] = model.trajectory_timing_["coupling_s"]
        info["epoch_seconds"] = timer.epoch_seconds[0]
    record["phase2"]["cells_per_s"] = n / record["phase2"]["seconds"]
    # the stages cover the whole run after imports; getrusage's ru_maxrss would include the parent's memory
    # from before the exec, so the process peak is the largest of the stages' high-water marks
    stages = [v for v in record.values() if isinstance(v, dict) and "peak_rss_gb" in v]
    record["process_peak_rss_gb"] = max(v["peak_rss_gb"] for v in stages)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _perf.add_common_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check that the script runs")
    parser.add_argument("--n-cells", type=int, default=1_000_000)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--memory-cells", type=int, default=None, help="cells of the in-memory run (default: all)")
    parser.add_argument("--chunk", type=int, default=20_000, help="cells drawn and written at a time")
    parser.add_argument(
        "--distinct-cells",
        type=int,
        default=None,
        help="draw only this many cells (whole chunks); the rest repeat them under new names (default: draw all)",
    )
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the h5ad is written (not kept)")
    parser.add_argument("--keep", action="store_true", help="keep the h5ad (reused by a later run with --keep)")
    parser.add_argument("--modes", nargs="+", default=["backed", "memory"], choices=["backed", "memory"])
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--latent-batch-size", type=int, default=1024)
    parser.add_argument("--ot-batch-size", type=int, default=1024)
    parser.add_argument("--phase2-batch-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.worker_out.write_text(json.dumps(_common._jsonable(worker(args))))
        return
    if args.quick:
        args.n_cells, args.n_genes, args.chunk = 3000, 200, 1000
    if args.out is None:
        suffix = "_quick" if args.quick else f"_{args.n_cells:.0e}".replace("+0", "").replace("+", "")
        args.out = Path(f"benchmarks/results/out_of_core{suffix}.json")
    path = args.dir / f"trajvi_out_of_core_{args.n_cells}x{args.n_genes}_seed{args.seed}.h5ad"
    result: dict[str, Any] = {"settings": vars(args), "versions": _common.versions()}
    if args.keep and path.exists():
        _perf.log(f"reusing {path}")
        result["file"] = {"reused": True, "file_gb": path.stat().st_size / 1e9}
    else:
        with stage(result, "generate") as info:
            distinct = args.n_cells if args.distinct_cells is None else args.distinct_cells
            info.update(generate(path, args.n_cells, args.n_genes, chunk=args.chunk, seed=args.seed, distinct=distinct))
            info["distinct_cells"] = min(args.n_cells, -(-distinct // args.chunk) * args.chunk)
    try:
        passthrough = [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k in ("accelerator", "threads", "seed", "n_cells", "n_latent", "latent_batch_size", "ot_batch_size")
            or (k == "phase2_batch_size")
            or (k == "memory_cells" and v is not None)
        ]
        for mode in args.modes:
            _perf.log(f"=== {mode} (subprocess) ===")
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "record.json"
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    f"--mode={mode}",
                    f"--path={path}",
                    f"--worker-out={out}",
                    *passthrough,
                ]
                subprocess.run(command, check=True)
                result[mode] = json.loads(out.read_text())
            _common.write_json(args.out, result)
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    rows = []
    for mode in args.modes:
        r = result[mode]
        rows.append(
            {
                "mode": mode,
                "cells": r["n_cells"],
                "setup_cps": r["setup"]["cells_per_s"],
                "p1_cps": r["phase1_epoch"]["cells_per_s"],
                "p1_cpu": r["phase1_epoch"]["cells_per_cpu_s"],
                "p1_peak": r["phase1_epoch"]["peak_rss_gb"],
                "latent_cps": r["latent"]["cells_per_s"],
                "p2_s": r["phase2"]["seconds"],
                "p2_peak": r["phase2"]["peak_rss_gb"],
                "peak": r["process_peak_rss_gb"],
            }
        )
    columns = [
        ("mode", "mode", "s"),
        ("cells", "cells", ",d"),
        ("setup_cps", "checks cells/s", ",.0f"),
        ("p1_cps", "phase-1 cells/s", ",.0f"),
        ("p1_cpu", "phase-1 cells/CPU-s", ",.0f"),
        ("p1_peak", "phase-1 peak GB", ".2f"),
        ("latent_cps", "latent cells/s", ",.0f"),
        ("p2_s", "phase 2 s", ".1f"),
        ("p2_peak", "phase-2 peak GB", ".2f"),
        ("peak", "process peak GB", ".2f"),
    ]
    print()
    print(_common.format_table(rows, columns))
    if "backed" in result and "memory" in result:
        ratio = result["memory"]["phase1_epoch"]["cells_per_s"] / result["backed"]["phase1_epoch"]["cells_per_s"]
        cpu_ratio = (
            result["memory"]["phase1_epoch"]["cells_per_cpu_s"] / result["backed"]["phase1_epoch"]["cells_per_cpu_s"]
        )
        result["phase1_memory_over_backed"] = ratio
        result["phase1_memory_over_backed_cpu"] = cpu_ratio
        print(f"phase-1 cells/s, in memory over backed: {ratio:.2f} wall, {cpu_ratio:.2f} CPU (goal <= 2)")
    result["table"] = rows
    _common.write_json(args.out, result)


if __name__ == "__main__":
    main()
