"""Reward-shape analysis: ``alphapo sweep`` trains one run per setting from the same start and pairs,
evaluates each (also during training, for the over-optimisation frontier) and writes a report.

    from alphapo.sweep import run_sweep
    summary = run_sweep("demo.yaml", ["alpha=-1,0,0.5", "seeds=3"])
"""

from alphapo.sweep.grid import SweepSpec, expand, parse_sweep
from alphapo.sweep.run import run_sweep

__all__ = ["SweepSpec", "expand", "parse_sweep", "run_sweep"]
