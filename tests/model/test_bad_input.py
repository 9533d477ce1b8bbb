"""Bad input: a clear error that names the problem and the fix, and the AnnData left as it was."""

import numpy as np
import pytest

import trajvi
from tests.conftest import TRAIN_KW


def _snapshot(adata):
    return (
        adata.X.copy(),
        adata.obs.copy(),
        set(adata.uns),
        set(adata.obsm),
        set(adata.layers),
        adata.var_names.copy(),
    )


def _assert_unchanged(adata, snap):
    x, obs, uns, obsm, layers, var_names = snap
    assert (x != adata.X).nnz == 0
    assert adata.obs.equals(obs)
    assert set(adata.uns) == uns and set(adata.obsm) == obsm and set(adata.layers) == layers
    assert adata.var_names.equals(var_names)


def _stimulated(adata):
    return np.flatnonzero((adata.obs["condition"] == "stimulated").to_numpy())[:3]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    import scvi

    scvi.settings.seed = 0
    adata = trajvi.data.synthetic(400, 40, seed=1)
    trajvi.TrajVI.setup_anndata(adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN_KW)
    model.train_trajectories(
        ["control", "stimulated"], couple_within="cell_type", residual_penalty=1.0, max_epochs=1, **TRAIN_KW
    )
    folder = tmp_path_factory.mktemp("model")
    model.save(folder, overwrite=True)
    return adata, model, folder


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, a: m.predict(source="treated", target="stimulated"), ValueError, r"source='treated'.*valid values"),
        (lambda m, a: m.predict(source="control", target="IFN"), ValueError, r"target='IFN'.*valid values"),
        (lambda m, a: m.simulate_trajectory(method="heun"), ValueError, "method='heun'"),
        (lambda m, a: m.simulate_trajectory(genes=["nope"]), KeyError, "genes not in"),
        (lambda m, a: m.simulate_trajectory(target="stimulated", t_span=(0, 1)), ValueError, "not both"),
        (lambda m, a: m.simulate_trajectory(t_span=(0.5, 0.5)), ValueError, "starts and ends"),
        (lambda m, a: m.simulate_trajectory(indices=[10_000]), ValueError, r"outside \[0, 400\)"),
        (lambda m, a: m.simulate_trajectory(indices=[-1]), ValueError, "negative positions are not accepted"),
        (lambda m, a: m.simulate_trajectory(indices=np.ones(5, bool)), ValueError, "mask of length 5.*400 cells"),
        (lambda m, a: m.simulate_trajectory(indices=[0, 0]), ValueError, "repeats cells"),
        (lambda m, a: m.simulate_trajectory(indices=list(a.obs_names[:2])), ValueError, "get_indexer"),
        (lambda m, a: m.simulate_trajectory(indices=_stimulated(a)), ValueError, "not of the source condition"),
        (
            lambda m, a: m.predict(source="control", target="stimulated", indices=_stimulated(a)),
            ValueError,
            r"3 cell\(s\) that are not of the source condition 'control' \(they are of \['stimulated'\]\)",
        ),
        (lambda m, a: m.predict(source="control", indices=[400]), ValueError, "outside"),
        (lambda m, a: m.simulate_trajectory(t_span=(0, float("nan"))), ValueError, "finite"),
        (lambda m, a: m.predict(source="control", t_span=(0, float("inf"))), ValueError, "finite"),
        (lambda m, a: m.simulate_trajectory(t_span=(0, 1, 2)), ValueError, "two numbers"),
        (lambda m, a: trajvi.tl.trajectories(a, m, t_span=(float("nan"), 1)), ValueError, "finite"),
        (
            lambda m, a: m.train_trajectories(["control", "stimulated"], indices=[-3, 5]),
            ValueError,
            "negative positions",
        ),
        (
            lambda m, a: m.train_trajectories(["control", "stimulated"], indices=np.ones(399, bool)),
            ValueError,
            "mask of length 399",
        ),
        (lambda m, a: m.predict(source="control", target="stimulated", n_samples=0), ValueError, "n_samples"),
        (lambda m, a: m.predict(source="control", target="stimulated", indices=[]), ValueError, "no cells"),
        (
            lambda m, a: m.train_trajectories(["control", "stimulated"], group_weighting="size"),
            ValueError,
            "group_weighting",
        ),
        (
            lambda m, a: m.train_trajectories(["control", "stimulated"], couple_within="condition"),
            ValueError,
            "No group has cells in both conditions",
        ),
        (lambda m, a: trajvi.tl.gene_trends(a, m, ["gene_0"], scale="log2"), ValueError, "scale"),
        (lambda m, a: m.train(max_epochs=1, precision="16-mixed"), ValueError, r"float16.*'bf16-mixed'"),
        (
            lambda m, a: m.train_trajectories(["control", "stimulated"], precision=16),
            ValueError,
            r"precision=16 \(float16\) is not supported",
        ),
    ],
)
def test_errors_name_the_problem_and_leave_adata_alone(fitted, call, error, match):
    adata, model, _ = fitted
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        call(model, adata)
    _assert_unchanged(adata, snap)


def test_a_condition_without_cells_is_named(fitted):
    adata, model, _ = fitted
    with pytest.raises(ValueError, match="'stimulated' has no cells"):
        model.train_trajectories(
            ["control", "stimulated"],
            indices=np.flatnonzero(adata.obs["condition"] == "control"),
            max_epochs=1,
            **TRAIN_KW,
        )


def test_load_onto_other_genes_or_categories(fitted):
    adata, _, folder = fitted
    renamed = adata.copy()
    renamed.var_names = [f"other_{i}" for i in range(adata.n_vars)]
    with pytest.raises(ValueError, match="40 of the model's genes missing"):
        trajvi.TrajVI.load(folder, adata=renamed)
    with pytest.raises(ValueError, match="same genes in another order"):
        trajvi.TrajVI.load(folder, adata=adata[:, adata.var_names[::-1]].copy())
    fewer = adata[:, :30].copy()
    snap = _snapshot(fewer)
    with pytest.raises(ValueError, match="adata has 30 genes and the model was trained on 40"):
        trajvi.TrajVI.load(folder, adata=fewer)
    _assert_unchanged(fewer, snap)
    relabelled = adata.copy()
    relabelled.obs["condition"] = relabelled.obs["condition"].cat.rename_categories(["ctrl", "stim"])
    with pytest.raises(ValueError, match=r"categories \['ctrl', 'stim'\] that the model was not trained on"):
        trajvi.TrajVI.load(folder, adata=relabelled)


def test_getters_on_an_incompatible_anndata(fitted):
    adata, model, _ = fitted
    other = trajvi.data.synthetic(50, 40, seed=5)
    other.obs["batch"] = other.obs["batch"].cat.rename_categories(["b0", "b1"])
    snap = _snapshot(other)
    with pytest.raises(ValueError, match="not trained on"):
        model.get_latent_representation(other)
    _assert_unchanged(other, snap)
    with pytest.raises(ValueError, match="genes"):
        trajvi.tl.latent(adata[:, :20].copy(), model)


def test_corrupt_missing_and_foreign_model_folders(fitted, tmp_path):
    adata, _, _ = fitted
    with pytest.raises(FileNotFoundError, match="not a saved trajvi model folder"):
        trajvi.TrajVI.load(tmp_path / "empty", adata=adata)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="could not be read as a saved model"):
        trajvi.TrajVI.load(broken, adata=adata)
    import scvi

    plain = adata.copy()
    scvi.model.SCVI.setup_anndata(plain)
    other = scvi.model.SCVI(plain, n_latent=2, n_hidden=8)
    other.train(max_epochs=1, **TRAIN_KW)
    other.save(tmp_path / "scvi", overwrite=True)
    with pytest.raises(ValueError, match="holds a SCVI model, not a trajvi model"):
        trajvi.TrajVI.load(tmp_path / "scvi", adata=adata)
