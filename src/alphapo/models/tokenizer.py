"""Tokenizers trained locally with ``tokenizers``: byte-level BPE with a chat template.

Used by the demo and the tests, where nothing can come from a model hub. The result is a
``PreTrainedTokenizerFast`` that is saved with ``save_pretrained`` and loaded back with
``AutoTokenizer.from_pretrained`` like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""Each turn is ``<|role|>content</s>``; the generation prompt is ``<|assistant|>``."""


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    *,
    add_bos: bool = True,
    chat_template: str | None = CHAT_TEMPLATE,
    min_frequency: int = 2,
    split_digits: bool = False,
):
    """Train a byte-level BPE tokenizer on ``texts``.

    ``<s>`` is BOS (prepended to every encoding when ``add_bos``), ``</s>`` is EOS and ``<pad>`` pads.
    The chat template ends each turn with EOS, so a completion rendered by it ends exactly at EOS.
    ``split_digits`` makes every digit its own token (as Llama's tokenizers do), which is what lets a
    small model learn arithmetic digit by digit.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    if add_bos:
        bos = backend.token_to_id("<s>")
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
