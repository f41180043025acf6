"""What `python -m domainjobs run` imports: not the client nor the dashboard (idle memory)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
from domainjobs.cli.parser import build_parser
build_parser()
import domainjobs.runtime.runner
print(" ".join(sorted(m for m in sys.modules if m.startswith("domainjobs."))))
"""


def test_the_run_command_does_not_import_the_client_or_the_dashboard() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(out.stdout.split())
    assert "domainjobs.cli.run" in loaded and "domainjobs.runtime.worker" in loaded
    assert not {m for m in loaded if m.startswith(("domainjobs.client.", "domainjobs.web"))}
