"""Litestar with litestar-saq, its queues built by domainjobs from the shop's domains.

    cd examples/shop
    export DOMAINJOBS_URL=redis://localhost:6379
    litestar --app-dir .. --app litestar_saq_app:app workers run     # litestar-saq's workers
    litestar --app-dir .. --app litestar_saq_app:app run             # the app, SAQ UI at /saq

Tasks are registered under their public names (``billing.charge``), so the domainjobs
facade, ``python -m domainjobs enqueue`` and litestar-saq's queues all agree.
"""

from __future__ import annotations

from litestar import Litestar
from litestar_saq import SAQConfig, SAQPlugin

from domainjobs.contrib.litestar import queue_configs

saq = SAQPlugin(
    config=SAQConfig(queue_configs=queue_configs(), web_enabled=True, use_server_lifespan=False)
)
app = Litestar(plugins=[saq])
