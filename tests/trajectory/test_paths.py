import numpy as np
import pytest

from trajvi.trajectory import (
    CouplingConfig,
    PathSet,
    build_all_segments,
    build_folds,
    build_segments,
    check_path,
    path_times,
)

CONDITIONS = ["d0", "d2", "d7"]


def _cells(seed: int = 0):
    """Three days x two groups, 20 cells each; day k sits at k in every latent dimension."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(CONDITIONS, 40)
    groups = np.tile(np.repeat(["A", "B"], 20), 3)
    shift = {"d0": 0.0, "d2": 2.0, "d7": 7.0}
    z = (rng.normal(size=(120, 3)) * 0.1 + np.array([shift[c] for c in labels])[:, None]).astype(np.float32)
    return z, labels, groups


def test_check_path():
    assert check_path(("d0", "d7"), CONDITIONS) == ["d0", "d7"]
    with pytest.raises(ValueError, match=r"path='d5' is not a condition; valid values"):
        check_path(["d0", "d5"], CONDITIONS)
    with pytest.raises(ValueError, match="at least two different conditions"):
        check_path(["d0", "d0"], CONDITIONS)
    with pytest.raises(TypeError, match="single string"):
        check_path("d0", CONDITIONS)


def test_path_times():
    assert path_times(["d0", "d2", "d7"], None) == [0.0, 0.5, 1.0]
    assert path_times(["d0", "d7"], {"d0": 0.0, "d2": 2.0, "d7": 7.0}) == [0.0, 7.0]
    with pytest.raises(ValueError, match="must increase along it"):
        path_times(["d7", "d0"], {"d0": 0.0, "d7": 7.0})
    with pytest.raises(ValueError, match=r"\['d2'\] of the path have no cells"):
        path_times(["d0", "d2"], {"d0": 0.0})


def test_segments_couple_consecutive_conditions_within_groups():
    z, labels, groups = _cells()
    keep = np.ones(len(z), dtype=bool)
    segments = build_segments(z, labels, groups, CONDITIONS, [0.0, 2.0, 7.0], keep, CouplingConfig())
    assert [s.name for s in segments] == ["d0->d2", "d2->d7"]
    assert [(s.t_source, s.t_target) for s in segments] == [(0.0, 2.0), (2.0, 7.0)]
    first = segments[0]
    np.testing.assert_array_equal(first.z_source, z[labels == "d0"])
    assert first.coupling.groups == ["A", "B"]
    dense = first.coupling.to_dense()
    same = groups[labels == "d0"][:, None] == groups[labels == "d2"][None, :]
    assert dense[~same].sum() == 0


def test_segments_refuse_an_empty_condition():
    z, labels, _ = _cells()
    keep = labels != "d2"
    with pytest.raises(ValueError, match="condition 'd2' has no cells in the data used for phase 2"):
        build_segments(z, labels, None, CONDITIONS, [0.0, 2.0, 7.0], keep, CouplingConfig())


def _folds(z, labels, groups, paths, times, keep, **kwargs):
    pathset = PathSet.build(paths, times)
    config = CouplingConfig()
    segments = build_all_segments(pathset, z, labels, groups, keep, config, quiet=True)
    return build_folds(pathset, segments, z, labels, groups, keep, config, **kwargs)


def test_folds_leave_out_each_group_or_each_interior_time():
    z, labels, groups = _cells()
    keep = np.ones(len(z), dtype=bool)
    by_group = _folds(z, labels, groups, {"d7": ["d0", "d7"]}, {"d7": [0.0, 7.0]}, keep)
    assert [f.name for f in by_group] == ["A", "B"]
    fold = by_group[0]
    assert len(fold.z_start) == len(fold.z_truth) == 20
    assert all(set(s.coupling.groups) == {"B"} for s in fold.segments)  # fit without the left-out group
    np.testing.assert_array_equal(fold.weights, [1.0])
    by_time = _folds(z, labels, None, {"d7": CONDITIONS}, {"d7": [0.0, 2.0, 7.0]}, keep)
    assert [f.name for f in by_time] == ["d2"]
    assert (by_time[0].t_start, by_time[0].t_end) == (0.0, 2.0)
    assert [s.name for s in by_time[0].segments] == ["d0->d7"]
    assert _folds(z, labels, None, {"d7": ["d0", "d7"]}, {"d7": [0.0, 7.0]}, keep) == []


def test_folds_of_several_paths_leave_one_group_out_of_one_path_only():
    z, labels, groups = _cells()
    keep = np.ones(len(z), dtype=bool)
    paths = {"d2": ["d0", "d2"], "d7": ["d0", "d7"]}
    folds = _folds(z, labels, groups, paths, {"d2": [0.0, 1.0], "d7": [0.0, 1.0]}, keep)
    assert [f.name for f in folds] == ["A x d2", "B x d2", "A x d7", "B x d7"]
    fold = folds[0]  # group A left out of the path to d2 only
    by_name = {s.name: s for s in fold.segments}
    assert set(by_name["d0->d2"].coupling.groups) == {"B"}
    assert set(by_name["d0->d7"].coupling.groups) == {"A", "B"}
    np.testing.assert_array_equal(fold.weights, [1.0, 0.0])
    capped = _folds(z, labels, groups, paths, {"d2": [0.0, 1.0], "d7": [0.0, 1.0]}, keep, max_folds=3, seed=1)
    assert len(capped) == 3 and {f.name for f in capped} < {f.name for f in folds}


def test_a_left_out_condition_is_left_out_of_every_path_through_it():
    # two branches share d2: a fold scored on the d2 cells must not fit on them through the other branch
    z, labels, _ = _cells()
    labels = labels.astype(object)
    labels[(labels == "d7") & (np.arange(len(labels)) % 2 == 1)] = "d7b"
    keep = np.ones(len(z), dtype=bool)
    paths = {"a": ["d0", "d2", "d7"], "b": ["d0", "d2", "d7b"]}
    times = {"a": [0.0, 2.0, 7.0], "b": [0.0, 2.0, 7.0]}
    folds = _folds(z, labels, None, paths, times, keep)
    assert [f.name for f in folds] == ["d2 (a)", "d2 (b)"]
    for fold in folds:
        assert sorted(s.name for s in fold.segments) == ["d0->d7", "d0->d7b"]
        truth = {tuple(row) for row in fold.z_truth}
        assert not any(tuple(row) in truth for s in fold.segments for row in (*s.z_source, *s.z_target))
    # with groups: a group's cells past the start are left out of the other path through them as well
    z, labels, groups = _cells()
    paths = {"a": ["d0", "d2", "d7"], "b": ["d2", "d7"]}
    folds = _folds(z, labels, groups, paths, {"a": [0.0, 2.0, 7.0], "b": [2.0, 7.0]}, keep)
    fold = next(f for f in folds if f.name == "A x a")
    by_name = {s.name: s for s in fold.segments}
    assert set(by_name["d2->d7"].coupling.groups) == {"B"}  # path b no longer sees group A's d7 cells
    untouched = next(f for f in folds if f.name == "A x b")  # d0 is not on path b: path a keeps group A at d0
    assert "A" in {g for s in untouched.segments if s.name == "d0->d2" for g in s.coupling.groups}


def test_a_path_seen_in_one_group_only_is_never_left_out():
    z, labels, groups = _cells()
    keep = np.ones(len(z), dtype=bool)
    keep[(labels == "d2") & (groups == "B")] = False  # d2 is seen in group A only
    paths = {"d2": ["d0", "d2"], "d7": ["d0", "d7"]}
    folds = _folds(z, labels, groups, paths, {"d2": [0.0, 1.0], "d7": [0.0, 1.0]}, keep)
    assert [f.name for f in folds] == ["A x d7", "B x d7"]


def test_a_group_with_a_single_cell_to_score_gives_no_fold():
    z, labels, groups = _cells()
    lone = np.flatnonzero((labels == "d7") & (groups == "A"))
    keep = np.ones(len(z), dtype=bool)
    keep[lone[1:]] = False  # group A keeps one d7 cell: its energy distance would be undefined
    folds = _folds(z, labels, groups, {"d7": ["d0", "d7"]}, {"d7": [0.0, 7.0]}, keep)
    assert folds == []  # only B would be complete: fewer than two folds


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "emd"}, "ot_method='emd' is not valid"),
        ({"group_weighting": "size"}, "group_weighting='size' is not valid"),
        ({"epsilon": 0.0}, "epsilon=0.0"),
        ({"block_size": 0}, "ot_batch_size=0"),
    ],
)
def test_invalid_coupling_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CouplingConfig(**kwargs)
