"""alphapo's messages: the ``alphapo`` logger, to standard error, at INFO unless told otherwise.

    from alphapo.log import logger
    logger.info("train: resuming from %s", path)

The logger gets one handler when alphapo is imported, writing bare messages to whatever
``sys.stderr`` is at that moment (so redirected or captured streams receive them); ``alphapo -v``
/ ``-q`` (:func:`set_verbosity`) change its level. Records still propagate to the root logger, so an
application that configures logging itself sees them too. Progress bars and lines
(:mod:`alphapo.progress`) are quiet below INFO as well.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("alphapo")


class _CurrentStderr(logging.StreamHandler):
    """A stream handler bound to ``sys.stderr`` at each record, not at creation."""

    def __init__(self):
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
    logger.addHandler(_CurrentStderr())
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)


def set_verbosity(level: int) -> None:
    """Log alphapo's messages at ``level`` and above."""
    logger.setLevel(level)


def quiet() -> bool:
    """Whether INFO messages (and progress) are suppressed."""
    return not logger.isEnabledFor(logging.INFO)
