"""Direct-alignment losses as pure functions of per-sequence log-probs, chosen by name.

    from alphapo.losses import preference_loss, available_losses
    out = preference_loss("alphapo", chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
                          beta=2.5, gamma=0.25, alpha=0.25)
    out.losses, out.chosen_rewards, out.rejected_rewards        # each [B]

Log-probs are per-sequence SUMS over completion tokens; lengths are token counts. Reward shape
(``alpha``) applies to every loss where it is defined (:mod:`alphapo.losses.shapes`). Unpaired KTO
data goes through :func:`kto_loss`.
"""

from alphapo.losses import kto as _kto  # noqa: F401  (registers "kto")
from alphapo.losses import reference_based as _reference_based  # noqa: F401  (registers the DPO family)
from alphapo.losses import reference_free as _reference_free  # noqa: F401  (registers simpo, alphapo, ...)
from alphapo.losses.api import LossOutput, preference_loss
from alphapo.losses.kto import KTOOutput, kto_loss
from alphapo.losses.registry import LossSpec, PairScores, get_loss_spec, registered_names
from alphapo.losses.shapes import SHAPE_EXP_BOUND, shape_reward, shape_slope


def available_losses() -> list[str]:
    """Names accepted by :func:`preference_loss`, sorted (``kto`` also has :func:`kto_loss`)."""
    return registered_names()


__all__ = [
    "SHAPE_EXP_BOUND",
    "KTOOutput",
    "LossOutput",
    "LossSpec",
    "PairScores",
    "available_losses",
    "get_loss_spec",
    "kto_loss",
    "preference_loss",
    "shape_reward",
    "shape_slope",
]
