import torch

from trajvi.module import VelocityField, flow_matching_loss


def test_starts_as_a_pure_shift_and_resets():
    torch.manual_seed(0)
    field = VelocityField(5, n_hidden=16, n_layers=2)
    z = torch.randn(7, 5)
    _drift, residual = field.components(z, torch.tensor(0.3))
    assert torch.count_nonzero(residual) == 0
    v = field(z, torch.tensor(0.3))
    torch.testing.assert_close(v, v[:1].expand_as(v))  # every cell moves by the same shift
    with torch.no_grad():
        field.residual[-1].weight.add_(1.0)
    field.reset_parameters()
    assert torch.count_nonzero(field.residual[-1].weight) == 0


def test_time_range_maps_to_unit_interval():
    field = VelocityField(2, n_frequencies=2)
    field.set_time_range(2.0, 7.0)
    feats = field.time_features(torch.tensor([2.0, 7.0]), 2)
    torch.testing.assert_close(feats[:, 0], torch.tensor([0.0, 1.0]))


def test_flow_matching_recovers_a_constant_shift():
    torch.manual_seed(0)
    field = VelocityField(2, n_hidden=16, n_layers=2)
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    shift = torch.tensor([1.5, -0.5])
    for _ in range(300):
        z0 = torch.randn(128, 2)
        loss, _fm, _res = flow_matching_loss(
            field, z0, z0 + shift, torch.zeros(128), torch.full((128,), 2.0), residual_penalty=1.0
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    v = field(torch.randn(20, 2), torch.tensor(1.0))
    torch.testing.assert_close(v, (shift / 2).expand_as(v), atol=0.05, rtol=0)


def test_residual_penalty_shrinks_the_state_dependent_part():
    torch.manual_seed(0)
    sizes = {}
    for penalty in (0.0, 100.0):
        field = VelocityField(2, n_hidden=16, n_layers=2)
        opt = torch.optim.Adam(field.parameters(), lr=1e-2)
        for _ in range(200):
            z0 = torch.randn(128, 2)
            loss, _, res = flow_matching_loss(
                field, z0, 2 * z0, torch.zeros(128), torch.ones(128), residual_penalty=penalty
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        sizes[penalty] = float(res)
    assert sizes[100.0] < 0.05 * sizes[0.0]
