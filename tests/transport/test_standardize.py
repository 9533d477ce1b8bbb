from __future__ import annotations

import logging

import numpy as np
import pytest

from trajvi.transport import standardize


@pytest.fixture
def trajvi_log(caplog):
    caplog.set_level(logging.INFO, logger="trajvi")
    return caplog


def test_columns_get_zero_mean_unit_std():
    z = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0]])
    z_std, mean, std = standardize(z)
    np.testing.assert_allclose(mean, [3.0, 20.0])
    np.testing.assert_allclose(std, [np.sqrt(8 / 3), np.sqrt(200.0)])
    np.testing.assert_allclose(z_std[:, 0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])
    np.testing.assert_allclose(z_std.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z_std.std(axis=0), 1.0)
    np.testing.assert_allclose(z_std * std + mean, z)


def test_constant_column_is_clamped_to_zeros():
    z = np.array([[1.0, 7.0], [2.0, 7.0]])
    z_std, _, std = standardize(z, min_std=1e-6)
    assert std[1] == 1e-6
    np.testing.assert_array_equal(z_std[:, 1], [0.0, 0.0])


def test_single_cell_becomes_zeros_and_warns(trajvi_log):
    z_std, mean, std = standardize(np.array([[4.0, -2.0]]), name="condition 'ctrl'")
    np.testing.assert_array_equal(z_std, [[0.0, 0.0]])
    np.testing.assert_array_equal(mean, [4.0, -2.0])
    np.testing.assert_array_equal(std, [1e-8, 1e-8])
    warnings = [r for r in trajvi_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "condition 'ctrl'" in warnings[0].getMessage()
    assert "single cell" in warnings[0].getMessage()


def test_empty_set_names_the_condition():
    with pytest.raises(ValueError, match=r"condition 'stimulated' is empty \(0 cells\)"):
        standardize(np.empty((0, 3)), name="condition 'stimulated'")


def test_non_finite_values_are_counted():
    z = np.array([[1.0, np.nan], [np.inf, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"condition 'ctrl' has 2 NaN/Inf value\(s\).*training history"):
        standardize(z, name="condition 'ctrl'")


def test_one_dimensional_array_is_rejected():
    with pytest.raises(ValueError, match="must be a 2-D array"):
        standardize(np.arange(3.0))


def test_min_std_must_be_positive():
    with pytest.raises(ValueError, match="min_std must be > 0"):
        standardize(np.ones((2, 2)), min_std=0.0)
