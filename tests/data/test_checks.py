import anndata
import numpy as np
import pytest
from scipy import sparse

import trajvi
from trajvi.data import validate_anndata
from trajvi.data._checks import scan_counts


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


# -- counts read from disk: backed h5ad, an AnnCollection, dask ------------------------------------


def _backed(adata, tmp_path, fmt):
    adata = adata.copy()
    adata.X = {"csr": sparse.csr_matrix, "csc": sparse.csc_matrix, "dense": np.asarray}[fmt](
        adata.X.toarray() if sparse.issparse(adata.X) else adata.X
    )
    path = tmp_path / f"counts_{fmt}.h5ad"
    adata.write_h5ad(path)
    return anndata.read_h5ad(path, backed="r")


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_backed_counts_pass_and_are_summed_like_in_memory(synthetic_adata, tmp_path, fmt, trajvi_caplog):
    x = synthetic_adata.X.toarray().astype(np.int32)
    x[0] = 0  # an empty cell and an empty gene: the backed dense file failed on them with an AttributeError
    x[:, 5] = 0
    synthetic_adata.X = sparse.csr_matrix(x)
    expected = validate_anndata(synthetic_adata, "condition", batch_key="batch")
    backed = _backed(synthetic_adata, tmp_path, fmt)
    assert validate_anndata(backed, "condition", batch_key="batch") == expected
    assert expected["n_empty_cells"] == expected["n_empty_genes"] == 1
    assert "1 cell(s) with no counts" in trajvi_caplog.text
    # read in several blocks (a block is at least one row): the same sums as the whole matrix
    cells, genes = scan_counts(backed.X, backed.shape, block_values=7 * backed.n_vars)
    np.testing.assert_array_equal(cells, x.sum(axis=1))
    np.testing.assert_array_equal(genes, x.sum(axis=0))


@pytest.mark.parametrize("fmt", ["csr", "dense"])
@pytest.mark.parametrize(
    ("value", "match"),
    [(-1.0, "negative"), (np.nan, "non-finite"), (0.5, "non-integer"), (1e12, "above 16,777,216")],
)
def test_bad_backed_counts_get_the_in_memory_message(synthetic_adata, tmp_path, fmt, value, match):
    x = synthetic_adata.X.toarray()
    x[350, 3] = value  # in the last block below
    synthetic_adata.X = sparse.csr_matrix(x)
    backed = _backed(synthetic_adata, tmp_path, fmt)
    with pytest.raises(ValueError, match=match) as info:
        scan_counts(backed.X, backed.shape, block_values=100 * backed.n_vars)
    assert "rows 300:400" in str(info.value)
    with pytest.raises(ValueError, match=match):
        trajvi.TrajVI.setup_anndata(backed, "condition")
    assert "_scvi_uuid" not in backed.uns


def test_anncollection_layers_are_found_and_checked(synthetic_adata, tmp_path):
    from anndata.experimental import AnnCollection
    from scvi.dataloaders import CollectionAdapter

    synthetic_adata.X = synthetic_adata.X.astype(np.int32)
    synthetic_adata.layers["counts"] = synthetic_adata.X.copy()
    synthetic_adata[:200].write_h5ad(tmp_path / "a.h5ad")
    synthetic_adata[200:].write_h5ad(tmp_path / "b.h5ad")
    files = [anndata.read_h5ad(tmp_path / f, backed="r") for f in ("a.h5ad", "b.h5ad")]
    collection = CollectionAdapter(AnnCollection(files, join_vars="inner", join_obs="inner"))
    summary = validate_anndata(collection, "condition", layer="counts", batch_key="batch")
    assert summary["categories"] == ["control", "stimulated"]
    with pytest.raises(KeyError, match=r"Available layers: \['counts'\]"):  # was a KeyError about 'No 0'
        validate_anndata(collection, "condition", layer="raw")
    with pytest.raises(ValueError, match="pass layer="):  # an AnnCollection has no X
        validate_anndata(collection, "condition")


def test_dask_counts_are_checked_in_blocks(synthetic_adata):
    da = pytest.importorskip("dask.array", reason="dask is not installed (an optional dependency of anndata)")
    x = synthetic_adata.X.toarray()
    cells, genes = scan_counts(da.from_array(x, chunks=(50, -1)), x.shape, block_values=64 * x.shape[1])
    np.testing.assert_allclose(cells, x.sum(axis=1))
    np.testing.assert_allclose(genes, x.sum(axis=0))
    x[399, 0] = -3
    with pytest.raises(ValueError, match="negative"):
        scan_counts(da.from_array(x, chunks=(50, -1)), x.shape, block_values=64 * x.shape[1])


# -- duplicate names and implausible counts --------------------------------------------------------


@pytest.mark.parametrize("axis", ["obs_names", "var_names"])
def test_duplicate_names_are_refused_before_registration(synthetic_adata, axis):
    names = list(getattr(synthetic_adata, axis))
    names[1] = names[0]
    setattr(synthetic_adata, axis, names)
    snap = _snapshot(synthetic_adata)
    with pytest.raises(ValueError, match=rf"adata\.{axis} has 1 duplicate\(s\) \(such as '{names[0]}'\)") as info:
        trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    assert f"{axis}_make_unique()" in str(info.value)
    _unchanged(synthetic_adata, snap)
    assert "_scvi_uuid" not in synthetic_adata.uns


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_implausibly_large_counts_are_refused(synthetic_adata, dtype):
    x = synthetic_adata.X.toarray().astype(dtype)
    x[2, 2] = 2**24  # the largest accepted: float32 still holds it exactly
    synthetic_adata.X = sparse.csr_matrix(x)
    validate_anndata(synthetic_adata, "condition")
    x[3, 3] = 3e12 if dtype == np.int64 else 1e12
    synthetic_adata.X = sparse.csr_matrix(x)
    snap = _snapshot(synthetic_adata)
    with pytest.raises(ValueError, match=r"1 count\(s\) above 16,777,216 \(maximum [13]e\+12\)"):
        trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    _unchanged(synthetic_adata, snap)


@pytest.mark.parametrize("fmt", [sparse.csr_matrix, sparse.csc_matrix, np.asarray])
def test_in_memory_counts_are_summed_in_blocks(synthetic_adata, fmt):
    x = synthetic_adata.X.toarray().astype(np.int32)
    cells, genes = scan_counts(fmt(x), x.shape, block_values=3 * x.shape[1])
    np.testing.assert_array_equal(cells, x.sum(axis=1))
    np.testing.assert_array_equal(genes, x.sum(axis=0))
