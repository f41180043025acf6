"""Stage 4 — brokers: where the queues live.

- ``urls``: broker URL → SAQ queue (every accepted form), waiting for a broker, redaction.
- ``embedded``: the per-project Valkey server used when no URL is configured.
- ``redis`` / ``postgres``: our sweep-safe SAQ queue classes.
- ``leases``: worker leases shared by both queue classes; ``sweep``: what the sweep decides.
- ``batch``: many jobs in one pipelined round trip per chunk; ``_quiet``: SAQ's Redis
  enqueue and finish without building log text that is dropped.

Internal: build queues with ``domainjobs.brokers.urls.queue_from_url``.
"""
