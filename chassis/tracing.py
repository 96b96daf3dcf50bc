"""OpenTelemetry: trace context travels in Kafka headers from service to service.

Every published message carries a `traceparent`, and each consumed record is handled
in its trace context (chassis.batches attaches it), so one client's journey is one
trace across services.

Spans are recorded and exported only when configured (`KAP_OTEL_EXPORTER=console`):
FastStream's telemetry middleware then records them. By default nothing is exported,
and the context is only carried on (`TraceparentMiddleware`): FastStream's middleware
started two spans per publish even unsampled, which nobody records, for a third of a
publish's CPU (issue 19's profile).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import BaseMiddleware
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.response import PublishCommand
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

TRACEPARENT = "traceparent"


def telemetry_middleware(service: str, exporter: str) -> Any:
    """The broker's tracing middleware for `exporter`: recording spans, or carrying on."""
    if exporter == "none":
        return TraceparentMiddleware
    # Exporting here records every span, also under a parent that a service
    # without an exporter (unsampled) started.
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"kap-{service}"}),
        sampler=ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON),
    )
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return KafkaTelemetryMiddleware(tracer_provider=provider)


def current_traceparent() -> str:
    """The trace context a message published now carries (W3C trace context): the one
    being handled, as it came (a consumed record's, chassis.batches); outside any (a
    timer's step, a request without one), a trace of its own."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        return f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"
    trace_id, span_id = random.getrandbits(128) or 1, random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-00"


class TraceparentMiddleware(BaseMiddleware[PublishCommand, Any]):
    """Puts `current_traceparent()` on every message the broker publishes."""

    async def publish_scope(
        self, call_next: Callable[[PublishCommand], Awaitable[Any]], cmd: PublishCommand
    ) -> Any:
        cmd.headers[TRACEPARENT] = current_traceparent()
        return await call_next(cmd)
