"""A text prompt is the same tokens in every stage when the tokenizer has a chat template: one user
turn, rendered by ``apply_chat_template`` (default system prompt included), in sampling, training,
reference log-probs, reward-model judging and evaluation. Checked token for token."""

import json

import pytest
import torch

from alphapo.data import Collator, DataConfig, load_dataset_for_training
from alphapo.data.tokenize import completion_token_ids, prompt_token_ids, transcript_turns
from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer
from tests.data.conftest import SENTENCES

SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "<|system|>You are a helpful assistant.</s>{% endif %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""Like SmolLM2's: a default system turn when none is given, a newline after each turn's EOS."""

PROMPT, CHOSEN, REJECTED = "What is two plus two?", "Four.", "Five."


@pytest.fixture(scope="module", params=["adds_bos", "template_bos"])
def chat(request, tmp_path_factory):
    """(tokenizer, model dir): BOS added by the tokenizer, or written by the template itself."""
    from transformers import AutoTokenizer

    template = SYSTEM_TEMPLATE if request.param == "adds_bos" else "{{ bos_token }}" + SYSTEM_TEMPLATE
    root = tmp_path_factory.mktemp(request.param)
    train_bpe_tokenizer(SENTENCES, vocab_size=300, chat_template=template).save_pretrained(root)
    tokenizer = AutoTokenizer.from_pretrained(root)
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    build_tiny_model(spec, len(tokenizer), special).save_pretrained(root)
    return tokenizer, root


def expected_prompt(tokenizer) -> list[int]:
    ids = list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_dict=False
        )
    )
    return ids if ids[0] == tokenizer.bos_token_id else [tokenizer.bos_token_id, *ids]


def expected_full(tokenizer, answer: str) -> list[int]:
    """The whole conversation as the template renders it, cut after the answer's EOS (the newline the
    template writes after it is not part of the answer)."""
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": answer}]
    ids = list(tokenizer.apply_chat_template(messages, return_dict=False))
    ids = ids if ids[0] == tokenizer.bos_token_id else [tokenizer.bos_token_id, *ids]
    last_eos = len(ids) - 1 - ids[::-1].index(tokenizer.eos_token_id)
    return ids[: last_eos + 1]


def test_the_default_system_prompt_is_in_the_rendered_prompt(chat):
    tokenizer, _ = chat
    rendered = tokenizer.decode(expected_prompt(tokenizer))
    assert "You are a helpful assistant." in rendered and rendered.count(tokenizer.bos_token) == 1


def test_sampling_feeds_the_model_the_templated_prompt(chat):
    from transformers import AutoModelForCausalLM

    from alphapo.sample.generate import generate

    tokenizer, root = chat
    model = AutoModelForCausalLM.from_pretrained(root).eval()
    seen = []

    def spy(_module, args, kwargs):  # every forward pass: the first is the prompt's (prefill)
        seen.append(
            kwargs["input_ids"][0][kwargs["attention_mask"][0, -kwargs["input_ids"].shape[1] :].bool()].tolist()
        )

    model.register_forward_pre_hook(spy, with_kwargs=True)
    generate(model, tokenizer, [PROMPT], k=1, temperature=0.0, max_new_tokens=2)
    assert seen[0] == expected_prompt(tokenizer)
    assert prompt_token_ids(tokenizer, [PROMPT], "plain") != seen[0]  # plain text stays plain when asked


def test_training_and_reference_tokens_are_the_templated_conversation(chat, tmp_path):
    tokenizer, root = chat
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}) + "\n")
    data = load_dataset_for_training(DataConfig(paths=[str(path)]), tokenizer, tmp_path / "out", quiet=True)
    item = data[0]
    assert item["prompt_ids"] == expected_prompt(tokenizer)
    assert item["prompt_ids"] + item["chosen_ids"] == expected_full(tokenizer, CHOSEN)
    assert item["prompt_ids"] + item["rejected_ids"] == expected_full(tokenizer, REJECTED)
    # reference log-probs are computed on exactly these rows: compare with the model's own logits
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from alphapo.train.reference import compute_table

    model = AutoModelForCausalLM.from_pretrained(root).eval()
    table = compute_table(model, data, Collator(tokenizer.pad_token_id), 2, Accelerator(cpu=True), "fused")
    for column, answer in enumerate((CHOSEN, REJECTED)):
        ids = torch.tensor([expected_full(tokenizer, answer)])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        start = len(expected_prompt(tokenizer))
        manual = logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]][start - 1 :].sum()
        assert float(table[0, column]) == pytest.approx(float(manual), abs=1e-4)


def test_evaluation_and_judging_score_the_templated_conversation(chat):
    tokenizer, _ = chat
    prompt = prompt_token_ids(tokenizer, [PROMPT])[0]
    (answer,) = completion_token_ids(tokenizer, [PROMPT], [CHOSEN])
    assert prompt + answer == expected_full(tokenizer, CHOSEN)
    # a sampled answer (text) after a conversation prompt is rendered the same way
    (again,) = completion_token_ids(tokenizer, [[{"role": "user", "content": PROMPT}]], [CHOSEN])
    assert again == answer
    assert completion_token_ids(tokenizer, [PROMPT], [""]) == [[tokenizer.eos_token_id]]  # ended at once


def test_reward_model_judging_reads_the_templated_sequences(chat, tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from alphapo.judge.score import reward_model_scores

    tokenizer, _ = chat
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    seen = []
    original = LlamaForSequenceClassification.forward

    def spy(self, input_ids=None, attention_mask=None, **kwargs):
        seen.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True))
        return original(self, input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    LlamaForSequenceClassification.forward = spy
    try:
        reward_model_scores(tmp_path / "rm", [{"prompt": PROMPT, "completions": [CHOSEN, REJECTED]}])
    finally:
        LlamaForSequenceClassification.forward = original
    assert seen == [expected_full(tokenizer, CHOSEN), expected_full(tokenizer, REJECTED)]


def test_an_hh_transcript_becomes_its_turns():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant:"
    assert transcript_turns(text, "\n\nAssistant:") == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    assert transcript_turns("What is 2+2?", "\n\nAssistant:") is None


def test_hh_rows_train_as_conversations_under_a_chat_template(chat, tmp_path):
    tokenizer, _ = chat
    row = {
        "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant: Why not.",
        "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant: No.",
    }
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps(row) + "\n")
    item = load_dataset_for_training(DataConfig(paths=[str(path)]), tokenizer, tmp_path / "o", quiet=True)[0]
    messages = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "A joke?"},
    ]
    rendered = tokenizer.decode(item["prompt_ids"])
    template = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith(template) and tokenizer.decode(item["chosen_ids"]) == f"Why not.{tokenizer.eos_token}"


def test_chat_without_a_template_is_a_clear_error(tmp_path):
    from transformers import AutoTokenizer

    from alphapo.errors import ConfigError

    train_bpe_tokenizer(SENTENCES, vocab_size=300, chat_template=None).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert prompt_token_ids(tokenizer, [PROMPT]) == prompt_token_ids(tokenizer, [PROMPT], "plain")  # auto: as is
    with pytest.raises(ConfigError, match="chat template"):
        prompt_token_ids(tokenizer, [PROMPT], "chat")
