import numpy as np
import pytest

import trajvi
from trajvi.data import synthetic, true_expression


def test_shapes_keys_and_seed():
    a = synthetic(300, 50, seed=3)
    b = synthetic(300, 50, seed=3)
    c = synthetic(300, 50, seed=4)
    assert a.shape == (300, 50)
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0
    assert list(a.obs["condition"].cat.categories) == ["control", "stimulated"]
    for key in ("cell_type", "batch", "true_library"):
        assert key in a.obs
    assert a.obsm["true_latent_by_condition"].shape == (300, 2, a.uns["synthetic"]["n_latent"])
    x = a.X.toarray()
    assert (x >= 0).all()
    assert np.array_equal(x, np.round(x))


def test_observed_latent_is_the_counterpart_of_its_own_condition():
    a = synthetic(200, 30, seed=1)
    codes = a.obs["condition"].cat.codes.to_numpy()
    picked = a.obsm["true_latent_by_condition"][np.arange(a.n_obs), codes]
    np.testing.assert_allclose(picked, a.obsm["true_latent"])


def test_effect_differs_by_cell_type_and_is_not_a_shift():
    a = synthetic(2000, 30, n_cell_types=4, seed=0)
    by = a.obsm["true_latent_by_condition"]
    effect = by[:, 1] - by[:, 0]
    types = a.obs["cell_type"].cat.codes.to_numpy()
    means = np.stack([effect[types == k].mean(axis=0) for k in range(4)])
    # per-type mean effects differ from each other ...
    assert np.linalg.norm(means - means.mean(axis=0), axis=1).min() > 0.3
    # ... and within a type the effect depends on the state (not a constant shift)
    within = np.mean([effect[types == k].std(axis=0).mean() for k in range(4)])
    assert within > 0.05


def test_counts_follow_the_generator():
    a = synthetic(3000, 40, seed=2, n_batches=1)
    rho = true_expression(a, a.obsm["true_latent"], a.obs["batch"].cat.codes.to_numpy())
    expected = rho * a.obs["true_library"].to_numpy()[:, None]
    observed = a.X.toarray()
    ratio = observed.sum(axis=0) / expected.sum(axis=0)
    assert np.abs(ratio - 1).max() < 0.1


def test_time_course():
    a = synthetic(500, 40, kind="time_course", n_time_points=4, seed=0)
    assert list(a.obs["condition"].cat.categories) == ["t0", "t1", "t2", "t3"]
    assert a.obs["condition"].cat.ordered
    np.testing.assert_array_equal(a.obs["time"].to_numpy(), a.obs["condition"].cat.codes.to_numpy().astype(float))
    assert a.obsm["true_latent_by_condition"].shape[1] == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "other"}, "kind="),
        ({"kind": "time_course", "n_time_points": 2}, "at least 3"),
        ({"n_cells": 0}, "n_cells"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic(**kwargs)


def test_true_expression_needs_synthetic_data(synthetic_adata):
    other = synthetic_adata.copy()
    del other.uns["synthetic"]
    with pytest.raises(KeyError, match="synthetic"):
        trajvi.data.true_expression(other, np.zeros((2, 6)))


def test_the_perturbation_panel_has_its_known_answer_and_writes_to_h5ad(tmp_path):
    import anndata as ad

    adata = trajvi.data.synthetic(900, 40, kind="perturbations", n_perturbations=3, combinations=[(0, 1)], seed=3)
    cats = list(adata.obs["condition"].cat.categories)
    assert cats == ["control", "P0", "P1", "P2", "P0+P1"]
    dose = adata.obs.groupby("condition", observed=True)["dose"].unique()
    assert set(dose["control"]) == {0.0} and set(dose["P0+P1"]) == {1.0} and set(dose["P1"]) == {0.5, 1.0, 2.0}
    by = adata.obsm["true_latent_by_condition"]
    effect = by - by[:, :1]
    np.testing.assert_allclose(effect[:, 4], effect[:, 1] + effect[:, 2], atol=1e-5)  # pairs are additive
    assert list(adata.uns["synthetic"]["perturbation_features"].index) == ["P0", "P1", "P2"]
    adata.write_h5ad(tmp_path / "panel.h5ad")
    assert ad.read_h5ad(tmp_path / "panel.h5ad").obs["dose"].dtype == np.float32


def test_branching_progenitors_have_a_state_on_every_branch():
    adata = trajvi.data.synthetic(600, 40, kind="branching", n_branches=3, n_time_points=3, seed=5)
    branches = adata.uns["synthetic"]["branches"]
    assert list(branches) == ["F0", "F1", "F2"] and branches["F1"] == ["prog", "F1_t1", "F1_t2"]
    prog = (adata.obs["condition"] == "prog").to_numpy()
    assert set(adata.obs.loc[prog, "time"]) == {0.0}
    fates = adata.obs.loc[~prog, "cell_type"].astype(str).to_numpy()
    np.testing.assert_array_equal(fates, adata.obs.loc[~prog, "true_fate"].astype(str).to_numpy())
    assert adata.obsm["true_latent_by_condition"].shape == (600, 7, 6)
