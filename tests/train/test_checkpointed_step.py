"""A step under gradient checkpointing gives the plain step's loss and gradients (fp32 tolerance)."""

import copy

import pytest
import torch

from alphapo.data import Collator
from alphapo.models import TinyModelSpec, build_tiny_model
from alphapo.train.metrics import MetricSums
from alphapo.train.objectives import PreferenceObjective, StepShape
from alphapo.train.setup import enable_checkpointing


def batch():
    g = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(3, 128, (n,), generator=g).tolist()

    items = [
        {"index": i, "prompt_ids": ids(4 + 3 * i), "chosen_ids": ids(6 + i), "rejected_ids": ids(9 - 2 * i)}
        for i in range(3)
    ]
    return Collator(pad_token_id=0)(items)


@pytest.mark.parametrize(("schedule", "every"), [("pair", 1), ("two-pass", 1), ("pair", 2)])
def test_checkpointed_step_matches_the_plain_one(schedule, every):
    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4)
    plain = build_tiny_model(spec, vocab_size=128, special_tokens={"pad_token_id": 0}).train()
    checkpointed = copy.deepcopy(plain)
    enable_checkpointing(checkpointed, every_n_layers=every)
    flags = [layer.gradient_checkpointing for layer in checkpointed.model.layers]
    assert flags == [i % every == 0 for i in range(4)]  # every N-th layer recomputes, the others keep
    data = batch()
    results = []
    for model in (plain, checkpointed):
        objective = PreferenceObjective(
            "alphapo", {"alpha": 0.25, "beta": 2.5, "gamma": 0.25}, None, None, "fused", None, schedule=schedule
        )
        sums = MetricSums()
        loss = objective(model, data, StepShape(examples=3, tokens=0, world_size=1), sums)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=1e-7)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7, msg=name)
    assert any(g.abs().sum() > 0 for g in grads_a.values())


def test_fused_adamw_is_chosen_where_it_sees_plain_parameters_and_matches_the_loop():
    from alphapo.config import validate
    from alphapo.train import TrainConfig
    from alphapo.train.setup import make_optimizer

    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    cfg = validate(
        TrainConfig,
        {
            "model": {"tiny": spec.model_dump()},
            "tokenizer": "tok",
            "data": {"paths": ["p.jsonl"]},
            "optim": {"lr": 1e-2, "weight_decay": 0.1},
        },
    )
    model = build_tiny_model(spec, vocab_size=128, special_tokens={"pad_token_id": 0})
    other = copy.deepcopy(model)
    fused = make_optimizer(cfg, model)
    loop = make_optimizer(cfg, other, fused_allowed=False)  # FSDP / DeepSpeed runs
    assert all(g["fused"] for g in fused.param_groups) and not any(g["fused"] for g in loop.param_groups)
    off = validate(
        TrainConfig,
        {
            "model": {"tiny": spec.model_dump()},
            "tokenizer": "tok",
            "data": {"paths": ["p.jsonl"]},
            "optim": {"fused": False},
        },
    )
    assert not make_optimizer(off, model).param_groups[0]["fused"]
    data = batch()
    for _ in range(3):
        for m, opt in ((model, fused), (other, loop)):
            opt.zero_grad()
            m(input_ids=data["input_ids"], attention_mask=data["attention_mask"], labels=data["labels"]).loss.backward()
            opt.step()
    for (name, a), b in zip(model.named_parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoint_every_n_layers_without_checkpointing_is_refused():
    from alphapo.config import validate
    from alphapo.errors import ConfigError
    from alphapo.train import TrainConfig

    with pytest.raises(ConfigError, match=r"needs model\.gradient_checkpointing: true"):
        validate(
            TrainConfig,
            {"model": {"path": "m", "checkpoint_every_n_layers": 2}, "data": {"paths": ["p.jsonl"]}},
        )
