"""What subnormal float32 values cost the operations of a phase-1 step, with and without flushing them to zero.

The slow second fit once reported (phase 1 several-fold slower than a fresh fit of the same split) spent about
10% of its time in batch normalisation and 10% in the fused Adam step, neither of which shows in a fresh fit's
profile. Both run many times slower when their inputs or state hold subnormal values (below about 1.2e-38 in
float32), which an Adam moment reaches as it decays from a gradient that vanished. This script times, in one
process and one thread, each operation on normal and on subnormal values, with torch's flush-to-zero mode off
and on (``trajvi.settings.flush_denormal``, on by default, turns it on for the duration of every fit):

- a fused Adam step over ``--n-params`` parameters (2.5 million: the phase-1 model on Kang's 2,000 genes), the
  optimiser state made subnormal by a gradient of 1e-20;
- the same step with torch's default (foreach) Adam;
- batch normalisation, forward and backward, on a ``--batch-size`` x ``--n-hidden`` activation.

Prints a table and writes JSON (median of ``--repeats`` timings after one warm-up).

Usage::

    python benchmarks/subnormals.py [--n-params 2500000] [--batch-size 128] [--n-hidden 256] [--repeats 20] \
        [--out benchmarks/results/subnormals.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import _perf
from trajvi._runtime import flush_denormal_enabled

if TYPE_CHECKING:
    from collections.abc import Callable

SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def _median_seconds(step: Callable[[], object], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _subnormal_share(t: torch.Tensor) -> float:
    return float(((t != 0) & (t.abs() < SMALLEST_NORMAL)).float().mean())


def adam_case(n: int, *, fused: bool, subnormal: bool) -> tuple[Callable[[], object], Callable[[], float]]:
    """An Adam step whose second moment is subnormal (gradient 1e-20) or normal (gradient 1e-3)."""
    p = torch.nn.Parameter(torch.randn(n))
    opt = torch.optim.Adam([p], lr=1e-3, fused=fused, foreach=None if fused else True)
    p.grad = torch.full((n,), 1e-20 if subnormal else 1e-3)
    opt.step()
    return opt.step, lambda: _subnormal_share(opt.state[p]["exp_avg_sq"])


def batch_norm_case(batch: int, hidden: int, *, subnormal: bool) -> tuple[Callable[[], object], Callable[[], float]]:
    """Batch normalisation forward and backward on activations of size 1e-39 (subnormal) or 1."""
    bn = torch.nn.BatchNorm1d(hidden)
    x = (torch.randn(batch, hidden) * (1e-39 if subnormal else 1.0)).requires_grad_()

    def step() -> None:
        bn(x).sum().backward()

    return step, lambda: _subnormal_share(x.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _perf.add_common_arguments(parser)
    parser.add_argument("--n-params", type=int, default=2_500_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/subnormals.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not torch.set_flush_denormal(False):
        _perf.log("this CPU has no flush-to-zero mode: flushing changes nothing here")

    cases = {
        "adam_fused": lambda sub: adam_case(args.n_params, fused=True, subnormal=sub),
        "adam_foreach": lambda sub: adam_case(args.n_params, fused=False, subnormal=sub),
        "batch_norm": lambda sub: batch_norm_case(args.batch_size, args.n_hidden, subnormal=sub),
    }
    rows = []
    for name, make in cases.items():
        timings = {}
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            for sub in (False, True):
                step, share = make(sub)
                key = f"{'flushed' if flush else 'kept'}_{'subnormal' if sub else 'normal'}"
                timings[key] = {"ms": 1e3 * _median_seconds(step, args.repeats), "subnormal_share": share()}
            torch.set_flush_denormal(False)
        row = {
            "operation": name,
            **timings,
            "slowdown_kept": timings["kept_subnormal"]["ms"] / timings["kept_normal"]["ms"],
            "slowdown_flushed": timings["flushed_subnormal"]["ms"] / timings["flushed_normal"]["ms"],
        }
        rows.append(row)
        _perf.log(
            f"{name:12s} normal {timings['kept_normal']['ms']:8.3f} ms | subnormal kept "
            f"{timings['kept_subnormal']['ms']:8.3f} ms ({row['slowdown_kept']:5.1f}x, "
            f"{timings['kept_subnormal']['subnormal_share']:.0%} subnormal) | flushed "
            f"{timings['flushed_subnormal']['ms']:8.3f} ms ({row['slowdown_flushed']:4.2f}x, "
            f"{timings['flushed_subnormal']['subnormal_share']:.0%} subnormal)"
        )
    assert not flush_denormal_enabled()
    result = {"machine": _perf.machine(args.threads), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    _perf.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
