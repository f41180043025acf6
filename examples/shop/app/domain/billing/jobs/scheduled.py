"""Cron jobs of billing. Times are UTC unless cron_tz is configured."""

from saq import CronJob

from app.domain.billing.jobs.tasks.reminders import send_reminders


async def close_books(ctx) -> str:
    """Nightly: close the day's books (registered as the task billing.close_books)."""
    return "books closed"


scheduled_tasks = [
    CronJob(send_reminders, cron="0 9 * * *"),
    CronJob(close_books, cron="5 0 * * *", timeout=300),
]
