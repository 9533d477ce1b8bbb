"""Time and memory of the fate tools for 10^4-10^6 cells per time point.

Kept couplings, chaining, push/pull, transitions, fates, and the flow's nearest-neighbour map.

Each size runs in a fresh process (peak resident memory is per process). Latent states are synthetic (three
time points of ``n`` cells, 10 dimensions, 20 groups); the coupling is trajvi's exact OT in blocks of 1,024
cells, as ``train_trajectories(ot_batch_size=1024)`` computes it. The flow map spreads ``n`` end points over their
10 nearest of ``n`` cells (one thread; sizes above ``--knn-max`` skip it: a KD-tree over 10 random dimensions
grows about as n^1.8 here). Integration is not timed here (``simulation_throughput.py`` measures it).

Usage::

    python benchmarks/fates_scaling.py --sizes 10000 100000 1000000
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


def one_size(n: int, seed: int = 0, knn: bool = True) -> dict[str, float]:
    """Every step at ``n`` cells per time point, in this process."""
    from trajvi.trajectory import map_from_coupling, map_from_endpoints
    from trajvi.transport import couple_sets

    rng = np.random.default_rng(seed)
    d, n_groups = 10, 20
    z = [rng.normal(size=(n, d)) + k for k in range(3)]
    groups = [rng.integers(n_groups, size=n).astype(str) for _ in range(3)]
    names = [np.array([f"t{k}_{i}" for i in range(n)]) for k in range(3)]
    out: dict[str, float] = {"n_cells_per_time": n}
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
    if knn:
        start = time.perf_counter()
        flow = map_from_endpoints(z[0] + 2.0, z[2], n_neighbors=10, n_jobs=1)
        out["flow_knn_s"] = time.perf_counter() - start
        out["flow_nnz"] = float(flow.nnz)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--knn-max", type=int, default=100_000, help="largest size whose flow map (k nearest neighbours) is timed"
    )
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-knn", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, knn=not args.no_knn)))
        return
    rows = []
    for n in args.sizes:
        command = [sys.executable, __file__, "--one", str(n), *(["--no-knn"] if n > args.knn_max else [])]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        log(", ".join(f"{k} {v:.3g}" for k, v in row.items()))
    write_json(RESULTS / "fates_scaling.json", {"rows": rows, "versions": versions()})
    log(f"wrote {RESULTS / 'fates_scaling.json'}")


if __name__ == "__main__":
    main()
