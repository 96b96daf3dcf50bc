"""OpenTelemetry: trace context travels in Kafka headers from service to service.

Each service records spans with the SDK's tracer provider, so FastStream's
telemetry middleware puts a `traceparent` header on every message and picks
it up on consumption: one client's journey is one trace across services.
Spans are recorded and exported only when configured (`KAP_OTEL_EXPORTER=console`).
By default nothing is sampled: the ids still travel (a non-recording span has
a real trace and span id), while recording spans nobody exports cost a third
of each publish (make bench profile).
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased


def tracer_provider(service: str, exporter: str) -> TracerProvider:
    # Exporting here records every span, also under a parent that a service
    # without an exporter (unsampled) started.
    sampler = (
        ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON)
        if exporter != "none"
        else ParentBased(ALWAYS_OFF)
    )
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"kap-{service}"}), sampler=sampler
    )
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider
