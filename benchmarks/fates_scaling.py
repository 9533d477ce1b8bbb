"""Time and memory of the fate tools for 10^4-10^6 cells per time point.

Kept couplings, chaining, push/pull, transitions, fates, and the flow's nearest-neighbour map.

Each size runs in a fresh process (peak resident memory is per process). Latent states are synthetic (three
time points of ``n`` cells, 10 dimensions, 20 groups); the coupling is trajvi's exact OT in blocks of 1,024
cells, as ``train_trajectories(ot_batch_size=1024)`` computes it. The flow map spreads ``n`` end points over
their 10 nearest of ``n`` cells, one thread: by the approximate search at every size (pynndescent; its one-off
compilation is timed apart, on 500 cells) and by the exact one up to ``--exact-max`` cells (a KD-tree over 10
near-isotropic dimensions grows about as n^1.8 here). Recall@10 of the approximate search is measured against
the exact search (all end points where it ran, else 2,000 of them against a brute-force search). Wall and CPU
seconds are both recorded (CPU time is the steadier figure on a shared machine). Integration is not timed here
(``simulation_throughput.py`` measures it).

``--parts flow`` measures the flow map alone and merges its figures into the existing rows of the JSON (the
couplings of a size are kept from the run that measured them).

Usage::

    python benchmarks/fates_scaling.py --sizes 10000 100000 1000000
    python benchmarks/fates_scaling.py --sizes 10000 100000 1000000 --parts flow
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import log, versions, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _latents(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    d, n_groups = 10, 20
    z = [rng.normal(size=(n, d)) + k for k in range(3)]
    groups = [rng.integers(n_groups, size=n).astype(str) for _ in range(3)]
    return z, groups


def couplings(n: int, seed: int = 0) -> dict[str, float]:
    """Kept couplings, chaining, push/pull, transitions and fates at ``n`` cells per time point."""
    from trajvi.trajectory import map_from_coupling
    from trajvi.transport import couple_sets

    z, groups = _latents(n, seed)
    names = [np.array([f"t{k}_{i}" for i in range(n)]) for k in range(3)]
    out: dict[str, float] = {}
    start = time.perf_counter()
    maps = []
    for k in range(2):
        coupling = couple_sets(z[k], z[k + 1], batch_size=1024, rng=seed, n_jobs=1)
        maps.append(map_from_coupling(coupling, f"t{k}", f"t{k + 1}", names[k], names[k + 1]))
    out["couple_and_keep_s"] = time.perf_counter() - start
    out["kept_nnz_per_map"] = float(maps[0].matrix.nnz)
    out["kept_mb_per_map"] = (maps[0].matrix.data.nbytes + maps[0].matrix.indices.nbytes) / 1e6
    start = time.perf_counter()
    chained = maps[0].then(maps[1])
    out["chain_s"] = time.perf_counter() - start
    out["chained_nnz"] = float(chained.matrix.nnz)
    weights = (groups[0] == "0").astype(float)
    start = time.perf_counter()
    pushed = chained.push(weights)
    chained.pull(pushed)
    out["push_pull_s"] = time.perf_counter() - start
    start = time.perf_counter()
    chained.group_transitions(groups[0], groups[2])
    out["transitions_s"] = time.perf_counter() - start
    start = time.perf_counter()
    chained.cell_fates(groups[2])
    out["cell_fates_s"] = time.perf_counter() - start
    out["peak_rss_gb"] = _peak_rss_gb()
    return out


def flow(n: int, seed: int = 0, exact: bool = True) -> dict[str, float]:
    """The flow map's nearest-neighbour step at ``n`` end points and ``n`` cells, approximate and exact."""
    from sklearn.neighbors import NearestNeighbors

    from trajvi.trajectory import map_from_endpoints

    z, _ = _latents(n, seed)
    ends, cells = z[0] + 2.0, z[2]
    out: dict[str, float] = {"flow_rss_before_gb": _peak_rss_gb()}
    start, cpu = time.perf_counter(), time.process_time()
    map_from_endpoints(ends[:500], cells[:500], n_jobs=1, neighbor_search="approximate")  # numba compiles
    out["flow_approx_compile_s"] = time.perf_counter() - start
    out["flow_approx_compile_cpu_s"] = time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    approx = map_from_endpoints(ends, cells, n_neighbors=10, n_jobs=1, neighbor_search="approximate", random_state=0)
    out["flow_approx_s"] = time.perf_counter() - start
    out["flow_approx_cpu_s"] = time.process_time() - cpu
    out["flow_approx_rss_gb"] = _peak_rss_gb()
    out["flow_nnz"] = float(approx.nnz)
    if exact:
        start, cpu = time.perf_counter(), time.process_time()
        truth = map_from_endpoints(ends, cells, n_neighbors=10, n_jobs=1, neighbor_search="exact")
        out["flow_exact_s"] = time.perf_counter() - start
        out["flow_exact_cpu_s"] = time.process_time() - cpu
        out["flow_recall_at_10"] = truth.multiply(approx).nnz / truth.nnz
    else:
        sample = np.random.default_rng(seed).choice(n, size=min(n, 2000), replace=False)
        found = NearestNeighbors(n_neighbors=10, algorithm="brute", n_jobs=1).fit(cells)
        truth_cols = found.kneighbors(ends[sample], return_distance=False)
        hits = [
            np.isin(truth_cols[i], approx.indices[approx.indptr[j] : approx.indptr[j + 1]]).sum()
            for i, j in enumerate(sample)
        ]
        out["flow_recall_at_10_sample"] = float(np.sum(hits)) / truth_cols.size
    out["flow_peak_rss_gb"] = _peak_rss_gb()
    return out


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--parts", nargs="+", choices=["couplings", "flow"], default=["couplings", "flow"])
    parser.add_argument(
        "--exact-max", type=int, default=100_000, help="largest size whose flow map is also searched exactly"
    )
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        row: dict[str, float] = {"n_cells_per_time": args.one}
        if "couplings" in args.parts:
            row.update(couplings(args.one))
        if "flow" in args.parts:
            row.update(flow(args.one, exact=args.one <= args.exact_max))
        print(json.dumps(row))
        return
    path = RESULTS / "fates_scaling.json"
    merge = args.parts != ["couplings", "flow"] and path.exists()
    rows = json.loads(path.read_text())["rows"] if merge else []
    for n in args.sizes:
        command = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--parts",
            *args.parts,
            "--exact-max",
            str(args.exact_max),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        log(", ".join(f"{k} {v:.3g}" for k, v in row.items()))
        old = next((r for r in rows if r["n_cells_per_time"] == n), None)
        if old is None:
            rows.append(row)
        else:
            old.update(row)
        rows.sort(key=lambda r: r["n_cells_per_time"])
        write_json(path, {"rows": rows, "versions": versions()})  # after every size: a long run keeps its rows
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
