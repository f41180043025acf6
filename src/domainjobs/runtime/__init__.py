"""Stage 3 — runtime: turn a ``Registry`` into running ``saq.Worker``s.

- ``worker``: ``build_worker``/``build_workers`` (one worker per queue).
- ``hooks``: startup/shutdown hooks, once per process however many queues it serves.
- ``cron``: cron jobs that fire once per tick across every process.
- ``runner``: run a process's workers until a signal, with a grace period.
- ``supervisor``: ``run --processes N``; ``reload``: ``run --reload``.
- ``loops``: the event loop (uvloop or asyncio); ``logs``: logging and the per-job line.

Internal: import the public names from ``domainjobs``.
"""
