from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import sparse

from trajvi.transport import Coupling, couple, couple_sets, standardize


@pytest.fixture
def trajvi_log(caplog):
    caplog.set_level(logging.INFO, logger="trajvi")
    return caplog


def _sets(n: int = 12, m: int = 10, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(2.0, 3.0, size=(m, d))


def _chi2_ok(observed: np.ndarray, expected: np.ndarray) -> bool:
    keep = expected > 0
    dof = keep.sum() - 1
    chi2 = (((observed - expected) ** 2)[keep] / expected[keep]).sum()
    return chi2 < dof + 5 * np.sqrt(2 * dof)


def test_whole_sets_are_standardized_then_coupled():
    # 1-D sets of different location and scale: after standardizing, the plan matches cells by rank.
    x = np.array([[3.0], [0.0], [1.0], [2.0]])
    y = np.array([[100.0], [400.0], [300.0], [200.0]])
    coupling = couple_sets(x, y)
    expected = np.zeros((4, 4))
    expected[[1, 2, 3, 0], [0, 3, 2, 1]] = 0.25
    np.testing.assert_allclose(coupling.to_dense(), expected, atol=1e-15)
    assert coupling.n_blocks == 1
    assert coupling.groups == [None]
    assert (coupling.n_source, coupling.n_target) == (4, 4)
    np.testing.assert_array_equal(coupling.weights, [1.0])


@pytest.mark.parametrize("standardize_sets", [True, False])
def test_single_block_equals_couple(standardize_sets):
    x, y = _sets()
    coupling = couple_sets(x, y, method="sinkhorn", epsilon=0.1, standardize_sets=standardize_sets)
    if standardize_sets:
        x, y = standardize(x)[0], standardize(y)[0]
    np.testing.assert_allclose(coupling.to_dense(), couple(x, y, method="sinkhorn", epsilon=0.1), atol=1e-12)


def test_errors_name_the_condition():
    x, y = _sets()
    with pytest.raises(ValueError, match=r"condition 'stimulated' is empty"):
        couple_sets(x, y[:0], target_name="stimulated")
    with pytest.raises(ValueError, match=r"condition 'ctrl' is empty"):
        couple_sets(x[:0], y, source_name="ctrl", standardize_sets=False)
    x[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"condition 'ctrl' has 1 NaN/Inf value.*training history"):
        couple_sets(x, y, source_name="ctrl")
    with pytest.raises(ValueError, match=r"condition 'a' has 3 dimensions but the condition 'b' has 2"):
        couple_sets(y, y[:, :2], source_name="a", target_name="b")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "greedy"}, "method='greedy' is not valid; use one of 'exact', 'sinkhorn', 'unbalanced'"),
        ({"group_weighting": "target"}, "group_weighting='target' is not valid; use one of 'balanced', 'source'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"groups_source": np.array(["a"] * 12)}, "Pass both groups_source and groups_target"),
        (
            {"groups_source": np.array(["a"] * 11), "groups_target": np.array(["a"] * 10)},
            r"groups_source must have one label per cell of the condition 'source' \(12\)",
        ),
        (
            {"groups_source": np.array(["a"] * 11 + [None]), "groups_target": np.array(["a"] * 10)},
            r"groups_source has 1 missing label",
        ),
    ],
)
def test_bad_options_are_rejected(kwargs, match):
    x, y = _sets()
    with pytest.raises(ValueError, match=match):
        couple_sets(x, y, **kwargs)


def test_single_cell_source_is_coupled_to_every_target(trajvi_log):
    _, y = _sets()
    coupling = couple_sets(np.ones((1, 3)), y, source_name="rare")
    np.testing.assert_allclose(coupling.to_dense(), np.full((1, 10), 0.1))
    assert any("condition 'rare' has a single cell" in r.getMessage() for r in trajvi_log.records)


def test_groups_are_coupled_separately_and_unmatched_groups_dropped(trajvi_log):
    x, y = _sets(n=12, m=10)
    groups_source = np.array(["B"] * 6 + ["A"] * 4 + ["only_src"] * 2)
    groups_target = np.array(["A"] * 3 + ["B"] * 5 + ["only_tgt"] * 2)
    coupling = couple_sets(
        x, y, groups_source=groups_source, groups_target=groups_target, source_name="ctrl", group_weighting="source"
    )
    assert coupling.groups == ["A", "B"]
    np.testing.assert_array_equal(coupling.source_index[0], [6, 7, 8, 9])
    np.testing.assert_array_equal(coupling.target_index[0], [0, 1, 2])
    np.testing.assert_allclose(coupling.weights, [0.4, 0.6])
    dense = coupling.to_dense()
    same_group = groups_source[:, None] == groups_target[None, :]
    assert dense[~same_group].sum() == 0.0
    # group mass follows its source cells, and within a group every source cell keeps its share
    np.testing.assert_allclose(dense.sum(axis=1), np.r_[np.full(10, 0.1), 0.0, 0.0], atol=1e-15)
    notes = [r.getMessage() for r in trajvi_log.records if r.levelno == logging.INFO]
    assert any("'only_src'" in m and "no cells in the condition 'target'" in m for m in notes)
    assert any("'only_tgt'" in m and "no cells in the condition 'ctrl'" in m for m in notes)


def test_balanced_group_weighting_gives_equal_mass_and_is_the_default():
    x, y = _sets(n=12, m=10)
    groups_source = np.array(["A"] * 10 + ["B"] * 2)
    groups_target = np.array(["A"] * 5 + ["B"] * 5)
    coupling = couple_sets(x, y, groups_source=groups_source, groups_target=groups_target, group_weighting="balanced")
    np.testing.assert_allclose(coupling.weights, [0.5, 0.5])
    np.testing.assert_allclose(coupling.to_dense()[10:].sum(), 0.5)
    default = couple_sets(x, y, groups_source=groups_source, groups_target=groups_target)
    np.testing.assert_allclose(default.weights, [0.5, 0.5])  # the same default as train_trajectories


def test_quiet_couplings_note_left_out_groups_at_debug_level_only(trajvi_log):
    x, y = _sets(n=12, m=10)
    groups_source = np.array(["A"] * 10 + ["only_src"] * 2)
    groups_target = np.array(["A"] * 10)
    trajvi_log.set_level(logging.DEBUG, logger="trajvi")
    couple_sets(x, y, groups_source=groups_source, groups_target=groups_target, quiet=True)
    assert not [r for r in trajvi_log.records if r.levelno >= logging.INFO and "only_src" in r.getMessage()]
    assert [r for r in trajvi_log.records if r.levelno == logging.DEBUG and "only_src" in r.getMessage()]


def test_coupling_records_its_wall_time_and_block_times():
    x, y = _sets(n=50, m=30)
    coupling = couple_sets(x, y, batch_size=16, rng=0, n_jobs=1)
    assert coupling.solve_seconds.shape == (coupling.n_blocks,)
    assert (coupling.solve_seconds > 0).all()
    assert coupling.wall_seconds >= coupling.solve_seconds.sum()  # one block after the other here


def test_groups_without_overlap_raise_naming_both_sides():
    x, y = _sets()
    with pytest.raises(ValueError, match=r"condition 'ctrl' has groups 'T'; the condition 'stim' has 'B', 'NK'"):
        couple_sets(
            x,
            y,
            groups_source=np.array(["T"] * 12),
            groups_target=np.array(["B"] * 5 + ["NK"] * 5),
            source_name="ctrl",
            target_name="stim",
        )


def test_categorical_group_labels_are_accepted():
    pd = pytest.importorskip("pandas")
    x, y = _sets()
    coupling = couple_sets(
        x, y, groups_source=pd.Categorical(["a", "b"] * 6), groups_target=pd.Categorical(["b", "a"] * 5)
    )
    assert coupling.groups == ["a", "b"]


def test_blocks_solved_in_threads_leave_the_warning_filters_alone():
    # warnings.catch_warnings() is not thread-safe (before Python 3.14): when the solver thread that entered it
    # second left it last, it restored a list holding the first one's filter, so an 'ignore UserWarning' filter
    # stayed behind after train_trajectories and silenced every UserWarning of the process.
    import warnings

    x, y = _sets(n=400, m=400)
    groups = np.repeat(list("abcdefgh"), 50)
    before = list(warnings.filters)
    for seed in range(5):
        couple_sets(x, y, n_jobs=2, batch_size=10, rng=seed, groups_source=groups, groups_target=groups)
    assert warnings.filters == before


def test_minibatches_cover_every_cell_once():
    x, y = _sets(n=50, m=30)
    coupling = couple_sets(x, y, batch_size=16, rng=0)
    assert coupling.n_blocks == 4  # ceil(50 / 16)
    np.testing.assert_array_equal(np.sort(np.concatenate(coupling.source_index)), np.arange(50))
    np.testing.assert_array_equal(np.sort(np.concatenate(coupling.target_index)), np.arange(30))
    assert all(len(rows) <= 16 and len(cols) <= 16 for rows, cols in zip(coupling.source_index, coupling.target_index))
    np.testing.assert_allclose(coupling.weights, [len(rows) / 50 for rows in coupling.source_index])
    assert coupling.weights.sum() == pytest.approx(1.0)
    for plan in coupling.plans:
        assert plan.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(coupling.to_dense().sum(axis=1), 1 / 50, atol=1e-15)


def test_exact_plans_are_stored_sparse_and_match_the_dense_solution():
    x, y = _sets(n=50, m=30)
    coupling = couple_sets(x, y, batch_size=16, rng=0, standardize_sets=False)
    for rows, cols, plan in zip(coupling.source_index, coupling.target_index, coupling.plans):
        assert sparse.issparse(plan) and plan.nnz <= len(rows) + len(cols) - 1
        dense = couple(x[rows], y[cols])
        np.testing.assert_allclose(plan.toarray(), dense / dense.sum())
    entropic = couple_sets(x, y, method="sinkhorn", batch_size=16, rng=0)
    assert not any(sparse.issparse(p) for p in entropic.plans)


def test_minibatches_are_reproducible():
    x, y = _sets(n=50, m=30)
    first, again = couple_sets(x, y, batch_size=16, rng=3), couple_sets(x, y, batch_size=16, rng=3)
    other = couple_sets(x, y, batch_size=16, rng=4)
    np.testing.assert_array_equal(first.to_dense(), again.to_dense())
    assert not np.array_equal(first.to_dense(), other.to_dense())
    np.testing.assert_array_equal(first.sample(100, rng=1)[0], again.sample(100, rng=1)[0])


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_blocks_solved_in_threads_give_the_same_coupling(method, monkeypatch):
    x, y = _sets(n=200, m=150)
    groups_x, groups_y = np.repeat(["a", "b"], 100), np.repeat(["a", "b"], 75)
    kwargs = {"method": method, "batch_size": 40, "rng": 5, "groups_source": groups_x, "groups_target": groups_y}
    serial = couple_sets(x, y, n_jobs=1, **kwargs)
    import threading

    from trajvi.transport import _coupling

    original, threads, calls = _coupling.couple, set(), []
    both_running = threading.Barrier(2, timeout=30)  # solved one after the other, the first call would wait forever

    def recording(*args, **kw):
        threads.add(threading.current_thread().name)
        calls.append(1)
        if len(calls) <= 2:
            both_running.wait()
        return original(*args, **kw)

    monkeypatch.setattr(_coupling, "couple", recording)
    parallel = couple_sets(x, y, n_jobs=3, **kwargs)
    assert len(threads) > 1 and all(name.startswith("trajvi-ot") for name in threads)
    assert parallel.n_blocks == serial.n_blocks == 6  # 2 groups x ceil(100 / 40)
    for a, b in zip(serial.source_index + serial.target_index, parallel.source_index + parallel.target_index):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(serial.plans, parallel.plans):
        np.testing.assert_array_equal(*(p.toarray() if sparse.issparse(p) else p for p in (a, b)))
    np.testing.assert_array_equal(serial.weights, parallel.weights)


def test_available_cores_are_shared_among_the_processes_of_a_node(monkeypatch):
    from trajvi.transport._coupling import available_cores

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = available_cores()
    assert alone >= 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(alone + 1))
    assert available_cores() == 1


def test_minibatches_never_leave_a_side_empty():
    x, y = _sets(n=3, m=40)
    coupling = couple_sets(x, y, batch_size=10, rng=0)
    assert coupling.n_blocks == 3  # ceil(40 / 10) = 4 chunks, capped by the 3 source cells
    assert [len(rows) for rows in coupling.source_index] == [1, 1, 1]
    assert sorted(len(cols) for cols in coupling.target_index) == [13, 13, 14]


def test_minibatches_within_groups_keep_group_mass():
    x, y = _sets(n=40, m=40)
    groups = np.array(["A"] * 30 + ["B"] * 10)
    coupling = couple_sets(
        x, y, groups_source=groups, groups_target=groups, batch_size=8, rng=0, group_weighting="source"
    )
    labels = np.array(coupling.groups)
    assert (labels == "A").sum() == 4 and (labels == "B").sum() == 2
    assert coupling.weights[labels == "A"].sum() == pytest.approx(0.75)


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_sample_frequencies_follow_plan_mass(method):
    x, y = _sets(n=8, m=6)
    groups_source = np.array(["A"] * 5 + ["B"] * 3)
    groups_target = np.array(["A"] * 4 + ["B"] * 2)
    coupling = couple_sets(x, y, method=method, epsilon=0.2, groups_source=groups_source, groups_target=groups_target)
    n = 50_000
    source, target = coupling.sample(n, rng=7)
    assert source.dtype == np.int64 and source.shape == target.shape == (n,)
    observed = np.zeros((8, 6))
    np.add.at(observed, (source, target), 1)
    expected = n * coupling.to_dense()
    assert observed[expected == 0].sum() == 0  # zero-mass entries (other group, sparse exact plan) never drawn
    assert _chi2_ok(observed, expected)
    assert not _chi2_ok(observed[::-1], expected)  # the check can fail


def test_sample_is_shuffled_and_reproducible():
    x, y = _sets(n=20, m=20)
    groups = np.array(["A"] * 10 + ["B"] * 10)
    coupling = couple_sets(x, y, groups_source=groups, groups_target=groups)
    source, target = coupling.sample(1000, rng=0)
    again = coupling.sample(1000, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(source, again[0])
    np.testing.assert_array_equal(target, again[1])
    assert np.any(np.diff((source >= 10).astype(int)) < 0)  # the two blocks' pairs are interleaved
    empty = coupling.sample(0, rng=0)
    assert empty[0].shape == (0,) and empty[1].dtype == np.int64
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        coupling.sample(-1)


def test_coupling_checks_its_blocks():
    with pytest.raises(ValueError, match=r"Block 0 has a plan of shape \(2, 2\) for 2 source and 3 target cells"):
        Coupling([np.arange(2)], [np.arange(3)], [np.full((2, 2), 0.25)], np.array([1.0]), [None], 2, 3)
    with pytest.raises(ValueError, match="weights must be non-negative and sum to 1"):
        Coupling([np.arange(2)], [np.arange(2)], [np.full((2, 2), 0.25)], np.array([0.5]), [None], 2, 2)


@pytest.mark.parametrize(("method", "cached"), [("exact", True), ("sinkhorn", False)])
def test_repeated_draws_are_the_same_with_the_sparse_plan_sampler_kept(method, cached):
    x, y = _sets(n=60, m=50)
    coupling = couple_sets(x, y, method=method, batch_size=20, rng=0)
    first = coupling.sample(500, rng=7)
    assert bool(coupling._samplers) is cached  # only sparse (exact) plans keep their sampler
    again = coupling.sample(500, rng=7)
    fresh = couple_sets(x, y, method=method, batch_size=20, rng=0).sample(500, rng=7)
    for a, b, c in zip(first, again, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    dense = coupling.to_dense()
    i, j = first
    assert np.all(dense[i, j] > 0)
