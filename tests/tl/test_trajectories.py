import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import trajvi
from tests.conftest import TRAIN_KW


@pytest.fixture(scope="module")
def trained():
    import scvi

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(500, 60, seed=2)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=4, n_hidden=32)
    model.train(max_epochs=3, **TRAIN_KW)
    model.train_trajectories(["control", "stimulated"], residual_penalty=1.0, max_epochs=3, **TRAIN_KW)
    return adata, model


def test_trajectories_keys_and_copy(trained):
    adata, model = trained
    before = set(adata.obsm)
    out = trajvi.tl.trajectories(adata, model, source="control", target="stimulated", n_steps=8, copy=True)
    assert set(adata.obsm) == before
    paths = out.obsm["trajvi"]
    assert paths.shape == (adata.n_obs, 9, 4)
    simulated = out.uns["trajvi"]["simulated"]
    assert simulated.sum() == (adata.obs["condition"] == "control").sum()
    assert np.isnan(paths[~simulated]).all() and np.isfinite(paths[simulated]).all()
    np.testing.assert_allclose(out.uns["trajvi"]["times"], np.linspace(0, 1, 9))
    assert out.uns["trajvi"]["params"]["source"] == "control"
    assert "X_trajvi" in out.obsm  # the latent was missing, so it was written too
    assert trajvi.tl.trajectories(adata, model, n_steps=4, key_added="paths") is None
    assert adata.obsm["paths"].shape[1] == 5


def test_gene_trends_frame(trained):
    adata, model = trained
    genes = list(adata.var_names[:2])
    df = trajvi.tl.gene_trends(adata, model, genes, groupby="cell_type", n_steps=6)
    assert isinstance(df, pd.DataFrame)
    assert set(df["gene"]) == set(genes)
    assert set(df["group"]) == set(adata.obs.loc[adata.obs["condition"] == "control", "cell_type"].astype(str))
    assert len(df) == 7 * 2 * df["group"].nunique()
    assert (df["q25"] <= df["mean"] + 1e-6).all() or (df["q75"] >= df["q25"]).all()
    with pytest.raises(KeyError, match="genes not in"):
        trajvi.tl.gene_trends(adata, model, ["not_a_gene"])
    with pytest.raises(KeyError, match="groupby"):
        trajvi.tl.gene_trends(adata, model, genes, groupby="nope")
    assert "trends" not in adata.uns  # stored only when asked


def test_gene_trends_stored_under_key_added_survive_h5ad(trained, tmp_path):
    import anndata as ad

    adata, model = trained
    genes = list(adata.var_names[:2])
    df = trajvi.tl.gene_trends(adata, model, genes, n_steps=4, key_added="trends")
    pd.testing.assert_frame_equal(adata.uns["trends"]["table"], df)
    assert adata.uns["trends"]["params"]["genes"] == genes
    copy = adata.copy()
    copy.uns = {"trends": adata.uns["trends"]}
    copy.obsm.clear()  # the latent paths are 3-D arrays; only the table is under test here
    copy.write_h5ad(tmp_path / "trends.h5ad")
    back = ad.read_h5ad(tmp_path / "trends.h5ad").uns["trends"]["table"]
    np.testing.assert_allclose(back["mean"].to_numpy(), df["mean"].to_numpy())
    del adata.uns["trends"]


def test_plots(trained):
    import scanpy as sc

    adata, model = trained
    adata = adata.copy()
    trajvi.tl.trajectories(adata, model, n_steps=6)
    with pytest.raises(KeyError, match="X_umap"):
        trajvi.pl.trajectories(adata, show=False)
    sc.pp.neighbors(adata, use_rep="X_trajvi", random_state=0)
    sc.tl.umap(adata, random_state=0)
    fig = trajvi.pl.trajectories(adata, color="condition", n_paths=10, return_fig=True)
    assert len(fig.axes[0].lines) >= 10
    with pytest.raises(KeyError, match=r"tl\.trajectories"):
        trajvi.pl.trajectories(adata, key="missing", show=False)
    df = trajvi.tl.gene_trends(adata, model, list(adata.var_names[:3]), n_steps=4)
    fig = trajvi.pl.gene_trends(df, return_fig=True)
    assert sum(ax.get_visible() for ax in fig.axes) == 3
    with pytest.raises(ValueError, match="columns"):
        trajvi.pl.gene_trends(df.drop(columns=["q25"]), show=False)
    hist = trajvi.pl.history(model, return_fig=True)
    assert "phase 2: flow matching" in [ax.get_title() for ax in hist.axes]
    plt.close("all")
