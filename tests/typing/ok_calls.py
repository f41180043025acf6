"""Correct calls: mypy --strict must accept every line, and infer the result types."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from domainjobs import JobFailedError, JobHandle, Jobs

from .tasks_for_typing import charge_card, count_welcomes, send_welcome_email, untyped_context


async def calls(jobs: Jobs) -> None:
    handle = await jobs.enqueue(send_welcome_email, user_id=1)
    assert_type(handle, JobHandle[Coroutine[Any, Any, str]])  # the declared return type
    assert_type(await handle.result(timeout=1), str)  # ... unwrapped
    assert_type(await (await jobs.enqueue(send_welcome_email, 1, email="a")).result(), str)
    assert_type(await (await jobs.enqueue(count_welcomes)).result(), int)
    assert_type(await jobs.apply(send_welcome_email, user_id=1), str)
    assert_type(await jobs.apply(charge_card, invoice_id=3, timeout=30), dict[str, int])
    assert_type(await jobs.apply(count_welcomes), int)
    assert_type(await jobs.apply(untyped_context, order_id=1), float)
    assert_type(await jobs.enqueue("accounts.send_welcome_email", user_id=1), JobHandle[Any])
    assert_type(await jobs.apply("accounts.send_welcome_email", user_id=1), Any)
    view = jobs.with_options(timeout=5, key="welcome-1", retries=3)
    assert_type(await view.apply(send_welcome_email, user_id=1), str)
    assert_type(await jobs.map(send_welcome_email, [{"user_id": 1}]), list[str])
    assert_type(await jobs.map(count_welcomes, [{}]), list[int])
    mixed = await jobs.map(count_welcomes, [{}], return_exceptions=True)
    assert_type(mixed, list[int | JobFailedError])
    many = await jobs.enqueue_many(count_welcomes, [{}, {}])
    assert_type(many, list[JobHandle[int]])
    assert_type(await many[0].result(), int)
    mails = await jobs.enqueue_many(send_welcome_email, [{"user_id": 1}])
    assert_type(mails, list[JobHandle[Coroutine[Any, Any, str]]])
    assert_type(await mails[0].result(), str)
    assert_type(await jobs.enqueue_many("accounts.count_welcomes", [{}]), list[JobHandle[Any]])
