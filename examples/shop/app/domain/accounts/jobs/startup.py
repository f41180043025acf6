"""Runs once when a worker process starts: open the accounts database for the tasks."""

import os
import sqlite3


def open_database(ctx):
    """Put a SQLite connection into the worker context as ctx["accounts_db"]."""
    path = os.environ.get("SHOP_ACCOUNTS_DB", "accounts.sqlite3")
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS welcome (user_id INTEGER, email TEXT)")
    ctx["accounts_db"] = db
