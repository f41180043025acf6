"""domainjobs.testing as a user sees it: a separate project (in a temp dir) whose own test
suite uses only the public testing API against the shop example domains, run by pytest in
a subprocess. Its tests must pass, and its deliberately failing ones must fail with a
message that says what went wrong."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOP_APP = ROOT / "examples" / "shop" / "app"

PYPROJECT = """
[project]
name = "shop-tests"
version = "0"

[tool.domainjobs]
roots = ["app.domain"]

[tool.pytest.ini_options]
asyncio_mode = "{mode}"
asyncio_default_fixture_loop_scope = "function"
pythonpath = ["."]
"""

SERVICE = '''
"""Code under test: the app's own facade, with the configured roots and broker."""
from domainjobs import Jobs


async def place_order(order_id: int, amount_cents: int) -> None:
    async with Jobs() as jobs:
        await jobs.with_options(key=f"invoice-{order_id}").enqueue(
            "billing.create_invoice", order_id=order_id, amount_cents=amount_cents
        )
'''

CONFTEST = """
import pytest

pytest_plugins = ["domainjobs.testing"]


@pytest.fixture(autouse=True)
def accounts_db(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOP_ACCOUNTS_DB", str(tmp_path / "accounts.sqlite3"))
"""

TEST_SHOP = """
import pytest

from app.domain.accounts.jobs.tasks import count_welcomes, send_welcome_email
from app.domain.catalog.jobs import price_of
from shop_service import place_order


async def test_welcome_email_runs_directly_with_the_startup_database(run_task):
    assert await run_task(send_welcome_email, user_id=1) == "user1@example.com"
    assert await run_task("accounts.count_welcomes") == 1


async def test_price_comes_from_the_startup_cache(run_task):
    assert await run_task(price_of, sku="tea") == 350
    with pytest.raises(KeyError):
        await run_task(price_of, sku="coffee")


async def test_jobs_run_on_an_in_process_worker(jobs, drain):
    await jobs.enqueue(send_welcome_email, user_id=7, email="ann@example.com")
    await jobs.enqueue("billing.charge", invoice_id=3, timeout=9)
    log = await drain()
    assert log.result("accounts.send_welcome_email") == "ann@example.com"
    assert log.result("billing.charge") == "charged invoice 3 (gateway timeout 9s)"
    assert log.one("billing.charge").queue == "billing"
    assert await jobs.apply(price_of, sku="cake") == 420
    assert await jobs.apply(count_welcomes) == 1


@pytest.mark.domainjobs(workers=False)
async def test_placing_an_order_enqueues_its_invoice(enqueued, drain):
    await place_order(order_id=5, amount_cents=1200)
    await enqueued.assert_enqueued(
        "billing.create_invoice",
        {"order_id": 5, "amount_cents": 1200},
        options={"key": "invoice-5", "timeout": 60, "retries": 3},
    )
    assert [job.status for job in await enqueued()] == ["queued"]
    log = await drain()
    assert log.result("billing.create_invoice") == {
        "order_id": 5, "amount_cents": 1200, "status": "open"
    }
"""

TEST_UNITTEST = """
import unittest

from domainjobs.testing import JobsHarness, TaskRunner


class ShopTests(unittest.IsolatedAsyncioTestCase):
    async def test_price_directly(self):
        async with TaskRunner("app.domain") as runner:  # no broker needed
            self.assertEqual(await runner.run("catalog.price_of", sku="tea"), 350)

    async def test_charge_on_a_worker(self):
        async with JobsHarness("app.domain") as harness:  # starts its own broker
            await harness.jobs.enqueue("billing.charge", invoice_id=3)
            log = await harness.drain()
            self.assertEqual(log.result("billing.charge"), "charged invoice 3 (gateway timeout 5s)")
            (await harness.enqueued()).assert_not_enqueued("billing.send_reminders")
"""

TEST_FAILING = """
from shop_service import place_order


async def test_expects_the_wrong_invoice(enqueued):
    await place_order(order_id=5, amount_cents=1200)
    await enqueued.assert_enqueued("billing.create_invoice", {"order_id": 6, "amount_cents": 1200})


async def test_a_job_fails(jobs, drain):
    await jobs.enqueue("catalog.price_of", sku="coffee")
    await drain()
"""


def user_env() -> dict[str, str]:
    """The environment of a user's shell: none of our suite's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOMAINJOBS_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    return env


def make_project(root: Path, files: dict[str, str], mode: str = "auto") -> Path:
    shutil.copytree(SHOP_APP, root / "app", ignore=shutil.ignore_patterns("__pycache__"))
    files = {"pyproject.toml": PYPROJECT.format(mode=mode), **files}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


#: Plugins of this environment that a user's project would not have (faker alone takes
#: seconds to import): blocked to keep these runs fast. Our entry point still loads.
UNRELATED_PLUGINS = ("faker", "anyio", "valkey", "platformdirs")


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    blocked = [arg for name in UNRELATED_PLUGINS for arg in ("-p", f"no:{name}")]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *blocked, *args],
        cwd=project,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_user_project_passes_and_fails_readably(tmp_path):
    project = make_project(
        tmp_path / "shop-tests",
        {
            "shop_service.py": SERVICE,
            "conftest.py": CONFTEST,
            "tests/test_shop.py": TEST_SHOP,
            "tests/test_unittest_style.py": TEST_UNITTEST,
            "tests/test_deliberate_failures.py": TEST_FAILING,
        },
    )
    result = run_pytest(project, "-rA")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    for name in (
        "test_welcome_email_runs_directly_with_the_startup_database",
        "test_price_comes_from_the_startup_cache",
        "test_jobs_run_on_an_in_process_worker",
        "test_placing_an_order_enqueues_its_invoice",
    ):
        assert f"PASSED tests/test_shop.py::{name}" in out, out
    assert "PASSED tests/test_unittest_style.py::ShopTests::test_price_directly" in out, out
    assert "PASSED tests/test_unittest_style.py::ShopTests::test_charge_on_a_worker" in out, out
    assert "6 passed" in out and "2 failed" in out, out
    # the wrong expectation: what was expected, and what the broker holds
    assert (
        "AssertionError: expected at least one job of task 'billing.create_invoice' with kwargs "
        "{'order_id': 6, 'amount_cents': 1200}, found 0; the broker holds 1 job(s):"
    ) in out, out
    assert "1. billing.create_invoice(order_id=5, amount_cents=1200) on queue 'billing'" in out
    # the failing job: which call, how it ended, and the job's own traceback
    assert "JobsFailedError: 1 job(s) failed while draining:" in out, out
    assert (
        "catalog.price_of(sku='coffee') on queue 'default': failed after 1 attempt(s) - "
        "KeyError: 'coffee'"
    ) in out, out
    assert 'return ctx["prices"][sku]' in out, out


MINIMAL_TEST = """
{header}
async def test_price(run_task):
    assert await run_task("catalog.price_of", sku="tea") == 350
"""


@pytest.mark.parametrize(
    ("how", "files", "args", "mode"),
    [
        ("-p", {}, ("-p", "domainjobs.testing"), "strict"),
        ("import in conftest", {"conftest.py": "import domainjobs.testing\n"}, (), "auto"),
        ("import in the test", {"header": "from domainjobs.testing import JobLog"}, (), "auto"),
    ],
)
def test_the_plugin_is_on_once_the_project_opts_in(tmp_path, how, files, args, mode):
    """``pytest_plugins`` is the way of the project above; these are the others."""
    files = dict(files)
    header = files.pop("header", "")
    if mode == "strict":
        header += "\nimport pytest\npytestmark = pytest.mark.asyncio\n"
    test = MINIMAL_TEST.format(header=header)
    project = make_project(tmp_path / "p", {**files, "tests/test_price.py": test}, mode)
    result = run_pytest(project, *args)
    assert result.returncode == 0, f"{how}:\n{result.stdout}\n{result.stderr}"
    assert "1 passed" in result.stdout


def test_without_opting_in_there_are_no_fixtures(tmp_path):
    project = make_project(tmp_path / "p", {"tests/test_price.py": MINIMAL_TEST.format(header="")})
    result = run_pytest(project)
    assert result.returncode == 1
    assert "fixture 'run_task' not found" in result.stdout, result.stdout
