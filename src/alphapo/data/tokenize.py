"""Tokenisation with the rules that most preference-training bugs break.

* Conversations go through the tokenizer's chat template: the prompt rendered with the generation
  prompt, each completion as the continuation of the same conversation (the template's rendering of
  prompt + completion minus the prompt's rendering, which must be its prefix), so the prompt/
  completion boundary is exactly where generation starts. Text goes through the template too when
  ``data.prompt_format`` says so (``auto``: whenever the tokenizer has a template): a string prompt
  is one user turn (an HH-style transcript its turns) and a string completion the assistant's
  answer; with ``plain`` (or no template) text is used as is. Sampling, training, reference
  log-probs, reward-model judging and evaluation all tokenise through this class, so a prompt is
  the same tokens in every stage (:func:`prompt_token_ids`, :func:`completion_token_ids`).
* Prompt and completion are tokenised separately (as generation sees them) without special tokens;
  then the prompt gets exactly one BOS where the tokenizer uses one (a template that writes BOS
  itself does not get a second), and every completion ends with exactly one EOS (text a template
  adds after the final EOS, such as a newline, is dropped).
* Truncation: the prompt to ``max_prompt_length`` (``keep_end`` keeps its latest tokens and the BOS,
  ``keep_start`` its first), then completions to what ``max_length`` leaves; a truncated completion
  loses its EOS (it did not end there). A completion left with no token is never trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from alphapo.data.config import DataConfig, PromptFormat
from alphapo.data.formats import BadRow, Example, Text
from alphapo.errors import ConfigError


@dataclass
class Tokenized:
    """Token ids after truncation, with the lengths before it (to report what was cut)."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    prompt_length: int  # tokens before truncation
    completion_lengths: list[int]

    @property
    def prompt_truncated(self) -> bool:
        return len(self.prompt_ids) < self.prompt_length

    @property
    def completions_truncated(self) -> int:
        """How many of the completions were cut."""
        return sum(len(c) < n for c, n in zip(self.completion_ids, self.completion_lengths, strict=True))

    @property
    def truncated(self) -> bool:
        return self.prompt_truncated or self.completions_truncated > 0


HUMAN_MARKER = "\n\nHuman:"
"""The user-turn marker of HH-style transcripts (Anthropic HH-RLHF); ``data.turn_marker`` is the assistant's."""


def transcript_turns(text: str, assistant_marker: str) -> list[dict[str, str]] | None:
    """An HH-style transcript (``\\n\\nHuman: ... \\n\\nAssistant: ...``) as its turns, or None when
    ``text`` is not one. A final empty assistant turn (the transcript's generation prompt) is dropped."""
    if not text.startswith(HUMAN_MARKER) or assistant_marker not in text:
        return None
    pattern = f"({re.escape(HUMAN_MARKER)}|{re.escape(assistant_marker)})"
    parts = re.split(pattern, text)[1:]  # [marker, content, marker, content, ...]
    turns = [
        {"role": "user" if marker == HUMAN_MARKER else "assistant", "content": content.strip()}
        for marker, content in zip(parts[::2], parts[1::2], strict=True)
    ]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns = turns[:-1]
    return turns or None


class Tokenization:
    """The tokenizer's conventions (BOS, EOS, chat template), probed once, applied to examples."""

    def __init__(self, tokenizer, cfg: DataConfig):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no eos_token: completions need one to end")
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.adds_bos = self.bos is not None and probe[:1] == [self.bos]
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.chat = uses_chat_template(tokenizer, cfg.prompt_format)
        """Whether text prompts and completions go through the chat template (``data.prompt_format``)."""

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render_prompt(self, prompt: Text) -> str:
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def user_turns(self, prompt: str) -> list[dict[str, str]]:
        """A text prompt as a conversation: its transcript's turns, or one user turn."""
        return transcript_turns(prompt, self.cfg.turn_marker) or [{"role": "user", "content": prompt}]

    def prompt_ids(self, prompt: Text, conversational: bool, field: str) -> list[int]:
        if not conversational and self.chat:
            prompt, conversational = self.user_turns(prompt), True
        if conversational:
            self._need_template(field)
            text = self._render_prompt(prompt)
        else:
            text = prompt
        ids = self._encode(text)
        wrote_bos = self.bos is not None and ids[:1] == [self.bos]
        while self.bos is not None and ids[:2] == [self.bos, self.bos]:
            ids = ids[1:]
        if self.adds_bos and not wrote_bos:
            ids = [self.bos, *ids]
        return ids

    def completion_ids(self, prompt: Text, completion: Text, conversational: bool, field: str) -> list[int]:
        if not conversational and self.chat:
            prompt, conversational = self.user_turns(prompt), True
        if conversational and isinstance(completion, str):  # a text answer (a sampled one) to a conversation
            completion = [{"role": "assistant", "content": completion.strip()}]
        if conversational:
            self._need_template(field)
            prefix = self._render_prompt(prompt)
            full = self.tokenizer.apply_chat_template(prompt + completion, tokenize=False)
            if not full.startswith(prefix):
                raise BadRow(field, "the chat template does not render the prompt as a prefix of prompt + completion")
            text = full[len(prefix) :]
        else:
            text = completion
        ids = self._encode(text)
        if self.eos in ids:  # drop what a template writes after the final EOS (e.g. a newline)
            last = len(ids) - 1 - ids[::-1].index(self.eos)
            tail = self.tokenizer.decode(ids[last + 1 :])
            if not tail.strip():
                ids = ids[: last + 1]
        while ids[-2:] == [self.eos, self.eos]:
            ids = ids[:-1]
        if not ids or ids[-1] != self.eos:
            ids = [*ids, self.eos]
        if ids == [self.eos]:
            raise BadRow(field, "empty completion (nothing but the end-of-sequence token)")
        return ids

    def _need_template(self, field: str) -> None:
        if not self.has_template:
            raise ConfigError(
                f"conversational data ({field} is a list of messages) needs a tokenizer with a chat template; "
                f"{type(self.tokenizer).__name__} has none"
            )

    def __call__(self, example: Example) -> Tokenized:
        fields = self._fields(example)
        prompt = self.prompt_ids(example.prompt, example.conversational, fields[0])
        completions = [
            self.completion_ids(example.prompt, c, example.conversational, f)
            for c, f in zip(example.completions, fields[1:], strict=True)
        ]
        return self.truncate(prompt, completions)

    def _fields(self, example: Example) -> list[str]:
        cfg = self.cfg
        if example.kind == "paired":
            return [cfg.prompt_column, cfg.chosen_column, cfg.rejected_column]
        return [cfg.prompt_column, cfg.completion_column]

    def truncate(self, prompt: list[int], completions: list[list[int]]) -> Tokenized:
        cfg = self.cfg
        before = (len(prompt), [len(c) for c in completions])
        keep = cfg.max_prompt_length
        if keep is not None and len(prompt) > keep:
            if cfg.truncation_mode == "keep_start":
                prompt = prompt[:keep]
            elif self.bos is not None and prompt[:1] == [self.bos] and keep > 1:
                prompt = [self.bos, *prompt[len(prompt) - keep + 1 :]]
            else:
                prompt = prompt[len(prompt) - keep :]
        if cfg.max_length is not None:
            room = max(cfg.max_length - len(prompt), 0)
            completions = [c[:room] for c in completions]
        return Tokenized(prompt, completions, *before)


def uses_chat_template(tokenizer, prompt_format: PromptFormat) -> bool:
    """Whether text goes through ``tokenizer``'s chat template under ``prompt_format``."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise ConfigError(
            f"prompt_format=chat needs a tokenizer with a chat template; {type(tokenizer).__name__} has none "
            "(use prompt_format=plain or auto)"
        )
    return prompt_format == "chat" or (prompt_format == "auto" and has_template)


def prompt_token_ids(tokenizer, prompts: list[Text], prompt_format: PromptFormat = "auto") -> list[list[int]]:
    """Token ids of each prompt as training tokenises it (text or conversation, ``prompt_format``),
    ending where generation starts; no truncation."""
    tokenization = Tokenization(tokenizer, DataConfig(prompt_format=prompt_format, max_length=None))
    return [tokenization.prompt_ids(p, isinstance(p, list), "prompt") for p in prompts]


def completion_token_ids(
    tokenizer, prompts: list[Text], completions: list[Text], prompt_format: PromptFormat = "auto"
) -> list[list[int]]:
    """Token ids of each completion (ending with exactly one EOS) after its prompt, as training
    tokenises it; a completion may be text after a conversation prompt (a sampled answer)."""
    tokenization = Tokenization(tokenizer, DataConfig(prompt_format=prompt_format, max_length=None))
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if isinstance(completion, str) and not completion.strip():  # the model ended at once: EOS alone
            out.append([tokenization.eos])
        else:
            out.append(tokenization.completion_ids(prompt, completion, isinstance(prompt, list), "completion"))
    return out
