"""The pieces of calibrated predictions (``predict(calibrate=True)``): moments, shrinkage, the shift of counts."""

import numpy as np
from scipy import sparse

from trajvi.model._calibration import (
    SHRINKAGE_RULES,
    Calibration,
    _Miss,
    log_normalized,
    log_normalized_moments,
    shift_counts,
    shrink,
    shrink_whole,
)
from trajvi.model._transfer import TARGET_SUM


def test_moments_are_the_mean_and_squared_standard_error_read_in_chunks():
    rng = np.random.default_rng(0)
    counts = sparse.csr_matrix(rng.poisson(2.0, size=(50, 7)).astype(np.float32))
    rows = np.array([3, 1, 40, 7, 7, 22])
    mean, noise = log_normalized_moments(counts, rows, chunk=4)
    values = np.log1p(counts[rows].toarray() / counts[rows].toarray().sum(axis=1, keepdims=True) * TARGET_SUM)
    np.testing.assert_allclose(mean, values.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(noise, values.var(axis=0, ddof=1) / len(rows), rtol=1e-5, atol=1e-12)
    whole = log_normalized_moments(counts)
    np.testing.assert_allclose(whole[0], log_normalized(counts.toarray()).mean(axis=0), rtol=1e-6)


def test_shrinkage_removes_misses_within_their_noise_and_keeps_clear_ones():
    miss = np.array([0.0, 0.05, -0.1, 0.2, 1.0, -2.0])
    noise = np.full(6, 0.01)  # standard error 0.1
    shrunk = shrink(miss, noise)
    np.testing.assert_allclose(shrunk[:3], 0.0, atol=1e-12)  # within one standard error: nothing added
    np.testing.assert_allclose(shrunk[3:], [0.15, 0.99, -1.995])  # two, ten, twenty: three quarters, nearly all
    np.testing.assert_allclose(shrink(miss, noise, level=2.0)[3:], [0.0, 0.96, -1.98], atol=1e-12)


def test_two_samples_of_one_population_give_almost_no_shift():
    # a perturbation without effect: its real cells and the prediction are two samples of the same cells
    rng = np.random.default_rng(1)
    rates = rng.gamma(0.5, 2.0, size=300)
    real = rng.poisson(rates, size=(80, 300)).astype(np.float32)
    predicted = rng.poisson(rates, size=(120, 300)).astype(np.float32)
    (m_real, n_real), (m_pred, n_pred) = log_normalized_moments(real), log_normalized_moments(predicted)
    raw = m_real - m_pred
    shrunk = shrink(raw, n_real + n_pred)
    assert (shrunk == 0).mean() > 0.6  # about two genes in three are within one standard error
    assert np.linalg.norm(shrunk) < 0.7 * np.linalg.norm(raw), (np.linalg.norm(shrunk), np.linalg.norm(raw))
    # a real effect on a few expressed genes survives
    up = np.argsort(rates)[-10:]
    real[:, up] *= 4
    m_real, n_real = log_normalized_moments(real)
    effect = shrink(m_real - m_pred, n_real + n_pred)
    assert (effect[up] > 0.5).all(), effect[up]


def test_shifted_counts_keep_the_library_and_clip_at_zero():
    counts = np.array([[10.0, 0.0, 5.0, 5.0]])
    shift = np.array([0.0, 1.0, -50.0, 0.5])
    moved = shift_counts(counts, shift)
    expected = np.maximum(np.log1p(counts / counts.sum() * TARGET_SUM) + shift, 0.0)
    np.testing.assert_allclose(np.log1p(moved / counts.sum() * TARGET_SUM), expected, rtol=1e-5)
    assert moved[0, 2] == 0 and moved[0, 1] > 0
    np.testing.assert_allclose(shift_counts(counts, np.zeros(4)), counts, rtol=1e-5)


def _two_halves(rng, rates, effect, n_real=80, n_pred=120):
    """Real cells (rates moved by ``effect``) and predicted ones (the rates), as a miss with its two halves."""
    real = rng.poisson(rates * effect, size=(n_real, len(rates))).astype(np.float32)
    pred = rng.poisson(rates, size=(n_pred, len(rates))).astype(np.float32)

    def miss(r, p):
        (mr, vr), (mp, vp) = log_normalized_moments(r), log_normalized_moments(p)
        return mr - mp, vr + vp

    return _Miss(miss(real, pred), (miss(real[::2], pred[::2]), miss(real[1::2], pred[1::2])))


def test_the_rule_is_chosen_by_split_half_validation():
    rng = np.random.default_rng(2)
    rates = rng.gamma(0.5, 2.0, size=400)
    chooser = Calibration.__new__(Calibration)  # only _choose is exercised: no model needed
    null = _two_halves(rng, rates, np.ones(400))
    assert chooser._choose({"all": null}, {"all": 10}) != "none"  # noise does not replicate across halves
    assert set(chooser.losses) == set(SHRINKAGE_RULES)
    effect = np.ones(400)
    effect[np.argsort(rates)[-200:]] = rng.choice([0.25, 4.0], size=200)  # a strong effect on many genes
    strong = _two_halves(rng, rates, effect)
    # genes moved up and down by different amounts: one factor for all fits worse than one per gene
    assert chooser._choose({"all": strong}, {"all": 10}) == "per_gene", chooser.losses
    without = _Miss(null.full, None)
    assert chooser._choose({"all": without}, {"all": 10}) == "per_gene" and chooser.losses == {}


def test_one_factor_for_the_whole_vector_keeps_its_shape():
    miss = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(shrink_whole(miss, np.full(3, 0.1)), miss * (1 - 0.3 / 5.25))
    np.testing.assert_allclose(shrink_whole(miss, np.full(3, 10.0)), 0.0)
