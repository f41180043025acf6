"""Observability: OpenTelemetry traces and Prometheus metrics of every job, by domain.

Both are optional extras and cost nothing until turned on (importing this package imports
neither):

- tracing (extra ``otel``): :func:`enable_tracing`, or ``DomainjobsInstrumentor``
  (``domainjobs.observability.instrumentor``), or with no code at all
  ``opentelemetry-instrument python -m domainjobs run``;
- metrics (extra ``metrics``): ``run --metrics-port 9500``, or ``run --web`` (the UI's
  ``/metrics``), or :func:`enable_metrics` and ``create_app``'s ``/metrics``.

See docs/observability.md for every span attribute and metric.
"""

from __future__ import annotations

from domainjobs.observability.state import (
    disable_metrics,
    disable_tracing,
    enable_metrics,
    enable_tracing,
    metrics_enabled,
    tracing_enabled,
)

__all__ = [
    "disable_metrics",
    "disable_tracing",
    "enable_metrics",
    "enable_tracing",
    "metrics_enabled",
    "tracing_enabled",
]
