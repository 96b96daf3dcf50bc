"""OpenTelemetry: trace context travels in Kafka headers from service to service.

Each service records spans with the SDK's tracer provider, so FastStream's
telemetry middleware puts a `traceparent` header on every message and picks
it up on consumption: one client's journey is one trace across services.
Spans are exported only when configured (`KAP_OTEL_EXPORTER=console`); by
default they are dropped after propagation.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter


def tracer_provider(service: str, exporter: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": f"kap-{service}"}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider
