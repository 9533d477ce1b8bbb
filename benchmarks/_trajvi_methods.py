"""trajvi as a method of the Kang and Klein accuracy benchmarks.

A method is a pair of configurations: phase 1 (the count model) and phase 2 (coupling and velocity field).
Phase-1 models are cached per (split, configuration), so several phase-2 variants reuse one phase-1 fit
(``train_trajectories`` retrains phase 2 only).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from _common import Prediction, log

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class Phase1:
    """Options of :class:`trajvi.TrajVI` and its ``train``."""

    n_latent: int = 10
    adversarial_weight: float = 1.0
    adversarial_target: str = "condition"
    decode_condition: bool = False
    n_condition_velocity: int = 16
    epochs: int = 100


@dataclass(frozen=True)
class Phase2:
    """Options of ``train_trajectories`` and of the prediction."""

    couple_within: str | None = "cell_type"
    ot_method: str = "exact"
    residual_penalty: float | str = "auto"
    group_weighting: str = "balanced"
    epochs: int = 100
    n_steps: int = 50
    predict_mode: str = "sample"  # predict(mode=...): "transfer" gives one moved cell per source cell
    calibrate: bool = False  # predict(calibrate=...): add the field's mean miss on the other cell types
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


_MODELS: dict[tuple[int, Phase1], Any] = {}


def _phase1(adata: Any, key: int, config: Phase1, *, seed: int, setup: dict[str, Any]) -> Any:
    import scvi

    import trajvi

    cached = _MODELS.get((key, config))
    if cached is not None:
        return cached
    scvi.settings.seed = seed
    adata = adata.copy()  # each phase-1 model owns its registered copy
    trajvi.TrajVI.setup_anndata(adata, **setup)
    model = trajvi.TrajVI(
        adata,
        n_latent=config.n_latent,
        adversarial_weight=config.adversarial_weight,
        adversarial_target=config.adversarial_target,
        decode_condition=config.decode_condition,
        n_condition_velocity=config.n_condition_velocity,
    )
    t0 = time.perf_counter()
    model.train(max_epochs=config.epochs, enable_progress_bar=False)
    log(f"  trajvi phase 1 {config}: {time.perf_counter() - t0:.1f}s")
    model._benchmark_phase1_seconds = time.perf_counter() - t0
    _MODELS[(key, config)] = model
    return model


def _phase2(model: Any, path: list[str], config: Phase2, *, seed: int) -> float:
    t0 = time.perf_counter()
    model.train_trajectories(
        path,
        couple_within=config.couple_within,
        ot_method=config.ot_method,
        residual_penalty=config.residual_penalty,
        group_weighting=config.group_weighting,
        max_epochs=config.epochs,
        seed=seed,
        enable_progress_bar=False,
        **config.extra,
    )
    return time.perf_counter() - t0


def _samples(pred: Any, n_samples: int) -> list[np.ndarray]:
    sample = pred.obs["sample"].to_numpy()
    x = pred.X.toarray()
    return [x[sample == s] for s in range(n_samples)]


def _info(model: Any, p1: Phase1, p2: Phase2, phase2_seconds: float) -> dict[str, Any]:
    return {
        "phase1": asdict(p1),
        "phase2": {k: v for k, v in asdict(p2).items() if k != "extra"} | {"extra": dict(p2.extra)},
        "phase1_seconds": getattr(model, "_benchmark_phase1_seconds", None),
        "phase2_seconds": phase2_seconds,
        "residual_penalty_chosen": model.residual_penalty_,
        "validation": model.trajectory_validation_,
    }


def kang_method(p1: Phase1, p2: Phase2) -> Callable[[Any], Prediction]:
    """A Kang method: train on ``split.train`` and predict the stimulated counterparts of ``split.sources``."""

    def run(split: Any) -> Prediction:
        model = _phase1(split.train, id(split), p1, seed=split.seed, setup={"condition_key": "condition"})
        seconds = _phase2(model, ["control", "stimulated"], p2, seed=split.seed)
        idx = model.adata.obs_names.get_indexer(split.sources.obs_names)
        n_samples = split.n_samples if p2.predict_mode == "sample" else 1
        pred = model.predict(
            source="control",
            target="stimulated",
            indices=idx,
            n_samples=n_samples,
            n_steps=p2.n_steps,
            mode=p2.predict_mode,
            calibrate=p2.calibrate,
        )
        return Prediction(counts=_samples(pred, n_samples), info=_info(model, p1, p2, seconds))

    return run


def klein_method(p1: Phase1, p2: Phase2) -> Callable[[Any], Prediction]:
    """A Klein method: train on the other days and push the previous day's cells to the held-out time."""

    def run(split: Any) -> Prediction:
        adata = split.train.copy()
        adata.obs["day_name"] = [f"d{int(d)}" for d in adata.obs["day"]]
        days = sorted(np.unique(adata.obs["day"].to_numpy(dtype=float)))
        path = [f"d{int(d)}" for d in days]
        model = _phase1(adata, id(split), p1, seed=split.seed, setup={"condition_key": "day_name", "time_key": "day"})
        seconds = _phase2(model, path, p2, seed=split.seed)
        idx = model.adata.obs_names.get_indexer(split.sources.obs_names)
        n_samples = split.n_samples if p2.predict_mode == "sample" else 1
        pred = model.predict(
            source=f"d{int(split.t_prev)}",
            t_span=(split.t_prev, split.t_held),
            indices=idx,
            n_samples=n_samples,
            n_steps=p2.n_steps,
            mode=p2.predict_mode,
        )
        return Prediction(counts=_samples(pred, n_samples), info=_info(model, p1, p2, seconds))

    return run
