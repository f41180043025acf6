"""mypy checks calls through the facade against the task's signature (minus ``ctx``) and
knows the result type: tests/typing/ok_calls.py must pass ``mypy --strict``, and every line
of tests/typing/bad_calls.py marked ``# error`` must be rejected (and no other line)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="the typing checks need mypy (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
TYPING = ROOT / "tests" / "typing"
ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, str]]:
    cache = tmp_path_factory.mktemp("mypy-cache")
    result = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--config-file=", "--strict", "--show-error-codes",
            "--no-error-summary", "--no-pretty", "--cache-dir", str(cache),
            "tests/typing/ok_calls.py", "tests/typing/bad_calls.py",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    errors: dict[str, dict[int, str]] = {"ok_calls.py": {}, "bad_calls.py": {}}
    for line in result.stdout.splitlines():
        match = ERROR.match(line)
        if match:
            errors.setdefault(Path(match["file"]).name, {})[int(match["line"])] = match["message"]
    return errors


def test_correct_calls_type_check_with_precise_result_types(mypy_errors):
    assert mypy_errors["ok_calls.py"] == {}
    assert set(mypy_errors) == {"ok_calls.py", "bad_calls.py"}


def test_wrong_calls_are_rejected(mypy_errors):
    source = (TYPING / "bad_calls.py").read_text().splitlines()
    marked = {number for number, text in enumerate(source, 1) if text.endswith("# error")}
    assert len(marked) >= 12
    assert set(mypy_errors["bad_calls.py"]) == marked, mypy_errors["bad_calls.py"]
