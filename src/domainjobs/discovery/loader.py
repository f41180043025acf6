"""Import users' modules safely: a module that raises becomes a ``Problem`` naming its file
and line, never a crash and never a silent skip.

A missing module and a broken one are told apart up front with ``importlib.util.find_spec``
(and ``pkgutil.iter_modules`` for what a package contains), never by reading error text:
whatever an existing module raises while importing, a ``ModuleNotFoundError`` for a
third-party package included, is reported as that module being broken.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import traceback
from collections.abc import Iterator, Sequence
from types import ModuleType

from domainjobs.errors import Problem

#: domainjobs' own folder (frames there are not the app's code)
OWN_PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def display_path(path: str | None) -> str | None:
    """Return ``path`` relative to the current directory when it lies below it."""
    if not path:
        return None
    cwd = os.getcwd()
    below = cwd if cwd.endswith(os.sep) else cwd + os.sep
    if path.startswith(below) and os.path.normpath(path) == path:
        return path[len(below) :]  # the usual case, without relpath's cost (bench/core.py)
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def module_exists(name: str) -> bool:
    """True when ``name`` can be found on the import path (its parents may be imported)."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        try:
            if importlib.util.find_spec(".".join(parts[:i])) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


def module_file(name: str) -> str | None:
    """The source file of module ``name`` without importing it, if it can be found."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def import_module(name: str, domain: str | None) -> tuple[ModuleType | None, Problem | None]:
    """Import ``name``; on failure return a ``Problem`` that says what, where and how to fix."""
    try:
        return importlib.import_module(name), None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a user module may raise anything, SystemExit included
        return None, problem_from_import_error(exc, name, domain)


def problem_from_import_error(exc: BaseException, name: str, domain: str | None) -> Problem:
    """Describe an exception raised while importing module ``name``."""
    file = module_file(name)
    line: int | None = None
    if isinstance(exc, SyntaxError) and exc.filename:
        file, line = exc.filename, exc.lineno
        return Problem(
            f"module {name} has a syntax error: {exc.msg}",
            domain=domain,
            file=display_path(file),
            line=line,
        )
    frames = traceback.extract_tb(exc.__traceback__)
    frame = failing_frame(frames)
    if frame is not None:
        file, line = frame.filename, frame.lineno
    hint = ""
    if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith(name):
        hint = f" (install the package that provides {exc.name!r}, or fix the import)"
    return Problem(
        f"importing {name} raised {type(exc).__name__}: {exc}{hint}",
        domain=domain,
        file=display_path(file),
        line=line,
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


def _library_folders() -> tuple[str, ...]:
    """The folders of Python's own and installed packages, and of domainjobs itself (an
    editable install lives outside site-packages): not the app's code."""
    import sysconfig  # start-up cost: only a failed import needs it, so a worker never pays it

    names = ("stdlib", "platstdlib", "purelib", "platlib")
    folders = {os.path.realpath(sysconfig.get_path(n)) for n in names if sysconfig.get_path(n)}
    folders.add(OWN_PACKAGE)
    return tuple(folder + os.sep for folder in folders)


def failing_frame(frames: Sequence[traceback.FrameSummary]) -> traceback.FrameSummary | None:
    """Where an import failed: the deepest frame in the app's own code (not Python's import
    machinery, the standard library or an installed package), else the deepest frame."""
    libraries = _library_folders()
    for frame in reversed(frames):
        if frame.filename.startswith("<"):
            continue  # importlib's frozen bootstrap, exec'd strings
        if not os.path.realpath(frame.filename).startswith(libraries):
            return frame
    return frames[-1] if frames else None


def submodule_names(package: ModuleType) -> list[str]:
    """Names of the direct submodules of ``package``, sorted, without importing them."""
    paths = getattr(package, "__path__", None)
    if not paths:
        return []
    return sorted(f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(paths))


def import_tree(name: str, domain: str | None, problems: list[Problem]) -> Iterator[ModuleType]:
    """Import module ``name`` and, if it is a package, every submodule below it (by name).

    Modules that fail to import are reported into ``problems`` and skipped.
    """
    module, problem = import_module(name, domain)
    if problem is not None:
        problems.append(problem)
    if module is None:
        return
    yield module
    for child in submodule_names(module):
        yield from import_tree(child, domain, problems)
