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


def check_categories(adata: AnnData, registry: dict[str, Any]) -> None:
    """Raise a ValueError if ``adata`` has conditions or batches the model was not trained on."""
    fields = registry["field_registries"]
    for field, parameter in (("condition", "condition_key"), ("batch", "batch_key")):
        key = registry["setup_args"].get(parameter)
        if key is None:
            continue
        known = [str(c) for c in fields[field]["state_registry"]["categorical_mapping"]]
        values = check_obs_key(adata, key, parameter=parameter)
        unknown = sorted(set(values.astype(str).unique()) - set(known))
        if unknown:
            msg = (
                f"adata.obs[{key!r}] has categories {unknown} that the model was not trained on "
                f"(it knows {known}). Keep only those cells, or train a model that includes them."
            )
            raise ValueError(msg)


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
