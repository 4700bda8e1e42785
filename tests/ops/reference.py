"""Naive twins of the fast paths: materialised logits, no chunking. Benchmarks import these."""

import torch


def naive_sequence_logps(hidden, weight, labels, bias=None, ignore_index=-100, softcap=None):
    """[B] sums of log_softmax(hidden @ weight.T + bias)[labels], [B] counts; hidden [B, T, H]."""
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    if logits.dtype != torch.float64:
        logits = logits.float()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    mask = labels != ignore_index
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1), mask.sum(dim=1)


def naive_mean_logits(hidden, weight, labels, bias=None, ignore_index=-100):
    logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    mask = (labels != ignore_index).double()
    return (logits.mean(-1) * mask).sum(1) / mask.sum(1).clamp(min=1)
