"""trajvi on the Kang and Klein accuracy benchmarks, next to the baselines, with a comparison of its options.

Registers trajvi variants (phase-1 and phase-2 options, see ``VARIANTS``) as methods of the Kang and Klein
harnesses and runs them with the baselines in the same process (``kang_perturbation.py``,
``klein_interpolation.py``), so every number in a table comes from one script run. Phase-1 fits are shared by
variants that differ only in phase 2.

Usage::

    python benchmarks/trajvi_accuracy.py kang [--variants default adv0 ...] [--held-out CD4T] [--seed 0]
    python benchmarks/trajvi_accuracy.py klein [--variants ...] [--held-out-day 4] [--seed 0]

Remaining arguments are passed to the harness script (``--torch-threads``, ``--n-samples``, ``--out``, ...).
"""

from __future__ import annotations

import sys

import _kang
import _klein
import kang_perturbation
import klein_interpolation
from _trajvi_methods import Phase1, Phase2, kang_method, klein_method

#: name -> (phase 1, phase 2, for Kang, for Klein)
VARIANTS: dict[str, tuple[Phase1, Phase2, Phase2]] = {
    "default": (Phase1(), Phase2(), Phase2(couple_within=None)),
    "adv0": (Phase1(adversarial_weight=0.0), Phase2(), Phase2(couple_within=None)),
    "adv10": (Phase1(adversarial_weight=10.0), Phase2(), Phase2(couple_within=None)),
    "decode_condition": (Phase1(decode_condition=True), Phase2(), Phase2(couple_within=None)),
    "decode_condition_adv0": (
        Phase1(adversarial_weight=0.0, decode_condition=True),
        Phase2(),
        Phase2(couple_within=None),
    ),
    "all_cells_coupled": (Phase1(), Phase2(couple_within=None), Phase2(couple_within=None)),
    "sinkhorn": (Phase1(), Phase2(ot_method="sinkhorn"), Phase2(couple_within=None, ot_method="sinkhorn")),
    "unbalanced": (Phase1(), Phase2(ot_method="unbalanced"), Phase2(couple_within=None, ot_method="unbalanced")),
    "shift_only": (Phase1(), Phase2(residual_penalty=1e4), Phase2(couple_within=None, residual_penalty=1e4)),
    "unconditional_field": (
        Phase1(n_condition_velocity=0),
        Phase2(),
        Phase2(couple_within=None),
    ),
    "free_flow": (Phase1(), Phase2(residual_penalty=0.0), Phase2(couple_within=None, residual_penalty=0.0)),
    "transfer": (Phase1(), Phase2(predict_mode="transfer"), Phase2(couple_within=None, predict_mode="transfer")),
    # calibration needs real cells of the target: Kang only (Klein's held-out day has none, its run is the default)
    "calibrated": (Phase1(), Phase2(calibrate=True), Phase2(couple_within=None)),
    "transfer_calibrated": (
        Phase1(),
        Phase2(predict_mode="transfer", calibrate=True),
        Phase2(couple_within=None, predict_mode="transfer"),
    ),
}


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("kang", "klein"):
        msg = "usage: trajvi_accuracy.py {kang,klein} [--variants NAME ...] [harness arguments]"
        raise SystemExit(msg)
    which, rest = argv[0], argv[1:]
    variants = ["default"]
    if "--variants" in rest:
        i = rest.index("--variants")
        j = i + 1
        while j < len(rest) and not rest[j].startswith("--"):
            j += 1
        variants = [v for part in rest[i + 1 : j] for v in part.split(",") if v]
        rest = rest[:i] + rest[j:]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        msg = f"unknown variants {unknown}; available: {list(VARIANTS)}"
        raise SystemExit(msg)
    if which == "kang":
        for name in variants:
            p1, p2, _ = VARIANTS[name]
            _kang.METHODS[f"trajvi_{name}"] = kang_method(p1, p2)
        methods = [*("control", "mean_shift", "scvi_arithmetic"), *(f"trajvi_{v}" for v in variants)]
        if "--methods" not in rest:
            rest = [*rest, "--methods", *methods]
        if "--out" not in rest:
            rest = [*rest, "--out", "benchmarks/results/trajvi_kang.json"]
        return kang_perturbation.main(rest)
    for name in variants:
        p1, _, p2 = VARIANTS[name]
        _klein.METHODS[f"trajvi_{name}"] = klein_method(p1, p2)
    methods = [*("previous_day", "ot_interpolation"), *(f"trajvi_{v}" for v in variants)]
    if "--methods" not in rest:
        rest = [*rest, "--methods", *methods]
    if "--out" not in rest:
        rest = [*rest, "--out", "benchmarks/results/trajvi_klein.json"]
    return klein_interpolation.main(rest)


if __name__ == "__main__":
    main()
