"""The one error type that reaches the user as a single line."""

from __future__ import annotations


class E2ELabError(Exception):
    """A problem in the user's input: the message names it and says how to fix it."""


def choices(
    kind: str, given: object, valid: list[str] | tuple[str, ...], hint: str = ""
) -> E2ELabError:
    """An error for an unknown name, listing what would have been accepted."""
    listed = ", ".join(sorted(valid)) if valid else "(none)"
    return E2ELabError(
        f"unknown {kind} {given!r}; choose one of: {listed}" + (f"; {hint}" if hint else "")
    )
