"""``DomainjobsInstrumentor``: OpenTelemetry's instrumentor interface for domainjobs (extra
``otel``, which brings opentelemetry-instrumentation).

Registered under the ``opentelemetry_instrumentor`` entry point group, so
``opentelemetry-instrument python -m domainjobs run`` traces every enqueue and job run
with no code change. In code::

    from domainjobs.observability.instrumentor import DomainjobsInstrumentor

    DomainjobsInstrumentor().instrument()            # or instrument(tracer_provider=...)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from domainjobs.observability import state


class DomainjobsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Turns domainjobs' tracing on and off (``domainjobs.observability.enable_tracing``)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """The libraries this instruments: SAQ, which every domainjobs install has."""
        return ("saq >= 0.26",)

    def _instrument(self, **kwargs: Any) -> None:
        state.enable_tracing(kwargs.get("tracer_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        state.disable_tracing()
