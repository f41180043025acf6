"""Wrong calls: mypy must report an error on every line marked ``# error``."""

from __future__ import annotations

from domainjobs import Jobs

from .tasks_for_typing import charge_card, count_welcomes, send_welcome_email


async def calls(jobs: Jobs) -> None:
    await jobs.enqueue(send_welcome_email, user_id="one")  # error
    await jobs.enqueue(send_welcome_email)  # error
    await jobs.enqueue(send_welcome_email, user_id=1, mail="x")  # error
    await jobs.enqueue(send_welcome_email, 1, 2, 3)  # error
    await jobs.apply(charge_card, invoice_id=1, timeout="soon")  # error
    await jobs.apply(count_welcomes, extra=1)  # error
    text: int = await jobs.apply(send_welcome_email, user_id=1)  # error
    number: str = await jobs.apply(count_welcomes)  # error
    handle = await jobs.enqueue(charge_card, invoice_id=1)
    wrong: str = await handle.result()  # error
    jobs.with_options(timeout="5")  # error
    jobs.with_options(user_id=1)  # error
    await jobs.enqueue(42)  # error
    await jobs.enqueue_many(count_welcomes, [1, 2])  # error
    await jobs.enqueue_many(count_welcomes, {}, 1)  # error
    print(text, number, wrong)
