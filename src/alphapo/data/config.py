"""Settings of the data layer: where the rows come from, their format and how they are tokenised."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Format = Literal["auto", "paired", "implicit", "unpaired", "sft"]
PromptFormat = Literal["auto", "chat", "plain"]


class DataConfig(BaseModel):
    """Preference (or SFT / unpaired) data: files, columns, format, tokenisation and validation.

    ``paths``: JSONL (``.jsonl``/``.jsonl.gz``), JSON, Parquet files, ``save_to_disk`` directories or
    Hugging Face dataset names. ``format``: ``auto`` detects it per file from the columns present:
    ``paired`` (prompt/chosen/rejected), ``implicit`` (chosen/rejected only: the prompt is their
    shared prefix), ``unpaired`` (prompt/completion/label, for KTO), ``sft`` (prompt/completion, or
    ``messages``). Strings are plain text; lists of ``{"role", "content"}`` are conversations and go
    through the tokenizer's chat template.
    """

    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(default_factory=list)
    split: str | None = None
    format: Format = "auto"
    prompt_column: str = "prompt"
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    completion_column: str = "completion"
    label_column: str = "label"
    messages_column: str = "messages"
    margin_column: str | None = None
    """Paired rows: a column of per-pair margins, for reward models (TRL's ``margin``: the loss is
    ``-log sigma(r_chosen - r_rejected - margin)``; ``alphapo rm`` sets ``margin``). Read from each file
    whose first rows have the column (a row there without a finite number is a bad row); a file
    without it has no margins (0), and the data summary says so."""
    turn_marker: str = "\n\nAssistant:"
    """For implicit prompts in plain text: the prompt ends after the last marker in the shared prefix."""
    prompt_format: PromptFormat = "auto"
    """How text (not conversation) prompts and completions are rendered. ``auto``: through the
    tokenizer's chat template when it has one (a string prompt becomes one user turn and its
    completion the assistant's answer; an HH-style transcript, ``\\n\\nHuman: ... \\n\\nAssistant:``,
    becomes its turns), as is otherwise. ``chat``: always through the template (an error without
    one). ``plain``: text as is, for base models or a model trained on plain text."""
    max_length: int | None = Field(default=1024, gt=1)
    max_prompt_length: int | None = Field(default=512, gt=0)
    """Prompt tokens kept (``truncation_mode``). Unset with a ``max_length`` of 512 or less: half of it."""
    truncation_mode: Literal["keep_end", "keep_start"] = "keep_end"
    on_bad_row: Literal["error", "skip"] = "skip"
    """``skip``: rows that cannot be trained on are skipped, counted by reason and written to
    ``skipped_rows.jsonl``; ``error``: the first one stops the run (file, row and field named)."""
    max_bad_fraction: float = Field(default=0.1, ge=0, le=1)
    """Stop when more than this share of the rows read had to be skipped: the data or the settings
    are then wrong, not a few rows."""
    pad_to_multiple_of: int | None = Field(default=None, gt=0)
    max_rows: int | None = Field(default=None, gt=0)
    """Read at most this many rows per file (for quick runs); the rest is not read."""
    holdout: float = Field(default=0.0, ge=0, lt=1)
    """Share of the prompts set aside by a stable hash of the prompt's text (the same split on every
    machine, whatever the file order; every row of one prompt lands on the same side). 0: none."""
    part: Literal["train", "heldout"] = "train"
    """With ``holdout``: which side this run reads (``alphapo rm`` trains on ``train`` and evaluates on
    ``heldout``). Rows of the other side are counted in the data summary, not trained on."""
    cache_dir: str | None = None
    """Where tokenised datasets are cached; None: ``<output_dir>/cache``."""

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _lengths(self):
        if (
            self.max_length is not None
            and self.max_prompt_length is not None
            and self.max_prompt_length >= self.max_length
        ):
            if "max_prompt_length" not in self.model_fields_set:  # the default (512) under a short max_length
                self.max_prompt_length = self.max_length // 2  # the default's own proportion (512 of 1024)
                return self
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be below max_length ({self.max_length}), "
                "or no completion token would fit"
            )
        return self
