"""The public surface: ``domainjobs.__all__``, the lazy import table, and every import path
the docs show, agree with each other."""

from __future__ import annotations

import ast
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

import domainjobs
import domainjobs.errors

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "domainjobs"


def test_all_and_lazy_table_agree() -> None:
    lazy = set(domainjobs._LAZY)
    assert set(domainjobs.__all__) - {"__version__"} == lazy
    assert len(domainjobs.__all__) == len(set(domainjobs.__all__))


@pytest.mark.parametrize("name", sorted(domainjobs._LAZY))
def test_every_public_name_imports_from_its_module(name: str) -> None:
    value = getattr(importlib.import_module(domainjobs._LAZY[name]), name)
    assert getattr(domainjobs, name) is value


def test_type_checking_imports_match_the_lazy_table() -> None:
    """The ``if TYPE_CHECKING`` block (what mypy sees) names the same modules and names."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    seen: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom)
                for alias in stmt.names:
                    seen[alias.name] = str(stmt.module)
    assert seen == domainjobs._LAZY


def test_every_exception_is_in_errors_and_public_ones_are_exported() -> None:
    defined_elsewhere = []
    for path in SRC.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(b).endswith(("Error", "Exception")) for b in node.bases
            ):
                defined_elsewhere.append(f"{path.relative_to(SRC)}:{node.name}")
    assert defined_elsewhere == []
    for name in dir(domainjobs.errors):
        value = getattr(domainjobs.errors, name)
        if isinstance(value, type) and issubclass(value, domainjobs.DomainJobsError):
            testing_only = name in {
                "BrokerUnavailableError",
                "DrainTimeoutError",
                "HookError",
                "JobsFailedError",
                "UnserializableResultError",
                "WorkersStoppedError",
            }
            module = "domainjobs.testing" if testing_only else "domainjobs"
            assert hasattr(importlib.import_module(module), name), f"{module} lacks {name}"


DOC_IMPORT = re.compile(r"^\s*from (domainjobs[\w.]*) import ([\w, ()]+)", re.M)


def _doc_imports() -> list[tuple[str, str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for module, names in DOC_IMPORT.findall(path.read_text()):
            for name in names.replace("(", "").replace(")", "").split(","):
                if name.strip():
                    found.append((path.name, module, name.strip()))
    return found


def test_documented_import_paths_work() -> None:
    imports = _doc_imports()
    assert imports, "the docs show no imports at all?"
    broken = []
    for doc, module, name in imports:
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            broken.append(f"{doc}: from {module} import {name}: {exc}")
    assert broken == []


def test_docs_import_only_public_modules() -> None:
    public = {
        "domainjobs",
        "domainjobs.testing",
        "domainjobs.lifespan",
        "domainjobs.web",
        "domainjobs.contrib.litestar",
        "domainjobs.observability",
    }
    private = sorted({f"{doc}: {module}" for doc, module, _ in _doc_imports()} - set())
    assert [p for p in private if p.split(": ")[1] not in public] == []


def test_import_domainjobs_is_cheap() -> None:
    """``import domainjobs`` (what the pytest entry point pays) imports none of SAQ."""
    code = "import sys, domainjobs; print(sorted(m for m in sys.modules if m.startswith('saq')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_listed_private_saq_attribute_still_exists() -> None:
    """The audit list of private SAQ names we touch matches the installed SAQ."""
    from saq.queue.base import Queue
    from saq.queue.postgres import PostgresQueue
    from saq.queue.redis import RedisQueue
    from saq.worker import Worker

    from domainjobs.runtime.saq_internals import PRIVATE_ATTRIBUTES

    owners = {
        "saq.worker.Worker": Worker,
        "saq.queue.redis.RedisQueue": RedisQueue,
        "saq.queue.postgres.PostgresQueue": PostgresQueue,
        "saq.queue.base.Queue": Queue,
    }
    for owner, name, _, _ in PRIVATE_ATTRIBUTES:
        cls = owners[owner]
        source = pathlib.Path(sys.modules[cls.__module__].__file__ or "").read_text()
        assert hasattr(cls, name) or f"self.{name} =" in source, f"{owner}.{name} is gone"


def test_no_module_patches_a_saq_worker_after_construction() -> None:
    """Hooks, cron ticks and graceful stop ride on ``DomainWorker``; nothing assigns to a
    worker's methods or SAQ attributes from outside."""
    offenders = []
    pattern = re.compile(r"\bworker\.(schedule|upkeep|before_process|after_process|SIGNALS)\s*=")
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}")
    assert offenders == []


def _import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Every import of one of our modules by another (top-level, type-checking or inside a
    function), and the function-body ones as ``module -> target`` lines."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path

    def resolve(target: str) -> str:
        while target and target not in modules:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target

    edges: dict[str, set[str]] = {m: set() for m in modules}
    in_functions: list[str] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        functions = [
            n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        nested = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in modules] or [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in map(resolve, targets):
                if target.startswith("domainjobs.") and target != module:
                    edges[module].add(target)
                    if id(node) in nested:
                        in_functions.append(f"{module} -> {target}")
    return edges, in_functions


def test_no_import_cycles() -> None:
    edges, _ = _import_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), list(edges[start])
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(edges.get(node, ()))
        return False

    assert [m for m in edges if reaches(m, m)] == []


def test_function_body_imports_are_only_for_optional_extras_or_start_up_cost() -> None:
    _, in_functions = _import_graph()
    assert sorted(set(in_functions)) == [
        "domainjobs._pytest_entry -> domainjobs.testing.plugin",  # start-up cost of pytest
        "domainjobs.brokers.urls -> domainjobs.brokers.pgnotify",  # extra: postgres
        "domainjobs.cli.enqueue -> domainjobs.client.jobs",  # start-up cost of `run`
        "domainjobs.cli.run -> domainjobs.runtime.reload",  # extra: reload
        "domainjobs.cli.run -> domainjobs.web",  # extra: web
        "domainjobs.cli.status -> domainjobs.client.health",  # start-up cost of `run`
        "domainjobs.cli.status -> domainjobs.client.jobs",  # start-up cost of `run`
        "domainjobs.observability.cli -> domainjobs.observability.exposition",  # extra: metrics
        "domainjobs.observability.cli -> domainjobs.observability.server",  # extra: metrics
        "domainjobs.observability.cli -> domainjobs.web.serving",  # start-up cost of `run`
        "domainjobs.observability.endpoint -> domainjobs.observability.exposition",  # metrics
        "domainjobs.observability.state -> domainjobs.observability.metrics",  # extra: metrics
        "domainjobs.observability.state -> domainjobs.observability.tracing",  # extra: otel
        "domainjobs.testing.broker -> domainjobs.brokers.embedded",  # POSIX only (fcntl)
        "domainjobs.web.app -> domainjobs.web.pages",  # extra: web (starlette, jinja2)
        "domainjobs.web.app -> domainjobs.web.saqui",  # extra: web (starlette)
    ]
