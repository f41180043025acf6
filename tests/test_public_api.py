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
