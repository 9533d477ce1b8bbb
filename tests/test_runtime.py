import logging
import warnings

import pytest
import torch

import trajvi
from tests.conftest import TRAIN_KW
from trajvi._runtime import (
    fit_context,
    flush_denormal_enabled,
    flushed_denormals,
    quiet_fit,
    resolve_num_threads,
    torch_threads,
)
from trajvi._settings import DEFAULT_NUM_THREADS


@pytest.fixture
def thread_settings():
    import scvi

    saved = (trajvi.settings.num_threads, scvi.settings._num_threads, torch.get_num_threads())
    yield scvi.settings
    trajvi.settings.num_threads, scvi.settings._num_threads = saved[:2]
    torch.set_num_threads(saved[2])


def test_threads_follow_trajvi_then_scvi_then_the_default(thread_settings):
    trajvi.settings.num_threads = None
    thread_settings._num_threads = None
    assert resolve_num_threads() == DEFAULT_NUM_THREADS
    thread_settings.num_threads = 3
    assert resolve_num_threads() == 3
    trajvi.settings.num_threads = 2
    assert resolve_num_threads() == 2


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_num_threads_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match="num_threads"):
        trajvi.settings.num_threads = value


def test_the_callers_thread_count_is_restored(thread_settings):
    torch.set_num_threads(3)
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3
    trajvi.settings.num_threads = 2
    inside = []

    def failing_fit():
        inside.append(torch.get_num_threads())
        raise RuntimeError

    with pytest.raises(RuntimeError), fit_context():
        failing_fit()
    assert inside == [2]
    assert torch.get_num_threads() == 3


def test_quiet_fit_drops_lightnings_lines_and_leafspec_only(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_fit():
            rank_zero_info("GPU available: False, used: False")
            rank_zero_info("💡 Tip: For seamless cloud logging ... litlogger")
            rank_zero_info("something else")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
            rank_zero_warn("a real warning")
        rank_zero_info("GPU available: outside")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["something else", "GPU available: outside"]
    assert [str(w.message) for w in seen] == ["a real warning"]


@pytest.mark.usefixtures("seeded")
def test_a_fit_shows_no_third_party_noise(caplog, thread_settings):
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    caplog.set_level(logging.INFO, logger="lightning.fabric")
    torch.set_num_threads(2)
    adata = trajvi.data.synthetic(150, 20, seed=0)
    trajvi.TrajVI.setup_anndata(adata, "condition")
    model = trajvi.TrajVI(adata, n_latent=3)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.train(max_epochs=1, **TRAIN_KW)
        model.train_trajectories(["control", "stimulated"], max_epochs=3, residual_penalty=1.0, **TRAIN_KW)
    lightning = [r.getMessage() for r in caplog.records if r.name.startswith("lightning")]
    noise = ("GPU available", "TPU available", "Tip:", "litlogger", "litmodels", "Trainer.fit` stopped")
    assert not [m for m in lightning if any(n in m for n in noise)], lightning
    assert not [w for w in seen if "LeafSpec" in str(w.message)]
    assert torch.get_num_threads() == 2  # restored after each fit


SUBNORMAL = 1e-39  # below float32's smallest normal number (about 1.18e-38)


@pytest.fixture
def flush_setting():
    saved = (trajvi.settings.flush_denormal, flush_denormal_enabled())
    yield
    trajvi.settings.flush_denormal = saved[0]
    torch.set_flush_denormal(saved[1])


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero mode")
def test_fits_flush_subnormals_and_restore_the_callers_mode(flush_setting):
    assert not flush_denormal_enabled()
    assert torch.tensor([SUBNORMAL]).item() > 0.0
    with fit_context():
        assert flush_denormal_enabled()
        assert torch.tensor([SUBNORMAL]).item() == 0.0
    assert not flush_denormal_enabled()
    torch.set_flush_denormal(True)  # a caller that flushes keeps flushing, even when trajvi's setting is off
    trajvi.settings.flush_denormal = False
    with fit_context():
        assert flush_denormal_enabled()
    assert flush_denormal_enabled()
    torch.set_flush_denormal(False)
    inside = []

    def failing_fit():
        inside.append(flush_denormal_enabled())
        raise RuntimeError

    with pytest.raises(RuntimeError), fit_context():
        failing_fit()
    assert inside == [False]  # the setting off: the caller's mode, as it was
    assert not flush_denormal_enabled()


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero mode")
def test_an_adam_moment_of_a_vanished_gradient_never_turns_subnormal_in_a_fit(flush_setting):
    # the state behind a slow fit: Adam's second moment of a tiny gradient is subnormal, and each step on it
    # runs many times slower (benchmarks/subnormals.py); inside a fit it is zero instead
    def moments() -> torch.Tensor:
        p = torch.nn.Parameter(torch.ones(64))
        opt = torch.optim.Adam([p], fused=True)
        p.grad = torch.full((64,), 1e-20)
        opt.step()
        return opt.state[p]["exp_avg_sq"]

    outside = moments()
    assert ((outside > 0) & (outside < torch.finfo(torch.float32).tiny)).all()
    with flushed_denormals():
        assert (moments() == 0).all()


def test_a_fit_trains_with_subnormals_flushed(flush_setting):
    from lightning.pytorch.callbacks import Callback

    class Probe(Callback):
        def __init__(self) -> None:
            self.seen: list[bool] = []

        def on_train_batch_end(self, *args, **kwargs) -> None:
            self.seen.append(flush_denormal_enabled())

    expected = torch.set_flush_denormal(False)  # True where the CPU has the mode
    adata = trajvi.data.synthetic(150, 20, seed=0)
    trajvi.TrajVI.setup_anndata(adata, "condition")
    model = trajvi.TrajVI(adata, n_latent=3)
    probe = Probe()
    model.train(max_epochs=1, callbacks=[probe], **TRAIN_KW)
    assert probe.seen and set(probe.seen) == {expected}
    assert not flush_denormal_enabled()


@pytest.mark.parametrize("value", [1, None, "yes"])
def test_flush_denormal_must_be_a_bool(value):
    with pytest.raises(ValueError, match="flush_denormal"):
        trajvi.settings.flush_denormal = value
