"""Errors a user can act on: each names the file or parameter and what was wrong."""

from __future__ import annotations


class BadInputError(Exception):
    """An input file (or argument) is unusable; the message names it and says why."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")

    def __reduce__(self):  # raised in a worker process, it reaches the driver whole
        return type(self), (self.source, self.problem)


class UsageError(Exception):
    """A command-line parameter is invalid; the message names the parameter."""


class InfrastructureError(Exception):
    """A service the stage depends on failed (a store or gateway unreachable mid-run): not the input's
    fault, so the stage exits 1 and Airflow retries it. The message names the service."""


def first_line(exc: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message, at most `limit` characters ("" when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else ""
