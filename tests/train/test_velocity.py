"""The velocity fit: one set of settings and one step for the validation fits and the final fit."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from trajvi.diagnostics import NonFiniteTrainingError
from trajvi.module import TrajVIModule
from trajvi.train import PairDataModule, Segment, VelocityFitSettings, VelocityTrainingPlan, fit_velocity_field
from trajvi.transport import couple_sets


def _segments(seed: int = 0) -> list[Segment]:
    rng = np.random.default_rng(seed)
    zs = rng.normal(size=(300, 4)).astype(np.float32)
    zt = (zs + np.array([2.0, -1.0, 0.0, 0.5])).astype(np.float32)
    return [Segment("a->b", zs, zt, 0.0, 1.0, couple_sets(zs, zt, rng=seed))]


def _lightning_fit(module: TrajVIModule, data: PairDataModule, settings: VelocityFitSettings, epochs: int) -> None:
    plan = VelocityTrainingPlan(module, **settings.plan_kwargs())
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    module.velocity.train()
    trainer.fit(plan, data)


def test_the_plain_fit_and_the_lightning_fit_take_the_same_steps():
    """Validation fits (plain loop) and the final fit (Lightning) share optimizer, clipping, guards and step."""
    settings = VelocityFitSettings(residual_penalty=1.0, lr=3e-3, gradient_clip_val=0.5)
    segments = _segments()
    module = TrajVIModule(10, n_latent=4, n_hidden=8, n_hidden_velocity=16, n_layers_velocity=2)
    start = {k: v.clone() for k, v in module.velocity.state_dict().items()}

    torch.manual_seed(1)  # the pairs and their interpolation times come from the data's seed, not from here
    data = PairDataModule(segments, pairs_per_epoch=256, batch_size=64, seed=3)
    _lightning_fit(module, data, settings, epochs=3)
    lightning_params = {k: v.clone() for k, v in module.velocity.state_dict().items()}

    module.velocity.load_state_dict(start)
    torch.manual_seed(2)
    data = PairDataModule(segments, pairs_per_epoch=256, batch_size=64, seed=3)
    result = fit_velocity_field(module.velocity, data, max_epochs=3, settings=settings)
    assert result.n_steps == 12 and result.n_skipped == 0
    moved = 0.0
    for key, value in module.velocity.state_dict().items():
        torch.testing.assert_close(value, lightning_params[key], rtol=1e-5, atol=1e-6)
        moved += float((value - start[key]).abs().sum())
    assert moved > 0  # both trained: equal and moved
    assert not module.velocity.training


def test_the_plain_fit_learns_a_shift():
    segments = _segments()
    module = TrajVIModule(10, n_latent=4, n_hidden_velocity=32)
    torch.manual_seed(0)
    data = PairDataModule(segments, pairs_per_epoch=512, batch_size=64, seed=0)
    result = fit_velocity_field(
        module.velocity, data, max_epochs=30, settings=VelocityFitSettings(residual_penalty=1e4, lr=1e-2)
    )
    assert result.last_loss < 0.05
    with torch.no_grad():
        v = module.velocity(torch.zeros(5, 4), torch.tensor(0.5))
    np.testing.assert_allclose(v.numpy(), np.tile([2.0, -1.0, 0.0, 0.5], (5, 1)), atol=0.15)


def test_a_plain_fit_that_keeps_failing_stops_with_advice():
    module = TrajVIModule(10, n_latent=4)
    module.velocity.drift[0].weight.register_hook(lambda g: g * float("nan"))
    data = PairDataModule(_segments(), pairs_per_epoch=512, batch_size=16, seed=0)
    before = {k: v.clone() for k, v in module.velocity.state_dict().items()}
    with pytest.raises(NonFiniteTrainingError, match="consecutive velocity-field steps were skipped"):
        fit_velocity_field(module.velocity, data, max_epochs=1, settings=VelocityFitSettings(max_consecutive_skips=5))
    for key, value in module.velocity.state_dict().items():
        torch.testing.assert_close(value, before[key])  # every step was skipped


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"residual_penalty": -1.0}, "residual_penalty=-1.0"),
        ({"lr": 0.0}, "learning rate must be > 0"),
        ({"max_consecutive_skips": 0}, "max_consecutive_skips=0"),
    ],
)
def test_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VelocityFitSettings(**kwargs)


def test_the_plan_builds_its_optimizer_from_the_settings():
    module = TrajVIModule(10, n_latent=4)
    plan = VelocityTrainingPlan(module, residual_penalty=2.0, lr=5e-4, gradient_clip_val=3.0)
    assert plan.settings == VelocityFitSettings(residual_penalty=2.0, lr=5e-4, gradient_clip_val=3.0)
    (optimizer, params), *rest = plan.guarded_optimizers().values()
    assert not rest
    assert {id(p) for p in params} == {id(p) for p in module.velocity.parameters()}
    assert optimizer.defaults["lr"] == 5e-4 and optimizer.defaults["fused"]
