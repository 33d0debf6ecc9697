"""User-facing errors: one line, naming the problem and the fix."""

from __future__ import annotations

#: Exit status of a run stopped with Ctrl-C: 128 + SIGINT, as shells and schedulers report it.
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input or configuration (not a bug).

    Entry points print ``error: <message>`` on one line and exit with status 2.
    """


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The UserError ``exc`` is or was raised from (Hydra wraps errors of ``_target_`` calls)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None
