"""Runs once when a worker process stops: close what startup opened."""


def close_database(ctx):
    """Close the connection opened by startup.open_database."""
    ctx["accounts_db"].close()
