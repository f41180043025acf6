"""What the read-only and writing commands do with the embedded broker: ``status`` never
starts it, ``enqueue`` does (the job must be kept), and the notice about it is said once
per start. Real server processes, real subprocesses."""

from __future__ import annotations

import json
import stat

import pytest

from domainjobs.brokers.embedded import find_server_binary, server_alive, stop_broker
from tests.conftest import run_cli
from tests.test_embedded import paths_for, project, stamps  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(
    find_server_binary() is None, reason="no valkey-server or redis-server installed"
)

NOTICE = "using the embedded broker (started"


def test_status_reports_a_stopped_embedded_broker_without_starting_it(project):
    paths = paths_for(project)
    result = run_cli("status", cwd=project)
    assert result.returncode == 3, result.stderr
    assert "the embedded broker is not running" in result.stderr
    assert str(paths.folder) in result.stderr
    check = run_cli("status", "--check", cwd=project)
    assert check.returncode == 1
    assert check.stderr.startswith("unhealthy: the embedded broker is not running")
    assert not (paths.folder.is_dir() and server_alive(paths))
    assert NOTICE not in result.stderr + check.stderr


def test_enqueue_starts_it_and_the_notice_is_said_once_per_start(project, tmp_path):
    paths = paths_for(project)
    first = run_cli("enqueue", "clock.stamp", "--kwargs", '{"n": 1}', cwd=project)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(NOTICE) == 1
    second = run_cli("enqueue", "clock.stamp", "--kwargs", '{"n": 2}', cwd=project)
    assert second.returncode == 0, second.stderr
    assert NOTICE not in second.stderr
    status = run_cli("status", "--json", cwd=project)
    assert status.returncode == 0, status.stderr
    [queue] = json.loads(status.stdout)["queues"]
    assert queue["queued"] == 2
    assert NOTICE not in status.stderr
    # the server's files are as private as its folder
    for path in (paths.folder, paths.folder / "appendonlydir"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    run = run_cli("run", "--burst", cwd=project)
    assert run.returncode == 0 and stamps(tmp_path) == [1, 2]
    assert NOTICE not in run.stderr
    assert stop_broker(paths) is True
    after = run_cli("status", cwd=project)
    assert after.returncode == 3 and not server_alive(paths)
