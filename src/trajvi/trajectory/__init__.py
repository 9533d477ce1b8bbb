"""Phase-2 orchestration: paths and their segments, the coupling configuration, model selection, the fit.

Between :mod:`trajvi.transport` / :mod:`trajvi.dynamics` / :mod:`trajvi.train` and the model class:
:meth:`trajvi.TrajVI.train_trajectories` encodes the cells and hands them to :func:`fit_trajectories`.

- :func:`resolve_paths`, :class:`PathSet`: the paths of one field, named by what they do (a perturbation, a
  combination ``"A+B"``, a branch), and their weights over the field's components;
- :func:`check_path`, :func:`path_times`, :func:`build_segments`, :func:`build_folds`: a path's segments,
  coupled with a :class:`CouplingConfig`, and the leave-one-out folds inside the training data;
- :func:`select_residual_penalty`: the residual penalty chosen on those folds, with the same fitting step
  as the final fit (:func:`trajvi.train.fit_velocity_field`);
- :func:`fit_trajectories`: all of it, then the final fit under Lightning;
- :class:`TransportMap`: what a coupling (:func:`maps_of_segments`) or the flow (:func:`map_from_endpoints`,
  exact or approximate nearest cells: :func:`neighbor_search_method`)
  says about where cells go: push, pull, chaining over time points, growth, transitions between groups.
"""

from ._config import CouplingConfig, ot_device
from ._fit import FALLBACK_PENALTY, TrajectoryFit, fit_trajectories
from ._maps import (
    EXACT_SEARCH_MAX_CELLS,
    TransportMap,
    check_weights,
    map_from_coupling,
    map_from_endpoints,
    maps_of_segments,
    neighbor_search_method,
)
from ._paths import Fold, build_all_segments, build_folds, build_segments
from ._pathset import PathSet, check_path, components_of, path_times, resolve_paths
from ._selection import DEFAULT_PENALTIES, score_fold, select_residual_penalty

__all__ = [
    "DEFAULT_PENALTIES",
    "EXACT_SEARCH_MAX_CELLS",
    "FALLBACK_PENALTY",
    "CouplingConfig",
    "Fold",
    "PathSet",
    "TrajectoryFit",
    "TransportMap",
    "build_all_segments",
    "build_folds",
    "build_segments",
    "check_path",
    "check_weights",
    "components_of",
    "fit_trajectories",
    "map_from_coupling",
    "map_from_endpoints",
    "maps_of_segments",
    "neighbor_search_method",
    "ot_device",
    "path_times",
    "resolve_paths",
    "score_fold",
    "select_residual_penalty",
]
