"""Check: on a real model, alphapo's fused log-probs equal transformers' own logits-based values.

    python benchmarks/real_model_logps.py                          # SmolLM2-135M-Instruct (alphapo models get)
    python benchmarks/real_model_logps.py --model DIR_OR_GGUF --rows 16 --data PAIRS.jsonl.gz

Reads the first ``--rows`` HH-RLHF pairs through alphapo's data layer (implicit-prompt transcripts, which
the chat template turns into conversations), then computes every chosen and rejected answer's log-prob
sum twice in fp32: with alphapo's fused op (``model_sequence_logps``: the head's forward replaced, no
logits materialised) and from ``model(...).logits`` (log-softmax, gather). Prints the largest absolute
difference per sequence and per token, and the fused pair loss against the loss on the logits' values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.data import Collator, DataConfig, load_dataset_for_training
    from alphapo.models.catalog import get_model
    from alphapo.models.sources import resolve_model_source
    from alphapo.ops.model_logps import logits_sequence_logps, model_sequence_logps

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory or .gguf (default: smollm2-135m-instruct)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"))
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)

    model_dir = resolve_model_source(args.model) if args.model else str(get_model("smollm2-135m-instruct"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cfg = DataConfig(paths=[args.data], max_rows=args.rows, max_length=args.max_length, max_bad_fraction=1.0)
    data = load_dataset_for_training(cfg, tokenizer, None, quiet=True)
    batch = Collator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    start = time.monotonic()
    with torch.no_grad():
        fused = model_sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        t_fused = time.monotonic() - start
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        naive = logits_sequence_logps(logits, batch["labels"])
    diff = (fused.logps.double() - naive.double()).abs()
    per_token = diff / fused.n_tokens.clamp(min=1)
    result = {
        "model": model_dir,
        "pairs": len(data),
        "sequences": int(diff.numel()),
        "tokens_scored": int(fused.n_tokens.sum()),
        "mean_logp_per_token": float(naive.sum() / fused.n_tokens.sum()),
        "max_abs_diff_per_sequence": float(diff.max()),
        "max_abs_diff_per_token": float(per_token.max()),
        "max_relative_diff": float((diff / naive.abs().clamp(min=1e-9)).max()),
        "fused_seconds": t_fused,
        "skipped_rows": len(data.report.skipped),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
