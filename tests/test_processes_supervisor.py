"""The supervisor on its own, with tiny real child processes: exit statuses, backoff,
burst completion and signal forwarding."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from domainjobs.runtime.supervisor import Supervisor, describe_exit


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_describe_exit():
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "killed by signal SIGKILL"


async def test_a_crashing_child_is_restarted_with_growing_backoff(caplog):
    caplog.set_level(logging.INFO, "domainjobs.runtime.supervisor")
    supervisor = Supervisor(child("import sys; sys.exit(3)"), 1, backoff_start=0.05)
    task = asyncio.create_task(supervisor.run(handle_signals=False))
    while supervisor.restarts < 4:
        await asyncio.sleep(0.02)
    supervisor.stop()
    assert await asyncio.wait_for(task, 10) == 1  # its last run failed
    delays = [
        r.getMessage().rsplit("in ", 1)[1] for r in caplog.records if "restarting it" in r.message
    ]
    assert delays[:4] == ["0.1s", "0.1s", "0.2s", "0.4s"]  # 0.05, 0.1, 0.2, 0.4 (rounded)
    assert "exited with status 3 unexpectedly" in caplog.text


async def test_exit_status_2_stops_everything_without_restarting(caplog):
    caplog.set_level(logging.INFO, "domainjobs.runtime.supervisor")
    sleeper = "import time; time.sleep(30)"
    supervisor = Supervisor(
        child(f"import os, sys, time\nif os.environ.get('N') == '1': sys.exit(2)\n{sleeper}"),
        1,
        env={"N": "1", "PATH": "/usr/bin:/bin"},
    )
    assert await asyncio.wait_for(supervisor.run(handle_signals=False), 10) == 2
    assert supervisor.restarts == 0
    assert "a configuration or discovery error" in caplog.text


async def test_burst_children_that_exit_0_are_done():
    supervisor = Supervisor(child("pass"), 3, burst=True)
    assert await asyncio.wait_for(supervisor.run(handle_signals=False), 10) == 0
    assert supervisor.restarts == 0


async def test_stop_forwards_the_signal_and_a_second_one(tmp_path):
    marker = tmp_path / "signals"
    code = (
        "import signal, sys, time\n"
        f"path = {str(marker)!r}\n"
        "count = 0\n"
        "def on(signum, frame):\n"
        "    global count\n"
        "    count += 1\n"
        "    open(path, 'a').write(signal.Signals(signum).name + '\\n')\n"
        "    if count == 2: sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on); signal.signal(signal.SIGINT, on)\n"
        "open(path, 'a').write('ready\\n')\n"
        "while True: time.sleep(0.05)\n"
    )
    supervisor = Supervisor(child(code), 2)
    task = asyncio.create_task(supervisor.run(handle_signals=False))
    while not marker.exists() or marker.read_text().count("ready") < 2:
        await asyncio.sleep(0.02)
    supervisor.stop(signal.SIGINT)
    while marker.read_text().count("SIGINT") < 2:
        await asyncio.sleep(0.02)
    assert not task.done()  # children wait for a second signal
    supervisor.stop(signal.SIGTERM)
    assert await asyncio.wait_for(task, 10) == 0
    assert marker.read_text().count("SIGTERM") == 2
