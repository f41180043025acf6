"""Before/after-job hooks discovered from the domains, run by a real worker process: a
domain's hooks around its own jobs only, ``all_domains=True`` ones around every job."""

from __future__ import annotations

import redis

from tests.runapps import Running, enqueue

RECORD = """
import os
import redis

def record(ctx, what):
    prefix = __name__.split(".")[0]
    client = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    client.rpush(f"{prefix}:events", f"{what}:{ctx['job'].function}")
"""


def test_domain_hooks_wrap_their_own_jobs_and_app_wide_hooks_every_job(make_app, redis_url):
    app = make_app(
        {
            "app/lib/record.py": RECORD,
            "app/domain/mail/jobs/tasks.py": """
            from domainjobs import after_job, before_job
            from app.lib.record import record

            @before_job
            def open_smtp(ctx):
                record(ctx, "mail-before")

            @after_job
            async def close_smtp(ctx):
                record(ctx, "mail-after")

            async def send(ctx):
                record(ctx, "run")
            """,
            "app/domain/shop/jobs/tasks.py": """
            from domainjobs import after_job, before_job
            from app.lib.record import record

            @before_job(all_domains=True)
            async def bind_log_context(ctx):
                record(ctx, "all-before")

            @after_job(all_domains=True)
            def clear_log_context(ctx):
                record(ctx, "all-after")

            async def sell(ctx):
                record(ctx, "run")
            """,
        }
    )
    enqueue(redis_url, "mail.send")
    with Running(["--burst", "--concurrency", "1"], app, redis_url) as run:
        assert run.wait(60) == 0, run.log
    client = redis.Redis.from_url(redis_url)
    mail = [e.decode() for e in client.lrange(f"{app.name}:events", 0, -1)]
    client.delete(f"{app.name}:events")
    enqueue(redis_url, "shop.sell")
    with Running(["--burst"], app, redis_url) as run:
        assert run.wait(60) == 0, run.log
    shop = [e.decode() for e in client.lrange(f"{app.name}:events", 0, -1)]
    client.close()
    # discovery order (mail, then shop) before the job; the reverse after it
    assert mail == [
        "mail-before:mail.send",
        "all-before:mail.send",
        "run:mail.send",
        "all-after:mail.send",
        "mail-after:mail.send",
    ]
    assert shop == ["all-before:shop.sell", "run:shop.sell", "all-after:shop.sell"]


async def test_run_task_runs_the_tasks_domain_hooks_around_it(make_app):
    from domainjobs import discover
    from domainjobs.testing import TaskRunner

    base = make_app(
        {
            "app/domain/mail/jobs/tasks.py": """
            from domainjobs import after_job, before_job

            @before_job
            def open_smtp(ctx):
                ctx["smtp"] = "open"

            @after_job
            def close_smtp(ctx):
                ctx["smtp"] = "closed"

            async def send(ctx):
                return ctx["smtp"]
            """,
            "app/domain/shop/jobs/tasks.py": """
            async def sell(ctx):
                return ctx.get("smtp", "no smtp here")
            """,
        }
    )
    async with TaskRunner(discover(f"{base.name}.domain")) as runner:
        assert await runner.run("mail.send") == "open"
        assert await runner.run("shop.sell") == "no smtp here"
