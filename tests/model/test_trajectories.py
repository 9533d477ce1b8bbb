"""Phase 2 and inference on synthetic data with a known answer."""

import numpy as np
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW
from trajvi.metrics import expression_energy_distance

HELD_OUT = "type_0"


@pytest.fixture(scope="module")
def perturbation():
    """A model trained without the stimulated cells of one cell type, and those cells as the truth."""
    import scvi

    scvi.settings.seed = 0
    full = trajvi.data.synthetic(1600, 200, n_cell_types=4, effect_size=1.5, seed=11)
    held = (full.obs["cell_type"] == HELD_OUT) & (full.obs["condition"] == "stimulated")
    adata = full[~held.to_numpy()].copy()
    truth = full[held.to_numpy()].copy()
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=8, adversarial_weight=1.0)
    model.train(max_epochs=40, **TRAIN_KW)
    model.train_trajectories(
        ["control", "stimulated"], couple_within="cell_type", max_epochs=40, validation_epochs=20, **TRAIN_KW
    )
    return model, adata, truth, full


def _held_out_sources(adata):
    return np.flatnonzero(((adata.obs["cell_type"] == HELD_OUT) & (adata.obs["condition"] == "control")).to_numpy())


def test_predicted_cells_are_closer_to_the_truth_than_the_sources(perturbation):
    model, adata, truth, full = perturbation
    sources = _held_out_sources(adata)
    predicted = model.predict(source="control", target="stimulated", indices=sources, n_samples=2)
    d_pred = expression_energy_distance(predicted.X, truth.X, reference=full.X)
    d_src = expression_energy_distance(adata.X[sources], truth.X, reference=full.X)
    assert d_pred < 0.5 * d_src, (d_pred, d_src)


def test_transferred_cells_are_closer_to_the_truth_than_the_sources(perturbation):
    model, adata, truth, full = perturbation
    sources = _held_out_sources(adata)
    moved = model.predict(source="control", target="stimulated", indices=sources, mode="transfer")
    assert moved.n_obs == len(sources) and (moved.obs["sample"] == 0).all()
    assert moved.uns["trajvi_predict"]["params"]["mode"] == "transfer"
    assert moved.X.min() >= 0 and not np.allclose(moved.X.toarray(), adata.X[sources].toarray())
    d_moved = expression_energy_distance(moved.X, truth.X, reference=full.X)
    d_src = expression_energy_distance(adata.X[sources], truth.X, reference=full.X)
    assert d_moved < 0.5 * d_src, (d_moved, d_src)
    before = adata.copy()
    with pytest.raises(ValueError, match="n_samples must be 1"):
        model.predict(source="control", target="stimulated", mode="transfer", n_samples=2)
    with pytest.raises(ValueError, match="library_size None"):
        model.predict(source="control", target="stimulated", mode="transfer", library_size=1e4)
    with pytest.raises(ValueError, match="mode"):
        model.predict(source="control", target="stimulated", mode="resample")
    assert before.obs.equals(adata.obs) and before.obsm.keys() == adata.obsm.keys()


def test_calibrated_predictions_add_the_mean_miss_of_the_groups_with_a_known_truth(perturbation):
    from trajvi.model._calibration import SHRINKAGE_RULES, log_normalized, log_normalized_moments, shift_counts

    model, adata, *_ = perturbation
    before = adata.copy()
    sources = _held_out_sources(adata)
    query = {"source": "control", "target": "stimulated", "mode": "transfer"}
    plain = model.predict(indices=sources, **query)
    calibrated = model.predict(indices=sources, calibrate=True, **query)
    others = sorted(set(adata.obs["cell_type"]) - {HELD_OUT})
    params = calibrated.uns["trajvi_predict"]["params"]
    assert params["calibrate"] and params["calibrated_on"] == [f"{g} x stimulated" for g in others]
    condition = adata.obs["condition"].to_numpy()

    def cells(group, label):
        return np.flatnonzero(((adata.obs["cell_type"] == group).to_numpy()) & (condition == label))

    def miss(group):  # real mean minus predicted mean in log1p(CP10k), and its squared standard error
        predicted = log_normalized_moments(model.predict(indices=cells(group, "control"), **query).X)
        real = log_normalized_moments(adata.X, cells(group, "stimulated"))
        return real[0] - predicted[0], real[1] + predicted[1]

    # the held-out cell type has no stimulated cells: it borrows the mean miss of the others, shrunk by its error
    misses = [miss(g) for g in others]
    mean = np.mean([m for m, _ in misses], axis=0)
    noise = np.sum([v for _, v in misses], axis=0) / len(misses) ** 2
    shrinkage = params["calibration_shrinkage"]
    assert set(shrinkage["validation_loss"]) == set(SHRINKAGE_RULES)
    assert shrinkage["rule"] == min(shrinkage["validation_loss"], key=shrinkage["validation_loss"].get)
    expected = shift_counts(plain.X.toarray(), SHRINKAGE_RULES[shrinkage["rule"]](mean, noise))
    np.testing.assert_allclose(calibrated.X.toarray(), expected, rtol=1e-4, atol=1e-4)
    # a cell type with stimulated cells gets its own miss: its predicted mean moves onto the real one
    own = cells(others[0], "control")
    real = log_normalized(adata.X[cells(others[0], "stimulated")].toarray()).mean(axis=0)
    errors = [
        np.abs(log_normalized(model.predict(indices=own, calibrate=c, **query).X.toarray()).mean(axis=0) - real).mean()
        for c in (False, True)
    ]
    assert errors[1] < 0.5 * errors[0], errors
    sampled = model.predict(source="control", target="stimulated", indices=sources[:10], n_samples=2, calibrate=True)
    assert sampled.n_obs == 20 and sampled.X.min() >= 0
    with pytest.raises(ValueError, match="give target"):
        model.predict(source="control", t_span=(0.0, 1.0), calibrate=True)
    with pytest.raises(ValueError, match="no dose"):
        model.predict(source="control", target="stimulated", dose=2.0, calibrate=True)
    assert before.obs.equals(adata.obs) and before.obsm.keys() == adata.obsm.keys()


def test_held_out_group_scores_calibrate_each_group_with_the_others_misses(perturbation, monkeypatch):
    from sklearn.decomposition import PCA

    from trajvi.metrics import energy_distance_unbiased
    from trajvi.model._calibration import SHRINKAGE_RULES, log_normalized, log_normalized_moments, shift_counts

    model, adata, _, _ = perturbation
    before = adata.obs.copy()
    scores = model.score_held_out_groups(source="control", target="stimulated", n_comps=10)
    others = sorted(set(adata.obs["cell_type"]) - {HELD_OUT})  # the held-out type has no stimulated cells
    assert sorted(scores.index) == others
    assert scores.attrs["rule"] in SHRINKAGE_RULES
    condition = adata.obs["condition"].to_numpy()

    def cells(group, label):
        return np.flatnonzero(((adata.obs["cell_type"] == group).to_numpy()) & (condition == label))

    query = {"source": "control", "target": "stimulated", "mode": "transfer"}
    predicted = {g: model.predict(indices=cells(g, "control"), **query).X.toarray() for g in others}
    misses = {}
    for g in others:
        real, pred = log_normalized_moments(adata.X, cells(g, "stimulated")), log_normalized_moments(predicted[g])
        misses[g] = (real[0] - pred[0], real[1] + pred[1])
    pca = PCA(n_components=10, svd_solver="full").fit(log_normalized(adata.X.toarray()))
    for g in others:  # each group gets the mean miss of the others, as a group without stimulated cells would
        rest = [misses[h] for h in others if h != g]
        mean = np.mean([m for m, _ in rest], axis=0)
        noise = np.sum([v for _, v in rest], axis=0) / len(rest) ** 2
        shifted = shift_counts(predicted[g], SHRINKAGE_RULES[scores.attrs["rule"]](mean, noise))
        real = pca.transform(log_normalized(adata.X[cells(g, "stimulated")].toarray()))
        energy = energy_distance_unbiased(pca.transform(log_normalized(shifted)), real, max_cells=None)
        np.testing.assert_allclose(scores.loc[g, "energy"], energy, rtol=1e-3, atol=1e-4)
        plain = energy_distance_unbiased(pca.transform(log_normalized(predicted[g])), real, max_cells=None)
        np.testing.assert_allclose(scores.loc[g, "energy_uncalibrated"], plain, rtol=1e-3, atol=1e-4)
        assert scores.loc[g, "n_source"] == len(cells(g, "control"))
        assert scores.loc[g, "n_target"] == len(cells(g, "stimulated"))
    assert adata.obs.equals(before)
    with pytest.raises(ValueError, match="no cells among the cells phase 2 used"):
        model.score_held_out_groups(source="control", target="unknown")
    monkeypatch.setattr(model, "couple_within_", None)
    with pytest.raises(ValueError, match="couple_within"):
        model.score_held_out_groups(source="control", target="stimulated")


def test_validation_chose_a_penalty_and_history_has_phase2(perturbation):
    model, *_ = perturbation
    assert model.residual_penalty_ in (0.0, 1.0, 10.0, 1e4)
    table = model.trajectory_validation_
    assert set(table) == {"0.0", "1.0", "10.0", "10000.0"}
    assert {"type_1", "type_2", "type_3", "mean"} <= set(table["0.0"])  # the held-out type has no targets
    assert "flow_matching_loss_train" in model.history
    n1 = len(model.history["reconstruction_loss_train"])
    assert model.history["flow_matching_loss_train"].index[0] == n1


def test_prediction_anndata_is_usable_by_scanpy(perturbation):
    import scanpy as sc

    model, adata, *_ = perturbation
    sources = _held_out_sources(adata)[:30]
    pred = model.predict(source="control", target="stimulated", indices=sources, n_samples=3)
    assert pred.shape == (90, adata.n_vars)
    assert list(pred.var_names) == list(adata.var_names)
    x = pred.X.toarray()
    assert (x >= 0).all() and np.array_equal(x, np.round(x))
    assert pred.layers["trajvi_mean"].shape == pred.shape
    assert set(pred.obs["source_cell"]) == set(adata.obs_names[sources])
    assert (pred.obs["condition"] == "stimulated").all() and (pred.obs["source_condition"] == "control").all()
    assert "cell_type" in pred.obs and "_scvi_batch" not in pred.obs
    both = sc.concat([adata[sources].copy(), pred], label="origin", keys=["real", "predicted"])
    sc.pp.normalize_total(both, target_sum=1e4)
    sc.pp.log1p(both)
    sc.tl.rank_genes_groups(both, "origin", method="wilcoxon")
    assert "names" in both.uns["rank_genes_groups"]


def test_integrators_agree_and_euler_converges(perturbation):
    model, adata, *_ = perturbation
    idx = _held_out_sources(adata)[:20]
    ends = {}
    for method, steps in (("rk4", 20), ("dopri5", 20), ("euler", 5), ("euler", 20), ("euler", 80)):
        r = model.simulate_trajectory(indices=idx, method=method, n_steps=steps, decode=False)
        ends[(method, steps)] = r.latent[-1]
    np.testing.assert_allclose(ends[("rk4", 20)], ends[("dopri5", 20)], atol=1e-3)
    errs = [np.abs(ends[("euler", n)] - ends[("rk4", 20)]).max() for n in (5, 20, 80)]
    assert errs[0] > errs[1] > errs[2]


def test_simulation_shapes_genes_and_gradients(perturbation):
    model, adata, *_ = perturbation
    idx = _held_out_sources(adata)[:7]
    genes = list(adata.var_names[:3])
    r = model.simulate_trajectory(indices=idx, n_steps=10, genes=genes, batch_size=3)
    assert r.latent.shape == (11, 7, 8) and r.expression.shape == (11, 7, 3)
    assert r.times[0] == 0.0 and r.times[-1] == 1.0 and r.genes == genes
    full = model.simulate_trajectory(indices=idx, n_steps=10)
    np.testing.assert_allclose(full.expression[:, :, :3], r.expression, rtol=1e-5)
    g = model.simulate_trajectory(indices=idx, n_steps=5, with_grad=True, genes=genes)
    assert isinstance(g.latent, torch.Tensor) and g.latent.requires_grad
    model.module.velocity.zero_grad()
    g.expression.sum().backward()
    grads = [p.grad for p in model.module.velocity_parameters()]
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)
    model.module.zero_grad(set_to_none=True)


def test_result_unpacks_as_latent_means_times_and_keeps_its_attributes(perturbation):
    model, adata, *_ = perturbation
    idx = _held_out_sources(adata)[:4]
    result = model.simulate_trajectory(indices=idx, n_steps=5, genes=list(adata.var_names[:2]))
    traj_z, traj_mean, times = result  # the specification's call
    assert traj_z is result.latent and traj_mean is result.expression and times is result.times
    assert traj_z.shape == (6, 4, 8) and traj_mean.shape == (6, 4, 2) and times.shape == (6,)
    assert result.source == "control" and result.cells == list(adata.obs_names[idx])
    _, no_means, _ = model.simulate_trajectory(indices=idx, n_steps=5, decode=False)
    assert no_means is None


def test_with_grad_reaches_the_encoder_from_the_counts(perturbation):
    model, adata, *_ = perturbation
    idx = _held_out_sources(adata)[:6]
    plain = model.simulate_trajectory(indices=idx, n_steps=4, decode=False)
    model.module.zero_grad(set_to_none=True)
    traj_z, traj_mean, _ = model.simulate_trajectory(indices=idx, n_steps=4, with_grad=True, batch_size=4)
    # the same start as without a graph (posterior means), now with the encoder's graph
    np.testing.assert_allclose(traj_z[0].detach().cpu().numpy(), plain.latent[0], rtol=1e-5, atol=1e-6)
    assert traj_z[0].requires_grad
    loss = torch.log1p(traj_mean).mean()  # an expression-space loss
    loss.backward()
    for name, params in (
        ("encoder", list(model.module.encoder.parameters())),
        ("velocity", model.module.velocity_parameters()),
        ("decoder", list(model.module.decoder.parameters())),
    ):
        grads = [p.grad for p in params if p.grad is not None]
        assert grads, name
        assert all(torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    model.module.zero_grad(set_to_none=True)


def test_save_load_keeps_the_velocity_field(perturbation, tmp_path):
    model, adata, *_ = perturbation
    idx = _held_out_sources(adata)[:10]
    before = model.simulate_trajectory(indices=idx, n_steps=10, decode=False).latent
    model.save(tmp_path / "m", overwrite=True)
    loaded = trajvi.TrajVI.load(tmp_path / "m", adata=adata)
    assert loaded.trajectory_path_ == ["control", "stimulated"]
    np.testing.assert_array_equal(loaded.simulate_trajectory(indices=idx, n_steps=10, decode=False).latent, before)


def test_calls_in_the_wrong_order(synthetic_adata):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=3, n_hidden=16)
    with pytest.raises(RuntimeError, match=r"Run model\.train\(\) first"):
        model.train_trajectories(["control", "stimulated"])
    model.train(max_epochs=1, **TRAIN_KW)
    with pytest.raises(RuntimeError, match="train_trajectories"):
        model.simulate_trajectory()
    with pytest.raises(RuntimeError, match="train_trajectories"):
        model.predict(source="control", target="stimulated")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": ["control", "treated"]}, "not a condition"),
        ({"path": ["control"]}, "at least two"),
        ({"path": ["control", "stimulated"], "ot_method": "greedy"}, "ot_method"),
        ({"path": ["control", "stimulated"], "residual_penalty": -1.0}, "residual_penalty"),
        ({"path": ["control", "stimulated"], "couple_within": "celltype"}, "celltype"),
    ],
)
def test_bad_phase2_arguments(synthetic_adata, kwargs, match):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN_KW)
    with pytest.raises((ValueError, KeyError), match=match):
        model.train_trajectories(**kwargs, max_epochs=1, **TRAIN_KW)


def test_second_call_retrains_phase2_only(perturbation):
    model, *_ = perturbation
    vae_before = {k: v.clone() for k, v in model.module.state_dict().items() if not k.startswith("velocity")}
    n_flow = len(model.history["flow_matching_loss_train"])
    model.train_trajectories(["control", "stimulated"], residual_penalty=1.0, max_epochs=3, **TRAIN_KW)
    after = model.module.state_dict()
    for key, value in vae_before.items():
        torch.testing.assert_close(after[key], value, msg=key)
    assert len(model.history["flow_matching_loss_train"]) == n_flow + 3
    assert model.residual_penalty_ == 1.0 and model.couple_within_ is None


def test_held_out_time_point_is_interpolated():
    import scvi

    scvi.settings.seed = 0
    full = trajvi.data.synthetic(1600, 200, kind="time_course", n_time_points=4, seed=3)
    middle = (full.obs["condition"] == "t2").to_numpy()
    adata = full[~middle].copy()
    adata.obs["stage"] = adata.obs["condition"]  # a condition column with another name
    trajvi.TrajVI.setup_anndata(adata, "stage", batch_key="batch", time_key="time")
    model = trajvi.TrajVI(adata, n_latent=8)
    # defaults (no condition decoding): the time must live in the latent, which takes more than 40 epochs here
    # (measured, energy ratio to the previous day: 1.43 at 40 epochs, 0.31 at 100)
    model.train(max_epochs=100, **TRAIN_KW)
    model.train_trajectories(["t0", "t1", "t3"], max_epochs=40, validation_epochs=20, **TRAIN_KW)
    assert model.trajectory_times_ == [0.0, 1.0, 3.0]
    assert set(model.trajectory_validation_["0.0"]) == {"t1", "mean"}
    pred = model.predict(source="t1", t_span=(1.0, 2.0), n_samples=2)
    assert (pred.obs["condition"] == "t=2").all()
    assert (pred.obs["stage"] == "t=2").all() and (pred.obs["time"] == 2.0).all()
    prev = (adata.obs["condition"] == "t1").to_numpy()
    d_pred = expression_energy_distance(pred.X, full.X[middle], reference=full.X)
    d_prev = expression_energy_distance(adata.X[prev], full.X[middle], reference=full.X)
    assert d_pred < 0.7 * d_prev, (d_pred, d_prev)


def test_plan_kwargs_reach_the_phase2_plan(perturbation):
    from lightning.pytorch.callbacks import Callback

    model, *_ = perturbation
    seen = {}

    class Record(Callback):
        def on_fit_start(self, trainer, pl_module):
            seen.update(
                lr=pl_module.settings.lr,
                clip=pl_module.gradient_clip_val,
                skips=pl_module.max_consecutive_skips,
                every=pl_module.check_guards_every_n_steps,
            )

    model.train_trajectories(
        ["control", "stimulated"],
        residual_penalty=1.0,
        max_epochs=1,
        lr=3e-4,
        plan_kwargs={"gradient_clip_val": 2.0, "max_consecutive_skips": 7, "check_guards_every_n_steps": 3},
        callbacks=[Record()],
        **TRAIN_KW,
    )
    assert seen == {"lr": 3e-4, "clip": 2.0, "skips": 7, "every": 3}


@pytest.mark.parametrize(
    ("plan_kwargs", "match"),
    [
        ({"lr": 1e-2}, r"plan_kwargs repeats \['lr'\].*pass lr=0.01 to train_trajectories\(\) directly"),
        ({"residual_penalty": 2.0}, r"repeats \['residual_penalty'\]"),
        ({"velocity_lr": 1e-2}, r"plan_kwargs has \['velocity_lr'\], which VelocityTrainingPlan does not take"),
    ],
)
def test_plan_kwargs_that_repeat_an_argument_or_are_unknown_are_refused_early(perturbation, plan_kwargs, match):
    model, *_ = perturbation
    before = {k: v.clone() for k, v in model.module.velocity.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        model.train_trajectories(["control", "stimulated"], plan_kwargs=plan_kwargs, **TRAIN_KW)
    for key, value in model.module.velocity.state_dict().items():
        torch.testing.assert_close(value, before[key])  # refused before anything was reset or trained
