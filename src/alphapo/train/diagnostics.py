"""Training diagnostics for reward-shape analysis, every ``diagnostics.every`` steps (off by default).

On a fixed probe batch (the first ``probe_pairs`` pairs of the data), using the unwrapped model (so
no DDP reducer state is touched):

* ``diagnostics/grad_cosine``: gradient entanglement, the cosine between the gradient of the chosen
  log-prob and that of the rejected log-prob, per pair, averaged over the probe. Near 1, raising one
  raises the other: pushing the rejected answer down drags the chosen one with it (likelihood
  displacement). ``entanglement: parameters`` uses every trainable parameter; ``last_hidden`` only
  the final decoder block's (cheap enough for large models).
* ``diagnostics/weight_chosen_p10|p50|p90`` and ``..._rejected_...``: quantiles of the loss's
  effective per-sequence gradient weights ``-dL/dlogp(chosen)`` and ``dL/dlogp(rejected)``: how hard
  each sequence is pushed. For AlphaPO they carry the reward shape's ``p^-alpha`` factor.

The share of pairs whose chosen log-prob fell below its starting value is logged every step as
``displacement/chosen_fell`` (it needs no extra work).
"""

from __future__ import annotations

import torch

from alphapo.losses import preference_loss
from alphapo.ops.model_logps import unwrap
from alphapo.train.reference import batch_logps


def _probe_params(model, mode: str) -> list[torch.nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "parameters":
        return params
    lm = unwrap(model)
    layers = getattr(getattr(lm, "model", lm), "layers", None)
    if layers is None or len(layers) == 0:
        return params
    last = {id(p) for p in layers[-1].parameters()}
    chosen = [p for p in params if id(p) in last]
    return chosen or params


def gradient_cosine(model, batch, pairs: int, mode: str, logps_mode: str) -> float:
    """Mean over probe pairs of cos(grad logp(chosen), grad logp(rejected))."""
    params = _probe_params(model, mode)
    logps, _, _ = batch_logps(model, batch, logps_mode)
    cosines = []
    for i in range(pairs):
        g_w = torch.autograd.grad(logps[i], params, retain_graph=True, allow_unused=True)
        g_l = torch.autograd.grad(logps[pairs + i], params, retain_graph=True, allow_unused=True)
        flat_w = torch.cat([g.reshape(-1) for g, p in zip(g_w, params, strict=True) if g is not None]).double()
        flat_l = torch.cat([g.reshape(-1) for g, p in zip(g_l, params, strict=True) if g is not None]).double()
        cosines.append(torch.nn.functional.cosine_similarity(flat_w, flat_l, dim=0).item())
    return sum(cosines) / len(cosines)


def sequence_weights(logps, n_tokens, pairs: int, loss_name: str, hparams: dict, refs) -> tuple:
    """(-dL/dlogp_chosen, dL/dlogp_rejected), each [pairs]: how hard each sequence is pushed."""
    chosen = logps[:pairs].detach().double().requires_grad_()
    rejected = logps[pairs:].detach().double().requires_grad_()
    out = preference_loss(
        loss_name, chosen, rejected, n_tokens[:pairs], n_tokens[pairs:], *[r.double() for r in refs], **hparams
    )
    g_w, g_l = torch.autograd.grad(out.losses.sum(), (chosen, rejected))
    return -g_w, g_l


def probe(model, batch, cfg, reference, hparams: dict) -> dict[str, float]:
    """All diagnostics on one probe batch (rows: chosen then rejected); ``hparams``: the loss's, resolved."""
    lm = unwrap(model)
    pairs = batch["index"].shape[0]
    refs = ()
    if reference is not None:
        ref = reference[batch["index"].cpu()].to(batch["input_ids"].device)
        refs = (ref[:, 0], ref[:, 1])
    metrics = {
        "diagnostics/grad_cosine": gradient_cosine(lm, batch, pairs, cfg.diagnostics.entanglement, cfg.train.logps)
    }
    with torch.no_grad():
        logps, n_tokens, _ = batch_logps(lm, batch, cfg.train.logps)
    w_chosen, w_rejected = sequence_weights(logps, n_tokens, pairs, cfg.loss.name, hparams, refs)
    for side, weights in (("chosen", w_chosen), ("rejected", w_rejected)):
        q = torch.quantile(weights, torch.tensor([0.1, 0.5, 0.9], dtype=weights.dtype))
        metrics.update(
            {f"diagnostics/weight_{side}_p{int(p * 100)}": float(v) for p, v in zip((0.1, 0.5, 0.9), q, strict=True)}
        )
    return metrics
