import numpy as np
import pytest
from scipy import sparse

from trajvi.datasets._convert import add_highly_variable, recover_counts


def _counts(seed=0, n_cells=50, n_genes=40):
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(2, 0.3, size=(n_cells, n_genes))
    counts[:, 0] = 1  # every cell has a gene seen once, as in the published files
    return counts


@pytest.mark.parametrize("target", [1e4, 5218.0, 4834.5])
def test_counts_are_recovered_exactly_from_log_normalised_float32(target):
    counts = _counts()
    size = counts.sum(1, keepdims=True) * 1.7  # the library size over more genes than are kept
    x = sparse.csr_matrix(np.log1p(counts / size * target).astype(np.float32))
    recovered, deviation = recover_counts(x)
    assert recovered.dtype == np.int32
    np.testing.assert_array_equal(recovered.toarray(), counts)
    assert 0 < deviation < 1e-3


def test_a_matrix_that_is_not_scaled_counts_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="from an integer"):
        recover_counts(sparse.csr_matrix(rng.random((20, 10)) + 0.1))
    with pytest.raises(ValueError, match="negative"):
        recover_counts(-np.ones((2, 3)))
    with pytest.raises(ValueError, match="1 cells have no non-zero"):
        recover_counts(np.array([[0.0, 0.0], [np.log(2.0), 0.0]]))


def test_highly_variable_flags_match_the_reference_klein_file():
    import anndata as ad

    from tests.conftest import shared_data

    reference = ad.read_h5ad(shared_data("klein2015_mesc_lif_counts.h5ad"))
    adata = ad.AnnData(reference.X.copy(), var=reference.var[[]].copy())
    add_highly_variable(adata, 500)
    np.testing.assert_array_equal(adata.var["highly_variable"], reference.var["highly_variable"])
    np.testing.assert_array_equal(adata.var["hvg_dispersions_norm"], reference.var["hvg_dispersions_norm"])
