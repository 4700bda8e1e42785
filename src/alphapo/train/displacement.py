"""Likelihood displacement without a pass over the whole dataset: a first-visit probe.

``displacement/chosen`` (and ``rejected``) is the current minus the starting log-prob of the same
pairs. With a reference-based loss whose reference is the starting policy, the starting log-probs of
every pair are already in the reference table, and each step's batch gives the metric for free
(``diagnostics.displacement: dataset``). A reference-free loss has no such table, and computing one
would cost a model pass over the whole dataset before the first step: exactly what a user of a
reference-free loss chose to avoid. So by default it uses this probe instead:

* The probe collects the first ``displacement_pairs`` pairs that training visits, each with its
  log-probs at that first visit, taken from the training step's own forward pass (no extra work).
  For the pairs of step 1 that is exactly the starting policy; for pairs first seen at step k it is
  the policy after k-1 updates, so early displacement is slightly understated (documented).
* Every ``every`` steps (and at the last step) the probe's pairs are re-measured in one forward pass
  without gradients, and ``displacement/chosen``, ``displacement/rejected`` and
  ``displacement/chosen_fell`` are the means over the pairs collected so far.

Each process probes the pairs of its own micro-batches; the sums are reduced across processes.
"""

from __future__ import annotations

import math

import torch

from alphapo.train.metrics import MetricSums
from alphapo.train.reference import batch_logps

OVERHEAD = 0.1
"""The automatic re-measure interval keeps the probe's forward passes under this share of training
(a forward pass costs about a third of a forward and backward one)."""


def automatic_every(probe_pairs: int, step_pairs: int, logging_every: int) -> int:
    """Steps between re-measurements: the logging interval, or the smallest multiple of it that keeps
    the probe's cost under ``OVERHEAD`` of training."""
    needed = math.ceil(probe_pairs / (OVERHEAD * 3 * step_pairs))
    return logging_every * max(1, math.ceil(needed / logging_every))


class DisplacementProbe:
    """First-visit log-probs of up to ``capacity`` pairs and their re-measurement.

    With several processes, each records the pairs of its own micro-batches (``capacity`` is its
    share); a pair that another process visited earlier (a later epoch deals it elsewhere) is dropped
    when the probes are merged at each measurement, so that every pair keeps its first visit, as one
    process would, and the processes re-measure the merged probe in equal shares."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.step = 0  # the training step whose forward passes offer pairs (set by the loop)
        self.start: dict[int, tuple[float, float, int]] = {}  # dataset index -> (chosen, rejected, step)
        self.known: set[int] = set()  # pairs another process recorded first (as of the last merge)

    def offer(self, indices: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        """Record pairs seen by a training forward pass (before that step's update), while room is left."""
        for i, c, r in zip(indices.tolist(), chosen.detach().tolist(), rejected.detach().tolist(), strict=True):
            if len(self.start) >= self.capacity:
                return
            if i not in self.start and i not in self.known and math.isfinite(c) and math.isfinite(r):
                self.start[i] = (c, r, self.step)

    def merge(self, acc) -> dict[int, tuple[float, float, int]]:
        """Every process's pairs, each with its earliest visit (a collective call); drops from this
        process's own record the pairs another process visited first."""
        if acc.num_processes == 1:
            return dict(self.start)
        from accelerate.utils import gather_object

        union: dict[int, tuple[float, float, int]] = {}
        owner: dict[int, int] = {}
        for rank, start in enumerate(gather_object([self.start])):
            for i, value in start.items():
                if i not in union or (value[2], rank) < (union[i][2], owner[i]):
                    union[i], owner[i] = value, rank
        self.start = {i: v for i, v in self.start.items() if owner[i] == acc.process_index}
        self.known = set(union) - set(self.start)
        return union

    @torch.no_grad()
    def measure(
        self, model, dataset, collator, batch_size: int, acc, logps_mode: str, share_prompt: torch.dtype | None = None
    ) -> MetricSums:
        """Sums of the displacement metrics over this process's share of the merged probe (reduce them
        across processes). Every process runs the same number of forward passes (a sharded model
        gathers its weights in each), the last one uncounted where its share is short. ``share_prompt``:
        the pairs run packed, as in training (:func:`~alphapo.train.reference.batch_logps`)."""
        union = self.merge(acc)
        order = sorted(union)
        batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        world, rank = acc.num_processes, acc.process_index
        mine = batches[rank::world]
        sums = MetricSums()
        was_training = model.training
        model.eval()
        for n in range(math.ceil(len(batches) / world)):
            ids = mine[n] if n < len(mine) else batches[0]
            batch = {key: v.to(acc.device) for key, v in collator([dataset[i] for i in ids]).items()}
            logps, _, _ = batch_logps(model, batch, logps_mode, share_prompt=share_prompt)
            if n >= len(mine):
                continue  # a pass to keep step with the other processes
            pairs = len(ids)
            start = torch.tensor([union[i][:2] for i in ids], dtype=torch.float64, device=logps.device)
            chosen, rejected = logps[:pairs].double(), logps[pairs:].double()
            sums.add("displacement/chosen", chosen - start[:, 0])
            sums.add("displacement/rejected", rejected - start[:, 1])
            sums.add("displacement/chosen_fell", (chosen < start[:, 0]).double())
        model.train(was_training)
        return sums

    def state(self) -> dict:
        """JSON-able state for checkpoints (floats round-trip exactly through JSON)."""
        return {"start": {str(i): list(v) for i, v in self.start.items()}, "known": sorted(self.known)}

    def load(self, state: dict) -> None:
        if "start" not in state:  # written before visits carried their step: one entry per pair
            state = {"start": {i: [*v[:2], 0] for i, v in state.items()}, "known": []}
        self.start = {int(i): (float(v[0]), float(v[1]), int(v[2])) for i, v in state["start"].items()}
        self.known = set(state["known"])


def final_displacement_rows(n: int, pairs: int | None, seed: int) -> list[int] | None:
    """The rows the end-of-training displacement re-measures: None (every row) when ``pairs`` is None
    or covers them all, else ``pairs`` rows drawn without replacement with ``seed``, sorted."""
    if pairs is None or pairs >= n:
        return None
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:pairs].tolist())


def final_displacement(initial: torch.Tensor, final: torch.Tensor, lengths: torch.Tensor) -> dict:
    """Displacement of the pairs at the end of training: ``final - initial`` log-prob sums ([N, 2]
    each, chosen then rejected; ``lengths`` [N, 2] token counts), as written to ``displacement.json``
    (``pairs``: how many were measured)."""
    delta = (final - initial).double()
    record: dict = {"pairs": int(delta.shape[0])}
    for column, side in enumerate(("chosen", "rejected")):
        d = delta[:, column]
        record[side] = float(d.mean())
        record[f"{side}_per_token"] = float((d / lengths[:, column]).mean())
        record[f"{side}_fell"] = float((d < 0).double().mean())
    return record
