"""The KL estimate averages over each prompt's own samples (several samples per prompt)."""

import pytest
import torch

import alphapo.eval.evaluate as evaluate_module


def test_kl_estimate_is_the_per_prompt_mean_over_its_samples(monkeypatch):
    prompts, samples = 3, 4

    def fake_generate(model, tokenizer, prompts_, k, **kwargs):
        return [[f"{i}:{j}" for j in range(k)] for i in range(len(prompts_))]

    def fake_logps(model, tokenizer, prompts_, responses, batch_size, *label):
        values = []
        for response in responses:
            i, j = map(int, response.split(":"))
            values.append(0.5 * i + j * j if model == "policy" else -0.25 * i * j)
        return torch.tensor(values, dtype=torch.float64)

    monkeypatch.setattr(evaluate_module, "generate", fake_generate)
    monkeypatch.setattr(evaluate_module, "sequence_logps_of", fake_logps)
    rows = [{"prompt": f"p{i}"} for i in range(prompts)]
    got = evaluate_module.kl_estimate("policy", "baseline", None, rows, samples, 10, 8, seed=0)
    # by hand: prompt i's samples j = 0..3 give (0.5 i + j^2) - (-0.25 i j)
    expected = [sum(0.5 * i + j * j + 0.25 * i * j for j in range(samples)) / samples for i in range(prompts)]
    assert got == pytest.approx(expected, rel=1e-12)
