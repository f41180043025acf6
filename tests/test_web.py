"""The web UI for every discovered queue: ``run --web`` with basic auth, checked over real
HTTP and in a real headless Chromium (Debian's chromium + chromium-driver), and the ASGI app
mounted inside another Starlette app served by uvicorn. SAQ's own UI stays reachable under
``/saq/`` (the dashboard's own pages are tested in tests/test_dashboard.py)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.runapps import Running, enqueue
from tests.servers import free_port, wait_for

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

TASKS = {
    "app/domain/mail/jobs/__init__.py": 'job_defaults = {"queue": "mail"}\n',
    "app/domain/mail/jobs/tasks.py": "async def send(ctx) -> None:\n    return None\n",
    "app/domain/stock/jobs/tasks.py": "async def count(ctx) -> int:\n    return 1\n",
}
USER, PASSWORD = "ops", "s3cret-pw"


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def web_app(make_app):
    return make_app(dict(TASKS))


def start_web(app: Path, redis_url: str, port: int, env: dict[str, str] | None = None) -> Running:
    run = Running(["--web", "--port", str(port)], app, redis_url, env=env)
    run.wait_log("web UI on http://")
    wait_for(lambda: get(f"http://127.0.0.1:{port}/health")[0] in (200, 401), what="web UI up")
    return run


def test_web_ui_requires_the_configured_credentials(web_app, redis_url):
    port = free_port()
    env = {"DOMAINJOBS_WEB_USER": USER, "DOMAINJOBS_WEB_PASSWORD": PASSWORD}
    with start_web(web_app, redis_url, port, env):
        base = f"http://127.0.0.1:{port}"
        status, body = get(base + "/")
        assert status == 401
        assert get(base + "/api/queues", ("ops", "wrong"))[0] == 401
        assert get(base + "/api/queues", ("admin", PASSWORD))[0] == 401
        status, body = get(base + "/api/queues", (USER, PASSWORD))
        assert status == 200
        names = sorted(q["name"] for q in json.loads(body)["queues"])
        assert names == discovered_queues(web_app) == ["default", "mail"]
        assert get(base + "/", (USER, PASSWORD))[0] == 200
        assert get(base + "/api/queues/nope", (USER, PASSWORD))[0] == 404


def discovered_queues(app: Path) -> list[str]:
    result = run_cli(
        "list",
        "--json",
        "--roots",
        f"{app.name}.domain",
        "--app-dir",
        str(app.parent),
        cwd=app.parent,
        check=True,
    )
    return sorted(json.loads(result.stdout)["queues"])


def test_web_ui_refuses_to_listen_beyond_localhost_without_a_password(web_app, redis_url):
    result = run_cli(
        "run",
        "--web",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--url",
        redis_url,
        "--roots",
        f"{web_app.name}.domain",
        "--app-dir",
        str(web_app.parent),
        cwd=web_app.parent,
    )
    assert result.returncode == 2
    assert "refusing to serve the web UI on 0.0.0.0 without a password" in result.stderr
    assert "Traceback" not in result.stderr


def test_web_ui_port_in_use_is_one_clear_error(web_app, redis_url):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli(
            "run",
            "--web",
            "--port",
            str(port),
            "--url",
            redis_url,
            "--roots",
            f"{web_app.name}.domain",
            "--app-dir",
            str(web_app.parent),
            cwd=web_app.parent,
        )
    assert result.returncode == 2
    assert f"cannot serve the web UI on 127.0.0.1:{port}" in result.stderr


def test_create_app_mounts_inside_another_asgi_app(web_app, redis_url):
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from domainjobs.web import create_app

    async def home(request):
        return PlainTextResponse("my app")

    outer = Starlette(
        routes=[
            Route("/", home),
            Mount("/jobs", app=create_app(f"{web_app.name}.domain", redis_url, password=PASSWORD)),
        ]
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(outer, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn started")
        base = f"http://127.0.0.1:{port}"
        assert get(base + "/") == (200, b"my app")
        assert get(base + "/jobs/api/queues")[0] == 401
        status, page = get(base + "/jobs/", ("admin", PASSWORD))
        assert status == 200
        assert b'href="/jobs/assets/dash.css' in page and b'href="/jobs/schedules"' in page
        assert get(base + "/jobs/assets/uplot.min.js", ("admin", PASSWORD))[0] == 200
        status, page = get(base + "/jobs/saq/", ("admin", PASSWORD))
        assert status == 200
        assert b'const root_path = "/jobs/saq"' in page
        assert b"/jobs/saq/static/app.js" in page
        for api in ("/jobs/api/queues", "/jobs/saq/api/queues"):
            status, body = get(base + api, ("admin", PASSWORD))
            assert {q["name"] for q in json.loads(body)["queues"]} == {"default", "mail"}
        assert get(base + "/jobs/saq/static/app.js", ("admin", PASSWORD))[0] == 200
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------- a real browser


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


# skipped on a developer machine without the browser, never in CI (.ci/run installs it)
needs_chromium = pytest.mark.skipif(
    chromium_paths() is None and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver packages",
)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    paths = chromium_paths()
    assert paths is not None
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=paths[1])
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def send_credentials(driver, user: str, password: str) -> None:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )


def page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


@needs_chromium
def test_chromium_shows_every_queue_and_an_enqueued_job_in_saqs_ui(
    web_app, redis_url, browser, tmp_path
):
    port = free_port()
    env = {"DOMAINJOBS_WEB_USER": USER, "DOMAINJOBS_WEB_PASSWORD": PASSWORD}
    [key] = enqueue(redis_url, "mail.send", 1, queue="mail", scheduled=int(time.time()) + 3600)
    with start_web(web_app, redis_url, port, env):
        base = f"http://127.0.0.1:{port}"
        # wrong credentials: the browser gets the 401 page, not the UI
        send_credentials(browser, USER, "wrong")
        browser.get(base + "/")
        status = browser.execute_script(
            "return performance.getEntriesByType('navigation')[0].responseStatus"
        )
        assert status == 401
        assert "mail" not in page_text(browser)
        send_credentials(browser, USER, PASSWORD)
        browser.get(base + "/saq/")
        wait_for(
            lambda: "mail" in page_text(browser) and "default" in page_text(browser),
            timeout=20,
            what="the queues in the page",
        )
        browser.save_screenshot(str(tmp_path / "queues.png"))
        browser.get(base + "/saq/queues/mail")
        wait_for(lambda: key in page_text(browser), timeout=20, what="the job in the page")
        assert "mail.send" in page_text(browser)
        browser.get(f"{base}/saq/queues/mail/jobs/{key}")
        wait_for(lambda: "Attempts" in page_text(browser), timeout=20, what="the job's page")
        assert key in page_text(browser) and "mail.send" in page_text(browser)
        browser.save_screenshot(str(tmp_path / "job.png"))


def api_workers(port: int) -> dict[str, int]:
    status, body = get(f"http://127.0.0.1:{port}/api/queues")
    assert status == 200
    return {q["name"]: len(q["workers"]) for q in json.loads(body)["queues"]}


def test_web_beside_a_supervisor_sees_every_worker_process(web_app, redis_url):
    port = free_port()
    run = Running(["--web", "--port", str(port), "--processes", "2"], web_app, redis_url)
    with run:
        run.wait_log("web UI on http://")
        wait_for(
            lambda: api_workers(port) == {"default": 2, "mail": 2},
            timeout=30,
            what="two live workers per queue",
        )
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log


def test_web_only_serves_the_ui_without_workers(web_app, redis_url):
    port = free_port()
    with Running(["--web-only", "--port", str(port)], web_app, redis_url) as run:
        run.wait_log("web UI on http://")
        wait_for(lambda: get(f"http://127.0.0.1:{port}/health")[0] == 200, what="UI up")
        assert api_workers(port) == {"default": 0, "mail": 0}
        assert "serving queue(s)" not in run.log
        run.signal(signal.SIGINT)
        assert run.wait() == 0, run.log
