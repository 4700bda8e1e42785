"""The op composed with preference_loss: gradients equal the naive pipeline's."""

import pytest
import torch

from alphapo.losses import kto_loss, preference_loss
from alphapo.ops import sequence_logps
from tests.ops.reference import naive_sequence_logps

PAIRS, T, H, V = 3, 19, 16, 71


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2 * PAIRS, T, H, generator=g, dtype=torch.float64).requires_grad_()
    weight = (torch.randn(V, H, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    labels = torch.randint(0, V, (2 * PAIRS, T), generator=g)
    labels[:, :5] = -100  # prompt
    labels[1, -3:] = -100
    labels[PAIRS + 2, -7:] = -100
    ref = -torch.rand(2 * PAIRS, generator=g, dtype=torch.float64) * 40
    return hidden, weight, labels, ref


def pipeline(logps_fn, loss_name, **hp):
    hidden, weight, labels, ref = setup()
    logps, n = logps_fn(hidden, weight, labels)
    # rows [0, B) chosen, [B, 2B) rejected
    w, l, nw, nl = logps[:PAIRS], logps[PAIRS:], n[:PAIRS], n[PAIRS:]
    if loss_name == "kto_unpaired":
        loss = kto_loss(
            w,
            l,
            ref[:PAIRS],
            ref[PAIRS:],
            kl=0.3,
            desirable_lengths=nw,
            undesirable_lengths=nl,
            length_normalize=True,
            alpha=0.2,
        ).losses.mean()
    else:
        refs = (ref[:PAIRS], ref[PAIRS:]) if loss_name != "alphapo" else ()
        loss = preference_loss(loss_name, w, l, nw, nl, *refs, **hp).losses.mean()
    return loss, torch.autograd.grad(loss, (hidden, weight))


@pytest.mark.parametrize(
    ("name", "hp"),
    [
        ("alphapo", {"alpha": 0.25}),
        ("sigmoid", {"beta": 0.1}),
        ("sigmoid", {"alpha": 0.3, "nll_weight": 0.5}),
        ("kto", {"kl": 0.2}),
        ("kto_unpaired", {}),
    ],
)
def test_gradients_equal_naive_pipeline(name, hp):
    fused_loss, fused = pipeline(lambda h, w, y: sequence_logps(h, w, y, chunk_size=7), name, **hp)
    naive_loss, naive = pipeline(naive_sequence_logps, name, **hp)
    assert torch.allclose(fused_loss, naive_loss, atol=1e-12, rtol=1e-12)
    for a, b in zip(fused, naive, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10)
