"""Find the domains: sub-packages of the domains roots (and entry-point packages) that have a
``jobs`` module or package. Nothing here imports a domain's jobs code."""

from __future__ import annotations

import fnmatch
import os
import pkgutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

from domainjobs.discovery.loader import display_path, import_module, module_exists, module_file
from domainjobs.errors import Problem

ENTRY_POINT_GROUP = "domainjobs.domains"


@dataclass(frozen=True)
class DomainLocation:
    """Where a domain lives: its name, its package and its jobs module."""

    name: str
    package: str

    @property
    def jobs_module(self) -> str:
        """Dotted name of the domain's ``jobs`` module or package."""
        return f"{self.package}.jobs"


def _has_jobs(folders: Iterable[str]) -> bool:
    """True when one of ``folders`` holds ``jobs.py`` or a ``jobs/`` folder (with or without
    ``__init__.py``: Python imports a folder without one as a namespace package)."""
    for folder in folders:
        if os.path.isfile(os.path.join(folder, "jobs.py")) or os.path.isdir(
            os.path.join(folder, "jobs")
        ):
            return True
    return False


def _package_names(paths: Iterable[str]) -> list[str]:
    """Sub-packages of a package's folders, regular or namespace (a plain folder whose name
    is a Python identifier), without importing them."""
    names = {info.name for info in pkgutil.iter_modules(list(paths)) if info.ispkg}
    for path in paths:
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        names.update(
            entry.name
            for entry in entries
            if entry.is_dir() and entry.name.isidentifier() and not entry.name.startswith("_")
        )
    return sorted(names)


def _domains_of_root(root: str, problems: list[Problem]) -> list[DomainLocation]:
    if not module_exists(root):
        problems.append(
            Problem(
                f"domains root {root!r} cannot be found on the import path; check --roots "
                "and run from your project directory (or pass --app-dir)"
            )
        )
        return []
    package, problem = import_module(root, None)
    if problem is not None:
        problems.append(problem)
    if package is None:
        return []
    paths = getattr(package, "__path__", None)
    if paths is None:
        problems.append(
            Problem(
                f"domains root {root!r} is a module, not a package; point --roots at the "
                "package whose sub-packages are your domains",
                file=display_path(module_file(root)),
            )
        )
        return []
    found = []
    for name in _package_names(paths):
        if _has_jobs([os.path.join(p, name) for p in paths]):
            found.append(DomainLocation(name, f"{root}.{name}"))
    return found


def _entry_point_packages() -> list[str]:
    return [ep.value.split(":")[0].strip() for ep in entry_points(group=ENTRY_POINT_GROUP)]


def _locations_of_package(package: str, problems: list[Problem]) -> list[DomainLocation]:
    """A package named by an entry point is a domain when it has ``jobs``, else a root."""
    if module_exists(package) and module_exists(f"{package}.jobs"):
        return [DomainLocation(package.rsplit(".", 1)[-1], package)]
    return _domains_of_root(package, problems)


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def find_domains(
    roots: Sequence[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    use_entry_points: bool = True,
    problems: list[Problem],
) -> list[DomainLocation]:
    """Every selected domain under ``roots`` and the entry-point group, sorted by name.

    ``include``/``exclude`` are domain-name patterns (``fnmatch``). Two domains with one
    name are reported: their public task names would collide.
    """
    located: list[DomainLocation] = []
    for root in roots:
        located.extend(_domains_of_root(root, problems))
    if use_entry_points:
        for package in _entry_point_packages():
            located.extend(_locations_of_package(package, problems))
    by_name: dict[str, DomainLocation] = {}
    for location in located:
        if not _selected(location.name, include, exclude):
            continue
        other = by_name.get(location.name)
        if other is None:
            by_name[location.name] = location
        elif other.package != location.package:
            problems.append(
                Problem(
                    f"two domains are named {location.name!r}: {other.package} and "
                    f"{location.package}; public task names would collide, so rename one "
                    "of the packages (or stop listing one of their roots)",
                    domain=location.name,
                )
            )
    return [by_name[name] for name in sorted(by_name)]
