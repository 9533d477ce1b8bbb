"""TransportMap: push, pull, chaining, growth and group transitions on maps whose answer is known by hand."""

import numpy as np
import pytest
import scipy.sparse as sp

from trajvi.trajectory import (
    EXACT_SEARCH_MAX_CELLS,
    TransportMap,
    check_weights,
    map_from_coupling,
    map_from_endpoints,
    neighbor_search_method,
)
from trajvi.transport import couple_sets


def _map(matrix, source="a", target="b", baseline=None):
    n_s, n_t = np.shape(matrix)
    return TransportMap(
        source,
        target,
        sp.csr_array(np.asarray(matrix, dtype=float)),
        [f"{source}{i}" for i in range(n_s)],
        [f"{target}{j}" for j in range(n_t)],
        baseline=baseline,
    )


def test_a_permutation_pushes_and_pulls_back_exactly():
    perm = np.eye(4)[[2, 0, 3, 1]] / 4
    tmap = _map(perm)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    pushed = tmap.push(w)
    np.testing.assert_allclose(pushed, w[[1, 3, 0, 2]])
    np.testing.assert_allclose(tmap.pull(pushed), w)


def test_push_uses_the_conditional_distribution_of_each_row():
    # cell 0 sends 3x the mass of cell 1, but a push of cell 1 alone still spreads it as its row says
    tmap = _map([[0.3, 0.3, 0.15], [0.0, 0.1, 0.15]])
    np.testing.assert_allclose(tmap.push([0.0, 1.0]), [0.0, 0.4, 0.6])
    np.testing.assert_allclose(tmap.push([1.0, 0.0]), [0.4, 0.4, 0.2])
    np.testing.assert_allclose(tmap.pull([0.0, 0.0, 1.0]), [0.5, 0.5])
    np.testing.assert_allclose(tmap.push([2.0, 0.0], normalize=False), [0.8, 0.8, 0.4])


def test_chained_maps_follow_each_middle_cells_row():
    first = _map([[0.5, 0.0], [0.0, 0.5]], "a", "b")
    second = _map([[0.25, 0.25], [0.5, 0.0]], "b", "c")
    chained = first.then(second)
    np.testing.assert_allclose(chained.matrix.toarray(), [[0.25, 0.25], [0.5, 0.0]])
    assert (chained.source, chained.target) == ("a", "c")
    with pytest.raises(ValueError, match="cells differ"):
        second.then(second)


def test_group_transitions_and_cell_fates():
    tmap = _map([[0.25, 0.0, 0.0], [0.0, 0.125, 0.125], [0.0, 0.0, 0.25], [0.0, 0.0, 0.0]])
    table = tmap.group_transitions(np.array(["x", "x", "y", "y"]), np.array(["p", "q", "q"]))
    # cell 3 has no row (left out): group y is cell 2 alone
    np.testing.assert_allclose(table.loc["x"].to_numpy(), [0.5, 0.5])  # cell 0 all to p, cell 1 all to q
    np.testing.assert_allclose(table.loc["y"].to_numpy(), [0.0, 1.0])
    fates = tmap.cell_fates(np.array(["p", "q", "q"]))
    np.testing.assert_allclose(fates.iloc[:3].to_numpy(), [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert fates.iloc[3].isna().all()
    only_p = tmap.cell_fates(np.array(["p", "q", "q"]), groups=["p"])
    assert only_p.iloc[0, 0] == 1.0 and np.isnan(only_p.iloc[2, 0])


def test_growth_is_the_row_mass_over_the_baseline_share():
    tmap = _map([[0.3, 0.1], [0.1, 0.0], [0.0, 0.5]], baseline=np.full(3, 1 / 3))
    np.testing.assert_allclose(tmap.growth(), [1.2, 0.3, 1.5])
    with pytest.raises(ValueError, match="couplings only"):
        _map(np.eye(2) / 2).growth()


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0, 2.0], "one per"),
        ([1.0, -1.0, 0.0], "negative"),
        ([0.0, 0.0, 0.0], "all zero"),
        ([np.nan, 1, 1], "non-finite"),
    ],
)
def test_bad_weights_are_refused(weights, match):
    with pytest.raises(ValueError, match=match):
        check_weights(weights, 3, side="source cells")


def test_weights_only_on_cells_left_out_reach_nothing():
    tmap = _map([[0.5, 0.5], [0.0, 0.0]])
    with pytest.raises(ValueError, match="left out of the coupling"):
        tmap.push([0.0, 1.0])


def test_map_from_coupling_gathers_blocks_and_keeps_names():
    rng = np.random.default_rng(0)
    z_s, z_t = rng.normal(size=(30, 3)), rng.normal(size=(20, 3)) + 1
    groups_s, groups_t = np.repeat(["g", "h"], 15), np.repeat(["g", "h"], 10)
    coupling = couple_sets(z_s, z_t, groups_source=groups_s, groups_target=groups_t, batch_size=8, rng=0, n_jobs=1)
    tmap = map_from_coupling(coupling, "a", "b", [f"s{i}" for i in range(30)], [f"t{j}" for j in range(20)])
    np.testing.assert_allclose(tmap.matrix.toarray(), coupling.to_dense(), atol=1e-12)
    np.testing.assert_allclose(tmap.growth(), 1.0, atol=1e-6)  # balanced: every cell sends its share
    table = tmap.group_transitions(groups_s, groups_t)
    np.testing.assert_allclose(table.to_numpy(), np.eye(2), atol=1e-12)  # coupled within groups only
    state = TransportMap.from_dict(tmap.to_dict())
    assert state.source_cells.equals(tmap.source_cells) and (state.matrix != tmap.matrix).nnz == 0


def test_a_growth_prior_sets_the_source_marginal():
    rng = np.random.default_rng(1)
    z_s, z_t = rng.normal(size=(40, 2)), rng.normal(size=(40, 2))
    prior = np.where(np.arange(40) < 20, 3.0, 1.0)
    for method, reg_m in (("exact", 1.0), ("unbalanced", 10.0)):
        coupling = couple_sets(z_s, z_t, method=method, reg_m=reg_m, source_weights=prior, rng=0, n_jobs=1)
        growth = map_from_coupling(coupling, "a", "b", np.arange(40).astype(str), np.arange(40).astype(str)).growth()
        # the fast half starts with 3x the mass of the slow half (mean 1): 1.5 vs 0.5
        assert growth[:20].mean() == pytest.approx(1.5, rel=0.1 if method == "unbalanced" else 1e-6), method
        assert growth[20:].mean() == pytest.approx(0.5, rel=0.2 if method == "unbalanced" else 1e-6), method
    with pytest.raises(ValueError, match="negative"):
        couple_sets(z_s, z_t, source_weights=-prior, n_jobs=1)


def test_endpoints_are_spread_over_their_nearest_cells():
    cells = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]])
    ends = np.array([[0.05, 0.0], [10.0, 10.05], [9.0, 9.0]])
    matrix = map_from_endpoints(ends, cells, n_neighbors=2, batch_size=2)
    np.testing.assert_allclose(matrix.toarray() * 3, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(matrix.sum(axis=1), 1 / 3)


def test_approximate_neighbours_find_most_exact_ones_and_repeat_with_the_seed():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(8, 10))
    cells = centres[rng.integers(8, size=3000)] + rng.normal(size=(3000, 10))
    ends = cells[rng.integers(3000, size=1000)] + 0.3 * rng.normal(size=(1000, 10))
    exact = map_from_endpoints(ends, cells, neighbor_search="exact", n_jobs=1)
    approx = map_from_endpoints(ends, cells, neighbor_search="approximate", n_jobs=1, batch_size=300, random_state=3)
    assert approx.shape == exact.shape and approx.nnz == exact.nnz == 10_000
    np.testing.assert_allclose(approx.sum(axis=1), 1 / 1000)
    recall = exact.multiply(approx).nnz / exact.nnz  # shared (end point, cell) entries
    assert recall >= 0.9, recall  # measured 1.0 (0.999 querying only k candidates)
    again = map_from_endpoints(ends, cells, neighbor_search="approximate", n_jobs=1, batch_size=300, random_state=3)
    assert (again != approx).nnz == 0


def test_neighbor_search_is_chosen_by_size_and_checked():
    big = EXACT_SEARCH_MAX_CELLS + 1
    assert neighbor_search_method(big, big) == "approximate"
    # a few end points among many cells (or the reverse) stay exact: no index to build for so few queries
    assert neighbor_search_method(EXACT_SEARCH_MAX_CELLS, 10 * big) == "exact"
    assert neighbor_search_method(10 * big, 100) == "exact"
    assert neighbor_search_method(100, 100, "approximate") == "approximate"
    assert neighbor_search_method(big, big, "exact") == "exact"
    with pytest.raises(ValueError, match="neighbor_search='annoy' is not valid; use one of 'auto', 'exact'"):
        map_from_endpoints(np.zeros((2, 2)), np.zeros((3, 2)), neighbor_search="annoy")
