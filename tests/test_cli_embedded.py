"""What the read-only and writing commands do with the embedded broker: ``status`` never
starts it, ``enqueue`` does (the job must be kept), and the notice about it is said once
per start. Real server processes, real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domainjobs.brokers.embedded import (
    find_server_binary,
    ping,
    read_pid,
    server_alive,
    stop_broker,
)
from domainjobs.client.jobs import Jobs
from tests.conftest import run_cli
from tests.servers import wait_for
from tests.test_embedded import (  # noqa: F401 - fixture
    embedded_project,
    paths_for,
    project,
    stamps,
    stop_everything,
    write_project,
)

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


STOPPED_LINE = "was stopped with `python -m domainjobs broker stop`"


def _stop_and_watch(folder: Path, log: Path, stops: int) -> None:
    """``broker stop`` while the worker runs; then, until the worker has tried to reach the
    broker four times since (each try would start a crashed server again), the server must
    stay down; the worker says why once."""
    paths = paths_for(folder)
    before = log.read_text().count("out of reach")
    stopped = run_cli("broker", "stop", cwd=folder)
    assert stopped.returncode == 0 and f"{paths.folder} stopped;" in stopped.stderr, stopped.stderr
    assert paths.stopped_mark.exists()
    deadline = time.monotonic() + 120
    while True:
        text = log.read_text()
        assert not server_alive(paths), text[-3000:]
        assert ping(paths.client_socket()) == "down", text[-3000:]
        if text.count(STOPPED_LINE) >= stops and text.count("out of reach") >= before + 4:
            break
        assert time.monotonic() < deadline, f"the worker never retried:\n{text[-3000:]}"
        time.sleep(0.1)  # poll interval of a check with a deadline
    assert log.read_text().count(STOPPED_LINE) == stops, "said once per stop"


@pytest.mark.timeout(300)  # real processes, several stops and starts on a loaded box
async def test_broker_stop_sticks_while_a_worker_runs_until_a_start_on_purpose(
    tmp_path, monkeypatch
):
    folder, package, log, env = embedded_project(tmp_path, monkeypatch, "stop")
    paths = paths_for(folder)
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "domainjobs", "run"], cwd=folder, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "serving queue(s)" in log.read_text(), what="the worker to start")
        # a job queued before the stop, due after the worker has been left waiting
        queued = run_cli(
            "enqueue", "clock.stamp", "--kwargs", '{"n": 1}', "--delay", "30", cwd=folder
        )
        assert queued.returncode == 0, queued.stderr
        _stop_and_watch(folder, log, stops=1)
        assert worker.poll() is None, log.read_text()
        # read-only: says it is not running, starts nothing
        status = run_cli("status", cwd=folder)
        assert status.returncode == 3 and "not running" in status.stderr, status.stderr
        assert not server_alive(paths) and paths.stopped_mark.exists()
        assert stamps(tmp_path) == []
        started = run_cli("broker", "start", cwd=folder)
        assert started.returncode == 0 and "embedded broker started" in started.stderr
        assert not paths.stopped_mark.exists()
        wait_for(lambda: stamps(tmp_path) == [1], timeout=120, what="the queued job to run")

        # enqueue needs the broker: it starts it, and the waiting worker runs the job
        _stop_and_watch(folder, log, stops=2)
        sent = run_cli("enqueue", "clock.stamp", "--kwargs", '{"n": 2}', cwd=folder)
        assert sent.returncode == 0 and sent.stderr.count(NOTICE) == 1, sent.stderr
        assert not paths.stopped_mark.exists()
        wait_for(lambda: stamps(tmp_path) == [1, 2], timeout=120, what="the enqueued job")

        # so does a web app's Jobs()
        _stop_and_watch(folder, log, stops=3)
        async with Jobs(f"{package}.domain") as jobs:
            await jobs.enqueue("clock.stamp", n=3)
        wait_for(lambda: stamps(tmp_path) == [1, 2, 3], timeout=120, what="the Jobs() job")

        # a crash is not a stop: the worker starts the server again
        old_pid = read_pid(paths)
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        wait_for(
            lambda: read_pid(paths) not in (None, old_pid) and ping(paths.socket) == "ok",
            timeout=120,
            what="the worker to start the killed broker again",
        )
        wait_for(
            lambda: "was gone: started it again" in log.read_text(),
            what="the worker to say it started the broker again",
        )
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 60) == 0, log.read_text()
        assert log.read_text().count(STOPPED_LINE) == 3
    finally:
        if worker.poll() is None:
            worker.kill()
        stop_everything(paths.folder)
        for name in [m for m in sys.modules if m.split(".")[0] == package]:
            del sys.modules[name]


@pytest.mark.timeout(300)  # real processes and a crash on a loaded box
def test_a_crashed_broker_is_started_again_by_a_worker_process_of_processes_2(project, tmp_path):
    paths = paths_for(project)
    log = tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if k != "DOMAINJOBS_URL"}
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "domainjobs", "run", "--processes", "2"], cwd=project,
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: log.read_text().count("serving queue(s)") == 2,
            timeout=120,
            what="both worker processes to serve",
        )
        old_pid = read_pid(paths)
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        wait_for(
            lambda: "was gone: started it again" in log.read_text(),
            timeout=120,
            what="a worker process to start the killed broker again",
        )
        assert read_pid(paths) != old_pid and ping(paths.socket) == "ok"
        sent = run_cli("enqueue", "clock.stamp", "--kwargs", '{"n": 5}', cwd=project)
        assert sent.returncode == 0 and NOTICE not in sent.stderr, sent.stderr
        wait_for(lambda: stamps(tmp_path) == [5], timeout=120, what="the job to run")
        assert log.read_text().count("was gone: started it again") == 1
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(90) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
