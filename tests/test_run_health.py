"""``status --check`` for liveness probes: exit 0 only while a live worker serves every
selected queue."""

from __future__ import annotations

import signal

from tests.conftest import run_cli
from tests.runapps import Running, work_app
from tests.servers import free_port, wait_for

MAIL = {
    "app/domain/mail/jobs/__init__.py": 'job_defaults = {"queue": "mail"}\n',
    "app/domain/mail/jobs/tasks.py": "async def send(ctx) -> None:\n    return None\n",
}


def check(app, url: str, *queues: str):
    args = [a for q in queues for a in ("-q", q)]
    return run_cli(
        "status",
        "--check",
        *args,
        "--url",
        url,
        "--roots",
        f"{app.name}.domain",
        "--app-dir",
        str(app.parent),
        cwd=app.parent,
        env={"TEST_REDIS_URL": url},
    )


def test_status_check_follows_the_live_workers(make_app, redis_url):
    app = work_app(make_app, MAIL)
    result = check(app, redis_url)
    assert result.returncode == 1
    assert "unhealthy: no live worker serves default, mail" in result.stderr
    with Running(["-q", "default"], app, redis_url) as run:
        run.wait_log("serving queue(s) default")
        wait_for(lambda: check(app, redis_url, "default").returncode == 0, what="healthy")
        ok = check(app, redis_url, "default")
        assert ok.stdout.startswith("ok: default (1 worker)")
        partial = check(app, redis_url)
        assert partial.returncode == 1
        assert "no live worker serves mail" in partial.stderr
        run.signal(signal.SIGTERM)
        assert run.wait() == 0
    with Running([], app, redis_url) as run:
        run.wait_log("serving queue(s)")
        wait_for(lambda: check(app, redis_url).returncode == 0, what="every queue served")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0


def test_status_check_with_no_broker_is_unhealthy_in_one_line(make_app):
    app = work_app(make_app)
    result = check(app, f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: broker redis://127.0.0.1:")
    assert "Traceback" not in result.stderr
