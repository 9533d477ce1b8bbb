import matplotlib.pyplot as plt
import pytest

import trajvi
from tests.conftest import TRAIN_KW


def test_history_figure(synthetic_adata, seeded):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=3, n_hidden=16)
    with pytest.raises(RuntimeError, match="train"):
        trajvi.pl.history(model, show=False)
    model.train(max_epochs=2, **TRAIN_KW)
    fig = trajvi.pl.history(model, return_fig=True)
    titles = [ax.get_title() for ax in fig.axes]
    assert "reconstruction (per cell)" in titles and "gradient norm" in titles
    assert all(ax.lines for ax in fig.axes)
    _, axs = plt.subplots(1, 1)
    with pytest.raises(ValueError, match="axes"):
        trajvi.pl.history(model, axs=[axs], show=False)
    plt.close("all")
