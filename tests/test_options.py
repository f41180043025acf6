"""The job options table is the one source: every place that takes options agrees with it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from saq.job import CronJob, Job

from domainjobs import DiscoveryError, JobOptions, discover
from domainjobs.cli.enqueue import FLAG_OPTIONS
from domainjobs.options import (
    CALL,
    CRON,
    CRON_JOB_OPTIONS,
    DOMAIN,
    DOMAIN_DEFAULT_KEYS,
    OPTIONS,
    RECORDED_FIELDS,
    TASK,
    CallOptions,
    CronOptions,
    TaskOptions,
    names,
)
from domainjobs.testing.recorder import OPTION_FIELDS


def test_every_job_field_option_is_a_saq_job_field_with_saqs_default():
    fields = Job.__dataclass_fields__
    for option in OPTIONS:
        if option.is_job_field:
            assert option.name in fields, option.name
            default = fields[option.name].default
            if default is not dataclasses.MISSING:  # key and meta are made per job
                assert default == option.default, option.name


def test_cron_options_are_exactly_what_saq_cronjob_carries():
    cron_fields = set(CronJob.__dataclass_fields__) - {"function", "cron", "unique", "kwargs"}
    assert set(CRON_JOB_OPTIONS) == cron_fields


def test_typed_signatures_and_derived_lists_agree_with_the_table():
    assert set(TaskOptions.__annotations__) == set(names(TASK))
    assert set(CronOptions.__annotations__) == set(names(CRON))
    assert set(CallOptions.__annotations__) == set(names(CALL))
    assert set(JobOptions.__dataclass_fields__) == set(names(CALL))
    assert ("queue", *names(DOMAIN)) == DOMAIN_DEFAULT_KEYS
    assert set(names(CRON)) < set(names(TASK)) < set(names(CALL))
    assert OPTION_FIELDS == RECORDED_FIELDS
    assert [o.flag for o in FLAG_OPTIONS] == ["--key", "--job-timeout", "--retries", "--delay"]
    assert all(option.help for option in OPTIONS)


def test_the_decorators_take_options_as_typed_keywords():
    from domainjobs import cron, task

    for decorator in (task, cron):
        parameter = inspect.signature(decorator).parameters["options"]
        assert parameter.kind is inspect.Parameter.VAR_KEYWORD


def test_a_task_option_cron_jobs_lack_is_a_discovery_problem(make_app):
    base = make_app(
        {
            "app/domain/a/jobs.py": """
            from domainjobs import cron

            @cron("* * * * *", retry_delay=3)
            async def tick(ctx):
                pass
            """
        }
    )
    with pytest.raises(DiscoveryError, match=r"@cron on 'tick': unknown option 'retry_delay'"):
        discover(f"{base.name}.domain")


def test_a_misspelt_task_option_is_a_discovery_problem_with_a_hint(make_app):
    base = make_app(
        {
            "app/domain/a/jobs.py": """
            from domainjobs import task

            @task(timout=3)
            async def work(ctx):
                pass
            """
        }
    )
    with pytest.raises(DiscoveryError, match="unknown option 'timout'; did you mean 'timeout'"):
        discover(f"{base.name}.domain")
