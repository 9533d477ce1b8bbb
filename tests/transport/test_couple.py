from __future__ import annotations

import logging

import numpy as np
import ot
import pytest

from trajvi._types import OT_METHODS
from trajvi.transport import couple


@pytest.fixture
def trajvi_log(caplog):
    caplog.set_level(logging.INFO, logger="trajvi")
    return caplog


def _warnings(log) -> list[str]:
    return [r.getMessage() for r in log.records if r.levelno == logging.WARNING]


def _clouds(seed: int = 0, n: int = 30, m: int = 25, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 0.5


def test_exact_1d_is_the_sorted_matching():
    x = np.array([[7.0], [0.0], [3.0], [1.0]])
    y = np.array([[2.0], [9.0], [0.5], [4.0]])
    plan = couple(x, y, method="exact")
    expected = np.zeros((4, 4))
    # sorted x: 0 (row 1), 1 (row 3), 3 (row 2), 7 (row 0); sorted y: 0.5 (col 2), 2 (col 0), 4 (col 3), 9 (col 1)
    expected[[1, 3, 2, 0], [2, 0, 3, 1]] = 0.25
    assert plan.dtype == np.float64
    np.testing.assert_allclose(plan, expected, atol=1e-15)


def test_exact_identical_sets_give_the_identity():
    x, _ = _clouds(n=6)
    np.testing.assert_allclose(couple(x, x.copy()), np.eye(6) / 6, atol=1e-15)


def test_exact_uses_weights_and_normalises_them():
    x = np.array([[0.0], [10.0]])
    y = np.array([[0.0], [1.0], [10.0]])
    plan = couple(x, y, a=np.array([2.0, 2.0]), b=np.array([1.0, 1.0, 2.0]))
    np.testing.assert_allclose(plan, [[0.25, 0.25, 0.0], [0.0, 0.0, 0.5]], atol=1e-15)


def test_zero_weight_rows_get_no_mass():
    x, y = _clouds()
    a = np.ones(x.shape[0])
    a[[0, 5]] = 0.0
    for method in ("exact", "sinkhorn"):
        plan = couple(x, y, method=method, a=a)
        np.testing.assert_array_equal(plan[[0, 5]], 0.0)
        np.testing.assert_allclose(plan.sum(axis=1), a / a.sum(), atol=1e-7)


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_separated_clusters_get_no_cross_mass(method):
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 0.1, (6, 2)), rng.normal(100, 0.1, (4, 2))])
    y = np.vstack([rng.normal(0, 0.1, (3, 2)), rng.normal(100, 0.1, (2, 2))])
    plan = couple(x, y, method=method, a=np.r_[np.full(6, 1 / 10), np.full(4, 1 / 10)], b=np.r_[[0.2] * 3, [0.2] * 2])
    assert plan[:6, 3:].sum() < 1e-12
    assert plan[6:, :3].sum() < 1e-12
    np.testing.assert_allclose(plan[:6, :3].sum(), 0.6, atol=1e-7)


@pytest.mark.parametrize("method", OT_METHODS)
def test_one_cell_source_sends_its_mass_by_target_weights(method):
    y = np.array([[0.0, 1.0], [2.0, 3.0], [5.0, 5.0]])
    b = np.array([0.5, 0.3, 0.2])
    plan = couple(np.array([[1.0, 1.0]]), y, method=method, b=b)
    assert plan.shape == (1, 3)
    if method == "unbalanced":
        assert np.all(np.isfinite(plan)) and plan.sum() > 0
    else:
        np.testing.assert_allclose(plan, b[None, :], atol=1e-15)


def test_one_cell_target_receives_everything():
    x, _ = _clouds(n=4)
    np.testing.assert_allclose(couple(x, np.zeros((1, 3)), method="sinkhorn"), np.full((4, 1), 0.25))


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_identical_points_give_the_independent_coupling(method, trajvi_log):
    a = np.array([0.2, 0.8])
    b = np.array([0.5, 0.25, 0.25])
    plan = couple(np.ones((2, 3)), np.ones((3, 3)), method=method, a=a, b=b)
    np.testing.assert_allclose(plan, np.outer(a, b), atol=1e-15)
    assert any("identical" in m and "independent coupling" in m for m in _warnings(trajvi_log))


def test_sinkhorn_approaches_exact_as_epsilon_shrinks():
    rng = np.random.default_rng(0)
    x = rng.permutation(np.arange(8.0))[:, None]
    y = rng.permutation(np.arange(8.0))[:, None] + 0.3
    exact = couple(x, y, method="exact")
    errors = []
    for epsilon in (0.5, 0.1, 0.03, 0.003):
        plan = couple(x, y, method="sinkhorn", epsilon=epsilon)
        np.testing.assert_allclose(plan.sum(axis=1), 1 / 8, atol=1e-6)
        np.testing.assert_allclose(plan.sum(axis=0), 1 / 8, atol=1e-6)
        errors.append(np.abs(plan - exact).sum())
    assert np.all(np.diff(errors) < 0)
    assert errors[0] > 1.0
    assert errors[-1] < 1e-6


def test_sinkhorn_matches_pot_on_the_normalised_cost():
    x, y = _clouds()
    cost = ot.dist(x, y)
    a, b = np.full(30, 1 / 30), np.full(25, 1 / 25)
    reference = ot.sinkhorn(a, b, cost / cost.mean(), reg=0.1, stopThr=1e-12, numItermax=100_000)
    np.testing.assert_allclose(couple(x, y, method="sinkhorn", epsilon=0.1), reference, atol=1e-7)


def test_unbalanced_matches_pot_on_the_normalised_cost():
    x, y = _clouds()
    cost = ot.dist(x, y)
    a, b = np.full(30, 1 / 30), np.full(25, 1 / 25)
    reference = ot.unbalanced.sinkhorn_unbalanced(
        a, b, cost / cost.mean(), reg=0.1, reg_m=2.0, method="sinkhorn", stopThr=1e-12, numItermax=100_000
    )
    np.testing.assert_allclose(couple(x, y, method="unbalanced", epsilon=0.1, reg_m=2.0), reference, atol=1e-7)


def test_unbalanced_outlier_loses_mass():
    x, y = _clouds(n=20, m=20, d=2)
    x[0] = [40.0, 40.0]
    plan = couple(x, y, method="unbalanced", epsilon=0.05, reg_m=0.5)
    rows = plan.sum(axis=1)
    assert rows[0] < 1e-3 * rows[1:].min()
    assert rows[1:].min() > 0.5 / 20
    balanced = couple(x, y, method="sinkhorn", epsilon=0.05)
    np.testing.assert_allclose(balanced.sum(axis=1)[0], 1 / 20, atol=1e-6)


@pytest.mark.parametrize("method", ["sinkhorn", "unbalanced"])
def test_small_epsilon_with_an_outlier_stays_finite(method):
    x, y = _clouds(n=40, m=40)
    x[0] += 50.0
    plan = couple(x, y, method=method, epsilon=1e-3)
    assert np.all(np.isfinite(plan))
    assert plan.sum() > 0.5


def test_large_epsilon_warns_that_the_plan_is_uniform(trajvi_log):
    x, y = _clouds()
    plan = couple(x, y, method="sinkhorn", epsilon=1e4)
    np.testing.assert_allclose(plan, 1 / (30 * 25), rtol=1e-3)
    assert any("epsilon=10000 is too large" in m for m in _warnings(trajvi_log))


def test_moderate_epsilon_does_not_warn(trajvi_log):
    x, y = _clouds()
    couple(x, y, method="sinkhorn", epsilon=0.05)
    couple(x, y, method="unbalanced", epsilon=0.05)
    assert _warnings(trajvi_log) == []


def test_sinkhorn_with_too_few_iterations_raises():
    x, y = _clouds()
    with pytest.raises(RuntimeError, match=r"misses its marginals.*larger epsilon.*method='exact'"):
        couple(x, y, method="sinkhorn", epsilon=0.01, max_iter_entropic=1)


def test_exact_with_too_few_iterations_raises():
    x, y = _clouds(n=60, m=60)
    with pytest.raises(RuntimeError, match=r"numItermax reached.*max_iter=2"):
        couple(x, y, method="exact", max_iter=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "emd"}, r"method='emd' is not valid; use one of 'exact', 'sinkhorn', 'unbalanced'"),
        ({"epsilon": 0.0}, "epsilon must be a finite number > 0"),
        ({"epsilon": np.nan}, "epsilon must be a finite number > 0"),
        ({"reg_m": -1.0}, "reg_m must be a finite number > 0"),
        ({"max_iter": 0}, "max_iter must be a positive integer"),
        ({"a": -np.ones(30)}, r"a must be non-negative; got 30 negative weight\(s\)"),
        ({"b": np.ones(3)}, r"b must be a 1-D array with one weight per target cell \(25\); got shape \(3,\)"),
        ({"b": np.r_[np.nan, np.ones(24)]}, r"b must be finite; got 1 NaN/Inf"),
        ({"a": np.zeros(30)}, "a must have a positive sum"),
    ],
)
def test_bad_options_are_rejected(kwargs, match):
    x, y = _clouds()
    with pytest.raises(ValueError, match=match):
        couple(x, y, **kwargs)


def test_bad_point_sets_are_rejected():
    x, y = _clouds()
    with pytest.raises(ValueError, match=r"same number of columns; got 3 and 2"):
        couple(x, y[:, :2])
    with pytest.raises(ValueError, match=r"target set \(x_target\) is empty"):
        couple(x, y[:0])
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"source set \(x_source\) has 1 NaN/Inf"):
        couple(x, y)
    with pytest.raises(ValueError, match="must be a 2-D array"):
        couple(np.zeros(3), y)


def test_sinkhorn_stopping_early_is_logged(trajvi_log):
    rng = np.random.default_rng(0)
    x = rng.permutation(np.arange(8.0))[:, None]
    y = rng.permutation(np.arange(8.0))[:, None] + 0.3
    plan = couple(x, y, method="sinkhorn", epsilon=0.01, max_iter_entropic=300)
    np.testing.assert_allclose(plan.sum(axis=1), 1 / 8, atol=1e-4)
    assert any("stopped at max_iter_entropic=300" in m for m in _warnings(trajvi_log))


def test_unbalanced_keeps_the_given_masses():
    x, y = _clouds(n=4, m=4)
    plan = couple(x, y, method="unbalanced", a=np.full(4, 2.0), b=np.full(4, 2.0), reg_m=1e3, epsilon=0.05)
    assert plan.sum() == pytest.approx(8.0, rel=1e-3)


def _point_clouds(n=60, m=50, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(loc=0.5, size=(m, d))


@pytest.mark.parametrize("method", ["sinkhorn", "unbalanced"])
@pytest.mark.parametrize("epsilon", [0.05, 1e-3])
def test_torch_sinkhorn_matches_numpy(method, epsilon):
    x, y = _point_clouds()
    expected = couple(x, y, method=method, epsilon=epsilon)
    plan = couple(x, y, method=method, epsilon=epsilon, device="cpu")
    assert isinstance(plan, np.ndarray) and plan.dtype == np.float64
    np.testing.assert_allclose(plan, expected, rtol=1e-6, atol=1e-12)


def test_torch_sinkhorn_keeps_zero_weight_rows_and_exact_ignores_the_device():
    x, y = _point_clouds(8, 6)
    a = np.array([0, 1, 1, 1, 1, 1, 1, 0.0])
    plan = couple(x, y, method="sinkhorn", a=a, device="cpu")
    assert np.all(plan[[0, 7]] == 0)
    np.testing.assert_allclose(plan.sum(axis=0), np.full(6, 1 / 6), atol=1e-6)
    np.testing.assert_array_equal(couple(x, y, method="exact", device="cpu"), couple(x, y, method="exact"))


def test_couple_sets_passes_the_device_to_every_block():
    from trajvi.transport import couple_sets

    x, y = _point_clouds(300, 280)
    on_numpy = couple_sets(x, y, method="sinkhorn", batch_size=100, rng=0)
    on_torch = couple_sets(x, y, method="sinkhorn", batch_size=100, rng=0, device="cpu")
    assert on_torch.n_blocks == on_numpy.n_blocks == 3
    for p, q in zip(on_numpy.plans, on_torch.plans, strict=True):
        np.testing.assert_allclose(q, p, rtol=1e-6, atol=1e-12)


@pytest.mark.gpu
def test_torch_sinkhorn_on_cuda_matches_numpy():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, y = _point_clouds(500, 400)
    np.testing.assert_allclose(
        couple(x, y, method="sinkhorn", device="cuda"), couple(x, y, method="sinkhorn"), rtol=1e-6, atol=1e-12
    )
