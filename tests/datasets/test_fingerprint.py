import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from tests.conftest import shared_data
from trajvi.datasets import fingerprint
from trajvi.datasets._fingerprint import fingerprint_differences
from trajvi.datasets._registry import RECORDS


def _adata(seed=0):
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(sparse.csr_matrix(rng.poisson(1.0, size=(30, 12)).astype(np.int32)))
    adata.obs_names = [f"c{i}" for i in range(30)]
    adata.var_names = [f"g{i}" for i in range(12)]
    adata.obs["day"] = rng.integers(0, 3, 30)
    return adata


def test_the_fingerprint_ignores_order_but_sees_a_changed_count_or_label():
    adata = _adata()
    found = fingerprint(adata, ["day"])
    shuffled = adata[np.random.default_rng(1).permutation(30)][:, np.arange(12)[::-1]].copy()
    assert fingerprint(shuffled, ["day"]) == found
    changed = adata.copy()
    changed.X[3, 4] += 1
    differences = {line.split(":")[0] for line in fingerprint_differences(fingerprint(changed, ["day"]), found)}
    assert {"total_counts", "x_md5"} <= differences
    assert "obs_names_md5" not in differences
    relabelled = adata.copy()
    relabelled.obs.loc["c0", "day"] = 7
    assert fingerprint_differences(fingerprint(relabelled, ["day"]), found) == [
        f"labels_md5['day']: found {fingerprint(relabelled, ['day'])['labels_md5']['day']}, "
        f"expected {found['labels_md5']['day']}"
    ]


def test_non_integer_values_are_refused():
    adata = _adata()
    adata.X = adata.X.astype(np.float32) * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        fingerprint(adata)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_the_recorded_fingerprints_are_those_of_the_reference_files(name):
    record = RECORDS[name]
    adata = ad.read_h5ad(shared_data(record.filename))
    assert fingerprint(adata, record.label_keys) == record.fingerprint
