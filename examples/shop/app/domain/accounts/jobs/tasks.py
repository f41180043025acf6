"""On-demand tasks of the accounts domain. No marks: every public function is a task."""


async def send_welcome_email(ctx, user_id: int, email: str = "") -> str:
    """Record that user ``user_id`` was welcomed; returns the address used."""
    address = email or f"user{user_id}@example.com"
    ctx["accounts_db"].execute("INSERT INTO welcome VALUES (?, ?)", (user_id, address))
    return address


def count_welcomes(ctx) -> int:
    """How many welcome emails were sent (a plain function: SAQ runs it in a thread)."""
    return ctx["accounts_db"].execute("SELECT COUNT(*) FROM welcome").fetchone()[0]
