"""gradcheck in float64 for every loss, and finiteness over extreme inputs."""

import itertools

import pytest
import torch

from alphapo.losses import available_losses, get_loss_spec, kto_loss, preference_loss

SHAPED = [0.0, 0.3, -0.7]


def _inputs(spec, dtype, n, seed, low=-8.0):
    g = torch.Generator().manual_seed(seed)
    logps = [(low * torch.rand(n, generator=g, dtype=dtype)).requires_grad_() for _ in range(4)]
    lengths = [torch.randint(1, 20, (n,), generator=g).to(dtype) for _ in range(2)]
    refs = logps[2:] if spec.needs_reference else []
    return logps[:2], lengths, refs


def _cases():
    for name in available_losses():
        spec = get_loss_spec(name)
        for alpha in SHAPED if spec.shapeable else [0.0]:
            yield name, alpha


@pytest.mark.parametrize(("name", "alpha"), list(_cases()))
def test_gradcheck(name, alpha):
    spec = get_loss_spec(name)
    (w, l), (lw, ll), refs = _inputs(spec, torch.float64, n=5, seed=1)

    # bco_pair's default shift is the batch's detached mean reward, which gradcheck's finite
    # differences would see move; an explicit shift makes the function the one autograd differentiates.
    extra = {"delta": 0.1} if name == "bco_pair" else {}

    def f(*tensors):
        out = preference_loss(name, tensors[0], tensors[1], lw, ll, *tensors[2:], alpha=alpha, nll_weight=0.5, **extra)
        return out.losses, out.chosen_rewards, out.rejected_rewards

    assert torch.autograd.gradcheck(f, (w, l, *refs))


def test_bco_default_shift_is_a_detached_batch_mean():
    spec = get_loss_spec("bco_pair")
    (w, l), (lw, ll), refs = _inputs(spec, torch.float64, n=4, seed=2)
    auto = preference_loss("bco_pair", w, l, lw, ll, *refs)
    shift = auto.delta[0].item()
    fixed = preference_loss("bco_pair", w, l, lw, ll, *refs, delta=shift)
    g_auto = torch.autograd.grad(auto.losses.sum(), (w, l))
    g_fixed = torch.autograd.grad(fixed.losses.sum(), (w, l))
    assert torch.allclose(auto.losses, fixed.losses)
    assert all(torch.allclose(a, b) for a, b in zip(g_auto, g_fixed, strict=True))


def test_gradcheck_kto_unpaired():
    g = torch.Generator().manual_seed(3)
    t = [(-10 * torch.rand(n, generator=g, dtype=torch.float64)).requires_grad_() for n in (3, 2, 3, 2)]

    def f(d, u, rd, ru):
        return kto_loss(d, u, rd, ru, kl=0.2, alpha=0.4, undesirable_weight=1.5).losses

    assert torch.autograd.gradcheck(f, tuple(t))


def _stability_cases():
    for name in available_losses():
        spec = get_loss_spec(name)
        alphas = [-2.0, -0.5, 0.0, 0.25, 2.0] if spec.shapeable else [0.0]
        yield from ((name, a, norm) for a, norm in itertools.product(alphas, [False, True]))


@pytest.mark.parametrize(("name", "alpha", "normalize"), list(_stability_cases()))
def test_no_inf_or_nan_on_extreme_inputs(name, alpha, normalize):
    spec = get_loss_spec(name)
    g = torch.Generator().manual_seed(7)
    n = 64
    # log-probs across [-1e4, 0] (log-uniform magnitudes, the ends included), lengths 1..4096
    mags = torch.cat([torch.tensor([1e4, 0.0, 1e-8, 1e4]), 10 ** (torch.rand(n - 4, generator=g) * 8 - 4)])
    logps = [(-mags[torch.randperm(n, generator=g)]).float().requires_grad_() for _ in range(4)]
    lengths = [
        torch.cat([torch.tensor([1.0, 4096.0]), torch.randint(1, 4097, (n - 2,), generator=g).float()])
        for _ in range(2)
    ]
    refs = logps[2:] if spec.needs_reference else []
    out = preference_loss(name, logps[0], logps[1], *lengths, *refs, alpha=alpha, length_normalize=normalize)
    total = out.losses.sum() + out.chosen_rewards.sum() + out.rejected_rewards.sum()
    grads = torch.autograd.grad(total, logps[:2] + refs)
    assert torch.isfinite(out.losses).all(), out.losses
    assert torch.isfinite(out.chosen_rewards).all() and torch.isfinite(out.rejected_rewards).all()
    for grad in grads:
        assert torch.isfinite(grad).all()


def test_low_precision_inputs_compute_in_float32():
    w, l = torch.tensor([-3.0], dtype=torch.bfloat16), torch.tensor([-5.0], dtype=torch.bfloat16)
    n = torch.tensor([2, 2])
    out = preference_loss("alphapo", w, l, n[:1], n[1:])
    assert out.losses.dtype == torch.float32
