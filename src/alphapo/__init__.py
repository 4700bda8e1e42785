"""alphapo: align language models to preferences with direct alignment algorithms.

The reward's *shape* is a first-class choice (AlphaPO's ``alpha``); the package carries the whole
DAA family (:mod:`alphapo.losses`), a fused per-sequence log-prob op (:mod:`alphapo.ops`), the
preference-data layer (:mod:`alphapo.data`), the trainer (:mod:`alphapo.train`) and the on-policy
pipeline (sample -> judge -> pair -> train -> eval -> report). Run ``alphapo --help``.
"""

from importlib.metadata import PackageNotFoundError, version

from alphapo import log as _log  # noqa: F401  (the "alphapo" logger's stderr handler)

try:
    __version__ = version("alphapo")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
