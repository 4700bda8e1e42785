"""The gold judge of the embedded tasks, chosen by what a row carries.

    gold, correct = verify(row, response)

* a row with IFEval's ``instruction_id_list`` and ``kwargs`` (the instruction task, or IFEval's own
  prompts): :func:`alphapo.tasks.instructions.gold_reward`, correct when every instruction is followed
  (strict);
* a row with an ``answer`` (the arithmetic task): :func:`alphapo.tasks.arithmetic.gold_reward`,
  correct when the final answer is right.
"""

from __future__ import annotations

from typing import Any

from alphapo.errors import StageError


def has_gold(row: dict[str, Any]) -> bool:
    return "instruction_id_list" in row or "answer" in row


def verify(row: dict[str, Any], response: str, where: str = "") -> tuple[float, bool]:
    """(gold reward, correct) of ``response`` to ``row``; a clear error when the row has no verifier."""
    if "instruction_id_list" in row:
        from alphapo.tasks import instructions

        if "kwargs" not in row:
            raise StageError(f"{where}the instruction row has no 'kwargs' (IFEval's format: one dict per instruction)")
        verdict_row = {"key": row.get("key", row.get("id")), **row}
        return instructions.gold_reward(response, verdict_row), instructions.followed_all(response, verdict_row)
    if "answer" in row:
        from alphapo.tasks.arithmetic import extract_answer, gold_reward

        answer = int(row["answer"])
        return gold_reward(response, answer), extract_answer(response) == answer
    raise StageError(
        f"{where}the gold judge needs the task's 'answer' (arithmetic) or 'instruction_id_list' and 'kwargs' "
        "(instruction following, IFEval's format)"
    )
