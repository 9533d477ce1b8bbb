"""Several paths in one velocity field: perturbations, combinations, doses, features, branches; known answers."""

import numpy as np
import pytest

import trajvi
from tests.conftest import TRAIN_KW
from trajvi.metrics import expression_energy_distance

HELD_OUT = "P0+P1"  # a combination never trained on; its components are
UNSEEN = "P7"  # a perturbation never trained on; its features are known


@pytest.fixture(scope="module")
def panel():
    """A panel of perturbations at several doses, with the held-out combination and P4 left out of phase 2."""
    import scvi

    scvi.settings.seed = 0
    # 8 perturbations with 4 features each: the 7 trained ones pin the map from features to effects down
    adata = trajvi.data.synthetic(3000, 120, kind="perturbations", n_perturbations=8, n_cell_types=2, seed=4)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch", dose_key="dose")
    model = trajvi.TrajVI(adata, n_latent=8)
    model.train(max_epochs=50, **TRAIN_KW)
    condition = adata.obs["condition"].to_numpy()
    keep = np.flatnonzero(~np.isin(condition, [HELD_OUT, UNSEEN]))
    trained = [["control", c] for c in adata.obs["condition"].cat.categories if c not in ("control", HELD_OUT, UNSEEN)]
    model.train_trajectories(trained, indices=keep, residual_penalty=1.0, max_epochs=50, **TRAIN_KW)
    return model, adata


def _energy(model, adata, **predict):
    control = np.flatnonzero((adata.obs["condition"] == "control").to_numpy())
    pred = model.predict(source="control", indices=control, n_samples=2, **predict)
    return lambda cells: expression_energy_distance(pred.X, adata.X[cells], reference=adata.X)


def _cells(adata, condition, dose=None):
    mask = (adata.obs["condition"] == condition).to_numpy()
    if dose is not None:
        mask &= (adata.obs["dose"] == dose).to_numpy()
    return np.flatnonzero(mask)


def test_one_field_holds_every_path_and_predicts_each(panel):
    model, adata = panel
    paths = model.trained_paths()
    assert list(paths.paths) == [f"P{i}" for i in range(7)] + ["P1+P2", "P2+P3"]
    assert paths.components == [f"P{i}" for i in range(7)]
    assert model.trajectory_path_ == ["control", "P0"]  # the first path, as before several paths
    for name in ("P3", "P1+P2"):
        score = _energy(model, adata, target=name, dose=1.0)
        assert score(_cells(adata, name, 1.0)) < 0.5 * score(_cells(adata, "control")), name


def test_a_combination_never_trained_on_is_composed_from_its_components(panel):
    model, adata = panel
    truth = _cells(adata, HELD_OUT)
    score = _energy(model, adata, target=HELD_OUT)
    predicted = score(truth)
    for other in ("control", "P0", "P1"):  # better than doing nothing or than either single alone
        assert predicted < expression_energy_distance(adata.X[_cells(adata, other)], adata.X[truth], reference=adata.X)
    pred = model.predict(source="control", target=HELD_OUT, indices=_cells(adata, "control")[:5])
    assert (pred.obs["condition"] == HELD_OUT).all()
    assert pred.uns["trajvi_predict"]["params"]["path"] == ""  # a composition, not a trained path


def test_a_calibrated_combination_adds_its_components_misses_never_its_own_cells(panel, tmp_path):
    from trajvi.model._calibration import SHRINKAGE_RULES, log_normalized_moments, shift_counts

    model, adata = panel
    control = _cells(adata, "control")
    query = {"source": "control", "mode": "transfer"}
    plain = model.predict(target=HELD_OUT, indices=control[:20], **query)
    calibrated = model.predict(target=HELD_OUT, indices=control[:20], calibrate=True, **query)
    # the held-out cells are in the AnnData but phase 2 did not use them: the components' misses stand in
    assert calibrated.uns["trajvi_predict"]["params"]["calibrated_on"] == ["all x P0", "all x P1"]

    def miss(component):
        predicted = log_normalized_moments(model.predict(target=component, indices=control, **query).X)
        real = log_normalized_moments(adata.X, _cells(adata, component))
        return real[0] - predicted[0], real[1] + predicted[1]

    (m0, v0), (m1, v1) = miss("P0"), miss("P1")
    rule = SHRINKAGE_RULES[calibrated.uns["trajvi_predict"]["params"]["calibration_shrinkage"]["rule"]]
    expected = shift_counts(plain.X.toarray(), rule(m0 + m1, v0 + v1))  # the sum shrunk by the error of the sum
    np.testing.assert_allclose(calibrated.X.toarray(), expected, rtol=1e-4, atol=1e-4)
    model.save(tmp_path / "m", overwrite=True)  # the cells phase 2 used are saved with the model
    loaded = trajvi.TrajVI.load(tmp_path / "m", adata=adata)
    again = loaded.predict(target=HELD_OUT, indices=control[:20], calibrate=True, **query)
    np.testing.assert_allclose(again.X.toarray(), calibrated.X.toarray(), rtol=1e-5, atol=1e-5)


def test_the_dose_scales_the_effect_and_unseen_doses_can_be_asked_for(panel):
    model, adata = panel
    high = _cells(adata, "P2", 2.0)
    distances = {dose: _energy(model, adata, target="P2", dose=dose)(high) for dose in (0.5, 1.0, 1.5, 2.0)}
    assert distances[2.0] < distances[1.0] < distances[0.5], distances
    assert distances[1.5] < distances[0.5]  # 1.5 was never given: it lies between the doses that were
    with pytest.raises(ValueError, match=r"dose=-1\.0"):
        model.predict(source="control", target="P2", dose=-1.0)


def test_a_perturbation_never_trained_on_is_placed_by_its_features(panel, tmp_path):
    import scvi

    fitted, adata = panel
    fitted.save(tmp_path / "copy", overwrite=True)
    model = trajvi.TrajVI.load(tmp_path / "copy", adata=adata)  # the panel's model keeps its own paths
    features = adata.uns["synthetic"]["perturbation_features"]
    scvi.settings.seed = 0
    condition = adata.obs["condition"].to_numpy()
    keep = np.flatnonzero(~np.isin(condition, [HELD_OUT, UNSEEN]))
    paths = [["control", f"P{i}"] for i in range(7)]
    model.train_trajectories(
        paths, indices=keep, perturbation_features=features, residual_penalty=1.0, max_epochs=50, **TRAIN_KW
    )
    assert model.perturbation_features_ is not None
    truth = _cells(adata, UNSEEN)
    predicted = _energy(model, adata, target=UNSEEN)(truth)
    control = expression_energy_distance(adata.X[_cells(adata, "control")], adata.X[truth], reference=adata.X)
    assert predicted < 0.7 * control, (predicted, control)
    with pytest.raises(ValueError, match=r"perturbation_features has no row for \['P3'\]"):
        model.train_trajectories(paths, indices=keep, perturbation_features=features.drop(index="P3"), **TRAIN_KW)
    # a combination of a trained and an unseen component; a component without features
    assert np.isfinite(_energy(model, adata, target="P3+P7")(truth))
    with pytest.raises(ValueError, match=r"perturbation_features has no row for \['P9'\]"):
        model.predict(source="control", target="P9")
    # placed by its features, but nothing measured to calibrate against
    with pytest.raises(ValueError, match=r"needs real cells of target='P7' among the cells phase 2 used"):
        model.predict(source="control", target=UNSEEN, calibrate=True)


def test_paths_survive_save_and_load(panel, tmp_path):
    model, adata = panel
    control = _cells(adata, "control")[:10]
    before = model.predict(source="control", target="P1+P2", indices=control).layers["trajvi_mean"]
    model.save(tmp_path / "m", overwrite=True)
    loaded = trajvi.TrajVI.load(tmp_path / "m", adata=adata)
    assert loaded.trained_paths().paths == model.trained_paths().paths
    after = loaded.predict(source="control", target="P1+P2", indices=control).layers["trajvi_mean"]
    np.testing.assert_allclose(after, before, rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.predict(source="control", target="P0+P9"), r"components \['P9'\] were never trained on"),
        (lambda m: m.predict(source="control", target="P3", path="P2"), "target='P3' does not follow"),
        (lambda m: m.predict(source="P1", path="P2"), r"source='P1' is not on the path 'P2'"),
        (lambda m: m.predict(source="control", path="nope"), "path='nope' is not a trained path"),
        (lambda m: m.train_trajectories(["control", "P0", "control"]), "at least two different conditions"),
        (lambda m: m.train_trajectories(), "give the paths to train"),
        (lambda m: m.train_trajectories([["control", "P0"], ["P1", "P0"]]), "two paths end at 'P0'"),
        (lambda m: m.train_trajectories(["control", "P0+"]), "not a condition"),
        (lambda m: m.train_trajectories({"x": ["control", "P0"]}, max_folds=0), "max_folds=0"),
    ],
)
def test_bad_paths_and_targets_get_clear_errors(panel, call, match):
    model, adata = panel
    obs = adata.obs.copy()
    with pytest.raises(ValueError, match=match):
        call(model)
    assert adata.obs.equals(obs)


def test_negative_or_missing_doses_are_refused_at_setup():
    adata = trajvi.data.synthetic(200, 30, kind="perturbations", seed=1)
    adata.obs["dose"] = adata.obs["dose"].astype(float)
    adata.obs.loc[adata.obs_names[3], "dose"] = -1.0
    adata.obs.loc[adata.obs_names[5], "dose"] = np.nan
    with pytest.raises(ValueError, match=r"2 negative, NaN or infinite dose\(s\)"):
        trajvi.TrajVI.setup_anndata(adata, "condition", dose_key="dose")
    assert not any(c.startswith("_scvi") for c in adata.obs.columns)


def test_branches_that_share_a_start_carry_each_progenitor_along_every_branch():
    import scvi

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(2000, 100, kind="branching", n_time_points=3, effect_size=1.5, seed=2)
    branches = adata.uns["synthetic"]["branches"]
    trajvi.TrajVI.setup_anndata(adata, "condition", time_key="time")
    model = trajvi.TrajVI(adata, n_latent=6)
    model.train(max_epochs=60, **TRAIN_KW)
    model.train_trajectories(branches, residual_penalty=1.0, max_epochs=60, **TRAIN_KW)
    with pytest.raises(ValueError, match=r"several trained paths go from 'prog'.*choose one with path="):
        model.simulate_trajectory(source="prog", t_span=(0, 2))
    prog = _cells(adata, "prog")
    for branch, conds in branches.items():
        pred = model.predict(source="prog", path=branch, n_samples=2)
        assert pred.uns["trajvi_predict"]["params"]["path"] == branch
        own = expression_energy_distance(pred.X, adata.X[_cells(adata, conds[-1])], reference=adata.X)
        others = [
            expression_energy_distance(pred.X, adata.X[_cells(adata, other[-1])], reference=adata.X)
            for name, other in branches.items()
            if name != branch
        ]
        start = expression_energy_distance(adata.X[prog], adata.X[_cells(adata, conds[-1])], reference=adata.X)
        assert own < 0.5 * start and own < min(others), (branch, own, others, start)
