"""``alphapo sample``: K completions per prompt from a model directory.

    alphapo sample --model runs/sft/model --prompts data/train.jsonl --out samples.jsonl -k 8

Prompts are JSONL rows with a ``prompt`` (text or a conversation); every other field (an ``id``, the
task's ``answer``) is carried through to the output, where each row gains ``completions`` (K strings).
Prompts are tokenised exactly as training tokenises them (one BOS, the chat template's generation
prompt for conversations). Generation is batched Hugging Face ``generate`` with the KV cache, left
padding and a seed, so a run is reproducible; with vLLM installed and a GPU present, vLLM is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from alphapo import files
from alphapo.data.config import DataConfig
from alphapo.data.tokenize import Tokenization
from alphapo.errors import StageError
from alphapo.progress import Progress


def read_jsonl(path: str | Path, stage: str, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Rows of a stage's input file (JSONL, or any format the data layer reads); a clear error naming
    the stage, file, row and field when one is unusable."""
    from alphapo.data.readers import UnreadableRow, read_rows
    from alphapo.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{stage}: input file {path} does not exist (did the previous stage run?)")
    rows = []
    try:
        for number, row in read_rows(str(path)):
            if isinstance(row, UnreadableRow):
                raise StageError(f"{stage}: {path}: row {number}: {row.reason}")
            for field in required:
                if field not in row:
                    raise StageError(f"{stage}: {path}: row {number}: missing field {field!r}")
            rows.append(row)
    except DataError as err:
        raise StageError(f"{stage}: {err}") from None
    if not rows:
        raise StageError(f"{stage}: {path} has no rows")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows atomically (temporary file, then rename)."""
    files.write_jsonl(path, rows)


def load_for_generation(model_dir: str | Path, stage: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) from a ``save_pretrained`` directory, ready to generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.errors import ConfigError
    from alphapo.train.setup import check_model_dir

    try:
        check_model_dir(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    except ConfigError as err:
        raise StageError(f"{stage}: {err}") from None
    except (OSError, ValueError) as err:
        raise StageError(f"{stage}: cannot load the model in {model_dir}: {err}") from None
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def prompt_token_ids(tokenizer, prompts: list[Any]) -> list[list[int]]:
    """Token ids of each prompt, by the training rules (text or conversation)."""
    tokenization = Tokenization(tokenizer, DataConfig())
    return [tokenization.prompt_ids(p, isinstance(p, list), "prompt") for p in prompts]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[Any],
    *,
    k: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    seed: int = 0,
    progress: str | None = None,
) -> list[list[str]]:
    """``k`` completions (decoded text) for each prompt. ``temperature == 0`` is greedy decoding.
    ``progress``: a label to report progress under (a bar on a terminal, periodic lines in a log)."""
    if temperature == 0 and k != 1:
        raise StageError("sample: greedy decoding (temperature 0) gives one completion per prompt: set k=1")
    ids = prompt_token_ids(tokenizer, prompts)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths together: less padding
    out: list[list[str]] = [[] for _ in ids]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    bar = Progress(progress or "generate", len(ids), "prompts", enabled=progress is not None)
    try:
        for start in range(0, len(order), batch_size):
            batch = [ids[i] for i in order[start : start + batch_size]]
            width = max(len(b) for b in batch)
            input_ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch], device=device)
            mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch], device=device)
            sampling = (
                {"do_sample": False}
                if temperature == 0
                else {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            )
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for j, i in enumerate(order[start : start + batch_size]):
                out[i] = texts[j * k : (j + 1) * k]
            bar.advance(len(batch))
    finally:
        torch.random.set_rng_state(generator_state)
        bar.close()
    return out


def _vllm_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _generate_vllm(model_dir, prompts, tokenizer, *, k, temperature, top_p, max_new_tokens, seed) -> list[list[str]]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), seed=seed)
    params = SamplingParams(n=k, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    requests = [{"prompt_token_ids": ids} for ids in prompt_token_ids(tokenizer, prompts)]
    return [[c.text for c in r.outputs] for r in llm.generate(requests, params)]


def sample_file(
    model_dir: str | Path,
    prompts_path: str | Path,
    out_path: str | Path,
    *,
    k: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    seed: int = 0,
    engine: str = "auto",
) -> int:
    """Sample ``k`` completions for every prompt of ``prompts_path`` into ``out_path``; returns rows."""
    rows = read_jsonl(prompts_path, "sample", required=("prompt",))
    use_vllm = engine == "vllm" or (engine == "auto" and _vllm_available())
    if use_vllm:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        completions = _generate_vllm(
            model_dir,
            [r["prompt"] for r in rows],
            tokenizer,
            k=k,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, tokenizer = load_for_generation(model_dir, "sample", device=device)
        completions = generate(
            model,
            tokenizer,
            [r["prompt"] for r in rows],
            k=k,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
            progress="sample",
        )
    write_jsonl(out_path, ({**row, "completions": c} for row, c in zip(rows, completions, strict=True)))
    return len(rows)
