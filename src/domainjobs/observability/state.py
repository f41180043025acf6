"""Which instrumentation is on, and the hooks it adds to enqueues and job runs.

This module imports neither OpenTelemetry nor prometheus-client: the enqueue path
(``Jobs``) and the worker builder read its two switches, and pay nothing more while both are
off. :func:`enable_tracing` and :func:`enable_metrics` import their extra on first use.

- ``PUBLISH``: None, or the coroutine function that enqueues a job inside a ``publish
  <queue>`` span (set by :func:`enable_tracing`).
- :func:`with_job_hooks`: a worker's ``before_process``/``after_process`` lists with the
  enabled instrumentation's per-job functions added (tracing outermost).
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

from domainjobs.errors import ConfigError
from domainjobs.observability.hooks import JobHook, JobObserver, Publisher, status_label  # noqa: F401

if TYPE_CHECKING:
    from domainjobs.observability.metrics import JobMetrics
    from domainjobs.observability.tracing import Tracing
    from domainjobs.registry import Registry

#: Set while tracing is on: how ``Jobs`` enqueues (inside a producer span).
PUBLISH: Publisher | None = None

_tracing: Tracing | None = None
_metrics: JobMetrics | None = None

#: prometheus-client's own switch for multi-process mode: the folder every process of a
#: ``run --processes N`` writes its samples to, read whole by the process that serves them.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_tracing(tracer_provider: Any = None) -> None:
    """Trace every enqueue (``publish <queue>``, PRODUCER) and every job run (``process
    <queue>``, CONSUMER) with the OpenTelemetry API (extra ``otel``).

    Spans go to ``tracer_provider``, by default the global one (what the SDK or
    ``opentelemetry-instrument`` configured). Call it before building workers: a worker
    built earlier has no tracing hooks.
    """
    global PUBLISH, _tracing
    try:
        # the 'otel' extra: opentelemetry-api, imported only when tracing is turned on
        from domainjobs.observability.tracing import Tracing
    except ImportError as exc:
        raise ConfigError(
            f"tracing needs the 'otel' extra ({exc.name} is missing): "
            "pip install 'domainjobs[otel]'"
        ) from None
    if _tracing is not None:
        _tracing.enabled = False
    _tracing = Tracing(tracer_provider)
    PUBLISH = _tracing.publish


def disable_tracing() -> None:
    """Stop tracing: enqueues and the hooks of workers already built create no more spans."""
    global PUBLISH, _tracing
    if _tracing is not None:
        _tracing.enabled = False
    _tracing = None
    PUBLISH = None


def tracing_enabled() -> bool:
    """Whether :func:`enable_tracing` is in force."""
    return _tracing is not None


def metrics_available() -> bool:
    """Whether prometheus-client (extra ``metrics``) is installed, without importing it."""
    return importlib.util.find_spec("prometheus_client") is not None


def enable_metrics(registry: Any = None) -> JobMetrics:
    """Count and time every job run by workers built from now on (extra ``metrics``).

    The metrics are registered in ``registry``, by default prometheus-client's global
    ``REGISTRY`` (so an app that already serves it shows them too). When
    ``PROMETHEUS_MULTIPROC_DIR`` is set, samples go to that folder (prometheus-client's
    multi-process mode) and the process serving ``/metrics`` adds up every process's.
    Enabling twice returns the same metrics.
    """
    global _metrics
    if _metrics is not None:
        return _metrics
    try:
        # the 'metrics' extra: prometheus-client, imported only when metrics are turned on
        from domainjobs.observability.metrics import JobMetrics
    except ImportError as exc:
        raise ConfigError(
            f"metrics need the 'metrics' extra ({exc.name} is missing): "
            "pip install 'domainjobs[metrics]'"
        ) from None
    _metrics = JobMetrics(registry)
    return _metrics


def disable_metrics() -> None:
    """Workers built from now on record no metrics (existing ones keep theirs)."""
    global _metrics
    if _metrics is not None:
        _metrics.unregister()
    _metrics = None


def metrics_enabled() -> bool:
    """Whether :func:`enable_metrics` is in force."""
    return _metrics is not None


def multiprocess_dir() -> str | None:
    """The folder of prometheus-client's multi-process mode, when it is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def _as_list(functions: Any) -> list[Any]:
    if not functions:
        return []
    return list(functions) if isinstance(functions, (list, tuple)) else [functions]


def with_job_hooks(registry: Registry, saq_worker_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``saq_worker_kwargs`` with the enabled instrumentation's per-job functions added to
    ``before_process`` (first) and ``after_process`` (last), so that the other hooks run
    inside the job's span and its timings. Unchanged when nothing is enabled."""
    observers: list[JobObserver] = [o for o in (_tracing, _metrics) if o is not None]
    if not observers:
        return saq_worker_kwargs
    domains = {name: spec.domain for name, spec in registry.tasks.items()}
    pairs = [observer.job_hooks(domains) for observer in observers]
    kwargs = dict(saq_worker_kwargs)
    kwargs["before_process"] = [
        *(before for before, _ in pairs),
        *_as_list(kwargs.get("before_process")),
    ]
    kwargs["after_process"] = [
        *_as_list(kwargs.get("after_process")),
        *(after for _, after in reversed(pairs)),
    ]
    return kwargs
