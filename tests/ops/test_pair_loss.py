"""The pair schedule (gradients formed in the forward pass) against two-pass and the naive twin,
for every registered paired loss; the schedule chooser; routing of losses that couple pairs."""

import pytest
import torch

import alphapo.ops.pair_loss as pair_module
from alphapo.errors import InputError
from alphapo.losses import available_losses, get_loss_spec, preference_loss
from alphapo.ops import choose_schedule, fused_pair_loss, fused_preference_loss
from tests.ops.reference import naive_sequence_logps

P, T, H, V = 4, 19, 13, 37


def make(dtype=torch.float64, bias=True, seed=0, pairs=P):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2 * pairs, T, H, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_()
    bias_t = (torch.randn(V, generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, V, (2 * pairs, T), generator=g)
    labels[:, :4] = -100  # the prompt
    labels[1, 9] = -100  # a gap of one token
    labels[2, 6:11] = -100  # a longer gap
    labels[pairs, -3:] = -100  # padding at the end of a rejected row
    # a reference near the policy (log-ratios of a few nats), as after SFT
    start, _ = naive_sequence_logps(hidden.detach().double(), weight.detach().double(), labels)
    refs = start.view(2, pairs) + torch.randn(2, pairs, generator=g, dtype=torch.float64) * 2
    return hidden, weight, bias_t, labels, refs


def options(name, alpha):
    spec = get_loss_spec(name)
    opts = {}
    if alpha and spec.shapeable:
        # unnormalised log-probs of a whole completion (tens of nats) take a smaller alpha
        opts["alpha"] = alpha if spec.needs_reference or spec.length_normalize else alpha / 20
    if spec.couples_pairs({}):
        opts[spec.batch_statistic] = 0.3  # separable with an explicit statistic
    return opts


def naive(name, hidden, weight, bias, labels, refs, opts):
    """The loss (batch mean) on the naive twin's log-probs and its gradients."""
    logps, n = naive_sequence_logps(hidden, weight, labels, bias)
    pairs = hidden.shape[0] // 2
    ref = (refs[0], refs[1]) if get_loss_spec(name).needs_reference else ()
    loss = preference_loss(name, logps[:pairs], logps[pairs:], n[:pairs], n[pairs:], *ref, **opts).losses.mean()
    inputs = [x for x in (hidden, weight, bias) if x is not None]
    return loss, logps, torch.autograd.grad(loss, inputs)


def fused(name, hidden, weight, bias, labels, refs, opts, **kwargs):
    ref = {}
    if get_loss_spec(name).needs_reference:
        ref = {"ref_chosen_logps": refs[0], "ref_rejected_logps": refs[1]}
    out = fused_preference_loss(hidden, weight, labels, name, bias, **ref, **kwargs, **opts)
    inputs = [x for x in (hidden, weight, bias) if x is not None]
    return out, torch.autograd.grad(out.loss, inputs)


@pytest.fixture
def small_blocks(monkeypatch):
    """Odd chunk and block sizes: chunks of several pairs, several token blocks per chunk."""
    monkeypatch.setattr(pair_module, "MIN_CHUNK_TOKENS", 29)
    monkeypatch.setattr(pair_module, "MAX_BLOCK_TOKENS", 7)


@pytest.mark.parametrize("alpha", [0.0, 0.35])
@pytest.mark.parametrize("name", available_losses())
def test_every_paired_loss_is_exact_in_both_schedules(name, alpha, small_blocks):
    hidden, weight, bias, labels, refs = make()
    opts = options(name, alpha)
    want_loss, want_logps, want_grads = naive(name, hidden, weight, bias, labels, refs, opts)
    for schedule in ("pair", "two-pass"):
        out, grads = fused(name, hidden, weight, bias, labels, refs, opts, schedule=schedule, budget_bytes=2**30)
        assert out.schedule.name == schedule
        assert abs(float(out.loss.detach() - want_loss)) < 1e-10, schedule
        assert torch.allclose(out.logps, want_logps, atol=1e-10, rtol=0)
        for got, want in zip(grads, want_grads, strict=True):
            assert torch.allclose(got, want, atol=1e-10, rtol=0), (schedule, (got - want).abs().max())
    assert len(out.schedule.chunks) == 0
    pair_out, _ = fused(name, hidden, weight, bias, labels, refs, opts, schedule="pair", budget_bytes=2**30)
    assert len(pair_out.schedule.chunks) > 1  # the odd sizes really split the batch


def test_nll_term_without_bias_and_an_odd_budget(small_blocks):
    hidden, weight, _, labels, refs = make(bias=False, seed=3)
    opts = {"nll_weight": 0.7, "beta": 0.2}
    want_loss, _, want_grads = naive("sigmoid", hidden, weight, None, labels, refs, opts)
    budget = 31 * V * 8  # fp64 logits of 31 tokens: every pair fits, no two pairs do
    out, grads = fused("sigmoid", hidden, weight, None, labels, refs, opts, budget_bytes=budget)
    assert out.schedule.name == "pair" and len(out.schedule.chunks) == P
    assert abs(float(out.loss.detach() - want_loss)) < 1e-10
    for got, want in zip(grads, want_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-10, rtol=0)


def test_a_loss_that_couples_pairs_runs_two_pass_and_stays_exact():
    hidden, weight, bias, labels, refs = make(seed=5)
    want_loss, _, want_grads = naive("bco_pair", hidden, weight, bias, labels, refs, {})
    out, grads = fused("bco_pair", hidden, weight, bias, labels, refs, {}, budget_bytes=2**30)
    assert out.schedule.name == "two-pass" and "whole batch" in out.schedule.reason
    assert abs(float(out.loss.detach() - want_loss)) < 1e-10
    for got, want in zip(grads, want_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-10, rtol=0)
    with pytest.raises(InputError, match="whole batch"):
        fused("bco_pair", hidden, weight, bias, labels, refs, {}, schedule="pair")


def test_the_chooser_decides_by_the_budget():
    # pairs of 100, 300, 50, 60 and 400 labelled tokens, vocabulary 1000, fp32 logits: 4000 bytes a token
    tokens = [100, 300, 50, 60, 400]
    fits = choose_schedule(tokens, 1000, 400 * 4000)
    assert fits.name == "pair"
    # grouped until a chunk holds MIN_CHUNK_TOKENS (256) labelled tokens, a long pair alone
    assert fits.chunks == [(0, 2), (2, 4), (4, 5)]  # 50 + 60 + 400 would exceed the budget
    tight = choose_schedule(tokens, 1000, 399 * 4000)
    assert tight.name == "two-pass" and "one pair's logits need" in tight.reason
    assert choose_schedule(tokens, 1000, 2**40, separable=False).name == "two-pass"
    assert choose_schedule(tokens, 1000, 2**40, softcap=30.0).name == "two-pass"
    assert choose_schedule(tokens, 1000, 2**40, schedule="two-pass").name == "two-pass"
    assert choose_schedule(tokens, 1000, 2**40, element_bytes=8).chunks == [(0, 2), (2, 5)]
    with pytest.raises(InputError, match="over the"):
        choose_schedule(tokens, 1000, 100, schedule="pair")


def test_auto_follows_the_budget_with_the_same_result():
    hidden, weight, bias, labels, refs = make(seed=7)
    per_pair = int((labels[:P] != -100).sum(1).max() + (labels[P:] != -100).sum(1).max())
    big, _ = fused("alphapo", hidden, weight, bias, labels, refs, {}, budget_bytes=per_pair * V * 8)
    small, _ = fused("alphapo", hidden, weight, bias, labels, refs, {}, budget_bytes=8 * V * 8)
    assert (big.schedule.name, small.schedule.name) == ("pair", "two-pass")
    assert abs(float(big.loss - small.loss)) < 1e-12


def test_upstream_scale_sum_reduction_and_metrics():
    hidden, weight, bias, labels, _ = make(seed=2)
    out = fused_preference_loss(hidden, weight, labels, "simpo", bias, reduction="sum", schedule="pair")
    (3.0 * out.loss).backward()
    scaled = hidden.grad.clone()
    hidden.grad = None
    out = fused_preference_loss(hidden, weight, labels, "simpo", bias, reduction="sum", schedule="pair")
    out.loss.backward()
    assert torch.allclose(scaled, 3.0 * hidden.grad, atol=1e-12, rtol=0)
    with pytest.raises(RuntimeError, match="one backward pass"):
        out.loss.backward()
    logps, n = naive_sequence_logps(hidden.detach(), weight.detach(), labels, bias.detach())
    want = preference_loss("simpo", logps[:P], logps[P:], n[:P], n[P:])
    assert torch.allclose(out.output.chosen_rewards, want.chosen_rewards, atol=1e-10, rtol=0)
    assert torch.allclose(out.output.losses.sum(), out.loss.detach(), atol=1e-10, rtol=0)


def test_low_precision_matches_two_pass():
    hidden, weight, bias, labels, _ = make(torch.bfloat16, seed=4)
    got = {}
    for schedule in ("pair", "two-pass"):
        out = fused_preference_loss(hidden, weight, labels, "alphapo", bias, schedule=schedule, alpha=0.2)
        got[schedule] = (out.loss.detach(), *torch.autograd.grad(out.loss, (hidden, weight, bias)))
    for a, b in zip(got["pair"], got["two-pass"], strict=True):
        assert a.dtype == b.dtype
        assert torch.allclose(a.double(), b.double(), atol=2e-2, rtol=2e-2)


def test_a_non_finite_row_reaches_the_loss_function():
    hidden, weight, bias, labels, _ = make(seed=6)
    poisoned = hidden.detach().clone()
    poisoned[P + 1, 10] = float("nan")
    seen = []

    def pair_loss(chosen, rejected, chosen_n, rejected_n, pairs):
        seen.append(bool(torch.isfinite(chosen).all() and torch.isfinite(rejected).all()))
        return (chosen - rejected).nan_to_num(0.0) * 0.0

    out = fused_pair_loss(poisoned.requires_grad_(), weight, labels, pair_loss, bias, schedule="pair")
    assert False in seen and not torch.isfinite(out.logps[P + 1])


def test_bad_pair_loss_output_and_shapes_are_named():
    hidden, weight, bias, labels, _ = make()
    with pytest.raises(InputError, match="one loss per pair"):
        fused_pair_loss(hidden, weight, labels, lambda c, r, nc, nr, i: (c - r).sum(), bias, schedule="pair")
    with pytest.raises(InputError, match=r"\[2P, T, H\]"):
        fused_pair_loss(hidden[:3], weight, labels[:3], lambda *a: a[0], bias)


@pytest.mark.parametrize("trained", ["hidden", "weight"])
def test_only_some_inputs_need_gradients(trained, small_blocks):
    hidden, weight, bias, labels, _ = make(seed=8)
    hidden, weight = (
        hidden.detach().requires_grad_(trained == "hidden"),
        weight.detach().requires_grad_(trained == "weight"),
    )
    bias = bias.detach()
    target = hidden if trained == "hidden" else weight
    out = fused_preference_loss(hidden, weight, labels, "alphapo", bias, schedule="pair", alpha=0.3)
    (got,) = torch.autograd.grad(out.loss, [target])
    logps, n = naive_sequence_logps(hidden, weight, labels, bias)
    want_loss = preference_loss("alphapo", logps[:P], logps[P:], n[:P], n[P:], alpha=0.3).losses.mean()
    (want,) = torch.autograd.grad(want_loss, [target])
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("schedule", ["pair", "two-pass"])
def test_an_upstream_gradient_scales_every_formed_gradient(schedule, small_blocks):
    """fp16 loss scaling, a weighted sum of losses, accumulation by the caller: the gradients the pair
    schedule formed in its forward pass are scaled by the incoming gradient, hidden states, head weight
    and bias alike, exactly as the naive twin's."""
    hidden, weight, bias, labels, refs = make(seed=5)
    opts = {"beta": 0.1}
    _want_loss, _, want = naive("sigmoid", hidden, weight, bias, labels, refs, opts)
    ref = {"ref_chosen_logps": refs[0], "ref_rejected_logps": refs[1]}
    out = fused_preference_loss(hidden, weight, labels, "sigmoid", bias, **ref, schedule=schedule, **opts)
    upstream = 37.5  # as a GradScaler's scale, or a loss weight, would send
    grads = torch.autograd.grad(upstream * out.loss + 0.0 * hidden.sum(), [hidden, weight, bias])
    for got, expected in zip(grads, want, strict=True):
        assert torch.allclose(got, upstream * expected, atol=1e-9, rtol=1e-12)


@pytest.mark.parametrize("schedule", ["pair", "two-pass"])
def test_a_non_default_ignore_index(schedule, small_blocks):
    """Labels marked with another ignore_index (-1 here; -100 is then an ordinary out-of-range id that
    must never appear): fused_pair_loss, fused_preference_loss and model_pair_loss all honour it."""
    from alphapo.ops.preference import preference_pair_loss

    hidden, weight, bias, labels, _refs = make(seed=6)
    labels = labels.masked_fill(labels == -100, -1)
    logps, n = naive_sequence_logps(hidden, weight, labels, bias, ignore_index=-1)
    want = preference_loss("simpo", logps[:P], logps[P:], n[:P], n[P:]).losses.mean()
    want_grads = torch.autograd.grad(want, [hidden, weight, bias])
    out = fused_preference_loss(hidden, weight, labels, "simpo", bias, ignore_index=-1, schedule=schedule)
    assert abs(float(out.loss.detach() - want.detach())) < 1e-10 and out.n_tokens.tolist() == n.tolist()
    for got, expected in zip(torch.autograd.grad(out.loss, [hidden, weight, bias]), want_grads, strict=True):
        assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    losses, _ = preference_pair_loss("simpo", scale=1.0 / P)
    direct = fused_pair_loss(hidden, weight, labels, losses, bias, -1, schedule=schedule)
    assert abs(float(direct.loss.detach() - want.detach())) < 1e-10


@pytest.mark.parametrize("schedule", ["pair", "two-pass"])
def test_model_pair_loss_with_another_ignore_index(tmp_path, schedule, small_blocks):
    from transformers import AutoModelForCausalLM

    from alphapo.models import TinyModelSpec, build_tiny_model
    from alphapo.ops import model_pair_loss
    from alphapo.ops.model_logps import logits_sequence_logps

    spec = TinyModelSpec(
        vocab_size=53, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    build_tiny_model(spec).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 53, (4, 11), generator=g)
    labels = ids.clone()
    labels[:, :3] = -1
    labels[1, -2:] = -1

    def pair_loss(chosen, rejected, chosen_n, rejected_n, pairs):
        return preference_loss("simpo", chosen, rejected, chosen_n, rejected_n).losses

    out = model_pair_loss(model, ids, torch.ones_like(ids), labels, pair_loss, ignore_index=-1, schedule=schedule)
    logits = model(input_ids=ids).logits
    logps = logits_sequence_logps(logits, labels, ignore_index=-1)
    n = (labels[:, 1:] != -1).sum(1)
    assert out.n_tokens.tolist() == n.tolist()
    assert torch.allclose(out.logps, logps.detach(), atol=1e-10, rtol=0)
    want = pair_loss(logps[:2], logps[2:], n[:2], n[2:], None).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(out.loss, params), torch.autograd.grad(want, params), strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
