"""The one-line, user-facing failure of every command, and how it is printed (a leaf module)."""

from __future__ import annotations

import sys


class UserError(Exception):
    """A one-line, user-facing failure."""


def print_error(problem: Exception | str) -> None:
    """The one-line error every command prints on stderr: ``error: <problem>``."""
    print(f"error: {problem}", file=sys.stderr)


def print_warning(problem: str) -> None:
    """The one-line warning every command prints on stderr: ``warning: <problem>``."""
    print(f"warning: {problem}", file=sys.stderr)
