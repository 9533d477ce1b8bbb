"""predict_ensemble: several fits' transferred predictions, averaged per source cell."""

import numpy as np
import pytest

import trajvi
from tests.conftest import TRAIN_KW
from trajvi.model._transfer import TARGET_SUM


def _fit(adata, seed):
    import scvi

    scvi.settings.seed = seed
    trajvi.TrajVI.setup_anndata(adata, "condition")
    model = trajvi.TrajVI(adata, n_latent=4, n_hidden=32)
    model.train(max_epochs=4, **TRAIN_KW)
    model.train_trajectories(
        ["control", "stimulated"], couple_within="cell_type", residual_penalty=1.0, max_epochs=4, seed=seed, **TRAIN_KW
    )
    return model


@pytest.fixture(scope="module")
def fits():
    adata = trajvi.data.synthetic(400, 40, n_cell_types=3, seed=5)
    return adata, [_fit(adata, 0), _fit(adata, 1)]


def _sources(adata):
    return np.flatnonzero((adata.obs["condition"] == "control").to_numpy())[:50]


def test_the_ensemble_moves_each_cell_by_the_models_mean_move(fits):
    adata, models = fits
    before = adata.obs.copy()
    idx = _sources(adata)
    query = {"source": "control", "target": "stimulated", "indices": idx, "n_steps": 10}
    out = trajvi.predict_ensemble(models, **query)
    library = np.asarray(adata.X[idx].sum(axis=1), dtype=np.float64)
    moved = [
        np.log1p(m.predict(mode="transfer", **query).X.toarray().astype(np.float64) * TARGET_SUM / library)
        for m in models
    ]
    assert not np.allclose(moved[0], moved[1])  # two seeds, two fields: something to average
    expected = np.expm1(np.mean(moved, axis=0)) * library / TARGET_SUM
    np.testing.assert_allclose(out.X.toarray(), expected, rtol=1e-5, atol=1e-5)
    spread = np.sqrt(np.var(moved, axis=0, ddof=1).mean(axis=1))
    np.testing.assert_allclose(out.obs["ensemble_sd"], spread, rtol=1e-4, atol=1e-6)
    layers = [m.predict(mode="transfer", **query).layers["trajvi_mean"] for m in models]
    np.testing.assert_allclose(out.layers["trajvi_mean"], np.mean(layers, axis=0), rtol=1e-5)
    assert list(out.obs["source_cell"]) == list(adata.obs_names[idx])
    assert out.uns["trajvi_predict"]["params"]["n_models"] == 2
    assert out.uns["trajvi_predict"]["params"]["mode"] == "transfer"
    assert adata.obs.equals(before)


def test_one_fit_twice_is_that_fit(fits):
    adata, models = fits
    query = {"source": "control", "target": "stimulated", "indices": _sources(adata), "n_steps": 10}
    out = trajvi.predict_ensemble([models[0], models[0]], **query)
    single = models[0].predict(mode="transfer", **query)
    np.testing.assert_allclose(out.X.toarray(), single.X.toarray(), rtol=1e-5, atol=1e-5)
    assert np.all(out.obs["ensemble_sd"] == 0)


def test_calibrated_ensembles_record_each_models_rule(fits):
    from trajvi.model._calibration import SHRINKAGE_RULES

    adata, models = fits
    out = trajvi.predict_ensemble(
        models, source="control", target="stimulated", indices=_sources(adata), n_steps=10, calibrate=True
    )
    rules = out.uns["trajvi_predict"]["params"]["calibration_rules"]
    assert len(rules) == 2 and set(rules) <= set(SHRINKAGE_RULES)
    assert np.isfinite(out.X.toarray()).all() and (out.X.toarray() >= 0).all()


def test_fits_of_other_data_are_refused(fits):
    adata, models = fits
    with pytest.raises(ValueError, match="at least one"):
        trajvi.predict_ensemble([], source="control", target="stimulated")
    fewer = _fit(adata[:, :30].copy(), 0)
    with pytest.raises(ValueError, match="other genes"):
        trajvi.predict_ensemble([models[0], fewer], source="control", target="stimulated")
    order = np.arange(adata.n_obs)
    controls = np.flatnonzero((adata.obs["condition"] == "control").to_numpy())
    order[controls] = controls[::-1]  # the same cells, the controls in reverse order
    shuffled = adata[order].copy()
    other = _fit(shuffled, 0)
    idx = _sources(adata)
    with pytest.raises(ValueError, match="other source cells"):
        trajvi.predict_ensemble([models[0], other], source="control", target="stimulated", indices=idx)
    # with the AnnData given, both models predict from the same cells
    out = trajvi.predict_ensemble([models[0], other], adata, source="control", target="stimulated", indices=idx)
    assert list(out.obs["source_cell"]) == list(adata.obs_names[idx])
