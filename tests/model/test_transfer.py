"""The transfer of measured expression along a decoded change (``predict(mode="transfer")``)."""

import numpy as np

from trajvi.model._transfer import TARGET_SUM, transfer_expression


def _log_norm(x: np.ndarray) -> np.ndarray:
    return np.log1p(x / x.sum(axis=1, keepdims=True) * TARGET_SUM)


def test_no_decoded_change_returns_the_measured_counts():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(20, 30)).astype(np.float32)
    means = rng.gamma(2.0, 1.5, size=(20, 30))
    moved = transfer_expression(counts, means, means * 2.5)  # the same profile at another library size
    np.testing.assert_allclose(moved, counts, rtol=1e-5, atol=1e-5)


def test_the_log_normalised_change_is_added_and_clipped_at_zero():
    counts = np.array([[10.0, 0.0, 5.0, 5.0]])
    start = np.array([[1.0, 1.0, 1.0, 1.0]])
    end = np.array([[1.0, 3.0, 1.0, 0.01]])  # gene 1 switched on where the cell has no counts, gene 3 switched off
    moved = transfer_expression(counts, start, end)
    delta = _log_norm(end) - _log_norm(start)
    expected_log = np.maximum(_log_norm(counts) + delta, 0.0)
    np.testing.assert_allclose(np.log1p(moved / counts.sum() * TARGET_SUM), expected_log, rtol=1e-5)
    assert moved[0, 1] > 0  # a gene the cell did not express can be switched on
    assert moved[0, 3] < counts[0, 3]
    assert (moved >= 0).all()


def test_a_cell_without_counts_stays_without_counts():
    moved = transfer_expression(np.zeros((1, 3)), np.ones((1, 3)), np.array([[5.0, 1.0, 1.0]]))
    assert np.array_equal(moved, np.zeros((1, 3), dtype=np.float32))
