"""Embedded tasks for the demo and tests: verifiable, generated offline from a seed."""

from alphapo.tasks.arithmetic import Problem, demonstration, extract_answer, gold_reward, make_split

__all__ = ["Problem", "demonstration", "extract_answer", "gold_reward", "make_split"]
