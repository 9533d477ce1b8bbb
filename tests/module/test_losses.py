import math

import pytest
import torch

from trajvi.module import (
    confusion_loss,
    gaussian_kl,
    labels_in_range,
    labels_to_indices,
    negative_binomial_log_likelihood,
    repair_nonfinite,
)


def _normal_inputs(n=8, g=5):
    torch.manual_seed(0)
    x = torch.poisson(torch.full((n, g), 3.0))
    mu = torch.rand(n, g) * 5 + 0.1
    theta = torch.rand(g) * 10 + 0.5
    return x, mu, theta


def test_nb_matches_torch_distribution_on_normal_input():
    x, mu, theta = _normal_inputs()
    ll, repair = negative_binomial_log_likelihood(x, mu, theta)
    ref = torch.distributions.NegativeBinomial(total_count=theta, logits=torch.log(mu) - torch.log(theta)).log_prob(x)
    torch.testing.assert_close(ll, ref, rtol=1e-4, atol=1e-4)
    assert int(repair.n_repaired) == 0


@pytest.mark.parametrize(
    "case",
    ["counts_1e6", "mu_1e4_tiny_theta", "zero_dispersion", "zero_mu_with_counts", "huge_everything"],
)
def test_nb_stays_finite_on_extreme_input(case):
    x, mu, theta = _normal_inputs()
    if case == "counts_1e6":
        x = torch.full_like(x, 1e6)
    elif case == "mu_1e4_tiny_theta":
        mu, theta = torch.full_like(mu, 1e4), torch.full_like(theta, 1e-12)
    elif case == "zero_dispersion":
        theta = torch.zeros_like(theta)
    elif case == "zero_mu_with_counts":
        mu = torch.zeros_like(mu)
    else:
        x, mu, theta = torch.full_like(x, 1e9), torch.full_like(mu, 1e30), torch.full_like(theta, 1e30)
    ll, repair = negative_binomial_log_likelihood(x, mu, theta)
    assert torch.isfinite(ll).all()
    assert int(repair.n_repaired) == 0  # clamping, not repair, handles these


def test_nb_repairs_exactly_the_nan_entries():
    x, mu, theta = _normal_inputs()
    mu = mu.clone()
    mu[1, 2] = float("nan")
    mu[4, 0] = float("nan")
    ll, repair = negative_binomial_log_likelihood(x, mu, theta)
    assert int(repair.n_repaired) == 2
    assert ll[1, 2] == 0 and ll[4, 0] == 0
    assert torch.isfinite(ll).all()
    lo, hi = repair.finite_range()
    assert lo < hi <= 0
    assert "2 non-finite entries of the reconstruction term" in repair.describe()


def test_kl_is_exact_and_finite_on_extremes():
    mean = torch.tensor([[0.0, 1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    kl, repair = gaussian_kl(mean, logvar)
    expected = 0.5 * (1 + 0 - 1 - 0) + 0.5 * (2 + 1 - 1 - math.log(2))
    assert kl.item() == pytest.approx(expected, rel=1e-6)
    assert int(repair.n_repaired) == 0
    big, _ = gaussian_kl(torch.full((3, 4), 1e4), torch.full((3, 4), 1e3))
    small, _ = gaussian_kl(torch.zeros(3, 4), torch.full((3, 4), -1e3))
    assert torch.isfinite(big).all() and torch.isfinite(small).all()
    # the clamps hold: log-variance at most 20, mean within [-100, 100]
    assert big[0].item() == pytest.approx(0.5 * 4 * (math.exp(20) + 1e4 - 1 - 20), rel=1e-5)


def test_kl_repair_counts_nan_cells():
    mean = torch.zeros(5, 3)
    mean[2, 1] = float("nan")
    kl, repair = gaussian_kl(mean, torch.zeros(5, 3))
    assert int(repair.n_repaired) == 1
    assert kl[2] == 0


def test_kl_works_in_float32_under_bf16_inputs():
    kl, _ = gaussian_kl(torch.ones(4, 3, dtype=torch.bfloat16), torch.zeros(4, 3, dtype=torch.bfloat16))
    assert kl.dtype == torch.float32


def test_repair_nonfinite_counts():
    values = torch.tensor([1.0, float("inf"), float("-inf"), float("nan"), -2.0])
    repaired, record = repair_nonfinite(values, "demo")
    assert repaired.tolist() == [1.0, 0.0, 0.0, 0.0, -2.0]
    assert int(record.n_repaired) == 3
    assert record.finite_range() == (-2.0, 1.0)


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([0, 2, 1]),
        torch.tensor([[0.0], [2.0], [1.0]]),
        torch.nn.functional.one_hot(torch.tensor([0, 2, 1]), 3).float(),
    ],
    ids=["(N,)", "(N,1) float", "one-hot"],
)
def test_labels_three_forms(labels):
    assert labels_to_indices(labels, 3).tolist() == [0, 2, 1]


def test_labels_out_of_range_and_bad_shape():
    assert bool(labels_in_range(torch.tensor([0, 1]), 2))
    assert not bool(labels_in_range(torch.tensor([0, 2]), 2))
    assert not bool(labels_in_range(labels_to_indices(torch.tensor([[float("nan")]]), 2), 2))
    with pytest.raises(ValueError, match="one-hot"):
        labels_to_indices(torch.zeros(3, 2, 2), 2)


def test_confusion_loss_bounded_and_zero_at_chance():
    assert confusion_loss(torch.zeros(10, 3)).item() == pytest.approx(0.0, abs=1e-6)
    confident = torch.tensor([[1e4, -1e4, -1e4]])
    value = confusion_loss(confident).item()
    assert 0 < value <= -math.log(1e-3) + 1e-6
    logits = torch.tensor([[5.0, -5.0]], requires_grad=True)
    confusion_loss(logits).backward()
    assert logits.grad.abs().sum() > 0  # does not saturate when the discriminator is confident


def test_repaired_entries_pass_a_zero_gradient_not_nan():
    x, mu, theta = _normal_inputs()
    mu = mu.clone().requires_grad_(True)
    theta = theta.clone().requires_grad_(True)
    poisoned = mu.clone()
    poisoned[0, 0] = float("nan")
    ll, repair = negative_binomial_log_likelihood(x, poisoned, theta)
    ll.sum().backward()
    assert int(repair.n_repaired) == 1
    assert torch.isfinite(theta.grad).all() and torch.isfinite(mu.grad).all()
    mean = torch.zeros(3, 2, requires_grad=True)
    poisoned_mean = mean.clone()
    poisoned_mean[1, 0] = float("nan")
    kl, record = gaussian_kl(poisoned_mean, torch.zeros(3, 2))
    kl.sum().backward()
    assert int(record.n_repaired) == 1 and torch.isfinite(mean.grad).all()
