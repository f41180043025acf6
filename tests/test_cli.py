"""``python -m domainjobs`` in real subprocesses: run, list, check, config and errors."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, run_cli

SHOP = EXAMPLES / "shop"


def test_help_shows_worked_examples():
    result = run_cli("--help", check=True)
    assert "python -m domainjobs run" in result.stdout
    for command in ("run", "list", "check"):
        sub = run_cli(command, "--help", check=True)
        assert "example" in sub.stdout and f"python -m domainjobs {command}" in sub.stdout


def test_check_on_the_shop_example_is_clean():
    result = run_cli("check", cwd=SHOP)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "3 domain(s)" in result.stderr and "queues: billing, default" in result.stderr


def test_list_json_writes_only_json_to_stdout():
    result = run_cli("list", "--json", cwd=SHOP, check=True)
    data = json.loads(result.stdout)
    domains = {d["name"]: d for d in data["domains"]}
    assert list(domains) == ["accounts", "billing", "catalog"]
    billing_tasks = {t["name"]: t for t in domains["billing"]["tasks"]}
    assert billing_tasks["billing.create_invoice"]["options"] == {"retries": 3, "timeout": 60}
    assert billing_tasks["billing.charge"]["queue"] == "billing"
    crons = {c["name"]: c for c in domains["billing"]["crons"]}
    assert crons["billing.close_books"]["cron"] == "5 0 * * *"
    assert len(crons["billing.close_books"]["next_runs"]) == 3
    assert all(r.endswith("T00:05:00+00:00") for r in crons["billing.close_books"]["next_runs"])
    assert [h["name"] for h in domains["accounts"]["startup"]] == ["accounts.open_database"]


def test_list_human_groups_by_domain():
    result = run_cli("list", cwd=SHOP, check=True)
    assert "billing  (app.domain.billing, default queue billing)" in result.stdout
    assert "cron     catalog.refresh_prices  '*/15 * * * *'  next:" in result.stdout


def test_check_reports_every_problem_on_stderr_with_exit_2(tmp_path: Path):
    jobs = tmp_path / "proj" / "app" / "domain"
    for folder in ("proj/app", "proj/app/domain", "proj/app/domain/x", "proj/app/domain/y"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (jobs / "x" / "jobs.py").write_text("import not_installed_pkg_xyz\n")
    (jobs / "y" / "jobs.py").write_text(
        "from domainjobs import cron\n\n@cron('61 * * * *')\nasync def bad(ctx):\n    pass\n"
    )
    result = run_cli("check", cwd=tmp_path / "proj")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "2 problems" in result.stderr
    assert "app/domain/x/jobs.py:1" in result.stderr and "not_installed_pkg_xyz" in result.stderr
    assert "app/domain/y/jobs.py:3" in result.stderr and "'61 * * * *'" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_url_is_a_clear_error(tmp_path: Path):
    env = {"DOMAINJOBS_URL": "", "DOMAINJOBS_EMBEDDED": "false"}  # else: the embedded broker
    result = run_cli("run", "--burst", cwd=SHOP, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--url" in result.stderr


def test_unknown_queue_is_a_usage_error():
    result = run_cli("run", "-q", "biling", "--url", "redis://127.0.0.1:1", cwd=SHOP)
    assert result.returncode == 2
    assert "did you mean 'billing'" in result.stderr


def test_run_burst_processes_jobs_of_every_queue_and_exits_0(redis_url, tmp_path: Path):
    import asyncio

    from saq import Queue

    async def enqueue() -> list[str]:
        keys = []
        for name, task, kwargs in [
            ("default", "accounts.send_welcome_email", {"user_id": 1}),
            ("default", "accounts.send_welcome_email", {"user_id": 2}),
            ("billing", "billing.charge", {"invoice_id": 9}),
            ("default", "catalog.price_of", {"sku": "cake"}),
        ]:
            queue = Queue.from_url(redis_url, name=name)
            await queue.connect()
            job = await queue.enqueue(task, **kwargs)
            keys.append((name, job.key))
            await queue.disconnect()
        return keys

    keys = asyncio.run(enqueue())
    db = tmp_path / "accounts.sqlite3"
    result = run_cli(
        "run", "--burst", "--url", redis_url, cwd=SHOP, env={"SHOP_ACCOUNTS_DB": str(db)}
    )
    assert result.returncode == 0, result.stderr
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM welcome").fetchone()[0] == 2

    async def results() -> list:
        out = []
        for name, key in keys:
            queue = Queue.from_url(redis_url, name=name)
            await queue.connect()
            job = await queue.job(key)
            out.append((job.status, job.result))
            await queue.disconnect()
        return out

    statuses = asyncio.run(results())
    assert statuses[2] == ("complete", "charged invoice 9 (gateway timeout 5s)")
    assert statuses[3] == ("complete", 420)
    assert all(status == "complete" for status, _ in statuses)


def test_config_precedence_flag_over_env_over_pyproject(tmp_path: Path):
    project = tmp_path / "proj"
    for pkg in ("one", "one/domain", "one/domain/a", "two", "two/domain", "two/domain/b"):
        (project / pkg).mkdir(parents=True, exist_ok=True)
        (project / pkg / "__init__.py").write_text("")
    (project / "one/domain/a/jobs.py").write_text("async def t(ctx):\n    pass\n")
    (project / "two/domain/b/jobs.py").write_text("async def t(ctx):\n    pass\n")
    (project / "pyproject.toml").write_text('[tool.domainjobs]\nroots = ["one.domain"]\n')

    def listed(*args: str, env: dict[str, str] | None = None) -> list[str]:
        result = run_cli("list", "--json", *args, cwd=project, env=env, check=True)
        return [d["name"] for d in json.loads(result.stdout)["domains"]]

    assert listed() == ["a"]
    assert listed(env={"DOMAINJOBS_ROOTS": "two.domain"}) == ["b"]
    assert listed("--roots", "one.domain,two.domain", env={"DOMAINJOBS_ROOTS": "two.domain"}) == [
        "a",
        "b",
    ]
    # --app-dir from elsewhere finds the same project and its pyproject.toml
    result = run_cli("list", "--json", "--app-dir", str(project), cwd=tmp_path, check=True)
    assert [d["name"] for d in json.loads(result.stdout)["domains"]] == ["a"]


def test_unknown_pyproject_key_is_an_error_with_a_hint(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.domainjobs]\nroot = ["app.domain"]\n')
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'root'" in result.stderr and "did you mean 'roots'" in result.stderr


def test_bad_env_value_is_an_error(tmp_path: Path):
    result = run_cli("check", cwd=SHOP, env={"DOMAINJOBS_CONCURRENCY": "lots"})
    assert result.returncode == 2
    assert "DOMAINJOBS_CONCURRENCY" in result.stderr and "whole number" in result.stderr


def test_python_dash_m_and_console_script_agree():
    script = Path(sys.executable).parent / "domainjobs"
    import subprocess

    result = subprocess.run([str(script), "check"], cwd=SHOP, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3 domain(s)" in result.stderr


def test_check_validates_cron_tz():
    result = run_cli("check", cwd=SHOP, env={"DOMAINJOBS_CRON_TZ": "Mars/Olympus"})
    assert result.returncode == 2
    assert "Mars/Olympus" in result.stderr


def test_list_into_a_closed_pipe_is_quiet():
    import subprocess

    result = subprocess.run(
        f"{sys.executable} -m domainjobs list --json | head -c 10",
        shell=True,
        cwd=SHOP,
        capture_output=True,
        text=True,
    )
    assert result.stdout.startswith("{")
    assert "error" not in result.stderr


def test_check_and_list_refuse_every_broker_url_run_refuses(tmp_path: Path):
    # check is the gate before a deploy: it validates the URL as run does, without connecting
    for url in ("amqp://x", "redis//localhost", "ftp://x", "postgresql://u@h:x/db"):
        result = run_cli("check", cwd=SHOP, env={"DOMAINJOBS_URL": url})
        assert result.returncode == 2, (url, result.stderr)
        assert "broker URL" in result.stderr and "Traceback" not in result.stderr
        listed = run_cli("list", "--url", url, cwd=SHOP)
        assert listed.returncode == 2 and "broker URL" in listed.stderr
    project = tmp_path / "shop"
    shutil.copytree(SHOP / "app", project / "app")
    (project / "pyproject.toml").write_text('[tool.domainjobs]\nurl = "redis//localhost"\n')
    result = run_cli("check", cwd=project)
    assert result.returncode == 2 and "redis//localhost" in result.stderr
    # a well-formed URL to a server that is not there is fine: check never connects
    result = run_cli("check", cwd=SHOP, env={"DOMAINJOBS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 0, result.stderr
    result = run_cli("check", cwd=SHOP, env={"DOMAINJOBS_QUEUES": "biling"})
    assert result.returncode == 2 and "did you mean 'billing'" in result.stderr


def test_an_import_error_is_reported_where_it_happened_and_debug_shows_the_traceback(
    tmp_path: Path,
):
    project = tmp_path / "proj"
    files = {
        "app/__init__.py": "",
        "app/lib/__init__.py": "",
        "app/lib/helper.py": "import os\nSECRET = os.environ['NOT_SET_ANYWHERE_XYZ']\n",
        "app/domain/__init__.py": "",
        "app/domain/mail/__init__.py": "",
        "app/domain/mail/jobs/__init__.py": "",
        "app/domain/mail/jobs/tasks.py": "from app.lib import helper\n\nasync def send(ctx):\n    pass\n",
    }
    for rel, text in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    result = run_cli("check", cwd=project)
    assert result.returncode == 2
    assert "app/lib/helper.py:2, domain 'mail'" in result.stderr, result.stderr
    assert "importing app.domain.mail.jobs.tasks raised KeyError" in result.stderr
    assert "Traceback" not in result.stderr and "--debug" in result.stderr
    debug = run_cli("check", "--debug", cwd=project)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert 'app/lib/helper.py", line 2' in debug.stderr
    assert 'mail/jobs/tasks.py", line 1' in debug.stderr


def test_check_warns_about_a_domain_whose_jobs_define_nothing(tmp_path: Path):
    project = tmp_path / "proj"
    shutil.copytree(SHOP / "app", project / "app")
    empty = project / "app" / "domain" / "drafts" / "jobs"
    empty.mkdir(parents=True)
    (empty.parent / "__init__.py").write_text("")
    (empty / "__init__.py").write_text('"""Jobs to come."""\n')
    result = run_cli("check", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "warning: app/domain/drafts/jobs/__init__.py, domain 'drafts': " in result.stderr
    assert "4 domain(s)" in result.stderr


FAILING_STARTUP = {
    "app/domain/work/jobs/tasks.py": "async def noop(ctx):\n    pass\n",
    "app/domain/mail/jobs/tasks.py": "async def send(ctx):\n    pass\n",
    "app/domain/mail/jobs/startup.py": (
        "async def connect_smtp(ctx):\n    raise RuntimeError('smtp is down')\n"
    ),
}


def test_run_says_serving_only_once_the_workers_serve(make_app, redis_url):
    from tests.runapps import Running

    app = make_app({"app/domain/work/jobs/tasks.py": "async def noop(ctx):\n    pass\n"})
    with Running(["--burst"], app, redis_url) as run:
        assert run.wait() == 0, run.log
    assert run.log.index("connecting to") < run.log.index("serving queue(s) default on")
    broken = make_app(FAILING_STARTUP)
    with Running(["--burst"], broken, redis_url) as run:
        assert run.wait() == 1, run.log
    assert "smtp is down" in run.log
    assert "serving queue(s)" not in run.log
    assert "failed again" not in run.log  # two workers failing is one failure, not a signal


def test_run_with_processes_says_supervising_before_any_child_error(make_app, redis_url):
    from tests.runapps import Running

    broken = make_app(FAILING_STARTUP)
    with Running(["--burst", "--processes", "2"], broken, redis_url) as run:
        run.wait_log("smtp is down")
        run.signal(signal.SIGTERM)
        run.wait(60)
    assert "supervising 2 worker process(es)" in run.log
    assert run.log.index("supervising") < run.log.index("smtp is down"), run.log


def test_version_flag_prints_the_installed_version():
    from importlib.metadata import version

    result = run_cli("--version", check=True)
    assert result.stdout.strip() == f"domainjobs {version('domainjobs')}"


def test_an_out_of_range_cron_field_is_named():
    from domainjobs.discovery.builder import _cron_fault

    assert _cron_fault("61 * * * *").startswith("the minute field '61' is out of range")
    assert "allowed: 0-59" in _cron_fault("61 * * * *")
    assert _cron_fault("0 25 * * *").startswith("the hour field '25'")
    assert _cron_fault("* * *").startswith("it has 3 field(s); use five fields")


def test_run_on_a_dead_broker_never_says_serving():
    env = {"DOMAINJOBS_CONNECT_TIMEOUT": "1"}
    result = run_cli("run", "--burst", "--url", "redis://127.0.0.1:1/0", cwd=SHOP, env=env)
    assert result.returncode == 1, result.stderr
    assert "connecting to redis://127.0.0.1:1/0" in result.stderr
    assert "unreachable" in result.stderr
    assert "serving queue(s)" not in result.stderr
