"""The single-module form: one jobs.py holds every kind. Because this module uses marks,
only marked functions count (the "no marks at all" fallback does not apply)."""

from domainjobs import cron, on_shutdown, on_startup, task


@on_startup
def load_prices(ctx):
    """Warm a price cache when the worker starts."""
    ctx["prices"] = {"tea": 350, "cake": 420}


@on_shutdown
def drop_prices(ctx):
    """Forget the cache when the worker stops."""
    ctx.pop("prices", None)


@task
async def price_of(ctx, sku: str) -> int:
    """The price of ``sku`` in cents, from the cache startup filled."""
    return ctx["prices"][sku]


@cron("*/15 * * * *", timeout=60)
async def refresh_prices(ctx) -> int:
    """Every 15 minutes: refresh the cache; returns how many prices it holds."""
    return len(ctx["prices"])
