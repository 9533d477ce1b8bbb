"""Guarded steps decided on the device, per-epoch sums, and the step without host reads (CUDA-graph ready)."""

import traceback

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import trajvi
from tests.conftest import TRAIN_KW
from trajvi._constants import HISTORY_KEYS as H
from trajvi.train import TrajVITrainingPlan, VelocityTrainingPlan
from trajvi.train._guards import EpochSums, StepGuard, skips_on_device

#: Operators that make the host wait for the device (a value read, or a shape that depends on values).
_HOST_READS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.is_nonzero.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.equal.default,
    torch.ops.aten.unique_consecutive.default,
    torch.ops.aten._unique2.default,
}


class HostReads(TorchDispatchMode):
    """Records every operator that would synchronise with a device, with where it was called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _HOST_READS:
            stack = "".join(traceback.format_stack(limit=6)[:-1])
            if "one_hot(" not in stack:  # torch checks the class range of one_hot on the CPU only, not on CUDA
                self.calls.append(f"{func}\n{stack}")
        return func(*args, **(kwargs or {}))


def _guard(param: torch.nn.Parameter, **kwargs) -> StepGuard:
    opt = torch.optim.Adam([param], lr=0.1, fused=True)
    options = {"clip": None, "rollback": True, "max_update_ratio": 1.0, **kwargs}
    return StepGuard("test", opt, [param], **options)


def _backward(param: torch.nn.Parameter, scale: float) -> torch.Tensor:
    param.grad = None
    loss = (param * scale).sum()
    loss.backward()
    return loss


def test_fused_adam_is_what_skips_on_the_device():
    p = torch.nn.Parameter(torch.ones(3))
    assert skips_on_device(torch.optim.Adam([p], fused=True))
    assert not skips_on_device(torch.optim.Adam([p]))
    assert not skips_on_device(torch.optim.SGD([p], lr=0.1))


def test_a_nonfinite_step_leaves_parameters_and_moments_untouched():
    p = torch.nn.Parameter(torch.ones(4))
    guard = _guard(p)
    loss = _backward(p, 1.0)
    norm, kept = guard.step(loss, guard.optimizer.step)
    assert bool(kept) and float(norm) == pytest.approx(2.0)
    state = {k: v.clone() for k, v in guard.optimizer.state[p].items()}
    before = p.detach().clone()
    loss = _backward(p, float("nan"))
    _, kept = guard.step(loss, guard.optimizer.step)
    assert not bool(kept)
    torch.testing.assert_close(p.detach(), before)
    for key, value in guard.optimizer.state[p].items():
        torch.testing.assert_close(value, state[key], msg=key)
    report = guard.read()
    assert (report.steps, report.nonfinite, report.undone, report.consecutive) == (2, 1, 0, 1)
    assert "not finite" in report.reasons("", 1.0)
    assert guard.read().steps == 0  # a read reports what happened since the previous one


def test_a_veto_skips_and_is_reported_as_such():
    p = torch.nn.Parameter(torch.ones(2))
    guard = _guard(p)
    before = p.detach().clone()
    _, kept = guard.step(_backward(p, 1.0), guard.optimizer.step, ok=torch.tensor(False))
    assert not bool(kept)
    torch.testing.assert_close(p.detach(), before)
    report = guard.read()
    assert (report.vetoed, report.nonfinite) == (1, 0)
    assert report.reasons("labels out of range", 1.0) == "labels out of range"


def test_a_step_that_blows_up_is_undone_and_runs_of_skips_are_counted():
    p = torch.nn.Parameter(torch.ones(2))
    guard = _guard(p)
    guard.optimizer.param_groups[0]["lr"] = 1e4  # one Adam step moves every entry by about lr
    for _ in range(3):
        _, kept = guard.step(_backward(p, 1.0), guard.optimizer.step)
        assert not bool(kept)
    torch.testing.assert_close(p.detach(), torch.ones(2))
    guard.optimizer.param_groups[0]["lr"] = 1e-3
    _, kept = guard.step(_backward(p, 1.0), guard.optimizer.step)
    assert bool(kept)
    report = guard.read()
    assert (report.undone, report.consecutive, report.max_consecutive) == (3, 0, 3)
    assert report.moved > 1e4 and report.size == pytest.approx(np.sqrt(2))
    assert "blew up" in report.reasons("", 1.0)


def test_an_optimizer_without_the_fused_kernel_decides_on_the_host():
    p = torch.nn.Parameter(torch.ones(2))
    guard = StepGuard("sgd", torch.optim.SGD([p], lr=0.1), [p], clip=1.0, rollback=True, max_update_ratio=1.0)
    assert not guard.on_device
    _, kept = guard.step(_backward(p, float("inf")), guard.optimizer.step)
    assert not bool(kept)
    torch.testing.assert_close(p.detach(), torch.ones(2))
    _, kept = guard.step(_backward(p, 1.0), guard.optimizer.step)
    assert bool(kept) and (p.detach() < 1).all()


def test_a_step_function_that_removes_found_inf_itself_is_fine():
    """A GradScaler (precision="16-mixed") sets and deletes the fused optimizer's found_inf around its step."""
    p = torch.nn.Parameter(torch.ones(2))
    guard = _guard(p)

    def scaler_like_step():
        guard.optimizer.found_inf = torch.tensor(0.0)
        guard.optimizer.step()
        del guard.optimizer.found_inf

    _, kept = guard.step(_backward(p, 1.0), scaler_like_step)
    assert bool(kept) and not hasattr(guard.optimizer, "found_inf")


def test_epoch_sums_weight_means_and_add_counts():
    sums = EpochSums()
    sums.add({"a": torch.tensor(1.0), "b": torch.tensor(10.0)}, 1.0)
    sums.add({"a": torch.tensor(4.0), "b": torch.tensor(20.0)}, 3.0)
    sums.add({"norm": torch.tensor(7.0)}, torch.tensor(False).float())  # a step that does not count
    sums.add_sum({"n": torch.tensor(True)})
    sums.add_sum({"n": torch.tensor(2.0)})
    assert sums.flush() == pytest.approx({"a": 13 / 4, "b": 70 / 4, "n": 3.0})
    assert sums.flush() == {"n": 0.0}  # reset; means without weight are left out
    sums.frozen = True
    with pytest.raises(RuntimeError, match="captured"):
        sums.add({"new": torch.tensor(1.0)})


@pytest.mark.parametrize("phase", ["vae", "flow"])
def test_the_training_step_reads_nothing_from_the_device(synthetic_adata, seeded, monkeypatch, phase):
    """What lets the step run ahead of the GPU and be captured as a CUDA graph, checked on the CPU."""
    probe = HostReads()
    plan_cls = TrajVITrainingPlan if phase == "vae" else VelocityTrainingPlan
    original = plan_cls._step
    steps = {"n": 0}

    def probed(self, batch, batch_idx, *, raw=False):
        steps["n"] += 1
        with probe:
            original(self, batch, batch_idx, raw=True)

    monkeypatch.setattr(plan_cls, "_step", probed)
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition", batch_key="batch")
    model = trajvi.TrajVI(synthetic_adata, n_latent=4, n_hidden=32, adversarial_weight=1.0)
    model.train(max_epochs=1, batch_size=100, **TRAIN_KW)
    if phase == "flow":
        model.train_trajectories(["control", "stimulated"], max_epochs=1, batch_size=64, **TRAIN_KW)
    assert steps["n"] > 0
    assert not probe.calls, probe.calls[0]
    assert np.isfinite(model.history["train_loss" if phase == "vae" else H.FLOW + "_train"].iloc[:, 0]).all()


def test_cuda_graph_asked_for_on_the_cpu_is_ignored_with_a_warning(synthetic_adata, seeded, trajvi_caplog):
    trajvi.TrajVI.setup_anndata(synthetic_adata, "condition")
    model = trajvi.TrajVI(synthetic_adata, n_latent=4, n_hidden=32)
    model.train(max_epochs=1, batch_size=100, plan_kwargs={"cuda_graph": True}, accelerator="cpu", **TRAIN_KW)
    assert "cuda_graph=True ignored: not training on a CUDA device" in trajvi_caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_captured_training_matches_the_eager_one_on_cuda(synthetic_adata, trajvi_caplog):
    import scvi

    losses = {}
    for graph in (False, True):
        scvi.settings.seed = 0
        adata = synthetic_adata.copy()
        trajvi.TrajVI.setup_anndata(adata, "condition")
        model = trajvi.TrajVI(adata, n_latent=4, n_hidden=32)
        model.train(max_epochs=5, batch_size=64, accelerator="gpu", plan_kwargs={"cuda_graph": graph}, **TRAIN_KW)
        losses[graph] = model.history["elbo_train"].iloc[:, 0].to_numpy()
    assert "captured as a CUDA graph" in trajvi_caplog.text
    assert np.isfinite(losses[True]).all()
    assert losses[True][-1] < 0.95 * losses[True][0]  # it learns (H100: 270.3 -> 246.3)
    # the replayed kernels and random draws are the eager ones: equal to 5 digits on an H100
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)
