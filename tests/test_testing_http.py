"""docs/testing.md's recipe for HTTP endpoints that enqueue, run as written: a user project
with the shop's domains and examples/fastapi_app.py, whose tests (taken from the page)
call the app through httpx inside its lifespan and drain what it enqueued."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.conftest import EXAMPLES, ROOT
from tests.test_testing_plugin import CONFTEST, make_project, run_pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def documented_block(first_line: str) -> str:
    """The python block of docs/testing.md that starts with ``first_line``."""
    page = (ROOT / "docs" / "testing.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"docs/testing.md has no python block starting {first_line!r}")


def test_the_documented_http_recipe_passes(tmp_path):
    project = make_project(
        tmp_path / "shop-web",
        {"conftest.py": CONFTEST, "tests/test_http.py": documented_block("# tests/test_http.py")},
    )
    shutil.copy(EXAMPLES / "fastapi_app.py", project / "fastapi_app.py")
    result = run_pytest(project, "-rA", "tests/test_http.py")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "3 passed" in result.stdout, out
