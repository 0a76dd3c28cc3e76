"""User-facing errors.

Anything a user can cause (a bad path, an unknown name, a corrupt file, a mismatched checkpoint)
raises :class:`CnnlabError`. The CLI prints its message as one line and exits with status 2, so the
user sees the problem and the fix instead of a traceback.
"""

from __future__ import annotations


class CnnlabError(Exception):
    """An error caused by user input; its message names the problem and the fix."""


class NonFiniteLoss(CnnlabError):
    """Training met a NaN/inf loss (or a NaN IoU inside a loss); the engine adds the step it happened at."""
