"""The dashboard served by ``domainjobs run --web``: in a real headless Chromium (Debian's
chromium + chromium-driver) against the shop example and a test app with a task that fails
once, over real HTTP for auth and same-origin rules, and on every broker."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
from croniter import croniter

from tests.conftest import EXAMPLES
from tests.runapps import Running, enqueue, job_statuses
from tests.servers import free_port, wait_for
from tests.test_postgres import broker_url, embedded_url, fresh_postgres_url
from tests.test_web import browser, needs_chromium, page_text, send_credentials

_ = (browser, broker_url, embedded_url, fresh_postgres_url)

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

SHOP = EXAMPLES / "shop"
USER, PASSWORD = "ops", "dash-s3cret"
AUTH_ENV = {"DOMAINJOBS_WEB_USER": USER, "DOMAINJOBS_WEB_PASSWORD": PASSWORD}

FLAKY = """
import os
import redis.asyncio as aioredis

PREFIX = __name__.split(".")[0]


async def flaky(ctx) -> str:
    r = aioredis.from_url(os.environ["TEST_REDIS_URL"])
    try:
        if await r.incr(f"{PREFIX}:flaky") == 1:
            raise RuntimeError("the first attempt fails")
    finally:
        await r.aclose()
    return "second time lucky"


async def always(ctx, n: int = 0) -> None:
    raise RuntimeError(f"always fails ({n})")
"""


def request(
    url: str,
    *,
    auth: tuple[str, str] | None = (USER, PASSWORD),
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, dict[str, str]]:
    """Status, body and headers of a GET (or a form POST with ``data``); no redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=20) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def start(args: list[str], app: Path, url: str, env: dict[str, str]) -> tuple[Running, str]:
    port = free_port()
    run = Running(["--web", "--port", str(port), *args], app, url, env=env)
    run.wait_log("web UI on http://", timeout=30)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: request(base + "/health")[0] == 200, timeout=30, what="the dashboard")
    return run, base


def shop(redis_url: str, tmp_path: Path) -> tuple[Running, str]:
    env = {**AUTH_ENV, "SHOP_ACCOUNTS_DB": str(tmp_path / "accounts.db")}
    return start([], SHOP / "app", redis_url, env)


def wait_page(driver, predicate, what: str, timeout: float = 30, reload_every: float = 0):
    """Poll ``predicate(page text)``, reloading the page every ``reload_every`` seconds."""
    last = [time.monotonic()]

    from selenium.common.exceptions import WebDriverException

    def check():
        if reload_every and time.monotonic() - last[0] > reload_every:
            driver.refresh()
            last[0] = time.monotonic()
        try:
            return predicate(page_text(driver))
        except WebDriverException:  # between two pages
            return False

    wait_for(check, timeout=timeout, interval=0.2, what=what)


def confirm_dialog(driver) -> None:
    """Press Confirm in the page's confirmation dialog."""
    wait_for(
        lambda: driver.execute_script("return document.getElementById('confirm').open"),
        timeout=10,
        what="the confirmation dialog",
    )
    driver.find_element("css selector", "dialog#confirm button[value=ok]").click()


def emulate(driver, *, dark: bool = False, width: int | None = None) -> None:
    scheme = "dark" if dark else "light"
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    if width:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 844, "deviceScaleFactor": 2, "mobile": True},
        )
    else:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


CHART_DRAWN = """
const charts = window.dashCharts || [];
const drawn = charts.filter(c => c.dashHasData && c.data.slice(1).some(s => s.some(v => v > 0)));
if (!drawn.length) return 0;
const canvas = drawn[0].root.querySelector('canvas');
const ctx = canvas.getContext('2d');
const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
return painted;
"""


@needs_chromium
def test_overview_shows_the_shop_and_its_charts_draw_after_jobs_run(redis_url, browser, tmp_path):
    run, base = shop(redis_url, tmp_path)
    with run:
        # wrong credentials: the browser gets the 401 page, not the dashboard
        send_credentials(browser, USER, "wrong")
        browser.get(base + "/")
        status = browser.execute_script(
            "return performance.getEntriesByType('navigation')[0].responseStatus"
        )
        assert status == 401 and "billing" not in page_text(browser)

        enqueue(redis_url, "catalog.price_of", 6, sku="tea")
        enqueue(redis_url, "billing.create_invoice", 3, queue="billing", order_id=1, amount_cents=5)
        send_credentials(browser, USER, PASSWORD)
        browser.get(base + "/")
        text = page_text(browser)
        for name in ("accounts", "billing", "catalog", "accounts.send_welcome_email",
                     "billing.create_invoice", "catalog.refresh_prices"):  # fmt: skip
            assert name in text
        # the workers flush their counters about once a second; the charts poll every 10 s
        wait_for(
            lambda: browser.execute_script(CHART_DRAWN),
            timeout=40,
            interval=0.5,
            what="a chart drawn with data",
        )
        assert browser.execute_script("return document.querySelectorAll('.chart canvas').length")
        wait_page(
            browser,
            lambda t: re.search(r"catalog\.price_of\s+default\s+6\b", t),
            "catalog.price_of: 6 done in the overview (it refreshes every 5 s)",
        )
        browser.save_screenshot(str(tmp_path / "overview-light.png"))

        emulate(browser, dark=True)
        browser.refresh()
        background = browser.execute_script(
            "return getComputedStyle(document.body).backgroundColor"
        )
        assert sum(map(int, re.findall(r"\d+", background)[:3])) < 120, background
        browser.save_screenshot(str(tmp_path / "overview-dark.png"))

        emulate(browser, width=390)
        browser.refresh()
        wait_for(lambda: browser.execute_script(CHART_DRAWN), timeout=20, what="phone chart")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, "the page scrolls sideways on a phone"
        browser.save_screenshot(str(tmp_path / "overview-phone.png"))
        emulate(browser)

        browser.get(base + "/trends?by=domain&window=15m")
        wait_for(lambda: browser.execute_script(CHART_DRAWN), timeout=30, what="trend charts")
        names = browser.execute_script(
            "return window.dashCharts[0].series.slice(1).map(s => s.label)"
        )
        assert names == ["accounts", "billing", "catalog"]


@needs_chromium
def test_schedules_list_next_runs_and_a_cron_job_pauses_and_resumes(redis_url, browser, tmp_path):
    run, base = shop(redis_url, tmp_path)
    with run:
        send_credentials(browser, USER, PASSWORD)
        browser.get(base + "/schedules")
        rows = {
            row.find_element("css selector", "th a").text: row.text
            for row in browser.find_elements("css selector", "table.crons tbody tr")
        }
        assert set(rows) == {
            "catalog.refresh_prices",
            "billing.send_reminders",
            "billing.close_books",
        }
        assert "*/15 * * * *" in rows["catalog.refresh_prices"]
        upcoming = croniter("0 9 * * *", datetime.now(timezone.utc)).get_next(datetime)
        assert upcoming.strftime("%a %d %b %H:%M:%S") in rows["billing.send_reminders"]
        assert "times in UTC" in page_text(browser)

        row = browser.find_element("xpath", "//tr[.//a[text()='catalog.refresh_prices']]")
        row.find_element("xpath", ".//button[text()='Pause']").click()
        confirm_dialog(browser)
        wait_page(browser, lambda t: "cron job catalog.refresh_prices paused" in t, "the flash")
        client = redis.Redis.from_url(redis_url)
        assert client.smembers("domainjobs:paused-crons:default") == {b"catalog.refresh_prices"}
        row = browser.find_element("xpath", "//tr[.//a[text()='catalog.refresh_prices']]")
        assert "paused" in row.text
        row.find_element("xpath", ".//button[text()='Resume']").click()
        confirm_dialog(browser)
        wait_page(browser, lambda t: "cron job catalog.refresh_prices resumed" in t, "the flash")
        assert client.smembers("domainjobs:paused-crons:default") == set()
        client.close()


@pytest.fixture
def flaky_app(make_app) -> Path:
    return make_app({"app/domain/work/jobs/tasks.py": FLAKY})


@needs_chromium
def test_a_failed_job_is_retried_from_the_page_and_completes(
    flaky_app, redis_url, browser, tmp_path
):
    run, base = start([], flaky_app, redis_url, AUTH_ENV)
    with run:
        [key] = enqueue(redis_url, "work.flaky")
        wait_for(lambda: job_statuses(redis_url, [key])[key] == "failed", what="the failure")
        send_credentials(browser, USER, PASSWORD)
        browser.get(base + "/jobs?status=failed")
        row = browser.find_element("xpath", f"//tr[.//a[text()='{key}']]")
        assert "work.flaky" in row.text and "failed" in row.text
        row.find_element("xpath", ".//button[text()='Retry']").click()
        # cancelling does nothing
        wait_for(
            lambda: browser.execute_script("return document.getElementById('confirm').open"),
            what="the dialog",
        )
        browser.find_element("css selector", "dialog#confirm button[value=cancel]").click()
        assert job_statuses(redis_url, [key])[key] == "failed"
        browser.find_element("xpath", f"//tr[.//a[text()='{key}']]//button[text()='Retry']").click()
        confirm_dialog(browser)
        wait_page(browser, lambda t: f"job {key} retried" in t, "the flash message")
        wait_for(lambda: job_statuses(redis_url, [key])[key] == "complete", what="the retry")
        browser.get(f"{base}/jobs/default/{key}")
        text = page_text(browser)
        assert "complete" in text and "second time lucky" in text and "2 of 1" in text
        browser.save_screenshot(str(tmp_path / "job.png"))

        # all failed jobs of a task at once
        keys = enqueue(redis_url, "work.always", 3)
        wait_for(
            lambda: set(job_statuses(redis_url, keys).values()) == {"failed"}, what="3 failures"
        )
        browser.get(base + "/jobs?status=failed")
        row = browser.find_element(
            "xpath", "//table[contains(@class,'by-task')]//tr[.//a[text()='work.always']]"
        )
        assert "3" in row.text
        row.find_element("xpath", ".//button[text()='Delete all']").click()
        confirm_dialog(browser)
        wait_page(browser, lambda t: "3 failed job(s) of work.always deleted" in t, "the flash")
        assert set(job_statuses(redis_url, keys).values()) == {"missing"}
        assert "work.always" not in page_text(browser).split("Failed jobs")[-1]


def test_actions_need_credentials_and_this_sites_pages(flaky_app, redis_url):
    run, base = start([], flaky_app, redis_url, AUTH_ENV)
    with run:
        [key] = enqueue(redis_url, "work.always")
        wait_for(lambda: job_statuses(redis_url, [key])[key] == "failed", what="the failure")
        action = f"{base}/actions/jobs/default/{key}/retry"
        form = {"confirmed": "1", "next": "/jobs"}
        same = {"Origin": base}
        assert request(action, data=form, headers=same, auth=None)[0] == 401
        assert request(action, data=form, headers=same, auth=(USER, "nope"))[0] == 401
        # the right credentials, sent by a browser on another site's page
        assert request(action, data=form, headers={"Origin": "http://evil.test"})[0] == 403
        assert request(action, data=form, headers={"Referer": "http://evil.test/x"})[0] == 403
        assert request(action, data=form)[0] == 403  # neither header: refused too
        proxied = {"Origin": "https://jobs.example.com", "X-Forwarded-Host": "jobs.example.com"}
        status, page, _ = request(action, data={"next": "/jobs"}, headers=proxied)
        assert status == 200 and "Retry job" in page  # the confirmation: allowed through
        assert request(f"{base}/api/queues/default/jobs/{key}/retry", data={})[0] == 403
        assert job_statuses(redis_url, [key])[key] == "failed"
        # no JS: the first POST asks, nothing changes yet
        status, page, _ = request(action, data={"next": "/jobs"}, headers=same)
        assert status == 200 and f"Retry job {key} of queue default?" in page
        assert job_statuses(redis_url, [key])[key] == "failed"
        status, _, headers = request(action, data=form, headers={"Referer": base + "/jobs"})
        assert status == 303 and headers["location"].startswith("/jobs?msg=job+")
        # a redirect never leaves this site
        status, _, headers = request(
            action, data={"confirmed": "1", "next": "//evil.test/"}, headers=same
        )
        assert status == 303 and headers["location"].startswith("/?msg=")
        assert get_json(base + "/api/dashboard/trends?window=15m")["window"] == "15m"

        # a key with a slash, a space, a colon and a question mark: links and forms quote it
        [odd] = enqueue(redis_url, "work.always", key="nightly run/2024:06?x")
        wait_for(lambda: job_statuses(redis_url, [odd])[odd] == "failed", what="the failure")
        status, page, _ = request(base + "/jobs?status=failed")
        quoted = urllib.parse.quote(odd)
        assert status == 200 and f'href="/jobs/default/{quoted}"' in page
        status, page, _ = request(f"{base}/jobs/default/{quoted}")
        assert status == 200 and "always fails" in page
        status, page, _ = request(
            f"{base}/actions/jobs/default/{quoted}/delete", data={"next": "/jobs"}, headers=same
        )
        assert status == 200 and f'action="/actions/jobs/default/{quoted}/delete"' in page
        status, _, _ = request(
            f"{base}/actions/jobs/default/{quoted}/delete", data=form, headers=same
        )
        assert status == 303 and job_statuses(redis_url, [odd])[odd] == "missing"


def get_json(url: str) -> dict:
    status, body, _ = request(url)
    assert status == 200, body
    return json.loads(body)


def broker_jobs(url: str, function: str | None = None, keys: list[str] | None = None):
    """Enqueue one job of ``function`` (its key), or the statuses of ``keys``, on any broker."""
    from domainjobs.brokers.urls import queue_from_url

    async def go():
        queue = queue_from_url(url, "default")
        await queue.connect()
        try:
            if function is not None:
                return (await queue.enqueue(function)).key
            return [job.status.value if job else "missing" for job in await queue.jobs(keys)]
        finally:
            await queue.disconnect()

    return asyncio.run(go())


def test_every_page_and_action_works_on_every_broker(make_app, broker_url, tmp_path):
    app = make_app({"app/domain/work/jobs/tasks.py": FLAKY})
    run, base = start(["--queue", "default"], app, broker_url, {})
    with run:
        key = broker_jobs(broker_url, "work.always")
        wait_for(lambda: broker_jobs(broker_url, keys=[key]) == ["failed"], what="the failure")
        for page in ("/", "/?window=24h", "/trends", "/schedules", "/jobs", "/jobs?status=all",
                     f"/jobs/default/{key}", f"/jobs?q={key}", "/saq/"):  # fmt: skip
            status, body, _ = request(base + page, auth=None)
            assert status in (200, 303), (page, body[-2000:])
        assert "work.always" in request(base + "/", auth=None)[1]
        assert key in request(base + "/jobs?status=failed", auth=None)[1]
        trend = get_json(base + "/api/dashboard/trends?by=domain")
        assert trend["trends"] is True and [s["name"] for s in trend["series"]] == ["work"]
        wait_for(  # the workers flush their counters about once a second
            lambda: sum(get_json(base + "/api/dashboard/trends")["series"][0]["failed"]) > 0,
            timeout=20,
            interval=0.2,
            what="the failure in the trend data",
        )

        same = {"Origin": base}
        action = f"{base}/actions/jobs/default/{key}"
        status, _, headers = request(action + "/retry", data={"confirmed": "1"}, headers=same)
        assert status == 303 and "retried" in headers["location"]
        wait_for(lambda: broker_jobs(broker_url, keys=[key]) == ["failed"], what="failed again")
        status, _, headers = request(action + "/delete", data={"confirmed": "1"}, headers=same)
        assert status == 303 and "deleted" in headers["location"]
        assert broker_jobs(broker_url, keys=[key]) == ["missing"]


def test_a_broker_that_does_not_answer_is_one_clear_page(make_app):
    import threading

    import uvicorn

    from domainjobs.web import create_app

    app = make_app({"app/domain/work/jobs/tasks.py": FLAKY})
    dead = f"redis://127.0.0.1:{free_port()}/0"
    web = create_app(f"{app.name}.domain", dead, password="")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn started")
        base = f"http://127.0.0.1:{port}"
        status, page, _ = request(base + "/", auth=None)
        assert status == 503
        assert "The broker is not answering" in page
        assert f"The broker ({dead}) does not answer: ConnectionError" in page
        assert "Traceback" not in page
        status, body, _ = request(base + "/api/dashboard/trends", auth=None)
        assert status == 503 and "does not answer" in json.loads(body)["error"]
    finally:
        server.should_exit = True
        thread.join(10)
