"""Errors a user can act on: the CLI prints their message as one line and exits non-zero.

Raise a `UserFacingError` (or a subclass) wherever the fix lies with the person running the
command (a service not started, a missing agreement, a bad path); everything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error whose message says what went wrong and how to fix it."""

    exit_code = 2
