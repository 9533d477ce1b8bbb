"""Phase-2 throughput: OT coupling time, flow-matching step time, coupled pairs per second, and the OT share.

A phase-1 model is trained briefly on synthetic counts; then, for every OT method and block size ``B``
(``ot_batch_size``), ``model.train_trajectories`` runs with ``ot_batch_size=B`` and ``batch_size=B`` on
``m`` control and ``m`` stimulated cells, ``m`` a multiple of the largest block, so every OT block is exactly
``B x B``. The OT solves are timed by wrapping :func:`trajvi.transport.couple` (every block), the epochs by a
Lightning callback (from the end of one epoch to the end of the next, so the per-epoch redraw of pairs is
included); the GPU is synchronised before each timer read.

What ``train_trajectories`` does (the design measured): the cells are encoded once, each segment is coupled
once, before training, in blocks of ``ot_batch_size``; pairs are redrawn from that fixed coupling every epoch.
The figures reported:

- ``ot_block_s``: one ``B x B`` solve (median; with ``--ot-n-jobs`` above 1 the blocks run in threads and
  contend for the cores); ``ot_total_s``: the wall time of the whole coupling (``T_ot`` below), whose blocks
  are solved ``ot_n_jobs`` at a time; ``step_s``: one optimizer step at batch ``B`` inside Lightning
  (epoch time / batches, median over the epochs after the first); ``raw_step_s``: the same step without
  Lightning (loss, backward, Adam), for reference.
- ``ot_share_recouple_every_epoch``: the OT share of step time if the coupling were recomputed every epoch.
  With ``pairs_per_epoch = m``, that is one ``B x B`` solve per step of ``B`` pairs (the classic minibatch
  OT-CFM design): ``ot_block / (ot_block + step)``.
- ``ot_share_once_per_fit``: the share under the actual design, the coupling amortised over the fit's
  epochs: ``T_ot / (T_ot + E * epoch)``, for the epochs run and for the default ``max_epochs=100``.
- ``pairs_per_s_*``: coupled pairs per second, including the coupling, under the same two accountings.

With ``--accuracy``, the effect of the block size on accuracy is measured on the synthetic ground truth:
the coupling error in the true latent (each source cell's true stimulated counterpart against the target
cell it is paired with, relative to random pairing; 0 is the true pairing), and, after a phase-2 fit at a
fixed training batch of 256, the prediction of the stimulated cells from control cells: the energy distance
to measured stimulated cells (:func:`trajvi.metrics.expression_energy_distance`, relative to the unmoved control
cells) and the per-cell total-variation distance of the decoded expression to each cell's true counterpart
(:func:`trajvi.data.true_expression`).

Usage::

    python benchmarks/phase2_throughput.py [--quick] [--accelerator auto] [--threads 1] \
        [--methods exact sinkhorn] [--block-sizes 256 512 1024 2048 4096] [--accuracy] \
        [--out benchmarks/results/phase2_throughput.json]
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

import _common
import _perf
import trajvi
from trajvi.module import flow_matching_loss
from trajvi.transport import available_cores, couple_sets

PATH = ["control", "stimulated"]


def time_now() -> float:
    return _perf.now()


def build_model(args: argparse.Namespace, accelerator: str):
    _perf.log(f"synthetic data {args.n_cells} x {args.n_genes}")
    adata = trajvi.data.synthetic(args.n_cells, args.n_genes, seed=args.seed)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=args.n_latent)
    start = time_now()
    model.train(
        max_epochs=args.phase1_epochs,
        batch_size=128,
        train_size=1.0,
        accelerator=accelerator,
        devices=1,
        enable_progress_bar=False,
    )
    _perf.log(f"phase 1: {args.phase1_epochs} epoch(s) in {time_now() - start:.1f}s on {model.module.device}")
    return adata, model


def phase2_cells(adata, largest_block: int, seed: int) -> tuple[np.ndarray, int]:
    """``m`` control and ``m`` stimulated cells, ``m`` the largest multiple of the largest block that fits."""
    rng = np.random.default_rng(seed)
    codes = adata.obs["condition"].cat.codes.to_numpy()
    source, target = np.flatnonzero(codes == 0), np.flatnonzero(codes == 1)
    m = (min(source.size, target.size) // largest_block) * largest_block
    if m == 0:
        msg = f"fewer than {largest_block} cells per condition; raise --n-cells or lower --block-sizes."
        raise SystemExit(msg)
    picked = np.concatenate([rng.choice(source, m, replace=False), rng.choice(target, m, replace=False)])
    return np.sort(picked), m


def raw_step_seconds(model, batch: int, device: torch.device, n_steps: int) -> float:
    """Median time of a bare flow-matching step (loss, backward, Adam) on random latents, outside Lightning."""
    field = copy.deepcopy(model.module.velocity).to(device)
    opt = torch.optim.Adam(field.parameters(), lr=1e-3)
    d = field.n_latent
    z0, z1 = torch.randn(batch, d, device=device), torch.randn(batch, d, device=device)
    t0, t1 = torch.zeros(batch, device=device), torch.ones(batch, device=device)
    times = []
    for k in range(n_steps + 3):
        start = time_now()
        opt.zero_grad(set_to_none=True)
        loss, *_ = flow_matching_loss(field, z0, z1, t0, t1, residual_penalty=1.0)
        loss.backward()
        opt.step()
        if k >= 3:
            times.append(time_now() - start)
    return statistics.median(times)


def timed_fit(model, idx: np.ndarray, *, method: str, block: int | None, batch: int, epochs: int, args, accelerator):
    timer = _perf.EpochTimer()
    _perf.reset_peak_memory()
    start = time_now()
    model.train_trajectories(
        PATH,
        ot_method=method,
        ot_batch_size=block,
        batch_size=batch,
        max_epochs=epochs,
        pairs_per_epoch=len(idx) // 2,  # one pass over the m source cells
        residual_penalty=1.0,  # fixed: no leave-one-out validation fits inside the timing
        epsilon=args.epsilon,
        indices=idx,
        seed=args.seed,
        accelerator=accelerator,
        devices=1,
        enable_progress_bar=False,
        callbacks=[timer],
        plan_kwargs={} if args.cuda_graph is None else {"cuda_graph": args.cuda_graph},
        ot_n_jobs=args.ot_n_jobs,
    )
    total = time_now() - start
    # the coupling's own timing, as train_trajectories recorded it (trajvi.trajectory.TrajectoryFit.timing)
    ot_timing = dict(model.trajectory_timing_)
    return total, ot_timing, timer


def throughput_row(model, idx, m, method, block, args, accelerator, device) -> dict[str, Any]:
    total, ot_timing, timer = timed_fit(
        model, idx, method=method, block=block, batch=block, epochs=args.epochs, args=args, accelerator=accelerator
    )
    later = timer.epoch_seconds[1:] or timer.epoch_seconds
    epoch_s = statistics.median(later)
    batches = timer.batches[-1]
    step_s = epoch_s / batches
    ot_total = ot_timing["coupling_s"]
    ot_block = ot_timing["coupling_block_median_s"]
    pairs = m  # pairs_per_epoch, set to one pass over the m source cells
    row = {
        "method": method,
        "block": block,
        "n_blocks": int(ot_timing["n_blocks"]),
        "pairs_per_epoch": pairs,
        "batches_per_epoch": batches,
        "ot_total_s": ot_total,
        "ot_blocks_sum_s": ot_timing["coupling_blocks_s"],
        "ot_n_jobs": args.ot_n_jobs or available_cores(),
        "ot_block_s": ot_block,
        "epoch_s": epoch_s,
        "first_epoch_s": timer.epoch_seconds[0],
        "step_s": step_s,
        "raw_step_s": raw_step_seconds(model, block, device, n_steps=args.raw_steps),
        "fit_total_s": total,
        "fit_epochs": args.epochs,
        "peak_cuda_gb": _perf.peak_cuda_gb(),
        "peak_rss_gb": _perf.peak_rss_gb(),
    }
    row["pairs_per_s_train_only"] = pairs / epoch_s
    row["ot_share_recouple_every_step"] = ot_block / (ot_block + step_s)
    row["ot_share_recouple_every_epoch"] = ot_total / (ot_total + epoch_s)
    row["pairs_per_s_recouple_every_epoch"] = pairs / (ot_total + epoch_s)
    row["ot_share_once_per_fit_measured"] = ot_total / (ot_total + args.epochs * epoch_s)
    row["ot_share_once_per_fit_100_epochs"] = ot_total / (ot_total + 100 * epoch_s)
    row["pairs_per_s_once_per_fit_100_epochs"] = 100 * pairs / (ot_total + 100 * epoch_s)
    row["pairs_per_s_whole_fit_measured"] = args.epochs * pairs / total
    return row


# -- accuracy -------------------------------------------------------------------------------------------
def coupling_error(adata, model, idx, method: str, block: int | None, args) -> float:
    """Mean squared true-latent distance of the coupled pairs to the true pairing, relative to random pairs."""
    z = model.get_latent_representation(indices=idx).astype(np.float32)
    codes = adata.obs["condition"].cat.codes.to_numpy()[idx]
    truth = adata.obsm["true_latent_by_condition"][idx]
    observed = adata.obsm["true_latent"][idx]
    src, tgt = np.flatnonzero(codes == 0), np.flatnonzero(codes == 1)
    coupling = couple_sets(z[src], z[tgt], method=method, batch_size=block, epsilon=args.epsilon, rng=args.seed)
    i, j = coupling.sample(20_000, np.random.default_rng(args.seed))
    paired = np.square(truth[src[i], 1] - observed[tgt[j]]).sum(axis=1).mean()
    rng = np.random.default_rng(args.seed + 1)
    random = np.square(truth[src[rng.integers(src.size, size=20_000)], 1] - observed[tgt[j]]).sum(axis=1).mean()
    return float(paired / random)


def prediction_scores(adata, model, idx, args) -> dict[str, float]:
    """Energy distance of predicted to measured stimulated cells, and per-cell TV to the true counterparts."""
    rng = np.random.default_rng(args.seed + 2)
    codes = adata.obs["condition"].cat.codes.to_numpy()
    src = rng.choice(idx[codes[idx] == 0], min(1000, int((codes[idx] == 0).sum())), replace=False)
    tgt = rng.choice(idx[codes[idx] == 1], min(1000, int((codes[idx] == 1).sum())), replace=False)
    pred = model.predict(source="control", target="stimulated", indices=src, n_steps=20, method="euler")
    reference = adata.X[np.concatenate([src, tgt])]
    d_pred = trajvi.metrics.expression_energy_distance(pred.X, adata.X[tgt], reference=reference)
    d_src = trajvi.metrics.expression_energy_distance(adata.X[src], adata.X[tgt], reference=reference)
    means = np.asarray(pred.layers["trajvi_mean"], dtype=np.float64)
    freq = means / means.sum(axis=1, keepdims=True)
    batch = adata.obs["batch"].cat.codes.to_numpy()[src]
    true_stim = trajvi.data.true_expression(adata, adata.obsm["true_latent_by_condition"][src, 1], batch)
    true_ctrl = trajvi.data.true_expression(adata, adata.obsm["true_latent_by_condition"][src, 0], batch)
    return {
        "energy_distance": float(d_pred),
        "energy_distance_sources": float(d_src),
        "energy_ratio": float(d_pred / d_src),
        "counterpart_tv": float(0.5 * np.abs(freq - true_stim).sum(axis=1).mean()),
        "counterpart_tv_unmoved": float(0.5 * np.abs(true_ctrl - true_stim).sum(axis=1).mean()),
    }


def accuracy_rows(adata, model, idx, m, args, accelerator) -> list[dict[str, Any]]:
    rows = []
    settings = [(method, block) for method in args.methods for block in args.accuracy_block_sizes if block <= m]
    if args.accuracy_full_exact and "exact" in args.methods:
        settings.append(("exact", None))
    for method, block in settings:
        label = "full" if block is None else block
        _perf.log(f"accuracy: {method}, ot_batch_size={label}")
        error = coupling_error(adata, model, idx, method, block, args)
        total, ot_timing, _ = timed_fit(
            model,
            idx,
            method=method,
            block=block,
            batch=256,
            epochs=args.accuracy_epochs,
            args=args,
            accelerator=accelerator,
        )
        row = {
            "method": method,
            "block": label,
            "coupling_error": error,
            "ot_total_s": ot_timing["coupling_s"],
            "fit_total_s": total,
        }
        row.update(prediction_scores(adata, model, idx, args))
        rows.append(row)
        _perf.log(
            f"  coupling error {error:.3f}, energy ratio {row['energy_ratio']:.3f}, "
            f"counterpart TV {row['counterpart_tv']:.4f} (unmoved {row['counterpart_tv_unmoved']:.4f})"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _perf.add_common_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check that the script runs")
    parser.add_argument("--n-cells", type=int, default=20_000)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--phase1-epochs", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["exact", "sinkhorn"], choices=["exact", "sinkhorn"])
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--epochs", type=int, default=6, help="phase-2 epochs of each throughput fit")
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--raw-steps", type=int, default=30)
    parser.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--accuracy-block-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--accuracy-epochs", type=int, default=20)
    parser.add_argument("--accuracy-full-exact", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--ot-n-jobs", type=int, default=None, help="OT blocks solved at once in threads (default: all cores)"
    )
    parser.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force the phase-2 step's CUDA graph on or off (default: the plan decides; on for one CUDA device)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/phase2_throughput.json"))
    args = parser.parse_args()
    if args.quick:
        args.n_cells, args.n_genes, args.phase1_epochs = 3000, 300, 1
        args.block_sizes, args.epochs, args.raw_steps = [256, 512, 1024], 3, 5
        args.accuracy_block_sizes, args.accuracy_epochs, args.accuracy_full_exact = [256, 1024], 2, False
        if args.out == parser.get_default("out"):
            args.out = Path("benchmarks/results/phase2_throughput_quick.json")
    accelerator = _perf.setup(args)
    device = _perf.torch_device(accelerator)
    machine = _perf.machine(args.threads)
    adata, model = build_model(args, accelerator)
    idx, m = phase2_cells(adata, max(args.block_sizes), args.seed)
    _perf.log(f"phase 2 on {m} control + {m} stimulated cells; device {device}")

    rows = []
    for method in args.methods:
        for block in args.block_sizes:
            row = throughput_row(model, idx, m, method, block, args, accelerator, device)
            rows.append(row)
            _perf.log(
                f"{method:8s} B={block:5d}: OT {row['ot_block_s'] * 1e3:8.1f} ms/block, step "
                f"{row['step_s'] * 1e3:6.2f} ms (raw {row['raw_step_s'] * 1e3:5.2f}), OT share per-epoch "
                f"{row['ot_share_recouple_every_epoch']:.2f} / once-per-fit(100 ep) "
                f"{row['ot_share_once_per_fit_100_epochs']:.3f}; pairs/s {row['pairs_per_s_train_only']:,.0f} "
                f"train-only, {row['pairs_per_s_once_per_fit_100_epochs']:,.0f} once-per-fit(100 ep)"
            )
    accuracy = accuracy_rows(adata, model, idx, m, args, accelerator) if args.accuracy else []

    columns = [
        ("method", "method", ""),
        ("block", "B", "d"),
        ("ot_block_s", "OT s/block", ".4f"),
        ("step_s", "step s", ".5f"),
        ("raw_step_s", "raw step s", ".5f"),
        ("ot_share_recouple_every_epoch", "OT share (recouple/epoch)", ".3f"),
        ("ot_share_once_per_fit_100_epochs", "OT share (once, 100 ep)", ".3f"),
        ("pairs_per_s_train_only", "pairs/s train", ",.0f"),
        ("pairs_per_s_recouple_every_epoch", "pairs/s recouple/epoch", ",.0f"),
        ("pairs_per_s_once_per_fit_100_epochs", "pairs/s once (100 ep)", ",.0f"),
    ]
    print()
    print(_common.format_table(rows, columns))
    if accuracy:
        print()
        acc_columns = [
            ("method", "method", ""),
            ("block", "B", ""),
            ("coupling_error", "coupling err (0 true, 1 random)", ".3f"),
            ("energy_ratio", "energy ratio (pred/unmoved)", ".3f"),
            ("counterpart_tv", "counterpart TV", ".4f"),
            ("counterpart_tv_unmoved", "TV unmoved", ".4f"),
            ("ot_total_s", "OT s", ".2f"),
        ]
        print(_common.format_table([{**r, "block": str(r["block"])} for r in accuracy], acc_columns))
    _common.write_json(
        args.out,
        {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "n_per_condition": m,
            "device": str(device),
            "throughput": rows,
            "accuracy": accuracy,
            "machine": machine,
            "load_average_at_end": _perf.load_now(),
            "versions": _common.versions(),
        },
    )


if __name__ == "__main__":
    main()
