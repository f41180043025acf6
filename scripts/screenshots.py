"""Refresh the dashboard screenshots of docs/dashboard.md (docs/img/dashboard-*.png).

It starts a throwaway Redis server, runs the shop example (``examples/shop``) with
``domainjobs run --web`` behind basic auth, sends it real jobs (some of which fail), and
photographs every page in a headless Chromium (Debian's chromium + chromium-driver, driven
by selenium): light and dark (prefers-color-scheme), laptop and phone width.

The real jobs cover only the last minute or so, so the charts would be one dot wide: the
script first writes an hour (and a day) of made-up trend counters for the shop's tasks and a
made-up last run for each cron job, with the same store the workers use (``--no-history``
leaves them out).

Usage (from the repository root)::

    .venv/bin/python scripts/screenshots.py              # writes docs/img/dashboard-*.png
    .venv/bin/python scripts/screenshots.py --out /tmp/shots
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.servers: the suite's throwaway redis-server

from tests.servers import free_port, redis_server, wait_for  # noqa: E402

SHOP = ROOT / "examples" / "shop"
USER, PASSWORD = "ops", "screenshots"
DESKTOP = (1366, 900)
PHONE = (390, 844)

#: made-up per-minute volume of each shop task (jobs done per minute, failure share, ms)
PROFILE = {
    "accounts.send_welcome_email": (14, 0.01, 40),
    "accounts.count_welcomes": (3, 0.0, 4),
    "billing.create_invoice": (22, 0.02, 120),
    "billing.charge": (20, 0.06, 700),
    "billing.send_reminders": (0, 0.0, 2000),
    "billing.close_books": (0, 0.0, 3000),
    "catalog.price_of": (35, 0.03, 2),
    "catalog.refresh_prices": (0, 0.0, 15),
}
QUEUE_OF = {name: ("billing" if name.startswith("billing.") else "default") for name in PROFILE}


def made_up_history(url: str) -> None:
    """An hour of minute buckets and a day of quarter-hour buckets for the shop's tasks."""
    from croniter import croniter
    from saq import Queue

    from domainjobs.runtime.trends import HIST, MINUTE, QUARTER, histogram_index, new_row
    from domainjobs.runtime.trendstore import RedisTrendStore

    rng = random.Random(7)

    def row(per_minute: float, fail: float, ms: float, minutes: int, t: float) -> list[int]:
        wave = 1 + 0.45 * __import__("math").sin(t / 1500) + rng.uniform(-0.25, 0.25)
        done = max(0, int(per_minute * minutes * wave))
        failed = int(done * fail * rng.uniform(0.2, 2.2))
        out = new_row()
        out[0], out[1], out[2] = done, failed, int(failed * 0.7)
        for _ in range(done + failed):
            run = max(1, int(rng.lognormvariate(0, 0.6) * ms))
            out[4] += run
            out[5] += int(rng.lognormvariate(0, 0.9) * 35)
            out[HIST + histogram_index(run)] += 1
        return out

    async def go() -> None:
        queues = {name: Queue.from_url(url, name=name) for name in ("default", "billing")}
        for queue in queues.values():
            await queue.connect()
        stores = {name: RedisTrendStore(queue) for name, queue in queues.items()}  # type: ignore[arg-type]
        now = time.time()
        for resolution, count, minutes in ((MINUTE, 60, 1), (QUARTER, 96, 15)):
            for i in range(1, count + 1):
                start = resolution.start(now) - i * resolution.seconds
                for queue in queues:
                    rows = {
                        task: row(*PROFILE[task], minutes, start)
                        for task in PROFILE
                        if QUEUE_OF[task] == queue and PROFILE[task][0]
                    }
                    await stores[queue].add(queue, {resolution.name: {start: rows}}, {})
        # the last run of each cron job, as a worker records it when the job ends
        for queue, name, cron, late, took in (
            ("default", "catalog.refresh_prices", "*/15 * * * *", 0.4, 0.02),
            ("billing", "billing.send_reminders", "0 9 * * *", 1.7, 12.5),
            ("billing", "billing.close_books", "5 0 * * *", 0.3, 41.0),
        ):
            tick = int(croniter(cron, now).get_prev())
            run = {
                "key": f"cron:{name}:{tick}",
                "tick": tick,
                "status": "complete",
                "started": tick + late,
                "completed": tick + late + took,
            }
            await stores[queue].add(queue, {}, {name: run})
        for queue in queues.values():
            await queue.disconnect()

    asyncio.run(go())


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m domainjobs ARGS`` in the shop folder."""
    return subprocess.run(
        [sys.executable, "-m", "domainjobs", *args],
        cwd=SHOP,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def real_jobs(env: dict[str, str]) -> None:
    """Jobs that really run on the shop's workers: most succeed, a few fail."""
    for i in range(12):
        cli(env, "enqueue", "catalog.price_of", "--kwargs", '{"sku": "tea"}')
        invoice = f'{{"order_id": {i}, "amount_cents": 990}}'
        cli(env, "enqueue", "billing.create_invoice", "--kwargs", invoice)
    for sku in ("scone", "muffin", "bagel"):
        cli(env, "enqueue", "catalog.price_of", "--kwargs", f'{{"sku": "{sku}"}}', "--retries", "1")
    cli(env, "enqueue", "billing.close_books", "--key", "books-tomorrow", "--delay", "86400")
    cli(env, "enqueue", "catalog.price_of", "--kwargs", '{"sku": "cake"}', "--wait")


def fetch_ok(url: str) -> bool:
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def browser(tmp: Path) -> Any:
    """A headless Chromium sending our credentials with every request."""
    from selenium import webdriver

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        raise SystemExit("screenshots need Debian's chromium and chromium-driver packages")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        f"--user-data-dir={tmp / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )
    return driver


def shoot(
    driver: Any,
    url: str,
    path: Path,
    *,
    dark: bool,
    phone: bool,
    wait_charts: bool,
    click: str | None = None,
) -> None:
    """Open ``url`` in the given mode and save a full-page PNG at ``path``."""
    width, height = PHONE if phone else DESKTOP
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]},
    )
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 2 if phone else 1, "mobile": phone},
    )
    driver.get(url)
    if wait_charts:
        wait_for(
            lambda: driver.execute_script(
                "return document.querySelectorAll('.chart').length === "
                "(window.dashCharts || []).length"
            ),
            timeout=20,
            what="the charts",
        )
    time.sleep(0.5)  # let uPlot's resize frame settle before the picture
    if click:  # a button whose dialog is the picture: the window as it is
        driver.find_element("css selector", click).click()
        time.sleep(0.3)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        return
    full = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": width,
            "height": max(height, full),
            "deviceScaleFactor": 2 if phone else 1,
            "mobile": phone,
        },
    )
    time.sleep(0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--no-history", action="store_true", help="no made-up trend history")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dj-shots-"))
    with redis_server() as url:
        env = {
            **os.environ,
            "DOMAINJOBS_URL": url,
            "DOMAINJOBS_EMBEDDED": "false",
            "SHOP_ACCOUNTS_DB": str(tmp / "accounts.db"),
            "DOMAINJOBS_WEB_USER": USER,
            "DOMAINJOBS_WEB_PASSWORD": PASSWORD,
        }
        if not args.no_history:
            made_up_history(url)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "domainjobs", "run", "--web", "--port", str(port)],
            cwd=SHOP,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        driver = None
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: fetch_ok(base + "/health"), timeout=30, what="the dashboard")
            real_jobs(env)
            time.sleep(2.5)  # the workers flush their trend counters every second
            driver = browser(tmp)
            out: Path = args.out
            driver.get(base + "/jobs?status=failed")
            job = driver.find_element("css selector", "table.jobs td.key a").get_attribute("href")
            job = job.removeprefix(base)
            # name, path, dark, phone, wait for the charts
            shots = [
                ("overview", "/", False, False, True),
                ("trends", "/trends?by=domain", False, False, True),
                ("schedules", "/schedules", False, False, False),
                ("jobs", "/jobs?status=failed", False, False, False),
                ("job", job, False, False, False),
                ("overview-dark", "/", True, False, True),
                ("job-dark", job, True, False, False),
                ("phone", "/", False, True, True),
                ("phone-dark", "/", True, True, True),
            ]
            for name, path, dark, phone, charts in shots:
                target = out / f"dashboard-{name}.png"
                shoot(driver, base + path, target, dark=dark, phone=phone, wait_charts=charts)
            # the confirmation every action asks for
            shoot(driver, base + "/jobs", out / "dashboard-confirm.png", dark=False, phone=False,
                  wait_charts=False, click="table.by-task button.primary")  # fmt: skip
        finally:
            if driver is not None:
                driver.quit()
            server.terminate()
            server.wait(30)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
