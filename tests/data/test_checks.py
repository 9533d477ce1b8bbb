import numpy as np
import pytest
from scipy import sparse

import trajvi
from trajvi.data import validate_anndata


def _snapshot(adata):
    return (adata.X.copy(), adata.obs.copy(), dict(adata.uns), list(adata.layers.keys()))


def _unchanged(adata, snap):
    x, obs, uns, layers = snap
    dense = (lambda m: m.toarray()) if sparse.issparse(x) else np.asarray
    assert np.array_equal(dense(adata.X), dense(x), equal_nan=True)
    assert adata.obs.equals(obs)
    assert set(adata.uns) == set(uns)
    assert list(adata.layers.keys()) == layers


def test_valid_data_passes(synthetic_adata):
    summary = validate_anndata(synthetic_adata, "condition", batch_key="batch")
    assert summary["categories"] == ["control", "stimulated"]
    assert summary["n_empty_cells"] == 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"condition_key": "cond"}, "cond"),
        ({"condition_key": "condition", "batch_key": "donor"}, "donor"),
        ({"condition_key": "condition", "layer": "counts"}, "counts"),
        ({"condition_key": "condition", "time_key": "day"}, "day"),
    ],
)
def test_missing_keys_name_the_key_and_the_alternatives(synthetic_adata, kwargs, key):
    snap = _snapshot(synthetic_adata)
    with pytest.raises(KeyError, match=key) as info:
        trajvi.TrajVI.setup_anndata(synthetic_adata, **kwargs)
    assert "Available" in str(info.value)
    _unchanged(synthetic_adata, snap)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda x: x.__setitem__((0, 0), -1.0), "negative"),
        (lambda x: x.__setitem__((0, 0), np.nan), "non-finite"),
        (lambda x: x.__setitem__((0, 0), np.inf), "non-finite"),
        (lambda x: x.__setitem__((0, 0), 0.5), "non-integer"),
    ],
)
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_bad_counts(synthetic_adata, mutate, match, fmt):
    x = synthetic_adata.X.toarray()
    mutate(x)
    synthetic_adata.X = sparse.csr_matrix(x) if fmt == "csr" else x
    snap = _snapshot(synthetic_adata) if fmt == "csr" else None
    with pytest.raises(ValueError, match=match):
        trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    if snap is not None:
        _unchanged(synthetic_adata, snap)
    assert "_scvi_uuid" not in synthetic_adata.uns


def test_negative_integer_counts(synthetic_adata):
    synthetic_adata.X = synthetic_adata.X.toarray().astype(np.int32)
    synthetic_adata.X[3, 3] = -2
    with pytest.raises(ValueError, match="negative"):
        validate_anndata(synthetic_adata, "condition")


def test_text_matrix_is_rejected(synthetic_adata):
    with pytest.raises(TypeError, match="dtype"):
        trajvi.data.check_counts(np.array([["a", "b"]]))


def test_single_category(synthetic_adata):
    synthetic_adata.obs["one"] = "control"
    with pytest.raises(ValueError, match="single category"):
        trajvi.TrajVI.setup_anndata(synthetic_adata, "one")


def test_missing_condition_values(synthetic_adata):
    synthetic_adata.obs["cond"] = synthetic_adata.obs["condition"].astype(object)
    synthetic_adata.obs.iloc[0, synthetic_adata.obs.columns.get_loc("cond")] = None
    with pytest.raises(ValueError, match="missing"):
        trajvi.TrajVI.setup_anndata(synthetic_adata, "cond")


def test_empty_cells_and_genes_are_warned(synthetic_adata, trajvi_caplog):
    x = synthetic_adata.X.toarray()
    x[0] = 0
    x[:, 5] = 0
    synthetic_adata.X = sparse.csr_matrix(x)
    summary = validate_anndata(synthetic_adata, "condition")
    assert summary["n_empty_cells"] == 1
    assert summary["n_empty_genes"] == 1
    text = trajvi_caplog.text
    assert "1 cell(s) with no counts" in text
    assert "1 gene(s) with no counts" in text


def test_time_must_be_constant_within_condition():
    a = trajvi.data.synthetic(200, 20, kind="time_course", seed=0)
    a.obs["time_bad"] = a.obs["time"] + np.linspace(0, 0.5, a.n_obs)
    with pytest.raises(ValueError, match="constant within a condition"):
        validate_anndata(a, "condition", time_key="time_bad")
    a.obs["time_text"] = a.obs["condition"].astype(str)
    with pytest.raises(TypeError, match="numeric"):
        validate_anndata(a, "condition", time_key="time_text")
    assert validate_anndata(a, "condition", time_key="time")["times"] == {"t0": 0.0, "t1": 1.0, "t2": 2.0, "t3": 3.0}


def test_size_factors_must_be_positive(synthetic_adata):
    synthetic_adata.obs["sf"] = 1.0
    synthetic_adata.obs.iloc[2, synthetic_adata.obs.columns.get_loc("sf")] = 0.0
    with pytest.raises(ValueError, match="positive"):
        validate_anndata(synthetic_adata, "condition", size_factor_key="sf")


def test_layer_is_used(synthetic_adata):
    synthetic_adata.layers["counts"] = synthetic_adata.X.copy()
    synthetic_adata.X = synthetic_adata.X * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        validate_anndata(synthetic_adata, "condition")
    validate_anndata(synthetic_adata, "condition", layer="counts")
