"""New data: query mapping of new batches (scArches), cells of unseen conditions, copies of the training data."""

import numpy as np
import pandas as pd
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW

PATH = ["control", "stimulated"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A reference trained on batches batch_0 and batch_1 (both phases), its folder, and the cells of batch_2."""
    import scvi

    old = scvi.settings.seed
    scvi.settings.seed = 0
    full = trajvi.data.synthetic(450, 40, n_batches=3, seed=0)
    adata = full[full.obs["batch"] != "batch_2"].copy()
    query = full[full.obs["batch"] == "batch_2"].copy()
    query.obs["batch"] = query.obs["batch"].cat.remove_unused_categories()
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=4, n_hidden=32, n_hidden_velocity=16)
    model.train(max_epochs=2, **TRAIN_KW)
    model.train_trajectories(PATH, residual_penalty=1.0, max_epochs=2, **TRAIN_KW)
    folder = tmp_path_factory.mktemp("reference")
    model.save(folder, overwrite=True)
    scvi.settings.seed = old
    return model, adata, query, folder


def _state(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _snapshot(adata):
    return adata.X.copy(), adata.obs.copy(), adata.var.copy(), dict(adata.uns), set(adata.obsm), set(adata.layers)


def _assert_same(adata, snap, *, except_uns=()):
    x, obs, var, uns, obsm, layers = snap
    assert (x != adata.X).nnz == 0
    assert adata.obs.equals(obs)
    assert adata.var.equals(var)
    assert set(adata.uns) == set(uns)
    assert {k: v for k, v in adata.uns.items() if k not in except_uns} == {
        k: v for k, v in uns.items() if k not in except_uns
    }
    assert set(adata.obsm) == obsm and set(adata.layers) == layers


def test_query_trains_only_the_new_batch_columns(reference, seeded):
    model, adata, query, folder = reference
    before = _state(model)
    z_reference = model.get_latent_representation()
    query_model = trajvi.TrajVI.load_query_data(query.copy(), folder)
    assert query_model.summary_stats.n_batch == 3 and query_model.conditions == model.conditions
    start = _state(query_model)
    query_model.train(max_epochs=3, **TRAIN_KW)
    after = _state(query_model)

    new_columns = {"encoder.body.fc_layers.Layer 0.0.weight", "decoder.body.fc_layers.Layer 0.0.weight"}
    for key, ref in before.items():
        lead = after[key][tuple(slice(0, n) for n in ref.shape)] if after[key].dim() else after[key]
        assert torch.equal(lead, ref), f"{key} changed"  # every reference entry, phase 2 included
        if key in new_columns:
            assert after[key].shape[1] == ref.shape[1] + 1
            moved = (after[key][:, -1] - start[key][:, -1]).abs().max()
            assert moved > 1e-3, f"{key}: the new column did not train (moved {moved:.2g})"
        else:
            assert after[key].shape == ref.shape
    assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in before.items())  # the reference untouched

    z_query = query_model.get_latent_representation()
    assert z_query.shape == (query.n_obs, 4) and np.isfinite(z_query).all()
    # reference cells get the reference's latents from the query model: their weights were not touched
    np.testing.assert_array_equal(query_model.get_latent_representation(adata), z_reference)

    # phase 2 is carried over: the query cells are predicted along the reference's trained path at once
    predicted = query_model.predict(source="control", target="stimulated")
    n_control = int((query.obs["condition"] == "control").sum())
    assert predicted.n_obs == n_control and np.isfinite(predicted.layers["trajvi_mean"]).all()
    assert query_model.trained_paths().paths == model.trained_paths().paths


def test_query_of_one_condition_from_a_model_object(reference, seeded, tmp_path):
    model, _, query, _ = reference
    controls = query[query.obs["condition"] == "control"].copy()
    query_model = trajvi.TrajVI.load_query_data(controls, model)
    query_model.train(max_epochs=1, **TRAIN_KW)
    result = query_model.simulate_trajectory(n_steps=4)
    assert result.latent.shape == (5, controls.n_obs, 4) and np.isfinite(result.expression).all()
    # saved and loaded, a query model is an ordinary model with the same weights
    query_model.save(tmp_path / "query", overwrite=True)
    loaded = trajvi.TrajVI.load(tmp_path / "query", adata=controls)
    np.testing.assert_array_equal(loaded.get_latent_representation(), query_model.get_latent_representation())
    assert all(p.requires_grad for p in loaded.module.parameters())


def test_query_with_a_condition_the_reference_never_saw(reference, seeded):
    model, _, query, _ = reference
    query = query.copy()
    query.obs["condition"] = query.obs["condition"].cat.add_categories("drug_X")
    stimulated = (query.obs["condition"] == "stimulated").to_numpy()
    query.obs.loc[stimulated, "condition"] = "drug_X"
    query_model = trajvi.TrajVI.load_query_data(query, model)
    assert query_model.conditions == [*PATH, "drug_X"]  # appended: the trained codes keep their positions
    query_model.train(max_epochs=1, **TRAIN_KW)
    assert np.isfinite(query_model.get_latent_representation()).all()
    predicted = query_model.predict(source="control", target="stimulated")
    assert predicted.n_obs == int((~stimulated).sum())
    with pytest.raises(ValueError, match=r"target='drug_X'"):
        query_model.predict(source="control", target="drug_X")


def test_prepare_query_anndata_orders_and_pads_the_genes(reference):
    model, _, query, folder = reference
    shuffled = query[:, query.var_names[::-1][:-3]].copy()  # reversed, three genes missing
    prepared = trajvi.TrajVI.prepare_query_anndata(shuffled, folder, inplace=False)
    assert list(prepared.var_names) == list(model.adata.var_names)
    assert prepared[:, model.adata.var_names[:3]].X.sum() == 0
    with pytest.raises(ValueError, match="prepare_query_anndata"):
        trajvi.TrajVI.load_query_data(shuffled, model)
    query_model = trajvi.TrajVI.load_query_data(prepared, model)
    assert query_model.summary_stats.n_batch == 3


def test_query_mapping_errors(reference):
    model, adata, query, _ = reference
    known = adata[:50].copy()
    for key in [k for k in known.obs if str(k).startswith("_scvi")]:
        del known.obs[key]
    snap = _snapshot(known)
    with pytest.raises(ValueError, match="no batch that the reference was not trained on"):
        trajvi.TrajVI.load_query_data(known, model)
    _assert_same(known, snap)
    with pytest.raises(TypeError, match="give a trained TrajVI"):
        trajvi.TrajVI.load_query_data(query.copy(), object())

    plain = trajvi.data.synthetic(120, 40, seed=3)
    trajvi.TrajVI.setup_anndata(plain, "condition")
    no_batch = trajvi.TrajVI(plain, n_latent=3, n_hidden=16)
    with pytest.raises(RuntimeError, match="not trained"):
        trajvi.TrajVI.load_query_data(query.copy(), no_batch)
    no_batch.train(max_epochs=1, **TRAIN_KW)
    with pytest.raises(ValueError, match="without a batch_key"):
        trajvi.TrajVI.load_query_data(query.copy(), no_batch)


def test_a_reference_of_one_batch_keeps_encoding_its_cells_as_before(seeded):
    adata = trajvi.data.synthetic(200, 30, n_batches=2, seed=4)
    query = adata[adata.obs["batch"] == "batch_1"].copy()
    adata = adata[adata.obs["batch"] == "batch_0"].copy()
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN_KW)
    query_model = trajvi.TrajVI.load_query_data(query, model)
    query_model.train(max_epochs=1, **TRAIN_KW)
    weight = query_model.module.encoder.body.fc_layers[0][0].weight
    assert weight.shape[1] == 30 + 2 and torch.all(weight[:, -2] == 0)  # the reference batch's column
    np.testing.assert_allclose(
        query_model.get_latent_representation(adata), model.get_latent_representation(), rtol=0, atol=1e-6
    )


def test_cells_of_an_unseen_condition_are_encoded_and_simulated(reference):
    model, adata, _, _ = reference
    z = model.get_latent_representation()
    new = adata.copy()
    for key in [k for k in new.obs if str(k).startswith("_scvi")]:
        del new.obs[key]
    del new.uns["_scvi_uuid"], new.uns["_scvi_manager_uuid"]
    controls = np.flatnonzero(new.obs["condition"] == "control")[:15]
    new.obs["condition"] = new.obs["condition"].cat.add_categories("donor_B")
    new.obs.iloc[controls, new.obs.columns.get_loc("condition")] = "donor_B"

    # the encoder does not read the condition: the same cells, the same latents
    np.testing.assert_array_equal(model.get_latent_representation(new), z)
    trajvi.tl.latent(new, model)
    np.testing.assert_array_equal(new.obsm["X_trajvi"], z)
    assert model.conditions == PATH  # the model's own categories are unchanged

    result = model.simulate_trajectory(new, source="control", indices=controls, n_steps=4)
    np.testing.assert_allclose(result.latent[0], z[controls], rtol=0, atol=1e-6)
    assert np.isfinite(result.expression).all()
    predicted = model.predict(new, source="control", target="stimulated", indices=controls)
    assert predicted.n_obs == len(controls) and (predicted.obs["source_condition"] == "control").all()
    with pytest.raises(ValueError, match=r"source='donor_B' is not a condition"):
        model.simulate_trajectory(new, source="donor_B")
    with pytest.raises(ValueError, match=r"target='donor_B'"):
        model.predict(new, source="control", target="donor_B")


def test_unseen_condition_with_a_condition_decoder_is_encoded_but_not_decoded(seeded):
    adata = trajvi.data.synthetic(150, 30, seed=2)
    trajvi.TrajVI.setup_anndata(adata, "condition")
    model = trajvi.TrajVI(adata, n_latent=3, n_hidden=16, decode_condition=True)
    model.train(max_epochs=1, **TRAIN_KW)
    new = adata[:40].copy()
    new.obs["condition"] = pd.Categorical(["unseen"] * new.n_obs)
    assert np.isfinite(model.get_latent_representation(new)).all()
    with pytest.raises(ValueError, match="decoder reads the condition"):
        model.get_normalized_expression(new)


def test_unseen_batch_in_new_data_points_to_load_query_data(reference):
    model, _, query, _ = reference
    snap = _snapshot(query)
    with pytest.raises(ValueError, match=r"batches \['batch_2'\].*load_query_data"):
        model.get_latent_representation(query)
    _assert_same(query, snap)


def test_predict_on_a_copy_of_the_training_data(reference):
    model, adata, _, _ = reference
    original = _snapshot(adata)
    copied = adata.copy()
    snap = _snapshot(copied)
    first = model.predict(copied, source="control", target="stimulated")
    second = model.predict(copied, source="control", target="stimulated")
    assert first.n_obs == second.n_obs == int((adata.obs["condition"] == "control").sum())
    np.testing.assert_array_equal(first.layers["trajvi_mean"], second.layers["trajvi_mean"])
    # the copy keeps its data; it is registered under its own id (the documented registration keys)
    _assert_same(copied, snap, except_uns=("_scvi_uuid", "_scvi_manager_uuid"))
    assert copied.uns["_scvi_uuid"] != adata.uns["_scvi_uuid"]
    # the original is left exactly as it was, and still the model's own registered data
    _assert_same(adata, original)
    assert model.get_anndata_manager(adata).adata is adata
    np.testing.assert_array_equal(
        model.predict(source="control", target="stimulated").layers["trajvi_mean"], first.layers["trajvi_mean"]
    )
    # a view is made a copy of its own first (scvi-tools' behaviour), the original again untouched
    np.testing.assert_array_equal(model.get_latent_representation(adata[:30]), model.get_latent_representation()[:30])
    _assert_same(adata, original)


def test_a_copy_with_an_unseen_batch_is_refused_before_anything_is_written(reference):
    model, adata, _, _ = reference
    copied = adata.copy()
    copied.obs["batch"] = copied.obs["batch"].cat.add_categories("batch_9")
    copied.obs.iloc[:5, copied.obs.columns.get_loc("batch")] = "batch_9"
    snap = _snapshot(copied)
    with pytest.raises(ValueError, match=r"batches \['batch_9'\].*load_query_data"):
        model.predict(copied, source="control")
    _assert_same(copied, snap)


def test_a_query_copied_from_the_reference_data_leaves_the_reference_setup_alone(reference):
    model, adata, _, _ = reference
    query = adata[:60].copy()  # carries the reference data's registration
    query.obs["batch"] = pd.Categorical(["batch_new"] * query.n_obs)
    trajvi.TrajVI.load_query_data(query, model)
    assert query.uns["_scvi_uuid"] != adata.uns["_scvi_uuid"]
    assert model.get_anndata_manager(adata).adata is adata
    assert trajvi.TrajVI(adata, n_latent=3, n_hidden=16).adata_manager.adata is adata
