"""User-facing errors: one line, naming the problem and the fix."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or configuration (not a bug).

    Entry points print ``error: <message>`` on one line and exit with status 2.
    """
