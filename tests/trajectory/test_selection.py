import numpy as np
import pytest
import torch

from trajvi.module import VelocityField
from trajvi.train import VelocityFitSettings
from trajvi.trajectory import CouplingConfig, PathSet, build_all_segments, build_folds, select_residual_penalty


def _folds(z, labels, groups):
    paths = PathSet.build({"stim": ["ctrl", "stim"]}, {"stim": [0.0, 1.0]})
    keep = np.ones(len(z), bool)
    segments = build_all_segments(paths, z, labels, groups, keep, CouplingConfig())
    return build_folds(paths, segments, z, labels, groups, keep, CouplingConfig())


def _shifted_groups(seed: int = 0):
    """Three groups, each moved by the same shift from 'ctrl' to 'stim': a pure shift is the right field."""
    rng = np.random.default_rng(seed)
    n = 60
    labels = np.tile(np.repeat(["ctrl", "stim"], n), 3)
    groups = np.repeat(["A", "B", "C"], 2 * n)
    centers = np.repeat(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), 2 * n, axis=0)
    z = centers + rng.normal(size=(len(labels), 2)) * 0.3 + (labels == "stim")[:, None] * np.array([1.5, -1.0])
    return z.astype(np.float32), labels, groups


def test_selection_scores_every_fold_and_prefers_the_simpler_field_on_a_shift():
    z, labels, groups = _shifted_groups()
    folds = _folds(z, labels, groups)
    template = VelocityField(2, n_hidden=32, n_layers=2)
    template.set_components(1)
    before = {k: v.clone() for k, v in template.state_dict().items()}
    best, table = select_residual_penalty(
        template,
        folds,
        settings=VelocityFitSettings(lr=1e-2),
        penalties=(0.0, 1e4),
        n_epochs=15,
        pairs_per_epoch=256,
        batch_size=64,
        seed=0,
    )
    assert set(table) == {"0.0", "10000.0"}
    assert set(table["0.0"]) == {"A", "B", "C", "mean"}
    assert table["10000.0"]["mean"] < 0.05  # the shift carries every left-out group to its cells
    assert best == 1e4 or table["0.0"]["mean"] < table["10000.0"]["mean"]
    for key, value in template.state_dict().items():  # the template itself is not trained
        np.testing.assert_array_equal(value.numpy(), before[key].numpy())


def test_selection_is_reproducible():
    z, labels, groups = _shifted_groups(1)
    folds = _folds(z, labels, groups)
    kwargs = {
        "settings": VelocityFitSettings(),
        "penalties": (1.0,),
        "n_epochs": 2,
        "pairs_per_epoch": 128,
        "batch_size": 64,
        "seed": 3,
    }
    template = VelocityField(2, n_hidden=16, n_layers=1)
    template.set_components(1)
    assert select_residual_penalty(template, folds, **kwargs) == select_residual_penalty(template, folds, **kwargs)
    with pytest.raises(ValueError, match="no validation folds"):
        select_residual_penalty(template, [], **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_selection_runs_on_the_field_s_gpu():
    """The validation fits run where the model's field is (the pairs are moved to it), as after a GPU phase 1."""
    z, labels, groups = _shifted_groups(2)
    folds = _folds(z, labels, groups)
    template = VelocityField(2, n_hidden=16, n_layers=1).cuda()
    template.set_components(1)
    best, table = select_residual_penalty(
        template,
        folds,
        settings=VelocityFitSettings(lr=1e-2),
        penalties=(1.0, 1e4),
        n_epochs=5,
        pairs_per_epoch=256,
        batch_size=64,
        seed=0,
    )
    assert best in (1.0, 1e4) and np.isfinite(table["1.0"]["mean"])
