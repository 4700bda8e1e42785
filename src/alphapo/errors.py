"""The exceptions alphapo raises on purpose.

Every error a user can cause derives from :class:`AlphapoError` and says what was wrong and where
(file, row, field, stage) so that the command line can print it without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AlphapoError(Exception):
    """Base class of every error alphapo raises on purpose."""


class ConfigError(AlphapoError, ValueError):
    """An invalid setting: unknown name, wrong type, out-of-range hyper-parameter."""


class MissingReferenceError(ConfigError):
    """A loss that needs reference log-probs was called without them."""


class InputError(AlphapoError, ValueError):
    """Tensors of the wrong shape, dtype or value (e.g. non-finite log-probs)."""


class DataError(AlphapoError, ValueError):
    """A bad row or file in the data layer; the message names the file, row and field."""


class StageError(AlphapoError, RuntimeError):
    """A pipeline stage could not run; the message names the stage and the file."""


class TrainingError(AlphapoError, RuntimeError):
    """Training stopped: non-finite or exploding values, nothing trained, or a save that failed (the
    message says at which step, what, and which checkpoint was kept)."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choices to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
