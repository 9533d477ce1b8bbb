"""Fates, transitions and ancestors on a branching time course whose fates are known, by coupling and by flow."""

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW
from trajvi.dynamics import simulate, time_grid

mpl.use("Agg")
METHODS = ("coupling", "flow")


@pytest.fixture(scope="module")
def branching():
    """Progenitors (t0) that split into three fates seen mixed at t1 and t2; ``obs['fate']`` is every cell's branch."""
    import scvi

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(1500, 100, kind="branching", n_branches=3, n_time_points=3, seed=0)
    adata.obs["stage"] = ("t" + adata.obs["time"].astype(int).astype(str)).astype("category")
    trajvi.TrajVI.setup_anndata(adata, "stage", batch_key="batch", time_key="time")
    model = trajvi.TrajVI(adata, n_latent=6)
    model.train(max_epochs=40, **TRAIN_KW)
    model.train_trajectories(["t0", "t1", "t2"], residual_penalty=1.0, max_epochs=40, **TRAIN_KW)
    return model, adata


def _cells(adata, stage):
    return adata.obs_names[(adata.obs["stage"] == stage).to_numpy()]


@pytest.mark.parametrize("method", METHODS)
def test_transitions_and_fates_recover_the_known_branches(branching, method):
    model, adata = branching
    table = trajvi.tl.transition_matrix(adata, model, "t0", target="t2", groupby="fate", method=method)
    np.testing.assert_allclose(table.sum(axis=1), 1.0)
    # progenitors of fate b end on branch b: the true matrix is the identity (diagonal measured 0.71-0.85)
    assert np.diag(table.to_numpy()).min() > 0.6, table
    assert adata.uns["trajvi_transitions"]["params"]["method"] == method

    fates = trajvi.tl.fate_probabilities(adata, model, "t0", groupby="fate", method=method)
    assert list(fates.columns) == ["F0", "F1", "F2"] and fates.index.equals(_cells(adata, "t0"))
    np.testing.assert_allclose(fates.sum(axis=1), 1.0)
    truth = adata.obs.loc[fates.index, "fate"].astype(str).to_numpy()
    assert (fates.idxmax(axis=1).to_numpy() == truth).mean() > 0.7  # measured 0.78 (coupling), 0.79 (flow)
    # the known fractions: the share of progenitors on each branch, within 0.1 (measured 0.012, 0.05)
    known = pd.Series(truth).value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(fates.mean(axis=0).sort_index(), known, atol=0.1)
    stored = adata.obsm["trajvi_fates"]
    assert stored.shape == (adata.n_obs, 3) and stored.loc[_cells(adata, "t1")].isna().all().all()


@pytest.mark.parametrize("method", METHODS)
def test_push_then_pull_returns_the_distribution(branching, method):
    model, adata = branching
    fate = adata.obs["fate"].astype(str)
    for branch in ("F0", "F2"):
        start = (fate == branch).astype(float)
        pushed = model.push("t0", "t2", start, method=method)
        assert pushed.sum() == pytest.approx(1.0) and pushed.index.equals(_cells(adata, "t2"))
        pulled = model.pull("t0", "t2", pushed, method=method)
        by_group = pulled.groupby(fate.loc[pulled.index].to_numpy()).sum()
        # the start put all mass on the branch; its share after the round trip (measured 0.88-0.90 by coupling,
        # 0.66-0.71 by flow: forward and backward integration, each spread over 10 neighbours)
        assert by_group[branch] > {"coupling": 0.8, "flow": 0.6}[method], (branch, by_group)


def test_backward_integration_retraces_forward_paths(branching):
    model, _ = branching
    forward = model.simulate_trajectory(source="t0", target="t2", n_steps=40, method="rk4", decode=False)
    route = model._route("t0", "t2", None, False, None)
    vel = model.module.velocity
    with torch.no_grad():
        back = simulate(
            vel.bind(route.condition(vel)), torch.as_tensor(forward.latent[-1]), time_grid(2.0, 0.0, 40), method="rk4"
        )
    np.testing.assert_allclose(back[-1].numpy(), forward.latent[0], atol=1e-3)
    assert np.abs(forward.latent[-1] - forward.latent[0]).mean() > 0.3  # the cells did move


def test_couplings_are_kept_chained_and_saved(branching, tmp_path):
    model, adata = branching
    step = model.get_coupling("t0", "t1")
    assert step.source_cells.equals(_cells(adata, "t0")) and step.target_cells.equals(_cells(adata, "t1"))
    assert step.matrix.nnz < step.shape[0] + step.shape[1]  # exact OT: sparse
    chained = model.get_coupling("t0", "t2")
    assert chained.matrix.sum() == pytest.approx(1.0) and chained.target_cells.equals(_cells(adata, "t2"))
    model.save(tmp_path / "m", save_anndata=False)
    loaded = trajvi.TrajVI.load(tmp_path / "m", adata=adata)
    assert (loaded.get_coupling("t0", "t2").matrix != chained.matrix).nnz == 0
    np.testing.assert_allclose(
        loaded.push("t0", "t1", np.ones(step.shape[0]), method="flow"),
        model.push("t0", "t1", np.ones(step.shape[0]), method="flow"),
    )
    loaded.transport_maps_ = None  # as a model saved before couplings were kept
    with pytest.raises(RuntimeError, match="saved before"):
        loaded.get_coupling("t0", "t1")
    assert loaded.push("t0", "t1", np.ones(step.shape[0]), method="flow").sum() == pytest.approx(1.0)


def test_ancestors_and_growth_are_written_where_documented(branching):
    model, adata = branching
    before = (set(adata.obs.columns), set(adata.obsm), set(adata.uns))
    late_f1 = (adata.obs["stage"] == "t2").to_numpy() & (adata.obs["fate"] == "F1").to_numpy()
    out = trajvi.tl.ancestors(adata, model, late_f1, source="t0", copy=True)
    assert (set(adata.obs.columns), set(adata.obsm), set(adata.uns)) == before  # copy=True left adata alone
    scores = out.obs["trajvi_ancestors"]
    assert scores.sum() == pytest.approx(1.0) and scores[~out.obs["stage"].eq("t0")].isna().all()
    on_f1 = scores[out.obs["stage"].eq("t0") & out.obs["fate"].eq("F1")].sum()
    assert on_f1 > 0.6  # the ancestors of late F1 cells are F1 progenitors (measured 0.77 coupling, 0.81 flow)
    trajvi.tl.ancestors(adata, model, late_f1, source="t0", method="flow", key_added="anc_flow")
    assert adata.obs["anc_flow"].sum() == pytest.approx(1.0)
    trajvi.tl.growth_rates(adata, model, "t0")
    np.testing.assert_allclose(adata.obs.loc[_cells(adata, "t0"), "trajvi_growth"], 1.0, atol=1e-6)  # balanced
    assert set(adata.obs.columns) - before[0] == {"anc_flow", "trajvi_growth"}


def test_bad_input_gets_clear_errors(branching):
    model, adata = branching
    before = adata.copy()
    with pytest.raises(KeyError, match="groupby='nope'"):
        trajvi.tl.transition_matrix(adata, model, "t0", target="t2", groupby="nope")
    with pytest.raises(ValueError, match="no trained path goes from 't2' to 't0'"):
        trajvi.tl.transition_matrix(adata, model, "t2", target="t0", groupby="fate")
    with pytest.raises(ValueError, match="not a condition"):
        model.push("t0", "t9", np.ones(3))
    with pytest.raises(ValueError, match="one per"):
        model.push("t0", "t1", np.ones(3))
    n_source = int((adata.obs["stage"] == "t0").sum())
    with pytest.raises(ValueError, match="negative"):
        model.push("t0", "t1", -np.ones(n_source))
    with pytest.raises(ValueError, match="none of the"):
        model.push("t0", "t1", pd.Series(1.0, index=_cells(adata, "t2")))
    with pytest.raises(ValueError, match=r"targets \['F9'\]"):
        trajvi.tl.fate_probabilities(adata, model, "t0", targets=["F9"], groupby="fate")
    with pytest.raises(ValueError, match="one condition"):
        trajvi.tl.ancestors(adata, model, adata.obs_names[:50], source="t0")
    with pytest.raises(ValueError, match="method='nope'"):
        model.transport_map("t0", "t1", method="nope")
    with pytest.raises(ValueError, match="neighbor_search='annoy' is not valid"):
        model.transport_map("t0", "t1", method="flow", neighbor_search="annoy")
    assert set(adata.obs.columns) == set(before.obs.columns) and set(adata.uns) == set(before.uns)


def test_the_neighbour_search_and_its_seed_reach_the_flow_map(branching, monkeypatch):
    import scvi

    import trajvi.model._fates as fates_module

    model, adata = branching
    real, seen = fates_module.map_from_endpoints, []

    def spy(endpoints, z_cells, **kwargs):  # records the choice, searches exactly (no compilation in this test)
        seen.append((kwargs["neighbor_search"], kwargs["random_state"]))
        return real(endpoints, z_cells, **{**kwargs, "neighbor_search": "exact"})

    monkeypatch.setattr(fates_module, "map_from_endpoints", spy)
    monkeypatch.setattr(scvi.settings, "seed", 7)
    trajvi.tl.transition_matrix(
        adata, model, "t0", target="t1", groupby="fate", method="flow", neighbor_search="approximate"
    )
    trajvi.tl.ancestors(
        adata, model, _cells(adata, "t1"), source="t0", method="flow", neighbor_search="exact", copy=True
    )
    model.push("t0", "t1", np.ones(int((adata.obs["stage"] == "t0").sum())), method="flow")
    assert seen == [("approximate", 7), ("exact", 7), ("auto", 7)]


def test_a_bad_growth_prior_is_refused_before_training(branching):
    model, adata = branching
    adata.obs["g"] = 1.0
    adata.obs.loc[adata.obs_names[:3], "g"] = -1.0
    maps = model.transport_maps_
    with pytest.raises(ValueError, match="growth_key='g': 3 cell"):
        model.train_trajectories(["t0", "t1", "t2"], growth_key="g", **TRAIN_KW)
    assert model.transport_maps_ is maps  # nothing was refit
    del adata.obs["g"]


def test_results_are_written_to_h5ad(branching, tmp_path):
    import anndata as ad

    model, adata = branching
    out = adata.copy()
    trajvi.tl.transition_matrix(out, model, "t0", target="t2", groupby="fate")
    trajvi.tl.fate_probabilities(out, model, "t0", groupby="fate")
    trajvi.tl.growth_rates(out, model, "t0")
    out.write_h5ad(tmp_path / "fates.h5ad")
    back = ad.read_h5ad(tmp_path / "fates.h5ad")
    np.testing.assert_allclose(
        np.asarray(back.obsm["trajvi_fates"], dtype=float), out.obsm["trajvi_fates"].to_numpy(), equal_nan=True
    )
    pd.testing.assert_frame_equal(
        pd.DataFrame(back.uns["trajvi_transitions"]["matrix"]), out.uns["trajvi_transitions"]["matrix"]
    )


def test_plots_draw(branching):
    import matplotlib.pyplot as plt

    model, adata = branching
    trajvi.tl.latent(adata, model)
    trajvi.tl.transition_matrix(adata, model, "t0", target="t2", groupby="fate")
    for kind in ("heatmap", "sankey"):
        fig = trajvi.pl.transitions(adata, kind=kind, return_fig=True)
        assert fig.axes and (kind == "heatmap" or len(fig.axes[0].patches) >= 3)
        plt.close(fig)
    trajvi.tl.fate_probabilities(adata, model, "t0", groupby="fate")
    fig = trajvi.pl.fate_probabilities(adata, basis="X_trajvi", return_fig=True)
    assert len(fig.axes) == 4  # three fates and the colour bar
    plt.close(fig)
    with pytest.raises(KeyError, match="no transition matrix"):
        trajvi.pl.transitions(adata, key="missing", return_fig=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fates_on_cuda_match_the_cpu_and_survive_save_load(branching, tmp_path):
    model, adata = branching
    model.save(tmp_path / "m", save_anndata=False)
    on_gpu = trajvi.TrajVI.load(tmp_path / "m", adata=adata, accelerator="gpu")
    assert on_gpu.module.device.type == "cuda"
    for method in METHODS:
        cpu = trajvi.tl.transition_matrix(adata, model, "t0", target="t2", groupby="fate", method=method)
        gpu = trajvi.tl.transition_matrix(adata, on_gpu, "t0", target="t2", groupby="fate", method=method)
        # couplings are the same arrays; the flow integrates in float32 on another device (nearest cells may swap)
        np.testing.assert_allclose(gpu.to_numpy(), cpu.to_numpy(), atol=0 if method == "coupling" else 0.05)
    pulled = on_gpu.pull("t0", "t2", np.ones(int((adata.obs["stage"] == "t2").sum())), method="flow")
    assert pulled.sum() == pytest.approx(1.0)
