"""Payment reminders."""

__all__ = ["send_reminders"]


async def send_reminders(ctx) -> int:
    """Send reminders for overdue invoices; returns how many were sent."""
    return 0


async def not_exported(ctx) -> None:
    """Not in __all__, so not a task."""
