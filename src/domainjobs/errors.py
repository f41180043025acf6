"""Exceptions and the problem record every discovery and configuration error is made of."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's jobs: what, and where (domain, file, line)."""

    message: str
    domain: str | None = None
    file: str | None = None
    line: int | None = None

    def where(self) -> str:
        """Return ``file:line (domain 'x')`` or as much of it as is known."""
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.domain:
            parts.append(f"domain '{self.domain}'")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


class DomainJobsError(Exception):
    """Base class of every error domainjobs raises on purpose."""


class ConfigError(DomainJobsError):
    """A setting, flag, environment variable or URL is wrong."""


class DiscoveryError(DomainJobsError):
    """Discovery found one or more problems; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found while discovering jobs"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class UnknownTaskError(DomainJobsError, LookupError):
    """A task name that no discovered domain defines."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        suggestion = did_you_mean(name, known)
        super().__init__(f"unknown task {name!r}{suggestion}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choices, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
