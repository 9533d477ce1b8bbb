"""Every string option of trajvi, in one place, and the check that names the valid values.

The runtime lists come from the ``Literal`` types themselves (:func:`typing.get_args`), so a new option
is added once here and every check, CLI choice and docstring list follows.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

#: Integrators of the velocity field (fixed-step Euler and RK4, adaptive dopri5 from torchdiffeq).
Integrator = Literal["euler", "rk4", "dopri5"]
#: Optimal-transport solvers of a coupling block.
OTMethod = Literal["exact", "sinkhorn", "unbalanced"]
#: How the mass of a coupling is shared among the groups of ``couple_within``.
GroupWeighting = Literal["balanced", "source"]
#: The training regimes (one training plan each).
Phase = Literal["vae", "flow"]
#: Parameter blocks that :func:`~trajvi.diagnostics.check_gradients` can select.
GradientBlock = Literal["vae", "adversary", "flow", "all"]
#: What the discriminator reads from the latent.
AdversarialTarget = Literal["condition", "batch"]
#: Scale of decoded expression in :func:`~trajvi.tl.gene_trends`.
ExpressionScale = Literal["normalized", "log1p"]
#: How the vectors of a path's components (perturbations in a combination) are combined.
Composition = Literal["sum", "deepset"]
#: Where a transport map between two conditions comes from: the OT coupling or the velocity field.
MapMethod = Literal["coupling", "flow"]
#: How a flow map finds the nearest real cells of each end point: exact, approximate (NN-descent), or by size.
NeighborSearch = Literal["auto", "exact", "approximate"]
#: What ``predict`` puts in ``X``: NB samples of the decoded means, or the source cells' measured expression moved.
PredictMode = Literal["sample", "transfer"]
#: Kinds of synthetic data.
SyntheticKind = Literal["perturbation", "time_course", "perturbations", "branching"]

INTEGRATORS: tuple[str, ...] = get_args(Integrator)
OT_METHODS: tuple[str, ...] = get_args(OTMethod)
GROUP_WEIGHTINGS: tuple[str, ...] = get_args(GroupWeighting)
PHASES: tuple[str, ...] = get_args(Phase)
GRADIENT_BLOCKS: tuple[str, ...] = get_args(GradientBlock)
ADVERSARIAL_TARGETS: tuple[str, ...] = get_args(AdversarialTarget)
EXPRESSION_SCALES: tuple[str, ...] = get_args(ExpressionScale)
SYNTHETIC_KINDS: tuple[str, ...] = get_args(SyntheticKind)
COMPOSITIONS: tuple[str, ...] = get_args(Composition)
MAP_METHODS: tuple[str, ...] = get_args(MapMethod)
NEIGHBOR_SEARCHES: tuple[str, ...] = get_args(NeighborSearch)
PREDICT_MODES: tuple[str, ...] = get_args(PredictMode)


def check_option(value: Any, options: tuple[str, ...], parameter: str) -> str:
    """Return ``value`` if it is one of ``options``, else raise a ``ValueError`` that lists them.

    Parameters
    ----------
    value
        The value given.
    options
        The valid values (one of the tuples of this module).
    parameter
        Name of the parameter, for the message.
    """
    if value not in options:
        msg = f"{parameter}={value!r} is not valid; use one of {', '.join(map(repr, options))}."
        raise ValueError(msg)
    return value
