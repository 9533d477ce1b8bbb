"""Checks that an AnnData matches the one a model was trained on, with messages that say how to fix it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trajvi.data._checks import check_obs_key

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData


def check_genes(adata: AnnData, var_names: Sequence[str]) -> None:
    """Raise a ValueError unless ``adata`` has exactly the model's genes, in the model's order."""
    expected = pd.Index([str(v) for v in var_names])
    if adata.var_names.equals(expected):
        return
    given = adata.var_names
    missing = expected.difference(given)
    extra = given.difference(expected)
    if len(missing) == 0 and len(extra) == 0:
        detail = "the same genes in another order"
    else:
        detail = f"{len(missing)} of the model's genes missing (e.g. {list(missing[:3])}) and {len(extra)} others"
    msg = (
        f"adata has {adata.n_vars} genes and the model was trained on {len(expected)}: {detail}. "
        "Subset and order adata like the training data, e.g. adata[:, model_var_names]."
    )
    raise ValueError(msg)


def unseen_categories(adata: AnnData, registry: dict[str, Any]) -> dict[str, list[str]]:
    """The batches and conditions of ``adata`` that ``registry`` does not know, by field name."""
    fields = registry["field_registries"]
    unseen: dict[str, list[str]] = {}
    for field, parameter in (("condition", "condition_key"), ("batch", "batch_key")):
        key = registry["setup_args"].get(parameter)
        if key is None:
            unseen[field] = []
            continue
        known = {str(c) for c in fields[field]["state_registry"]["categorical_mapping"]}
        values = check_obs_key(adata, key, parameter=parameter)
        unseen[field] = sorted(set(values.dropna().astype(str).unique()) - known)
    return unseen


def check_categories(adata: AnnData, registry: dict[str, Any], *, allow_new_conditions: bool = False) -> list[str]:
    """Raise a ValueError if ``adata`` has batches (or, unless allowed, conditions) the model was not trained on.

    Returns the conditions of ``adata`` that the model was not trained on (empty unless ``allow_new_conditions``).
    """
    unseen = unseen_categories(adata, registry)
    setup_args = registry["setup_args"]
    known = {
        field: [str(c) for c in registry["field_registries"][field]["state_registry"]["categorical_mapping"]]
        for field in ("batch", "condition")
    }
    if unseen["batch"]:
        msg = (
            f"adata.obs[{setup_args['batch_key']!r}] has batches {unseen['batch']} that the model was not trained "
            f"on (it knows {known['batch']}). Map them onto the model with TrajVI.load_query_data(adata, model) "
            "(scArches: only the new batches' weights are trained), or keep only cells of known batches."
        )
        raise ValueError(msg)
    if unseen["condition"] and not allow_new_conditions:
        msg = (
            f"adata.obs[{setup_args['condition_key']!r}] has categories {unseen['condition']} that the model was not "
            f"trained on (it knows {known['condition']}). Load the model with its own AnnData (or none) and pass "
            "these cells to its methods (get_latent_representation(adata), simulate_trajectory(adata, ...)), "
            "which encode cells of conditions the model never saw; or keep only cells of known conditions."
        )
        raise ValueError(msg)
    return unseen["condition"]


def read_saved(path: str | Path, prefix: str | None = None) -> dict[str, Any]:
    """Read a saved model file, raising clear errors for a missing, corrupt or foreign folder."""
    import torch

    folder = Path(path)
    model_file = folder / f"{prefix or ''}model.pt"
    if not model_file.is_file():
        msg = f"{model_file} does not exist: {folder} is not a saved trajvi model folder (make one with model.save())."
        raise FileNotFoundError(msg)
    try:
        saved = torch.load(model_file, map_location="cpu", weights_only=False)
        registry = saved["attr_dict"]["registry_"]
        saved["var_names"] = np.asarray(saved["var_names"]).astype(str)
    except Exception as err:
        msg = (
            f"{model_file} could not be read as a saved model ({type(err).__name__}: {err}). The folder is "
            "corrupt or was not written by model.save(); save the model again."
        )
        raise ValueError(msg) from err
    name = registry.get("model_name")
    if name != "TrajVI":
        msg = f"{folder} holds a {name} model, not a trajvi model; load it with the class that saved it."
        raise ValueError(msg)
    return saved
