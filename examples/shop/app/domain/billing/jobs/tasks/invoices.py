"""Invoice tasks."""

from domainjobs import task


@task(timeout=60)
async def create_invoice(ctx, order_id: int, amount_cents: int) -> dict:
    """Create an invoice for an order (a real app would write it to its database)."""
    return {"order_id": order_id, "amount_cents": amount_cents, "status": "open"}


@task(name="billing.charge")
async def charge_card(ctx, invoice_id: int, timeout: int = 5) -> str:
    """Charge an invoice. Its parameter named ``timeout`` is the task's own, not SAQ's."""
    return f"charged invoice {invoice_id} (gateway timeout {timeout}s)"


def _format_cents(amount: int) -> str:  # private: not a task
    return f"{amount / 100:.2f}"
