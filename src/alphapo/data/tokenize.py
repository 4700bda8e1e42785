"""Tokenisation with the rules that most preference-training bugs break.

* Conversations go through the tokenizer's chat template: the prompt rendered with the generation
  prompt, each completion as the continuation of the same conversation (the template's rendering of
  prompt + completion minus the prompt's rendering, which must be its prefix), so the prompt/
  completion boundary is exactly where generation starts. Plain text is used as is.
* Prompt and completion are tokenised separately (as generation sees them) without special tokens;
  then the prompt gets exactly one BOS where the tokenizer uses one (a template that writes BOS
  itself does not get a second), and every completion ends with exactly one EOS (text a template
  adds after the final EOS, such as a newline, is dropped).
* Truncation: the prompt to ``max_prompt_length`` (``keep_end`` keeps its latest tokens and the BOS,
  ``keep_start`` its first), then completions to what ``max_length`` leaves; a truncated completion
  loses its EOS (it did not end there). A completion left with no token is never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from alphapo.data.config import DataConfig
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

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render_prompt(self, prompt: Text) -> str:
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, prompt: Text, conversational: bool, field: str) -> list[int]:
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
