"""Reward shapes: alpha -> 0 limit, the closed-form slope, and the overflow guard."""

import math

import pytest
import torch

from alphapo.losses import SHAPE_EXP_BOUND, preference_loss, shape_reward, shape_slope


def _pairs(dtype=torch.float64, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(4, n, generator=g, dtype=dtype) * 200
    lengths = torch.randint(1, 200, (2, n), generator=g).to(dtype)
    return logps[0], logps[1], lengths[0], lengths[1]


def test_alphapo_at_alpha_zero_is_simpo_exactly():
    args = _pairs()
    a = preference_loss("alphapo", *args, alpha=0.0, beta=2.0, gamma=0.3)
    s = preference_loss("simpo", *args, beta=2.0, gamma=0.3)
    assert torch.equal(a.losses, s.losses)
    assert torch.equal(a.chosen_rewards, s.chosen_rewards)
    assert torch.equal(a.rejected_rewards, s.rejected_rewards)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_alphapo_at_tiny_alpha_matches_simpo(dtype):
    args = _pairs(dtype)
    a = preference_loss("alphapo", *args, alpha=1e-8)
    s = preference_loss("simpo", *args)
    assert torch.allclose(a.losses, s.losses, atol=1e-6, rtol=0)
    assert torch.allclose(a.chosen_rewards, s.chosen_rewards, atol=1e-6, rtol=0)


@pytest.mark.parametrize("alpha", [-2.0, -0.5, 1e-8, 0.25, 1.0, 2.0])
def test_shape_derivative_is_p_to_the_minus_alpha(alpha):
    l = torch.linspace(-12, 3, 101, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(shape_reward(l, alpha).sum(), l)
    expected = torch.exp(-alpha * l.detach())
    # expm1's backward forms exp(z) as expm1(z) + 1, exact up to ~1e-16 absolute
    assert torch.allclose(grad, expected, rtol=1e-12, atol=1e-15)
    assert torch.allclose(shape_slope(l.detach(), alpha), expected, rtol=1e-12, atol=0)


def test_shape_values():
    l = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    # (1 - e^{-alpha l}) / alpha with alpha = 0.5
    expected = [(1 - math.exp(0.5)) / 0.5, 0.0, (1 - math.exp(-1.0)) / 0.5]
    assert shape_reward(l, 0.5).tolist() == pytest.approx(expected, rel=1e-14)
    assert torch.equal(shape_reward(l, 0.0), l)


def test_overflow_guard_is_continuous_and_finite():
    alpha = 2.0
    edge = -SHAPE_EXP_BOUND / alpha  # z = -alpha l = bound exactly
    l = torch.tensor([edge + 1e-9, edge, edge - 1e-9, -1e4], dtype=torch.float64, requires_grad=True)
    value = shape_reward(l, alpha)
    (grad,) = torch.autograd.grad(value.sum(), l)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    # continuous value and slope across the bound
    assert value[0].item() == pytest.approx(value[2].item(), rel=1e-6)
    assert grad[0].item() == pytest.approx(grad[2].item(), rel=1e-6)
    # beyond the bound the slope stays at exp(bound): still pushing, never vanishing
    assert grad[3].item() == pytest.approx(math.exp(SHAPE_EXP_BOUND))
