"""``save=``, ``show=`` and ``return_fig=`` of every public plot: scanpy's meanings and return values."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import trajvi
from trajvi._constants import ADATA_KEYS
from trajvi._constants import HISTORY_KEYS as H

if TYPE_CHECKING:
    from collections.abc import Callable


def _cells(n: int = 30) -> ad.AnnData:
    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((n, 3), dtype=np.float32))
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    adata.obsm[ADATA_KEYS.LATENT] = rng.normal(size=(n, 4))
    return adata


def _trends() -> ad.AnnData:
    adata = _cells()
    rows = [
        {"time": t, "gene": g, "group": grp, "mean": t, "std": 0.1, "q25": t - 0.1, "q75": t + 0.1, "n_cells": 5}
        for g in ("g1", "g2", "g3")
        for grp in ("a", "b")
        for t in np.linspace(0, 1, 5)
    ]
    adata.uns[ADATA_KEYS.TRENDS] = {"table": pd.DataFrame(rows), "params": {"scale": "log1p"}}
    return adata


def _trajectories() -> ad.AnnData:
    adata = _cells()
    paths = np.full((adata.n_obs, 4, 4), np.nan, dtype=np.float32)
    simulated = np.arange(adata.n_obs) < 10
    paths[simulated] = np.random.default_rng(1).normal(size=(10, 4, 4))
    adata.obsm[ADATA_KEYS.TRAJECTORIES] = paths
    adata.uns[ADATA_KEYS.TRAJECTORIES] = {
        "times": np.linspace(0, 1, 4),
        "simulated": simulated,
        "params": {"source": "a", "target": "b", "t_span": [0.0, 1.0], "latent_key": ADATA_KEYS.LATENT},
    }
    return adata


def _transitions() -> ad.AnnData:
    adata = _cells()
    table = pd.DataFrame([[0.7, 0.3], [0.2, 0.8]], index=["x", "y"], columns=["u", "v"])
    adata.uns[ADATA_KEYS.TRANSITIONS] = {"matrix": table, "params": {"source": "a", "target": "b"}}
    return adata


def _fates() -> ad.AnnData:
    adata = _cells()
    probs = np.random.default_rng(2).dirichlet([1.0, 1.0], size=adata.n_obs)
    probs[20:] = np.nan  # cells that are not of the source condition
    adata.obsm[ADATA_KEYS.FATES] = pd.DataFrame(probs, index=adata.obs_names, columns=["u", "v"])
    adata.uns[ADATA_KEYS.FATES] = {"fates": ["u", "v"]}
    return adata


def _model() -> Any:
    """Stands in for a trained model: the plot reads ``is_trained`` and ``history`` only."""
    frame = pd.DataFrame({"x": [3.0, 2.0, 1.0]}, index=pd.Index([0, 1, 2], name="epoch"))
    return SimpleNamespace(is_trained=True, history={H.RECONSTRUCTION + "_train": frame, H.KL + "_train": frame})


#: Each public plot, what it reads, and how many axes it draws into.
PLOTS: dict[str, tuple[Callable[[], Any], int]] = {
    "gene_trends": (_trends, 3),
    "trajectories": (_trajectories, 1),
    "transitions": (_transitions, 1),
    "fate_probabilities": (_fates, 2),
    "history": (_model, 2),
}


def test_every_public_plot_is_covered_here():
    assert set(PLOTS) == set(trajvi.pl.__all__)


@pytest.fixture
def figdir(tmp_path):
    import scanpy as sc

    names = ("figdir", "autosave", "autoshow", "plot_suffix", "file_format_figs")
    old = {name: getattr(sc.settings, name) for name in names}
    sc.settings.figdir = tmp_path
    yield tmp_path
    for name, value in old.items():
        setattr(sc.settings, name, value)
    plt.close("all")


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_show_false_returns_the_axes_and_return_fig_the_figure(name, figdir):
    make, n_axes = PLOTS[name]
    plot = getattr(trajvi.pl, name)
    axes = plot(make(), show=False)
    axes_list = [axes] if n_axes == 1 else axes
    if n_axes == 1:
        assert isinstance(axes, Axes)
    else:
        assert isinstance(axes, list) and len(axes) == n_axes and all(isinstance(a, Axes) for a in axes)
    assert all(a.has_data() or a.patches or a.images for a in axes_list), "the returned axes hold the drawing"
    assert plt.fignum_exists(axes_list[0].figure.number)  # left open for the caller to go on drawing
    fig = plot(make(), return_fig=True)
    assert isinstance(fig, Figure) and fig is not axes_list[0].figure
    assert plot(make(), show=True) is None
    assert not list(figdir.iterdir())  # nothing saved unless asked


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_save_writes_under_scanpys_figdir(name, figdir):
    import scanpy as sc

    make, _ = PLOTS[name]
    plot = getattr(trajvi.pl, name)
    assert plot(make(), save=True, show=True) is None
    assert (figdir / f"{name}.{sc.settings.file_format_figs}").stat().st_size > 0
    plot(make(), save="_small.pdf", show=False)
    assert (figdir / f"{name}_small.pdf").read_bytes().startswith(b"%PDF")
    sc.settings.autosave = True  # save=None follows scanpy's autosave
    plot(make(), save=None, show=False)
    assert len(list(figdir.iterdir())) == 2  # the first file again


def test_save_follows_scanpys_suffix_and_format(figdir):
    import scanpy as sc

    from trajvi.pl._utils import figure_path

    sc.settings.plot_suffix = "_run1"
    sc.settings.file_format_figs = "svg"
    assert figure_path("gene_trends", True) == figdir / "gene_trends_run1.svg"
    assert figure_path("gene_trends", "_klein") == figdir / "gene_trends_klein_run1.svg"
    assert figure_path("gene_trends", "_klein.png") == figdir / "gene_trends_klein_run1.png"
    with pytest.raises(TypeError, match="save must be"):
        trajvi.pl.gene_trends(_trends(), save=figdir / "x.png", show=False)
