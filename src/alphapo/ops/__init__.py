"""Fast paths that know nothing about losses: per-sequence log-probs without the full logits.

    from alphapo.ops import sequence_logps
    logps, n_tokens = sequence_logps(hidden, weight, labels, bias=None, ignore_index=-100)

:func:`model_sequence_logps` applies it to a ``transformers`` causal LM.
"""

from alphapo.ops.model_logps import UnsupportedModelError, head_of, model_sequence_logps
from alphapo.ops.sequence_logps import (
    SequenceLogps,
    gradient_floor_bytes,
    sequence_logps,
    sequence_mean_logits,
    single_pass_pays,
    tile_budget_bytes,
    tile_shape,
)

__all__ = [
    "SequenceLogps",
    "UnsupportedModelError",
    "gradient_floor_bytes",
    "head_of",
    "model_sequence_logps",
    "sequence_logps",
    "sequence_mean_logits",
    "single_pass_pays",
    "tile_budget_bytes",
    "tile_shape",
]
