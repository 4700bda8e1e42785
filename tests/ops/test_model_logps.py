"""The model helper on tiny transformers models, loaded back from disk, against their own logits."""

import pytest
import torch
from torch import nn

from alphapo.models import TinyModelSpec, build_tiny_model
from alphapo.ops import UnsupportedModelError, head_of, model_sequence_logps
from alphapo.ops.model_logps import logits_sequence_logps, verify_against_logits

V = 97


def saved_and_loaded(model, tmp_path):
    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path)
    return AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)


def batch(seed=0, b=3, t=13):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (b, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # right padding
    labels = ids.clone()
    labels[:, :4] = -100  # prompt
    labels[mask == 0] = -100
    return ids, mask, labels


def check_against_logits(model, atol=1e-10, raw_logits_are_output=True):
    ids, mask, labels = batch()
    out = model_sequence_logps(model, ids, mask, labels)
    logits = model(input_ids=ids, attention_mask=mask).logits
    naive = logits_sequence_logps(logits, labels)
    assert torch.allclose(out.logps, naive, atol=atol, rtol=0)
    assert out.n_tokens.tolist() == (labels[:, 1:] != -100).sum(1).tolist()
    g_fused = torch.autograd.grad(out.logps.sum(), [p for p in model.parameters() if p.requires_grad])
    logits = model(input_ids=ids, attention_mask=mask).logits
    g_naive = torch.autograd.grad(logits_sequence_logps(logits, labels).sum(), [p for p in model.parameters()])
    for a, b in zip(g_fused, g_naive, strict=True):
        assert torch.allclose(a, b, atol=atol, rtol=0)
    if not raw_logits_are_output:  # soft-capped: the metric reports raw (pre-cap) logits by design
        return
    # the logits/chosen metric: mean logit over vocab and labelled tokens
    mask_t = torch.cat([labels[:, 1:] != -100, torch.zeros_like(labels[:, :1], dtype=torch.bool)], 1).double()
    want = (logits.detach().mean(-1) * mask_t).sum(1) / mask_t.sum(1)
    assert torch.allclose(out.mean_logits, want, atol=1e-8)


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_llama_loaded_from_disk(tmp_path, tied):
    spec = TinyModelSpec(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, tie_word_embeddings=tied
    )
    model = saved_and_loaded(build_tiny_model(spec), tmp_path)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    check_against_logits(model)


def test_head_with_bias(tmp_path):
    spec = TinyModelSpec(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, tie_word_embeddings=False
    )
    model = saved_and_loaded(build_tiny_model(spec), tmp_path)
    model.lm_head = nn.Linear(32, V, bias=True, dtype=torch.float64)
    assert head_of(model).bias is model.lm_head.bias
    check_against_logits(model)


def test_gemma2_softcap_loaded_from_disk(tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=3.0,
        attn_logit_softcapping=None,
    )
    torch.manual_seed(0)
    model = saved_and_loaded(Gemma2ForCausalLM(config), tmp_path)
    assert head_of(model).softcap == 3.0
    check_against_logits(model, raw_logits_are_output=False)


def test_cohere_logit_scale(tmp_path):
    from transformers import CohereConfig, CohereForCausalLM

    config = CohereConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, logit_scale=0.37
    )
    torch.manual_seed(0)
    model = saved_and_loaded(CohereForCausalLM(config), tmp_path)
    assert head_of(model).scale == pytest.approx(0.37)
    check_against_logits(model)


def test_unsupported_head_is_refused():
    model = build_tiny_model(
        TinyModelSpec(
            vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, tie_word_embeddings=False
        )
    )

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(32, V)

        def forward(self, x):
            return self.inner(x) * 2

    model.lm_head = Custom()
    with pytest.raises(UnsupportedModelError, match=r"not a plain nn\.Linear"):
        head_of(model)


def test_verify_catches_a_head_it_cannot_see():
    model = build_tiny_model(TinyModelSpec(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1))
    model.double()
    ids, mask, labels = batch()
    assert verify_against_logits(model, ids, mask, labels) < 1e-10
    original = model.forward

    def scaled_forward(*args, **kwargs):  # a model whose own code rescales logits after the head
        out = original(*args, **kwargs)
        out.logits = out.logits * 2
        return out

    model.forward = scaled_forward
    with pytest.raises(UnsupportedModelError, match="differ from the model's own logits"):
        verify_against_logits(model, ids, mask, labels)


@pytest.mark.parametrize("schedule", ["pair", "two-pass"])
def test_model_pair_loss_matches_the_model_s_own_logits(tmp_path, schedule):
    from alphapo.losses import preference_loss
    from alphapo.ops import model_pair_loss

    spec = TinyModelSpec(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    model = saved_and_loaded(build_tiny_model(spec), tmp_path)
    ids, mask, labels = batch(b=4)

    def pair_loss(chosen, rejected, chosen_n, rejected_n, pairs):
        return preference_loss("alphapo", chosen, rejected, chosen_n, rejected_n, alpha=0.3).losses / 2

    params = [p for p in model.parameters() if p.requires_grad]
    out = model_pair_loss(model, ids, mask, labels, pair_loss, schedule=schedule)
    assert out.schedule.name == schedule
    g_fused = torch.autograd.grad(out.loss, params)
    logps = logits_sequence_logps(model(input_ids=ids, attention_mask=mask).logits, labels)
    n = (labels[:, 1:] != -100).sum(1)
    want = pair_loss(logps[:2], logps[2:], n[:2], n[2:], None).sum()
    assert abs(float(out.loss.detach() - want.detach())) < 1e-10
    assert torch.allclose(out.logps, logps.detach(), atol=1e-10, rtol=0)
    for a, b in zip(g_fused, torch.autograd.grad(want, params), strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
