"""Stage 5 — client: enqueue discovered tasks and follow their jobs.

- ``jobs``: the ``Jobs`` facade; ``handle``: ``JobHandle``; ``pending``: awaitables of
  ``apply``/``map``.
- ``arguments``: checking a task's arguments before they reach the broker.
- ``waiting``: waiting on SAQ's completion notifications.
- ``status``: per-queue counts and live workers; ``health``: ``status --check``.

Internal: import the public names from ``domainjobs``.
"""
