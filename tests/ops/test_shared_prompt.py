"""Pairs packed with their common prefix run once give the unpacked batch's log-probs and gradients."""

import copy

import pytest
import torch

from alphapo.data import Collator
from alphapo.models import TinyModelSpec, build_tiny_model
from alphapo.ops.model_logps import model_pair_loss, model_sequence_logps, share_prompts, shared_prompt_support
from alphapo.ops.preference import preference_pair_loss


def pairs_batch():
    g = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(3, 120, (n,), generator=g).tolist()

    same_start = ids(3)
    items = [
        {"index": 0, "prompt_ids": ids(7), "chosen_ids": ids(5), "rejected_ids": ids(9)},
        {"index": 1, "prompt_ids": ids(2), "chosen_ids": ids(11), "rejected_ids": ids(3)},
        # answers that share their first tokens: the common prefix runs past the prompt
        {"index": 2, "prompt_ids": ids(4), "chosen_ids": same_start + ids(4), "rejected_ids": same_start + ids(2)},
        {"index": 3, "prompt_ids": ids(5), "chosen_ids": ids(6), "rejected_ids": ids(6)},
    ]
    return Collator(pad_token_id=0)(items)


def tiny(attn):
    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
    model = build_tiny_model(spec, vocab_size=128, special_tokens={"pad_token_id": 0})
    model.config._attn_implementation = attn
    return model


def test_packing_layout():
    batch = pairs_batch()
    shared = share_prompts(batch["input_ids"], batch["attention_mask"])
    width = batch["input_ids"].shape[1]
    # pair 2: prompt 4 + chosen 7 tokens; rejected shares prompt and 3 answer tokens, then 2 of its own
    assert shared.input_ids[2, :11].tolist() == batch["input_ids"][2, :11].tolist()
    assert shared.input_ids[2, 11:13].tolist() == batch["input_ids"][6, 7:9].tolist()
    assert shared.position_ids[2, 11:13].tolist() == [7, 8]
    mask = shared.attention_mask[2, 0]
    assert mask[11, :7].all() and not mask[11, 7:11].any() and mask[11, 11] and not mask[11, 12]
    assert mask[12, 11:13].all()
    # pair 0: prompt 7, chosen 5, rejected 9: only the prompt is shared
    assert shared.position_ids[0, 12:21].tolist() == list(range(7, 16))
    packed = max(lc + lr - common for lc, lr, common in [(12, 16, 7), (13, 5, 2), (11, 9, 7), (11, 11, 5)])
    assert shared.input_ids.shape == (4, packed)
    assert shared.positions_saved == 2 * 4 * width - 4 * packed
    # each unpacked position reads the packed position holding the same context
    gather = shared.gather.view(8, width)
    assert gather[6, :9].tolist() == [2 * packed + t for t in [0, 1, 2, 3, 4, 5, 6, 11, 12]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_logps_and_gradients_equal_the_unpacked_batch(attn):
    plain = tiny(attn)
    packed = copy.deepcopy(plain)
    assert shared_prompt_support(plain) is None
    batch = pairs_batch()
    dtype = torch.float32 if attn == "eager" else None
    shared = share_prompts(batch["input_ids"], batch["attention_mask"], float_mask_dtype=dtype)
    assert shared.positions_saved > 0
    args = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    a = model_sequence_logps(plain, *args)
    b = model_sequence_logps(packed, *args, shared=shared)
    torch.testing.assert_close(a.logps, b.logps, rtol=1e-5, atol=1e-5)
    assert torch.equal(a.n_tokens, b.n_tokens)
    losses, separable = preference_pair_loss("alphapo", alpha=0.25, beta=2.5, gamma=0.25, scale=0.25)
    la = model_pair_loss(plain, *args, losses, separable=separable).loss
    lb = model_pair_loss(packed, *args, losses, separable=separable, shared=shared).loss
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    la.backward()
    lb.backward()
    for (name, p), q in zip(plain.named_parameters(), packed.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_models_whose_mask_or_positions_would_change_are_not_packed():
    model = tiny("sdpa")
    model.config._attn_implementation = "flash_attention_2"
    assert "attention" in shared_prompt_support(model)
    model = tiny("sdpa")
    model.config.sliding_window = 16
    assert "sliding" in shared_prompt_support(model)


def test_left_padded_rows_are_refused():
    batch = pairs_batch()
    with pytest.raises(ValueError, match="right-padded"):
        share_prompts(batch["input_ids"].flip(1), batch["attention_mask"].flip(1))
