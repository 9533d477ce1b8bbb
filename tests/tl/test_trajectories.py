import matplotlib.pyplot as plt
import numpy as np
import pytest

import trajvi


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
    trajvi.tl.gene_trends(adata, model, list(adata.var_names[:3]), n_steps=4)
    fig = trajvi.pl.gene_trends(adata, return_fig=True)
    assert sum(ax.get_visible() for ax in fig.axes) == 3
    hist = trajvi.pl.history(model, return_fig=True)
    assert "phase 2: flow matching" in [ax.get_title() for ax in hist.axes]
    plt.close("all")
