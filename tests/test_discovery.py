"""Discovery rules: what counts as what, and every error with where it is."""

from __future__ import annotations

import importlib.metadata

import pytest

from domainjobs import DiscoveryError, discover
from domainjobs.discovery import domains

TASKS_A = """
async def send(ctx, user_id: int) -> int:
    return user_id

def plain(ctx):
    return "plain"

def _private(ctx):
    pass
"""


def roots_of(base) -> str:
    return f"{base.name}.domain"


def problems_of(excinfo: pytest.ExceptionInfo[DiscoveryError]) -> list[str]:
    return [str(p) for p in excinfo.value.problems]


def test_package_form_finds_all_four_kinds(make_app):
    base = make_app(
        {
            "app/domain/accounts/jobs/tasks.py": TASKS_A,
            "app/domain/accounts/jobs/scheduled.py": """
                from domainjobs import cron

                @cron("*/5 * * * *")
                async def cleanup(ctx):
                    return 1

                def helper():
                    pass
            """,
            "app/domain/accounts/jobs/startup.py": "def open_db(ctx):\n    ctx['db'] = 1\n",
            "app/domain/accounts/jobs/shutdown.py": "def close_db(ctx):\n    pass\n",
        }
    )
    registry = discover(roots_of(base))
    assert [d.name for d in registry.domains] == ["accounts"]
    assert sorted(registry.tasks) == ["accounts.cleanup", "accounts.plain", "accounts.send"]
    assert [c.name for c in registry.crons] == ["accounts.cleanup"]
    assert [h.name for h in registry.startup] == ["accounts.open_db"]
    assert [h.name for h in registry.shutdown] == ["accounts.close_db"]
    assert registry.queues == ("default",)
    send = registry.task("accounts.send")
    assert send.is_async and not registry.task("accounts.plain").is_async
    assert send.origin.file.endswith("accounts/jobs/tasks.py") and send.origin.line == 2


def test_domain_without_jobs_is_skipped_silently_and_order_is_by_name(make_app):
    base = make_app(
        {
            "app/domain/zeta/jobs/tasks.py": TASKS_A,
            "app/domain/alpha/jobs/tasks.py": TASKS_A,
            "app/domain/nojobs/models.py": "X = 1\n",
        }
    )
    registry = discover(roots_of(base))
    assert [d.name for d in registry.domains] == ["alpha", "zeta"]
    assert list(registry.tasks)[:2] == ["alpha.send", "alpha.plain"]


def test_marks_take_over_from_public_functions(make_app):
    base = make_app(
        {
            "app/domain/shop/jobs/tasks.py": """
                from domainjobs import task

                @task(queue="mail", timeout=30, retries=3)
                async def marked(ctx):
                    pass

                async def unmarked_public(ctx):
                    pass
            """
        }
    )
    registry = discover(roots_of(base))
    assert list(registry.tasks) == ["shop.marked"]
    spec = registry.task("shop.marked")
    assert spec.queue == "mail"
    assert dict(spec.options) == {"timeout": 30, "retries": 3}
    assert registry.queues == ("mail",)


def test_dunder_all_selects_and_reexports_are_not_registered_twice(make_app):
    base = make_app(
        {
            "app/domain/shop/jobs/tasks/__init__.py": """
                from app.domain.shop.jobs.tasks.orders import place
                __all__ = ["place"]
            """,
            "app/domain/shop/jobs/tasks/orders.py": """
                async def place(ctx, order_id: int):
                    return order_id

                async def cancel(ctx, order_id: int):
                    return order_id
            """,
        }
    )
    registry = discover(roots_of(base))
    assert sorted(registry.tasks) == ["shop.cancel", "shop.place"]
    assert registry.task("shop.place").origin.file.endswith("orders.py")


def test_imported_helpers_are_not_tasks(make_app):
    base = make_app(
        {
            "app/domain/shop/helpers.py": "def util(ctx):\n    pass\n",
            "app/domain/shop/jobs/tasks.py": """
                from app.domain.shop.helpers import util
                from os.path import join

                async def real(ctx):
                    return util(ctx)
            """,
        }
    )
    assert list(discover(roots_of(base)).tasks) == ["shop.real"]


def test_single_module_jobs_py_with_marked_hooks(make_app):
    base = make_app(
        {
            "app/domain/catalog/jobs.py": """
                from saq import CronJob
                from domainjobs import on_startup, on_shutdown

                @on_startup
                def warm(ctx):
                    ctx["cache"] = {}

                @on_shutdown
                def cool(ctx):
                    pass

                async def price(ctx, sku: str):
                    return 1

                async def refresh(ctx):
                    return 2

                scheduled_tasks = [CronJob(refresh, cron="0 * * * *")]
            """
        }
    )
    registry = discover(roots_of(base))
    assert sorted(registry.tasks) == ["catalog.price", "catalog.refresh"]
    assert [h.name for h in registry.startup] == ["catalog.warm"]
    assert [h.name for h in registry.shutdown] == ["catalog.cool"]
    assert [c.name for c in registry.crons] == ["catalog.refresh"]


def test_scheduled_cronjob_defined_in_scheduled_is_registered_as_task(make_app):
    base = make_app(
        {
            "app/domain/billing/jobs/tasks.py": "async def charge(ctx):\n    pass\n",
            "app/domain/billing/jobs/scheduled.py": """
                from saq import CronJob
                from app.domain.billing.jobs.tasks import charge

                async def nightly(ctx):
                    pass

                def helper_only():
                    pass

                scheduled_tasks = [
                    CronJob(charge, cron="0 1 * * *", timeout=99),
                    CronJob(nightly, cron="0 2 * * *", unique=False, kwargs={"x": 1}),
                ]
            """,
        }
    )
    registry = discover(roots_of(base))
    assert sorted(registry.tasks) == ["billing.charge", "billing.nightly"]
    by_name = {c.name: c for c in registry.crons}
    assert by_name["billing.charge"].options == {"timeout": 99}
    assert by_name["billing.nightly"].unique is False
    assert by_name["billing.nightly"].kwargs == {"x": 1}


def test_same_function_name_in_two_domains_both_register(make_app):
    cleanup = """
        from domainjobs import cron

        @cron("* * * * *")
        async def cleanup(ctx):
            pass
    """
    base = make_app(
        {"app/domain/a/jobs/scheduled.py": cleanup, "app/domain/b/jobs/scheduled.py": cleanup}
    )
    registry = discover(roots_of(base))
    assert sorted(registry.tasks) == ["a.cleanup", "b.cleanup"]
    assert sorted(c.name for c in registry.crons) == ["a.cleanup", "b.cleanup"]


def test_domain_defaults_apply_and_task_marks_override(make_app):
    base = make_app(
        {
            "app/domain/billing/jobs/__init__.py": (
                'job_defaults = {"queue": "billing", "retries": 3, "timeout": 30}\n'
            ),
            "app/domain/billing/jobs/tasks.py": """
                from domainjobs import task

                @task(timeout=60)
                async def invoice(ctx):
                    pass

                @task(queue="urgent")
                async def refund(ctx):
                    pass
            """,
        }
    )
    registry = discover(roots_of(base))
    invoice, refund = registry.task("billing.invoice"), registry.task("billing.refund")
    assert (invoice.queue, dict(invoice.options)) == ("billing", {"retries": 3, "timeout": 60})
    assert (refund.queue, dict(refund.options)) == ("urgent", {"retries": 3, "timeout": 30})


def test_name_override(make_app):
    base = make_app(
        {
            "app/domain/billing/jobs/tasks.py": """
                from domainjobs import task

                @task(name="payments.charge")
                async def charge(ctx):
                    pass
            """
        }
    )
    assert list(discover(roots_of(base)).tasks) == ["payments.charge"]


def test_several_roots_and_include_exclude(make_app):
    one = make_app({"app/domain/accounts/jobs/tasks.py": TASKS_A})
    two = make_app({"app/domain/billing/jobs/tasks.py": TASKS_A})
    roots = f"{roots_of(one)},{roots_of(two)}"
    assert [d.name for d in discover(roots).domains] == ["accounts", "billing"]
    assert [d.name for d in discover(roots, include=["acc*"]).domains] == ["accounts"]
    assert [d.name for d in discover(roots, exclude=["acc*"]).domains] == ["billing"]


def test_startup_hooks_in_domain_then_definition_order(make_app):
    hooks = "def first(ctx):\n    pass\n\ndef second(ctx):\n    pass\n"
    base = make_app(
        {
            "app/domain/b/jobs/startup.py": hooks,
            "app/domain/a/jobs/startup.py": hooks,
            "app/domain/a/jobs/shutdown.py": hooks,
            "app/domain/b/jobs/shutdown.py": hooks,
        }
    )
    registry = discover(roots_of(base))
    assert [h.name for h in registry.startup] == ["a.first", "a.second", "b.first", "b.second"]
    assert [h.name for h in registry.shutdown] == ["b.second", "b.first", "a.second", "a.first"]


# -- errors ---------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_file_and_line(make_app):
    base = make_app(
        {
            "app/domain/broken/jobs/tasks.py": "async def ok(ctx):\n    pass\n\nraise RuntimeError('boom')\n",
            "app/domain/badcron/jobs/scheduled.py": """
                from domainjobs import cron

                @cron("every tuesday")
                async def weekly(ctx):
                    pass
            """,
            "app/domain/noctx/jobs/tasks.py": "async def nothing():\n    pass\n",
            "app/domain/syntax/jobs/tasks.py": "def oops(ctx)\n    pass\n",
        }
    )
    with pytest.raises(DiscoveryError) as excinfo:
        discover(roots_of(base))
    problems = excinfo.value.problems
    assert len(problems) == 4
    by_domain = {p.domain: p for p in problems}
    assert by_domain["broken"].line == 4 and "RuntimeError: boom" in by_domain["broken"].message
    assert by_domain["broken"].file.endswith("broken/jobs/tasks.py")
    assert "every tuesday" in by_domain["badcron"].message
    assert by_domain["badcron"].line == 4
    assert "context" in by_domain["noctx"].message and by_domain["noctx"].line == 1
    assert "syntax error" in by_domain["syntax"].message and by_domain["syntax"].line == 1


def test_missing_third_party_package_is_a_broken_module_not_a_missing_one(make_app):
    base = make_app({"app/domain/pay/jobs/tasks.py": "import stripe_sdk_that_is_not_installed\n"})
    with pytest.raises(DiscoveryError) as excinfo:
        discover(roots_of(base))
    (problem,) = excinfo.value.problems
    assert problem.domain == "pay"
    assert "ModuleNotFoundError" in problem.message
    assert "stripe_sdk_that_is_not_installed" in problem.message
    assert problem.line == 1


def test_collision_names_both_files(make_app):
    base = make_app(
        {
            "app/domain/a/jobs/tasks.py": """
                from domainjobs import task

                @task(name="shared.job")
                async def one(ctx):
                    pass
            """,
            "app/domain/b/jobs/tasks.py": """
                from domainjobs import task

                @task(name="shared.job")
                async def two(ctx):
                    pass
            """,
        }
    )
    with pytest.raises(DiscoveryError) as excinfo:
        discover(roots_of(base))
    (message,) = problems_of(excinfo)
    assert "a/jobs/tasks.py" in message and "b/jobs/tasks.py" in message
    assert "shared.job" in message


def test_bad_dunder_all_entries(make_app):
    base = make_app(
        {
            "app/domain/shop/jobs/tasks.py": """
                __all__ = ["missing", "CONSTANT", "fine"]
                CONSTANT = 3

                async def fine(ctx):
                    pass
            """
        }
    )
    with pytest.raises(DiscoveryError) as excinfo:
        discover(roots_of(base))
    messages = problems_of(excinfo)
    assert len(messages) == 2
    assert any("'missing'" in m and "does not define" in m for m in messages)
    assert any("'CONSTANT'" in m and "not a function" in m for m in messages)


def test_cronjob_of_another_domain_is_an_error(make_app):
    base = make_app(
        {
            "app/domain/a/jobs/tasks.py": "async def job(ctx):\n    pass\n",
            "app/domain/b/jobs/scheduled.py": """
                from saq import CronJob
                from app.domain.a.jobs.tasks import job

                scheduled_tasks = [CronJob(job, cron="* * * * *")]
            """,
        }
    )
    with pytest.raises(DiscoveryError) as excinfo:
        discover(roots_of(base))
    (problem,) = excinfo.value.problems
    assert problem.domain == "b" and "a.job" in problem.message
    assert "own domain" in problem.message and problem.line == 5


def test_cronjob_of_unregisterable_function_is_an_error(make_app):
    base = make_app(
        {
            "app/domain/a/helpers.py": "async def util(ctx):\n    pass\n",
            "app/domain/a/jobs/scheduled.py": """
                from saq import CronJob
                from app.domain.a.helpers import util

                scheduled_tasks = [CronJob(util, cron="* * * * *"), "not a cronjob"]
            """,
        }
    )
    with pytest.raises(DiscoveryError) as excinfo:
        discover(roots_of(base))
    messages = problems_of(excinfo)
    assert len(messages) == 2
    assert any("neither a task" in m for m in messages)
    assert any("scheduled_tasks[1]" in m and "not a saq.CronJob" in m for m in messages)


def test_bad_job_defaults_and_task_options(make_app):
    base = make_app(
        {
            "app/domain/a/jobs/__init__.py": 'job_defaults = {"queue": "x", "timout": 3}\n',
            "app/domain/a/jobs/tasks.py": """
                from domainjobs import task

                @task(timeout="soon")
                async def job(ctx):
                    pass
            """,
        }
    )
    with pytest.raises(DiscoveryError) as excinfo:
        discover(roots_of(base))
    messages = problems_of(excinfo)
    assert any("'timout'" in m and "did you mean 'timeout'" in m for m in messages)
    assert any("timeout must be int" in m for m in messages)


def test_missing_root_is_a_clear_problem():
    with pytest.raises(DiscoveryError) as excinfo:
        discover("no_such_package_here.domain")
    (message,) = problems_of(excinfo)
    assert "no_such_package_here.domain" in message and "cannot be found" in message


def test_two_domains_with_one_name_from_two_roots(make_app):
    one = make_app({"app/domain/accounts/jobs/tasks.py": TASKS_A})
    two = make_app({"app/domain/accounts/jobs/tasks.py": TASKS_A})
    with pytest.raises(DiscoveryError) as excinfo:
        discover([roots_of(one), roots_of(two)])
    (message,) = problems_of(excinfo)
    assert "two domains are named 'accounts'" in message


def test_registry_is_immutable(make_app):
    base = make_app({"app/domain/a/jobs/tasks.py": TASKS_A})
    registry = discover(roots_of(base))
    with pytest.raises(TypeError):
        registry.tasks["x"] = registry.task("a.send")  # type: ignore[index]
    with pytest.raises(AttributeError):
        registry.crons = ()  # type: ignore[misc]


def test_entry_point_group_adds_domains_and_roots(make_app, tmp_path, monkeypatch):
    plugin_domain = make_app({"app/domain/loyalty/jobs/tasks.py": TASKS_A})
    plugin_root = make_app({"app/domain/reviews/jobs/tasks.py": TASKS_A})
    own = make_app({"app/domain/accounts/jobs/tasks.py": TASKS_A})
    dist = tmp_path / "shop_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shop-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[domainjobs.domains]\n"
        f"loyalty = {plugin_domain.name}.domain.loyalty\n"
        f"reviews = {plugin_root.name}.domain\n"
    )
    registry = discover(roots_of(own))
    assert [d.name for d in registry.domains] == ["accounts", "loyalty", "reviews"]
    assert registry.task("loyalty.send").domain == "loyalty"
    assert [d.name for d in discover(roots_of(own), entry_points=False).domains] == ["accounts"]


def test_folders_without_init_py_are_domains_too(make_app):
    base = make_app({"app/domain/loose/jobs/tasks.py": TASKS_A})
    (base / "domain" / "loose" / "__init__.py").unlink()
    (base / "domain" / "loose" / "jobs" / "__init__.py").unlink()
    registry = discover(roots_of(base))
    assert [d.name for d in registry.domains] == ["loose"]
    assert sorted(registry.tasks) == ["loose.plain", "loose.send"]


def test_scheduled_runs_inherit_the_tasks_options_unless_the_schedule_sets_them(make_app):
    base = make_app(
        {
            "app/domain/billing/jobs/__init__.py": 'job_defaults = {"retries": 3, "timeout": 30}\n',
            "app/domain/billing/jobs/scheduled.py": """
                from saq import CronJob
                from domainjobs import cron

                @cron("0 * * * *", timeout=5)
                async def hourly(ctx):
                    pass

                async def nightly(ctx):
                    pass

                scheduled_tasks = [CronJob(nightly, cron="0 2 * * *")]
            """,
        }
    )
    crons = {c.name: c for c in discover(roots_of(base)).crons}
    assert dict(crons["billing.hourly"].options) == {"retries": 3, "timeout": 5}
    assert dict(crons["billing.nightly"].options) == {"retries": 3, "timeout": 30}


def test_a_task_whose_first_parameter_is_not_the_context_is_a_problem(make_app):
    base = make_app(
        {
            "app/domain/a/jobs/tasks.py": """
            async def cleanup(user_id):
                pass

            async def notify(user_id: int, text: str):
                pass
            """
        }
    )
    with pytest.raises(DiscoveryError) as caught:
        discover(f"{base.name}.domain")
    message = str(caught.value)
    assert "2 problems" in message
    assert "task 'cleanup' takes 'user_id' as its first parameter" in message
    assert "write def cleanup(ctx, user_id, ...)" in message
    assert "task 'notify' takes 'user_id'" in message


def test_a_context_is_recognised_by_name_or_annotation(make_app):
    base = make_app(
        {
            "app/domain/a/jobs/tasks.py": """
            from typing import Any
            from saq.types import Context

            async def plain(ctx, n: int): pass
            async def spelled_out(context): pass
            async def suffixed(job_ctx): pass
            async def unused(_, n: int): pass
            async def typed(c: Context, n: int): pass
            async def as_dict(state: dict[str, Any]): pass
            async def anything(x: Any): pass
            async def star(*args): pass
            """,
            "app/domain/a/jobs/startup.py": """
            async def open_db(worker_ctx): pass
            """,
        }
    )
    registry = discover(f"{base.name}.domain")
    assert len(registry.tasks) == 8
    assert [h.name for h in registry.startup] == ["a.open_db"]


def test_a_hook_whose_first_parameter_is_not_the_context_is_a_problem(make_app):
    base = make_app({"app/domain/a/jobs/shutdown.py": "def close(pool):\n    pass\n"})
    with pytest.raises(DiscoveryError, match="shutdown hook 'close' takes 'pool'"):
        discover(f"{base.name}.domain")


def test_a_mark_written_as_a_statement_registers_the_function(make_app):
    base = make_app(
        {
            "app/lib/db.py": """
            async def open_pool(ctx):
                ctx["pool"] = "open"

            async def close_pool(ctx):
                pass

            async def audit(ctx):
                pass
            """,
            "app/domain/a/jobs.py": """
            from domainjobs import before_job, on_shutdown, on_startup
            from app.lib import db
            from app.lib.db import close_pool as _close

            on_startup(db.open_pool)
            on_shutdown(_close)
            before_job(db.audit)

            async def work(ctx):
                pass
            """,
        }
    )
    registry = discover(f"{base.name}.domain")
    assert [h.name for h in registry.startup] == ["a.open_pool"]
    assert [h.name for h in registry.shutdown] == ["a.close_pool"]
    assert [(h.name, h.all_domains) for h in registry.before_job] == [("a.audit", False)]
    assert list(registry.tasks) == ["a.work"]


def test_a_jobs_package_without_kind_modules_is_read_like_jobs_py(make_app):
    base = make_app(
        {
            "app/domain/a/jobs/__init__.py": """
            from app.domain.a.jobs._impl import refresh

            __all__ = ("refresh",)
            """,
            "app/domain/a/jobs/_impl.py": "async def refresh(_):\n    pass\n",
            "app/domain/b/jobs/__init__.py": "async def tidy(ctx):\n    pass\n",
        }
    )
    registry = discover(f"{base.name}.domain")
    assert list(registry.tasks) == ["a.refresh", "b.tidy"]
    assert registry.warnings == ()


def test_a_domain_whose_jobs_define_nothing_is_a_warning(make_app):
    base = make_app(
        {
            "app/domain/a/jobs/__init__.py": '"""Nothing here yet."""\n',
            "app/domain/b/jobs/tasks.py": "async def tidy(ctx):\n    pass\n",
        }
    )
    registry = discover(f"{base.name}.domain")
    [warning] = registry.warnings
    assert warning.domain == "a" and "defines no task, cron job or hook" in warning.message


def test_an_error_raised_inside_domainjobs_is_reported_at_the_users_line(make_app):
    base = make_app(
        {"app/domain/a/jobs/tasks.py": "from domainjobs import task\n\nwork = task(42)\n"}
    )
    with pytest.raises(DiscoveryError) as caught:
        discover(f"{base.name}.domain")
    [problem] = caught.value.problems
    assert problem.file is not None and problem.file.endswith("a/jobs/tasks.py")
    assert problem.line == 3
    assert "must decorate a function" in problem.message
    assert problem.traceback and "Traceback" in problem.traceback


def test_entry_points_are_found_as_importlib_metadata_finds_them(make_app, tmp_path, monkeypatch):
    """Only the first distribution of a name on ``sys.path`` counts, as for
    ``importlib.metadata.entry_points``: a shadowed copy's entry points are not used."""
    plugin = make_app({"app/domain/loyalty/jobs/tasks.py": TASKS_A})
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, text in ((first, "[console_scripts]\nx = y:z\n"), (second, None)):
        dist = folder / "shop_plugins-1.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shop-plugins\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(
            text or f"[domainjobs.domains]\nloyalty = {plugin.name}.domain.loyalty\n"
        )
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    expected = [ep.value for ep in importlib.metadata.entry_points(group=domains.ENTRY_POINT_GROUP)]
    assert domains._entry_point_packages() == expected
    assert f"{plugin.name}.domain.loyalty" not in expected
    monkeypatch.syspath_prepend(str(second))  # now the copy with the group comes first
    assert domains._entry_point_packages() == [f"{plugin.name}.domain.loyalty"]
