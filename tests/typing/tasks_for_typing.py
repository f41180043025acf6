"""Tasks the typing checks call (defined here so mypy sees plain annotated functions)."""

from __future__ import annotations

from typing import Any

from domainjobs import task


@task
async def send_welcome_email(ctx: dict[str, Any], user_id: int, email: str = "") -> str:
    """An async task returning str."""
    return email or f"user{user_id}@example.com"


@task(name="billing.charge")
async def charge_card(ctx: dict[str, Any], invoice_id: int, timeout: int = 5) -> dict[str, int]:
    """A task with a parameter named like a SAQ job option."""
    return {"invoice_id": invoice_id, "timeout": timeout}


@task
def count_welcomes(ctx: dict[str, Any]) -> int:
    """A plain (sync) task returning int."""
    return 0


@task
async def untyped_context(ctx, order_id: int) -> float:  # type: ignore[no-untyped-def]
    """The usual style: an unannotated context parameter."""
    return 1.0
