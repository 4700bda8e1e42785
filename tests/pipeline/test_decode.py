"""alphapo's decoding loop (finished rows leave the batch) against transformers' ``generate``."""

import pytest
import torch

from alphapo.models import TinyModelSpec, build_tiny_model
from alphapo.sample.generate import decode, decode_with_generate, generate, new_token_counts, nucleus

PAD = 0


@pytest.fixture(scope="module")
def model():
    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    tiny = build_tiny_model(spec, vocab_size=64, special_tokens={"pad_token_id": PAD, "bos_token_id": 1}).eval()
    with torch.no_grad():  # weights scaled up: greedy decoding wanders instead of repeating its input
        for name, param in tiny.named_parameters():
            if "norm" not in name:
                param.mul_(10.0)
    return tiny


def left_padded(prompts):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


PROMPTS = [[1, 5, 9, 13, 2, 7, 30], [1, 40], [1, 22, 23, 24], [1, 3, 3, 3, 3, 8], [1, 61, 17], [1, 50, 51, 52, 53]]


def test_greedy_tokens_are_generates_while_rows_end_at_different_steps(model):
    ids, mask = left_padded(PROMPTS)
    free = decode(model, ids, mask, max_new_tokens=12, eos_token_id=None, pad_token_id=PAD)
    assert torch.equal(
        free, decode_with_generate(model, ids, mask, max_new_tokens=12, eos_token_id=None, pad_token_id=PAD)
    )
    # an "EOS" the model emits early in some rows, late or never in others: rows leave the batch
    counts = {}
    for token in free.unique().tolist():
        hits = (free == token).int()
        first = torch.where(hits.any(1), hits.argmax(1), torch.full((len(PROMPTS),), 99))
        counts[token] = first
    eos = max(counts, key=lambda t: (len(set(counts[t].tolist())), -(counts[t] == 99).sum()))
    ends = counts[eos].tolist()
    assert len(set(ends)) >= 3, ends  # the test needs rows ending at different steps
    ours = decode(model, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD)
    theirs = decode_with_generate(model, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD)
    assert torch.equal(ours, theirs)
    n, ended = new_token_counts(ours, eos)
    assert n == [e + 1 if e < 99 else 12 for e in ends]
    assert ended == [e < 99 for e in ends]
    for row, e in enumerate(ends):  # pad after EOS, nothing before it
        if e < 99:
            assert (ours[row, e + 1 :] == PAD).all() and ours[row, e] == eos


def test_a_cache_that_cannot_drop_rows_keeps_them_padded_after_eos(model, monkeypatch):
    from transformers.cache_utils import DynamicLayer

    ids, mask = left_padded(PROMPTS)
    first = decode(model, ids, mask, max_new_tokens=10, eos_token_id=None, pad_token_id=PAD)
    eos = int(first[1, 1])
    compacted = decode(model, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD)
    monkeypatch.delattr(DynamicLayer, "batch_select_indices")
    kept = decode(model, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD)
    assert torch.equal(kept, compacted)


def test_a_row_ending_early_does_not_change_the_others(model):
    """The rows still running after others left the batch get the same tokens as when decoded alone."""
    ids, mask = left_padded(PROMPTS)
    first = decode(model, ids, mask, max_new_tokens=10, eos_token_id=None, pad_token_id=PAD)
    eos = int(first[1, 1])  # row 1 ends at its second token
    together = decode(model, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD)
    for row, prompt in enumerate(PROMPTS):
        alone = decode(model, *left_padded([prompt]), max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD)
        assert torch.equal(together[row], alone[0]), row


def test_sampling_is_seeded_and_draws_from_the_tempered_nucleus(model):
    ids, mask = left_padded(PROMPTS)
    torch.manual_seed(3)
    a = decode(model, ids, mask, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD, temperature=1.0, top_p=0.9)
    torch.manual_seed(3)
    b = decode(model, ids, mask, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD, temperature=1.0, top_p=0.9)
    assert torch.equal(a, b)
    # a tiny temperature is greedy
    cold = decode(model, ids, mask, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD, temperature=1e-4)
    assert torch.equal(cold, decode(model, ids, mask, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD))
    # first tokens' frequencies follow softmax(logits / T) (T = 2: flatter than the model)
    rows = ids[:1].repeat(4000, 1), mask[:1].repeat(4000, 1)
    torch.manual_seed(0)
    drawn = decode(model, *rows, max_new_tokens=1, eos_token_id=None, pad_token_id=PAD, temperature=2.0)[:, 0]
    with torch.no_grad():
        logits = model(input_ids=ids[:1], attention_mask=mask[:1]).logits[0, -1]
    expected = torch.softmax(logits / 2.0, -1)
    observed = torch.bincount(drawn, minlength=64).float() / 4000
    assert (observed - expected).abs().max() < 0.03


def test_nucleus_keeps_the_top_tokens_until_their_mass_reaches_top_p():
    probs = torch.tensor([[0.1, 0.5, 0.25, 0.15], [0.97, 0.01, 0.01, 0.01]])
    kept = nucleus(probs, 0.8)
    # row 0: 0.5 + 0.25 = 0.75 < 0.8, so 0.15 is kept too; 0.1 is not
    assert torch.allclose(kept[0], torch.tensor([0.0, 0.5, 0.25, 0.15]) / 0.9)
    assert torch.allclose(kept[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))  # at least the first
    assert torch.allclose(nucleus(probs, 1.0), probs)


def test_generate_gives_k_completions_per_prompt_in_prompt_order(model):
    from alphapo.models import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["one two three four five six"] * 20, vocab_size=60, chat_template=None)
    spec = TinyModelSpec(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    tiny = build_tiny_model(spec, vocab_size=len(tokenizer), special_tokens=special).eval()
    prompts = ["one two", "three", "four five six one", "two"]
    out = generate(tiny, tokenizer, prompts, k=3, temperature=1.0, max_new_tokens=5, batch_size=2, seed=1)
    again = generate(tiny, tokenizer, prompts, k=3, temperature=1.0, max_new_tokens=5, batch_size=2, seed=1)
    assert out == again and [len(c) for c in out] == [3] * 4
    greedy = generate(tiny, tokenizer, prompts, k=1, temperature=0.0, max_new_tokens=5, batch_size=4)
    for prompt, answer in zip(prompts, greedy, strict=True):
        alone = generate(tiny, tokenizer, [prompt], k=1, temperature=0.0, max_new_tokens=5, batch_size=1)
        assert answer == alone[0]


def test_preallocated_cache_layers_hold_what_concatenation_holds(model):
    """Keys and values written in place into a buffer equal the concatenated cache, through dropped rows."""
    from transformers import DynamicCache

    from alphapo.sample.generate import preallocate

    ids, mask = left_padded(PROMPTS)
    plain, buffered = DynamicCache(config=model.config), DynamicCache(config=model.config)
    preallocate(buffered, ids.shape[1] + 4)
    assert all(type(layer).__name__ == "PreallocatedLayer" for layer in buffered.layers)
    with torch.no_grad():
        for cache in (plain, buffered):
            model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True)
        for step, keep in enumerate([None, torch.tensor([0, 2, 3, 5]), None, None, torch.tensor([1, 3])]):
            if keep is not None:
                for cache in (plain, buffered):
                    cache.batch_select_indices(keep)
                ids, mask = ids[keep], mask[keep]
            mask = torch.cat([mask, torch.ones(len(mask), 1, dtype=mask.dtype)], 1)
            token = torch.full((len(ids), 1), 5 + step)
            outs = [
                model(input_ids=token, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1, cache=c)
                for c in (plain, buffered)
            ]
            torch.testing.assert_close(outs[0].logits, outs[1].logits)
    for a, b in zip(plain.layers, buffered.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert buffered.layers[0].keys.data_ptr() == buffered.layers[0]._key_buffer.data_ptr()  # a view, not a copy
    assert buffered.layers[0]._key_buffer.shape[-2] >= buffered.layers[0].keys.shape[-2]
