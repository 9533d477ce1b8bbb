import itertools
import math

import pytest
import torch

from trajvi._types import INTEGRATORS
from trajvi.dynamics import integrate, simulate, time_grid
from trajvi.module import VelocityField


def rotation(z, t):
    return torch.stack([-z[:, 1], z[:, 0]], dim=1) * (1 + t)


def exact_rotation(z0, t):
    angle = t + t**2 / 2
    c, s = math.cos(angle), math.sin(angle)
    return torch.stack([c * z0[:, 0] - s * z0[:, 1], s * z0[:, 0] + c * z0[:, 1]], dim=1)


#: Largest error at t = 1 on a 50-step grid; an integrator added to trajvi._types must be given one here.
TOLERANCE = {"euler": 0.2, "rk4": 1e-5, "dopri5": 1e-4}


@pytest.mark.parametrize("method", INTEGRATORS)
def test_every_integrator_reaches_the_analytic_solution(method):
    z0 = torch.tensor([[1.0, 0.0], [0.5, -2.0]])
    truth = exact_rotation(z0, 1.0)
    error = (integrate(rotation, z0, time_grid(0, 1, 50), method=method)[-1] - truth).abs().max()
    assert error < TOLERANCE[method]


def test_euler_converges_at_first_order():
    z0 = torch.tensor([[1.0, 0.0]])
    truth = exact_rotation(z0, 1.0)
    errs = [float((integrate(rotation, z0, time_grid(0, 1, n))[-1] - truth).norm()) for n in (10, 20, 40, 80)]
    assert all(b < a for a, b in itertools.pairwise(errs))
    assert errs[-2] / errs[-1] == pytest.approx(2.0, rel=0.15)


def test_rk4_and_dopri5_agree_on_a_learned_style_field():
    torch.manual_seed(0)
    field = VelocityField(4, n_hidden=16, n_layers=2)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z0 = torch.randn(6, 4)
    a = simulate(field, z0, time_grid(0, 1, 40), method="rk4")
    b = simulate(field, z0, time_grid(0, 1, 40), method="dopri5")
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_batches_and_gradients():
    torch.manual_seed(0)
    field = VelocityField(3, n_hidden=8, n_layers=1)
    z0 = torch.randn(10, 3)
    whole = simulate(field, z0, time_grid(0, 1, 5), batch_size=None)
    parts = simulate(field, z0, time_grid(0, 1, 5), batch_size=3)
    torch.testing.assert_close(whole, parts)
    assert whole.shape == (6, 10, 3) and not whole.requires_grad
    path = simulate(field, z0, time_grid(0, 1, 5), with_grad=True)
    path[-1].sum().backward()
    assert field.drift[0].weight.grad is not None and field.drift[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("kwargs", "match"), [({"method": "heun"}, "method"), ({"batch_size": 0}, "batch_size")])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(rotation, torch.zeros(2, 2), time_grid(0, 1, 2), **kwargs)
    with pytest.raises(ValueError, match="n_steps"):
        time_grid(0, 1, 0)
    with pytest.raises(ValueError, match="different"):
        time_grid(1, 1, 3)
