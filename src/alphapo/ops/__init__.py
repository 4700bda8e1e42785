"""Fast paths: per-sequence log-probs, and paired losses on them, without the full logits.

    from alphapo.ops import sequence_logps, fused_preference_loss
    logps, n_tokens = sequence_logps(hidden, weight, labels, bias=None, ignore_index=-100)
    out = fused_preference_loss(hidden, weight, labels, "alphapo", beta=2.5, gamma=0.25)

:func:`sequence_logps` (two-pass, 8NHV) and :func:`fused_pair_loss` (a chunk of pairs at a time,
gradients formed in the forward pass, 6NHV) know nothing about losses: the latter takes the loss as
a function of per-pair scalars. :func:`fused_preference_loss` closes it over a registered loss.
:func:`model_sequence_logps` and :func:`model_pair_loss` apply them to a ``transformers`` causal LM.
"""

from alphapo.ops.model_logps import (
    UnsupportedModelError,
    head_of,
    model_pair_loss,
    model_sequence_logps,
)
from alphapo.ops.pair_loss import (
    PairLoss,
    Schedule,
    choose_schedule,
    default_budget_bytes,
    fused_pair_loss,
    pair_token_counts,
)
from alphapo.ops.preference import FusedPreferenceLoss, fused_preference_loss, preference_pair_loss
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
    "FusedPreferenceLoss",
    "PairLoss",
    "Schedule",
    "SequenceLogps",
    "UnsupportedModelError",
    "choose_schedule",
    "default_budget_bytes",
    "fused_pair_loss",
    "fused_preference_loss",
    "gradient_floor_bytes",
    "head_of",
    "model_pair_loss",
    "model_sequence_logps",
    "pair_token_counts",
    "preference_pair_loss",
    "sequence_logps",
    "sequence_mean_logits",
    "single_pass_pays",
    "tile_budget_bytes",
    "tile_shape",
]
