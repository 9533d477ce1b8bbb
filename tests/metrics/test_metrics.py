import numpy as np
import pytest
import scipy.sparse as sp

from trajvi import metrics


def test_energy_distance_is_unbiased():
    """Two samples of one distribution: the U-statistic averages to zero, the plug-in (V) form would not."""
    rng = np.random.default_rng(0)
    values = [metrics.energy_distance_unbiased(rng.normal(size=(20, 3)), rng.normal(size=(40, 3))) for _ in range(200)]
    assert abs(np.mean(values)) < 0.02
    assert min(values) < 0  # it can be negative, as a U-statistic
    shifted = metrics.energy_distance_unbiased(rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) + 2.0)
    assert shifted > 1.0


def test_energy_distance_subsamples_and_checks_its_input():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + 1
    full = metrics.energy_distance_unbiased(x, y, max_cells=None)
    assert metrics.energy_distance_unbiased(x, y, max_cells=100, seed=0) == pytest.approx(full, abs=0.15)
    assert metrics.energy_distance_unbiased(x, y, max_cells=100, seed=0) == metrics.energy_distance_unbiased(
        x, y, max_cells=100, seed=0
    )
    with pytest.raises(ValueError, match="at least two points"):
        metrics.energy_distance_unbiased(x[:1], y)
    with pytest.raises(ValueError, match="same d"):
        metrics.energy_distance_unbiased(x, y[:, :1])


def test_wasserstein1_of_a_shift():
    x = np.random.default_rng(2).normal(size=(50, 2))
    assert metrics.wasserstein1(x, x + np.array([3.0, 4.0])) == pytest.approx(5.0)


def test_log_normalize_matches_scanpy_and_keeps_empty_cells_at_zero():
    import anndata as ad
    import scanpy as sc

    counts = np.random.default_rng(3).poisson(2.0, size=(30, 12)).astype(np.float32)
    counts[0] = 0
    counts[1, 0] = 1  # no cell without counts for scanpy (it warns); the empty cell is checked below
    a = ad.AnnData(np.delete(counts, 0, axis=0))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    np.testing.assert_allclose(metrics.log_normalize(sp.csr_matrix(counts))[1:].toarray(), a.X, rtol=1e-5)
    np.testing.assert_allclose(metrics.log_normalize(counts)[1:], a.X, rtol=1e-5)
    assert (metrics.log_normalize(counts)[0] == 0).all()


@pytest.mark.parametrize("kind", [sp.csr_matrix, sp.csc_matrix, sp.csr_array])
def test_log_normalize_keeps_sparse_counts_sparse(kind):
    dense = np.random.default_rng(4).poisson(0.3, size=(40, 25)).astype(np.int32)
    dense[0] = 0
    counts = kind(dense)
    before = counts.copy()
    out = metrics.log_normalize(counts)
    assert sp.issparse(out) and out.format == "csr" and out.dtype == np.float32
    assert isinstance(out, sp.sparray) == isinstance(counts, sp.sparray)
    assert out.nnz == np.count_nonzero(dense)  # only the stored entries: nothing densified
    np.testing.assert_allclose(out.toarray(), metrics.log_normalize(dense), rtol=1e-6)
    assert (counts != before).nnz == 0 and counts.dtype == np.int32  # the input is left as it was


def test_r2_helpers():
    rng = np.random.default_rng(4)
    ctrl = rng.normal(size=(40, 30))
    shift = rng.normal(size=30)
    true = ctrl + shift
    assert metrics.mean_r2(true + 0.01 * rng.normal(size=true.shape), true) > 0.99
    assert metrics.lfc_r2(ctrl + shift, true, ctrl, np.arange(30)) == pytest.approx(1.0)
    assert metrics.lfc_r2(ctrl - shift[::-1], true, ctrl, np.arange(30)) < 0.5
    assert np.isnan(metrics.mean_r2(np.ones((3, 4)), true[:, :4]))


def test_pcc_delta_is_the_signed_correlation_of_the_changes():
    rng = np.random.default_rng(5)
    ctrl = rng.normal(size=(40, 30))
    shift = rng.normal(size=30)
    true = ctrl + shift
    noisy = ctrl + shift + 0.8 * rng.normal(size=30)
    genes = np.arange(0, 30, 2)
    r = metrics.pcc_delta(noisy, true, ctrl, genes)
    assert 0 < r < 1
    assert r**2 == pytest.approx(metrics.lfc_r2(noisy, true, ctrl, genes))
    assert metrics.pcc_delta(ctrl - shift, true, ctrl) == pytest.approx(-1.0)  # the opposite change
    assert metrics.pcc_delta(2 * shift + ctrl, true, ctrl) == pytest.approx(1.0)  # the size does not count
    assert np.isnan(metrics.pcc_delta(ctrl, true, ctrl))  # no predicted change


def test_deg_overlap_counts_the_true_degs_among_the_most_moved_genes():
    ctrl = np.zeros((5, 10))
    change = np.zeros(10)
    change[[1, 3, 5, 7]] = [2.0, -3.0, 0.5, 1.0]
    pred = ctrl + change
    assert metrics.deg_overlap(pred, ctrl, [1, 3, 5, 7]) == 1.0
    assert metrics.deg_overlap(pred, ctrl, [1, 3, 0, 2]) == 0.5  # 5 and 7 are moved more than 0 and 2
    assert metrics.deg_overlap(pred, ctrl, [0, 2]) == 0.0  # the two most moved are 3 and 1
    with pytest.raises(ValueError, match="repeated genes"):
        metrics.deg_overlap(pred, ctrl, [1, 1])


def test_knn_accuracy_and_linear_r2():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 50)
    separated = rng.normal(size=(100, 2)) + (labels == "a")[:, None] * 10
    assert metrics.knn_accuracy(separated, labels) > 0.95
    assert metrics.knn_accuracy(rng.normal(size=(100, 2)), labels) < 0.8
    truth = rng.normal(size=(100, 3))
    assert metrics.linear_r2(truth @ rng.normal(size=(3, 5)), truth) > 0.99
    assert metrics.linear_r2(rng.normal(size=(100, 5)), truth) < 0.2
