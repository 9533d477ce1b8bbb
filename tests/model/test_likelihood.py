"""The scvi-tools methods TrajVI inherits or overrides, each run on a tiny trained model (docs/api.md lists them)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import scvi

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(200, 30, seed=1)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, **TRAIN_KW)
    folder = tmp_path_factory.mktemp("saved")
    model.save(folder, overwrite=True)
    return model, adata, folder


def _frame(n_rows, n_cols):
    return lambda r: isinstance(r, pd.DataFrame) and r.shape == (n_rows, n_cols) and np.isfinite(r.to_numpy()).all()


#: Every method docs/api.md lists as supported: a call on the tiny model and a check of its result.
SUPPORTED = {
    "get_latent_representation": (
        lambda m, a, f: m.get_latent_representation(give_mean=False),
        lambda r: r.shape == (200, 3),
    ),
    "get_elbo": (lambda m, a, f: m.get_elbo(), lambda r: np.isfinite(float(r))),
    "get_reconstruction_error": (
        lambda m, a, f: m.get_reconstruction_error(),
        lambda r: np.isfinite(float(r["reconstruction_loss"])),
    ),
    "get_aggregated_posterior": (
        lambda m, a, f: m.get_aggregated_posterior(indices=np.arange(50)),
        lambda r: r.sample().shape == (3,),
    ),
    "differential_abundance": (lambda m, a, f: m.differential_abundance(sample_key="batch"), lambda r: True),
    "get_marginal_ll": (lambda m, a, f: m.get_marginal_ll(n_mc_samples=10), lambda r: np.isfinite(r) and r < 0),
    "get_normalized_expression": (
        lambda m, a, f: m.get_normalized_expression(transform_batch="batch_0"),
        _frame(200, 30),
    ),
    "differential_expression": (
        lambda m, a, f: m.differential_expression(groupby="condition"),
        lambda r: len(r) == 60 and np.isfinite(r["bayes_factor"]).all(),
    ),
    "posterior_predictive_sample": (
        lambda m, a, f: m.posterior_predictive_sample(n_samples=1),
        lambda r: r.shape == (200, 30),
    ),
    "get_feature_correlation_matrix": (
        lambda m, a, f: m.get_feature_correlation_matrix(n_samples=2),
        lambda r: r.shape == (30, 30),
    ),
    "get_likelihood_parameters": (
        lambda m, a, f: m.get_likelihood_parameters(),
        lambda r: r["mean"].shape == r["dispersions"].shape == (200, 30) and (r["mean"] > 0).all(),
    ),
    "get_latent_library_size": (
        lambda m, a, f: m.get_latent_library_size(),
        lambda r: r.shape == (200, 1),
    ),
    "save": (lambda m, a, f: m.save(f / "again", overwrite=True), lambda r: True),
    "load": (lambda m, a, f: trajvi.TrajVI.load(f, adata=a), lambda r: r.is_trained),
    "to_device": (lambda m, a, f: m.to_device("cpu"), lambda r: True),
    "get_from_registry": (lambda m, a, f: m.get_from_registry(a, "X"), lambda r: r.shape == (200, 30)),
    "get_anndata_manager": (lambda m, a, f: m.get_anndata_manager(a), lambda r: r is not None),
    "get_state_registry": (lambda m, a, f: m.get_state_registry("batch"), lambda r: len(r.categorical_mapping) == 2),
    "get_setup_arg": (lambda m, a, f: m.get_setup_arg("batch_key"), lambda r: r == "batch"),
    "load_registry": (lambda m, a, f: trajvi.TrajVI.load_registry(f), lambda r: r["model_name"] == "TrajVI"),
}


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_supported_inherited_methods_run(tiny, name):
    model, adata, folder = tiny
    call, check = SUPPORTED[name]
    assert check(call(model, adata, folder)), name


def test_the_api_page_lists_exactly_the_tested_methods():
    text = API_PAGE.read_text(encoding="utf-8")
    table = text.split("(inherited-methods)=", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"`([a-z_]+)`", table)) - {"history", "is_trained", "adata", "adata_manager"}
    assert listed == set(SUPPORTED)


def test_likelihood_parameters_match_the_decoder(tiny):
    model, adata, _ = tiny
    idx = np.arange(10)
    params = model.get_likelihood_parameters(indices=idx, n_samples=4)
    assert params["mean"].shape == (4, 10, 30)
    np.testing.assert_allclose(params["dispersions"][0, 0], model.module.theta.detach().numpy(), rtol=1e-6)
    averaged = model.get_likelihood_parameters(indices=idx, n_samples=4, give_mean=True)
    assert averaged["mean"].shape == (10, 30)
    totals = np.asarray(adata.X[idx].sum(axis=1)).reshape(-1, 1)
    np.testing.assert_allclose(model.get_latent_library_size(indices=idx), totals, rtol=1e-5)


def test_marginal_ll_is_an_importance_sampled_bound_above_the_elbo(tiny):
    model, *_ = tiny
    torch.manual_seed(0)
    elbo = float(model.get_elbo())  # the ELBO per cell (negative; higher is better)
    per_cell = model.get_marginal_ll(n_mc_samples=200, n_mc_samples_per_pass=64, return_mean=False)
    assert per_cell.shape == (200,) and torch.isfinite(per_cell).all()
    assert float(per_cell.mean()) > elbo
    with pytest.raises(ValueError, match="n_mc_samples=0"):
        model.get_marginal_ll(n_mc_samples=0)
