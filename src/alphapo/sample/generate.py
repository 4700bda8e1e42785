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

    Prompts are generated longest first (similar lengths together: less padding). With
    :func:`decode_stream` (models with a plain ``DynamicCache``) up to ``batch_size`` prompts decode at
    once and a prompt joins as soon as earlier ones end (continuous batching); otherwise in batches
    of ``batch_size`` that end when every row has ended (EOS) or reached ``max_new_tokens``."""
    if temperature == 0 and k != 1:
        raise StageError("sample: greedy decoding (temperature 0) gives one completion per prompt: set k=1")
    ids = prompt_token_ids(tokenizer, prompts, prompt_format)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths together: less padding
    out: list[list[str]] = [[] for _ in ids]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    bar = Progress(progress or "generate", len(ids), "prompts", enabled=progress is not None)

    def finished(indices: list[int], new: torch.Tensor) -> None:
        """``indices`` (into ``ids``) have all their ``k`` completions in ``new`` [len * k, N]."""
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        counts, ended = new_token_counts(new, eos)
        for j, i in enumerate(indices):
            out[i] = texts[j * k : (j + 1) * k]
        if on_batch is not None:
            per_prompt = [slice(j * k, (j + 1) * k) for j in range(len(indices))]
            on_batch(
                indices, [out[i] for i in indices], [counts[s] for s in per_prompt], [ended[s] for s in per_prompt]
            )
        bar.advance(len(indices), new_tokens=sum(counts))

    settings = {"max_new_tokens": max_new_tokens, "eos_token_id": eos, "pad_token_id": pad}
    settings.update(temperature=temperature, top_p=top_p)
    try:
        if can_stream(model):
            rows = [ids[i] for i in order for _ in range(k)]  # a prompt's k rows side by side
            ended_rows: dict[int, torch.Tensor] = {}  # rows ended while a sibling still decodes

            def on_rows(done: list[int], new: torch.Tensor) -> None:
                ended_rows.update(zip(done, new, strict=True))
                complete = sorted({row // k for row in done if all(r in ended_rows for r in _siblings(row, k))})
                if complete:
                    tokens = torch.stack([ended_rows.pop(r) for j in complete for r in range(j * k, (j + 1) * k)])
                    finished([order[j] for j in complete], tokens)

            decode_stream(model, rows, batch_size=batch_size * k, on_rows=on_rows, **settings)
        else:
            device = next(model.parameters()).device
            run = decode if own_decoding(model) else decode_with_generate
            for start in range(0, len(order), batch_size):
                batch = [ids[i] for i in order[start : start + batch_size]]
                width = max(len(b) for b in batch)
                input_ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch], device=device)
                mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch], device=device)
                new = run(model, input_ids.repeat_interleave(k, dim=0), mask.repeat_interleave(k, dim=0), **settings)
                finished(order[start : start + batch_size], new)
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


@torch.no_grad()
def decode_stream(
    model,
    prompts: list[list[int]],
    *,
    batch_size: int,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    on_rows=None,
    regroup_at: float = 0.25,
) -> torch.Tensor:
    """New token ids [len(prompts), max_new_tokens] (pad after a row's EOS) for ``prompts`` (token id
    lists, taken in their order), decoded with continuous batching: up to ``batch_size`` rows decode
    together with one KV cache, and when rows have ended the batch is regrouped: the ended rows leave
    and the next prompts join (their prompts are run through the model, and their keys and values
    join the cache, left-padded to its width; columns no running row uses any more are cut from its
    left). So the batch stays full until the prompts run out, instead of shrinking as its answers end.

    A regrouping copies the cache once, so it waits until ``regroup_at`` of the batch's rows are idle
    (ended, or empty slots while prompts wait); until then an ended row keeps decoding, its tokens
    discarded. ``on_rows(indices, tokens)`` is called as rows end, with their indices into ``prompts``
    and their new tokens [n, max_new_tokens]. Greedy when ``temperature == 0`` (each row's tokens are
    those it gets decoded alone), else sampled as :func:`decode` samples. Needs a cache whose every
    layer is transformers' ``DynamicLayer`` (:func:`can_stream`)."""
    count = len(prompts)
    device = next(model.parameters()).device
    out = torch.full((count, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    if max_new_tokens == 0 or count == 0:
        if on_rows is not None and count:
            on_rows(list(range(count)), out)
        return out
    keep_last = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    cache_name = "cache" if _accepts(model, "cache") else "past_key_values"  # transformers renamed it in 5.x
    taken = 0  # prompts[:taken] have joined
    cache = mask = logits = None
    rows = torch.empty(0, dtype=torch.long, device=device)  # the prompt each batch row decodes
    made = torch.empty(0, dtype=torch.long, device=device)  # tokens each row has generated
    running = torch.empty(0, dtype=torch.bool, device=device)
    while True:
        live, waiting = int(running.sum()), count - taken
        idle = len(rows) - live + min(batch_size - len(rows), waiting)  # ended rows, slots prompts could fill
        if live == 0 or idle >= max(1, round(regroup_at * len(rows))):
            joining = prompts[taken : taken + min(batch_size - live, waiting)]
            if live == 0 and not joining:
                return out
            cache, mask, logits, rows, made = _regroup(
                model,
                cache,
                mask,
                logits,
                running,
                rows,
                made,
                joining,
                taken,
                max_new_tokens,
                pad_token_id,
                cache_name,
                keep_last,
            )
            taken += len(joining)
            running = torch.ones(len(rows), dtype=torch.bool, device=device)
        token = _next_token(logits, temperature, top_p)
        now = running.nonzero().squeeze(1)
        out[rows[now], made[now]] = token[now]
        made[now] += 1
        ended = running & (made == max_new_tokens)
        if eos_token_id is not None:
            ended |= running & (token == eos_token_id)
        if ended.any():
            running &= ~ended
            if on_rows is not None:
                done = rows[ended]
                on_rows(done.tolist(), out[done])
        if not running.any() and taken == count:
            return out
        token = token.masked_fill(~running, pad_token_id)  # ended rows decode on, unread, until regrouped
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        logits = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=mask.sum(-1, keepdim=True) - 1,
            use_cache=True,
            **{cache_name: cache},
        ).logits[:, -1, :]


def _regroup(model, cache, mask, logits, running, rows, made, joining, first, max_new_tokens, pad, cache_name, keep):
    """The batch after the ended rows left and the ``joining`` prompts (indices from ``first``) joined:
    (cache, attention mask, next-token logits, prompt index and tokens made per row)."""
    from transformers import DynamicCache

    device = rows.device
    stay = running.nonzero().squeeze(1)
    new_logits, fresh, new_mask = None, None, None
    if joining:
        width = max(len(p) for p in joining)
        new_ids = torch.tensor([[pad] * (width - len(p)) + p for p in joining], device=device)
        new_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in joining], device=device)
        fresh = DynamicCache(config=model.config)
        new_logits = model(
            input_ids=new_ids,
            attention_mask=new_mask,
            position_ids=(new_mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            **{cache_name: fresh},
            **keep,
        ).logits[:, -1, :]
    old_mask = mask[stay] if mask is not None else None
    cut = 0
    if old_mask is not None and len(stay):
        cut = int(old_mask.shape[1] - old_mask.sum(-1).max())  # left columns no staying row uses
        old_mask = old_mask[:, cut:]
    old_width = old_mask.shape[1] if old_mask is not None and len(stay) else 0
    new_width = new_mask.shape[1] if new_mask is not None else 0
    width = max(old_width, new_width)
    merged = DynamicCache(config=model.config)
    preallocate(merged, width + max_new_tokens)
    old_layers = cache.layers if cache is not None else [None] * len(merged.layers)
    new_layers = fresh.layers if fresh is not None else [None] * len(merged.layers)
    for target, old, new in zip(merged.layers, old_layers, new_layers, strict=True):
        parts = []
        if len(stay):
            parts.append((old.keys[stay, :, cut:, :], old.values[stay, :, cut:, :]))
        if new is not None:
            parts.append((new.keys, new.values))
        k0, v0 = parts[0]
        shape = (sum(k.shape[0] for k, _ in parts), k0.shape[1], width + max_new_tokens, k0.shape[3])
        keys, values = k0.new_zeros(shape), v0.new_zeros((*shape[:3], v0.shape[3]))  # pads: zeros, masked out
        at = 0
        for k, v in parts:
            keys[at : at + len(k), :, width - k.shape[2] : width] = k
            values[at : at + len(v), :, width - v.shape[2] : width] = v
            at += len(k)
        target.adopt(keys, values, width)
    masks = [m for m in (old_mask if len(stay) else None, new_mask) if m is not None]
    mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for m in masks])
    logit_parts = [x for x in (logits[stay] if len(stay) else None, new_logits) if x is not None]
    joined = torch.arange(first, first + len(joining), device=device)
    rows = torch.cat([rows[stay], joined])
    made = torch.cat([made[stay], torch.zeros(len(joining), dtype=torch.long, device=device)])
    return merged, mask, torch.cat(logit_parts), rows, made


def _siblings(row: int, k: int) -> range:
    return range(row - row % k, row - row % k + k)


def can_stream(model) -> bool:
    """Whether :func:`decode_stream` serves ``model``: :func:`own_decoding`, and a cache whose every
    layer is a plain ``DynamicLayer`` (sliding-window and other layers keep their own state)."""
    if not own_decoding(model):
        return False
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = getattr(DynamicCache(config=model.config), "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


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

        def adopt(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int) -> None:
            """Take ``key_buffer``/``value_buffer`` (their first ``length`` positions filled) as the layer's."""
            if not self.is_initialized:
                self.lazy_initialization(key_buffer, value_buffer)
            self.capacity = key_buffer.shape[-2]
            self._key_buffer, self._value_buffer = key_buffer, value_buffer
            self.keys = self._view = key_buffer[..., :length, :]
            self.values = value_buffer[..., :length, :]

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
