"""``alphapo sample``: K completions per prompt from a model directory.

    alphapo sample --model runs/sft/model --prompts data/train.jsonl --out samples.jsonl -k 8

Prompts are JSONL rows with a ``prompt`` (text or a conversation); every other field (an ``id``, the
task's ``answer``) is carried through to the output, where each row gains ``completions`` (K strings).
Prompts are tokenised exactly as training tokenises them (one BOS; through the chat template for
conversations, and for text prompts when the tokenizer has one: ``--prompt-format``). Generation is
batched with transformers' KV cache, left padding and a seed, so a run is reproducible: alphapo's own
decoding loop (:func:`decode`: a row that has ended leaves the batch, so a batch costs what its
running rows cost; greedy tokens equal ``model.generate``'s), or ``model.generate`` for models
without a ``DynamicCache``; with vLLM installed and a GPU present, vLLM is used. A ``.gguf`` file works as
``--model`` (dequantised once into a cached directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alphapo.data.config import PromptFormat
from alphapo.data.stagefiles import read_jsonl, write_jsonl
from alphapo.data.tokenize import prompt_token_ids
from alphapo.errors import StageError
from alphapo.progress import Progress


def load_for_generation(model_dir: str | Path, stage: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) from a ``save_pretrained`` directory (or a ``.gguf`` file, dequantised
    once into a cached directory), ready to generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.errors import ConfigError
    from alphapo.models.sources import check_model_dir, resolve_model_source

    try:
        model_dir = resolve_model_source(str(model_dir), f"{stage} --model")
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
    prompt_format: PromptFormat = "auto",
    on_batch=None,
) -> list[list[str]]:
    """``k`` completions (decoded text) for each prompt. ``temperature == 0`` is greedy decoding.
    ``progress``: a label to report progress under (a bar on a terminal, periodic lines in a log, with
    new tokens/s). ``prompt_format``: how text prompts are rendered (see ``data.prompt_format``).
    ``on_batch(indices, texts, new_tokens, ended)``: called after each batch with, per prompt, its
    index, its ``k`` completions, their generated token counts and whether each ended with EOS (for
    writing answers as they come).

    Prompts are generated longest first in batches of similar length (less padding); within a batch
    a row that has ended leaves it (:func:`decode`), and the batch stops when every row has ended
    (EOS) or reached ``max_new_tokens``."""
    if temperature == 0 and k != 1:
        raise StageError("sample: greedy decoding (temperature 0) gives one completion per prompt: set k=1")
    ids = prompt_token_ids(tokenizer, prompts, prompt_format)
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
            run = decode if own_decoding(model) else decode_with_generate
            new = run(
                model,
                input_ids.repeat_interleave(k, dim=0),
                mask.repeat_interleave(k, dim=0),
                max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad,
                temperature=temperature,
                top_p=top_p,
            )
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            counts, ended = new_token_counts(new, tokenizer.eos_token_id)
            indices = order[start : start + batch_size]
            for j, i in enumerate(indices):
                out[i] = texts[j * k : (j + 1) * k]
            if on_batch is not None:
                per_prompt = [slice(j * k, (j + 1) * k) for j in range(len(indices))]
                on_batch(
                    indices, [out[i] for i in indices], [counts[s] for s in per_prompt], [ended[s] for s in per_prompt]
                )
            bar.advance(len(batch), new_tokens=sum(counts))
    finally:
        torch.random.set_rng_state(generator_state)
        bar.close()
    return out


@torch.no_grad()
def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """New token ids [R, max_new_tokens] for left-padded rows (pad after a row's EOS), with the KV cache.

    Greedy when ``temperature == 0``, else sampled from ``softmax(logits / temperature)`` cut to its top-p
    nucleus (:func:`nucleus`), drawing from torch's global generator. Unlike ``model.generate``, a row
    that has emitted EOS leaves the batch: its rows of the KV cache are dropped
    (``Cache.batch_select_indices``), so the steps after it cost only what the rows still running cost
    (in a batch whose answers end at different lengths, most of the work ``generate`` spends on
    finished rows); a cache with a layer that cannot drop rows keeps them, padded after their EOS. The
    greedy tokens are ``generate``'s (tests compare them); positions come from the attention mask (left
    padding), as ``generate`` computes them."""
    rows = input_ids.shape[0]
    out = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=input_ids.device)
    if max_new_tokens == 0:
        return out
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    preallocate(cache, input_ids.shape[1] + max_new_tokens)
    # rows leave the batch where every layer of the cache can drop them (all attention layers can)
    compact = all(hasattr(layer, "batch_select_indices") for layer in getattr(cache, "layers", [None]))
    keep_last = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    cache_name = "cache" if _accepts(model, "cache") else "past_key_values"  # transformers renamed it in 5.x
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        **{cache_name: cache},
        **keep_last,
    ).logits[:, -1, :]
    active = torch.arange(rows, device=input_ids.device)  # which output row each batch row fills
    ended = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)  # rows kept after their EOS
    for t in range(max_new_tokens):
        token = _next_token(logits, temperature, top_p)
        out[active, t] = token.masked_fill(ended, pad_token_id)
        if t == max_new_tokens - 1:
            break
        if eos_token_id is not None:
            ended = ended | (token == eos_token_id)
        if ended.all():
            break
        if compact and ended.any():
            keep = (~ended).nonzero().squeeze(1)
            active, token, attention_mask, ended = active[keep], token[keep], attention_mask[keep], ended[keep]
            cache.batch_select_indices(keep)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        logits = model(
            input_ids=token[:, None],
            attention_mask=attention_mask,
            position_ids=attention_mask.sum(-1, keepdim=True) - 1,
            use_cache=True,
            **{cache_name: cache},
        ).logits[:, -1, :]
    return out


def preallocate(cache, capacity: int) -> None:
    """Replace ``cache``'s plain attention layers (transformers' ``DynamicLayer``) by layers that write
    new keys and values into a buffer of ``capacity`` positions instead of concatenating them to the
    cache (which copies the whole cache at every step: a fifth of a decoding step at batch 64)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if layers is None:
        return
    cls = _preallocated_layer_class(DynamicLayer)
    cache.layers = [cls(capacity) if type(layer) is DynamicLayer else layer for layer in layers]


_PREALLOCATED: dict[type, type] = {}


def _preallocated_layer_class(base: type) -> type:
    """A ``DynamicLayer`` whose ``keys``/``values`` are views of preallocated buffers (so everything
    that reads them sees what it saw); where something replaced them (rows dropped, the cache
    cropped), the buffers are rebuilt from them once."""
    if base in _PREALLOCATED:
        return _PREALLOCATED[base]

    class PreallocatedLayer(base):
        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self._view = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            have, new = self.get_seq_length(), key_states.shape[-2]
            if self._view is None or self.keys is not self._view or have + new > self._key_buffer.shape[-2]:
                size = max(self.capacity, have + new)
                shape = (*key_states.shape[:-2], size, key_states.shape[-1])
                keys, values = key_states.new_empty(shape), value_states.new_empty(shape)
                if have:
                    keys[..., :have, :] = self.keys
                    values[..., :have, :] = self.values
                self._key_buffer, self._value_buffer = keys, values
            self._key_buffer[..., have : have + new, :] = key_states
            self._value_buffer[..., have : have + new, :] = value_states
            self.keys = self._view = self._key_buffer[..., : have + new, :]
            self.values = self._value_buffer[..., : have + new, :]
            return self.keys, self.values

    _PREALLOCATED[base] = PreallocatedLayer
    return PreallocatedLayer


def own_decoding(model) -> bool:
    """Whether :func:`decode` serves ``model``: a decoder-only model whose KV cache is transformers'
    ``DynamicCache`` built from its config (transformers >= 5; not the models with a cache of their own)."""
    import inspect

    from transformers import DynamicCache

    if "config" not in inspect.signature(DynamicCache.__init__).parameters:  # transformers 4.x
        return False
    supports = getattr(type(model), "_supports_default_dynamic_cache", None)
    return not model.config.is_encoder_decoder and (supports is None or bool(supports()))


@torch.no_grad()
def decode_with_generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """:func:`decode` through ``model.generate`` (finished rows stay in the batch until all end)."""
    sampling = (
        {"do_sample": False}
        if temperature == 0
        else {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    )
    generated = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        **sampling,
    )
    new = generated[:, input_ids.shape[1] :]
    if new.shape[1] < max_new_tokens:  # every row ended early
        new = torch.cat([new, new.new_full((new.shape[0], max_new_tokens - new.shape[1]), pad_token_id)], dim=1)
    return new


def _accepts(model, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


def _next_token(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        probs = nucleus(probs, top_p)
    return torch.multinomial(probs, 1).squeeze(1)


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` [R, V] cut to each row's top-p nucleus (the most probable tokens until their total
    reaches ``top_p``; always at least the first) and renormalised."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # the mass of the tokens ranked above each one
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


def new_token_counts(new: torch.Tensor, eos: int | None) -> tuple[list[int], list[bool]]:
    """Per row of ``new`` [R, N] (generated ids): tokens generated, up to and including its first EOS
    (all N when none), and whether it ended with EOS (False: cut at ``max_new_tokens``)."""
    if eos is None or new.shape[1] == 0:
        return [new.shape[1]] * new.shape[0], [False] * new.shape[0]
    hit = new == eos
    ended = hit.any(dim=1)
    first = torch.where(ended, hit.int().argmax(dim=1) + 1, torch.full_like(ended, new.shape[1], dtype=torch.long))
    return first.tolist(), ended.tolist()


def _vllm_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _generate_vllm(
    model_dir, prompts, tokenizer, *, k, temperature, top_p, max_new_tokens, seed, prompt_format
) -> list[list[str]]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), seed=seed)
    params = SamplingParams(n=k, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    requests = [{"prompt_token_ids": ids} for ids in prompt_token_ids(tokenizer, prompts, prompt_format)]
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
    prompt_format: PromptFormat = "auto",
) -> int:
    """Sample ``k`` completions for every prompt of ``prompts_path`` into ``out_path``; returns rows."""
    rows = read_jsonl(prompts_path, "sample", required=("prompt",))
    use_vllm = engine == "vllm" or (engine == "auto" and _vllm_available())
    if use_vllm:
        from transformers import AutoTokenizer

        from alphapo.models.sources import resolve_model_source

        model_dir = resolve_model_source(str(model_dir), "sample --model")
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
            prompt_format=prompt_format,
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
            prompt_format=prompt_format,
        )
    write_jsonl(out_path, ({**row, "completions": c} for row, c in zip(rows, completions, strict=True)))
    return len(rows)
