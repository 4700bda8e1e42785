"""The fused op against its naive twin: values and every gradient, odd shapes, chunks, dtypes."""

import pytest
import torch

from alphapo.errors import InputError
from alphapo.ops import sequence_logps, sequence_mean_logits, single_pass_pays, tile_shape
from tests.ops.reference import naive_mean_logits, naive_sequence_logps

B, T, H, V = 3, 47, 31, 123


def make(dtype=torch.float64, bias=True, seed=0, b=B, t=T, h=H, v=V):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_()
    bias_t = (torch.randn(v, generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, :5] = -100  # ignored at the start (a prompt)
    labels[0, 20:23] = -100  # in the middle
    labels[1, -4:] = -100  # at the end (padding)
    labels[2, :] = -100  # a row with no labelled token
    return hidden, weight, bias_t, labels


def grads_of(outputs, inputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    upstream = torch.randn(outputs.shape, generator=g, dtype=outputs.dtype)
    inputs = [x for x in inputs if x is not None]
    return torch.autograd.grad((outputs * upstream).sum(), inputs)


def check(dtype, chunk_size, bias, atol, rtol, softcap=None, seed=0, vocab_chunk_size=None):
    hidden, weight, bias_t, labels = make(dtype, bias, seed)
    logps, n = sequence_logps(
        hidden, weight, labels, bias_t, chunk_size=chunk_size, vocab_chunk_size=vocab_chunk_size, softcap=softcap
    )
    # the twin runs in fp64 on the same (possibly rounded) inputs
    ref_inputs = [x.detach().double().requires_grad_() if x is not None else None for x in (hidden, weight, bias_t)]
    ref, ref_n = naive_sequence_logps(ref_inputs[0], ref_inputs[1], labels, ref_inputs[2], softcap=softcap)
    assert torch.equal(n, ref_n)
    assert logps.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.allclose(logps.double(), ref, atol=atol, rtol=rtol), (logps, ref)
    got = grads_of(logps.double(), [hidden, weight, bias_t])
    want = grads_of(ref, ref_inputs)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype
        assert torch.allclose(a.double(), b, atol=atol, rtol=rtol), (a - b).abs().max()
    return logps, n


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 1, 2, 7, 32, 64, 500])
def test_float64_exact(chunk_size, bias):
    check(torch.float64, chunk_size, bias, atol=1e-10, rtol=0)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    ("chunk_size", "vocab_chunk_size"), [(None, 1), (5, 7), (64, 50), (1, 122), (13, 123), (500, 30)]
)
def test_float64_exact_with_vocabulary_blocks(chunk_size, vocab_chunk_size, bias):
    check(torch.float64, chunk_size, bias, atol=1e-10, rtol=0, vocab_chunk_size=vocab_chunk_size)


def test_every_chunk_size_from_1_to_n():
    hidden, weight, bias_t, labels = make()
    n_labelled = int((labels != -100).sum())
    ref, _ = naive_sequence_logps(hidden, weight, labels, bias_t)
    ref_grads = grads_of(ref, [hidden, weight, bias_t])
    for chunk in range(1, n_labelled + 1):
        logps, _ = sequence_logps(hidden, weight, labels, bias_t, chunk_size=chunk)
        assert torch.allclose(logps, ref, atol=1e-10, rtol=0), chunk
        for a, b in zip(grads_of(logps, [hidden, weight, bias_t]), ref_grads, strict=True):
            assert torch.allclose(a, b, atol=1e-10, rtol=0), chunk


def test_row_without_labels_is_zero_and_finite():
    logps, n = check(torch.float64, 16, True, atol=1e-10, rtol=0)
    assert logps[2].item() == 0.0 and n[2].item() == 0
    assert n.tolist() == [T - 8, T - 4, 0]


# Documented tolerances: fp32 1e-4 absolute on sums of ~40 tokens (fp32 GEMMs, fp32 reductions);
# bf16 inputs 0.15 absolute on the same sums: logits come out of a bf16 GEMM (about 3 significant
# digits, as the model's own head would give them), every reduction after that is fp32.
@pytest.mark.parametrize("bias", [False, True])
def test_float32_tolerance(bias):
    check(torch.float32, 16, bias, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_bfloat16_tolerance(bias):
    check(torch.bfloat16, 16, bias, atol=0.15, rtol=0.02)


@pytest.mark.parametrize(("chunk_size", "vocab_chunk_size"), [(None, None), (3, None), (7, 11)])
def test_softcap(chunk_size, vocab_chunk_size):
    check(torch.float64, chunk_size, True, atol=1e-10, rtol=0, softcap=2.0, vocab_chunk_size=vocab_chunk_size)


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("bias", [False, True])
def test_single_pass_matches_two_pass(bias, softcap):
    hidden, weight, bias_t, labels = make(bias=bias)
    w = torch.tensor([-0.5, 2.0, 0.7], dtype=torch.float64)
    inputs = [hidden, weight, bias_t]
    two_pass = grads_of_weights(
        sequence_logps(hidden, weight, labels, bias_t, chunk_size=5, softcap=softcap)[0], w, inputs
    )
    one = sequence_logps(hidden, weight, labels, bias_t, chunk_size=5, softcap=softcap, grad_weights=w)[0]
    single = grads_of_weights(one, w, inputs)
    for a, b in zip(single, two_pass, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    # a uniform rescaling (gradient accumulation) is applied in backward
    scaled = sequence_logps(hidden, weight, labels, bias_t, chunk_size=5, softcap=softcap, grad_weights=w)[0]
    for a, b in zip(grads_of_weights(scaled, 0.25 * w, inputs), two_pass, strict=True):
        assert torch.allclose(a, 0.25 * b, atol=1e-10, rtol=0)


def grads_of_weights(logps, w, inputs):
    return torch.autograd.grad((logps * w).sum(), [x for x in inputs if x is not None])


def test_single_pass_refuses_other_gradients():
    hidden, weight, bias_t, labels = make()
    logps, _ = sequence_logps(hidden, weight, labels, bias_t, grad_weights=torch.ones(B, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="not a uniform multiple of grad_weights"):
        (logps * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()


def test_mean_logits_without_vocab_sized_work():
    hidden, weight, bias_t, labels = make()
    got = sequence_mean_logits(hidden, weight, labels, bias_t)
    assert torch.allclose(got, naive_mean_logits(hidden, weight, labels, bias_t), atol=1e-10)
    assert got[2].item() == 0.0


def test_tile_shape():
    mib = 2**20
    # 10.5 MB budget, V = 32000: 82 whole-vocabulary rows would be skinny GEMMs, so square-ish tiles:
    # 2048 tokens in 2 blocks of 1024, 2562 vocabulary rows each (1024 * 2562 * 4 bytes <= budget)
    assert tile_shape(2048, 32_000, 10_500_000) == (1024, 2563)
    # a big budget fits >= 256 tokens beside the whole vocabulary: whole-vocabulary tiles
    assert tile_shape(10_000, 128_256, 1024 * mib) == (2080, 128_256)
    assert tile_shape(5, 32_000, 70 * mib) == (5, 32_000)  # never more rows than tokens
    assert tile_shape(10_000, 1000, 4000) == (31, 32)  # tiny budget (1000 floats): 31 x 32 tiles
    assert tile_shape(10_000, 1000, 4) == (1, 1)  # at least one token and one vocabulary row
    assert tile_shape(3000, 32_000, 10_500_000, whole_vocab=True) == (80, 32_000)  # single-pass mode
    assert tile_shape(3000, 32_000, 10_500_000, chunk_size=7) == (7, 32_000)  # explicit sizes win
    assert tile_shape(3000, 32_000, 10_500_000, vocab_chunk_size=100) == (3000, 100)


def test_only_labelled_rows_of_hidden_get_gradients():
    hidden, weight, bias_t, labels = make()
    logps, _ = sequence_logps(hidden, weight, labels, bias_t)
    (grad,) = torch.autograd.grad(logps.sum(), hidden)
    assert torch.all(grad[labels == -100] == 0)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda h, w, b, y: (h[0], w, b, y), r"hidden must be \[B, T, H\]"),
        (lambda h, w, b, y: (h, w[:, :5], b, y), r"weight must be \[V, H\] with H = 31"),
        (lambda h, w, b, y: (h, w, b, y[:, :3]), r"labels must be \[B, T\]"),
        (lambda h, w, b, y: (h, w, b[:4], y), r"bias must be \[V\]"),
        (lambda h, w, b, y: (h, w, b, y.float()), "labels must be integer token ids"),
        (lambda h, w, b, y: (h, w, b, y.masked_fill(y == 5, V)), "label 123 is outside the vocabulary"),
        (lambda h, w, b, y: (h, w, b, y.masked_fill(y == 5, -1)), "label -1 is outside the vocabulary"),
        (lambda h, w, b, y: (h.float(), w, b, y), "must share a dtype"),
    ],
)
def test_bad_inputs(change, pattern):
    hidden, weight, bias_t, labels = make()
    labels[1, 3] = 5
    h, w, b, y = change(hidden, weight, bias_t, labels)
    with pytest.raises(InputError, match=pattern):
        sequence_logps(h, w, y, b)


def test_backward_twice_through_a_retained_graph():
    hidden, weight, bias_t, labels = make()
    logps, _ = sequence_logps(hidden, weight, labels, bias_t, chunk_size=9, vocab_chunk_size=40)
    first = torch.autograd.grad(logps[0], [hidden, weight], retain_graph=True)
    second = torch.autograd.grad(logps[0], [hidden, weight], retain_graph=True)
    other = torch.autograd.grad(logps[1], [hidden, weight])
    ref, _ = naive_sequence_logps(hidden, weight, labels, bias_t)
    for got, want in zip(other, torch.autograd.grad(ref[1], [hidden, weight]), strict=True):
        assert torch.allclose(got, want, atol=1e-10)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_single_pass_runs_only_where_its_tiles_pay():
    # 4 MiB budget, 16384-word vocabulary: 64 tokens fit a whole-vocabulary tile, fewer than 128
    assert not single_pass_pays(300, 16_384, 4 * 2**20)
    assert single_pass_pays(60, 16_384, 4 * 2**20)  # every token fits one tile
    assert single_pass_pays(300, 4_096, 4 * 2**20)  # 256 tokens a tile
    assert single_pass_pays(300, 16_384, 4 * 2**20, chunk_size=8)  # explicit tiles are the caller's choice


def test_single_pass_falls_back_to_two_pass_with_the_same_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(3, 100, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(16_384, 8, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 16_384, (3, 100))
    promised = torch.ones(3, dtype=torch.float64)
    logps, _ = sequence_logps(hidden, weight, labels, grad_weights=promised)
    # two-pass ran: a gradient that is not a multiple of the promise is applied, not refused
    upstream = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    got = torch.autograd.grad((logps * upstream).sum(), (hidden, weight))
    logps_naive, _ = naive_sequence_logps(hidden, weight, labels)
    want = torch.autograd.grad((logps_naive * upstream).sum(), (hidden, weight))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _check_exact_against_twin(hidden, weight, bias_t, labels, ignore_index, **kwargs):
    logps, n = sequence_logps(hidden, weight, labels, bias_t, ignore_index=ignore_index, **kwargs)
    ref, ref_n = naive_sequence_logps(hidden, weight, labels, bias_t, ignore_index=ignore_index)
    assert torch.equal(n, ref_n)
    assert torch.allclose(logps, ref, atol=1e-10, rtol=0), (logps - ref).abs().max()
    for a, b in zip(grads_of(logps, [hidden, weight, bias_t]), grads_of(ref, [hidden, weight, bias_t]), strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0), (a - b).abs().max()


@pytest.mark.parametrize("ignore_index", [-1, 0, 7])
@pytest.mark.parametrize(("chunk_size", "vocab_chunk_size"), [(None, None), (5, None), (4, 9)])
def test_other_ignore_index(ignore_index, chunk_size, vocab_chunk_size):
    """-1, or a real token id (a pad id) as the ignored label; -100 is then an ordinary... never used."""
    hidden, weight, bias_t, labels = make()
    labels = torch.where(labels == -100, torch.full_like(labels, ignore_index), labels)
    labels = torch.where(labels == ignore_index, labels, labels.clamp(min=0))
    if ignore_index >= 0:  # the id is ignored wherever it occurs
        labels[1, 3] = ignore_index
    _check_exact_against_twin(
        hidden, weight, bias_t, labels, ignore_index, chunk_size=chunk_size, vocab_chunk_size=vocab_chunk_size
    )


@pytest.mark.parametrize(("chunk_size", "vocab_chunk_size"), [(None, None), (2, None), (3, 10), (8, 61)])
def test_single_position_gaps(chunk_size, vocab_chunk_size):
    """One ignored position between labelled ones, at every parity and at block edges."""
    hidden, weight, bias_t, labels = make()
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(3))
    labels[0, 1::2] = -100  # every other position
    labels[1, [4, 8, 9, 15, 16, 31]] = -100  # lone gaps and a pair
    labels[2, [0, T - 1, T // 2]] = -100  # first, last and middle
    _check_exact_against_twin(
        hidden, weight, bias_t, labels, -100, chunk_size=chunk_size, vocab_chunk_size=vocab_chunk_size
    )


def test_bfloat16_accumulates_in_float32():
    """Inputs whose bf16 logits are exact (small multiples of 1/4), so the only error left is the
    accumulation's: fp32 keeps the sums within 2e-4 of fp64; a bf16 log-sum-exp is off by ~1e-2."""
    g = torch.Generator().manual_seed(5)
    hidden = torch.randint(-1, 2, (B, T, H), generator=g).double()
    weight = torch.randint(-1, 2, (V, H), generator=g).double() * 0.5
    bias_t = torch.randint(-4, 5, (V,), generator=g).double() * 0.25
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :5] = -100
    ref, _ = naive_sequence_logps(hidden, weight, labels, bias_t)
    for chunk_size, vocab_chunk_size in [(None, None), (7, None), (5, 17)]:
        logps, _ = sequence_logps(
            hidden.bfloat16(),
            weight.bfloat16(),
            labels,
            bias_t.bfloat16(),
            chunk_size=chunk_size,
            vocab_chunk_size=vocab_chunk_size,
        )
        assert logps.dtype == torch.float32
        assert torch.allclose(logps.double(), ref, atol=2e-4, rtol=0), (logps.double() - ref).abs().max()
