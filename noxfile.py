"""Sessions: tests on every Python 3.10-3.13 found, lint (ruff), typecheck (mypy --strict),
docs (mkdocs --strict). ``nox -l`` lists them; ``nox -s tests-3.12`` runs one."""

from __future__ import annotations

import os
from pathlib import Path

import nox

# Find pyenv-installed interpreters (python3.10 ... python3.13) even when pyenv's shims
# only expose one version.
_pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
if _pyenv.is_dir():
    _bins = [str(p / "bin") for p in sorted(_pyenv.iterdir()) if (p / "bin").is_dir()]
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *_bins])

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite (pass pytest arguments after --)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests")
    session.run("ruff", "format", "--check", "src", "tests")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    session.install("-e", ".[dev]")
    session.run("mkdocs", "build", "--strict", "--site-dir", session.create_tmp() + "/site")
