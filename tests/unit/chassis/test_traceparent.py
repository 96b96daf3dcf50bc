"""Without an exporter, every published message still carries its trace (issue 19).

FastStream's telemetry middleware started two spans per publish that nobody recorded;
the broker now only carries the trace context on: a message published while a record
is handled (chassis.batches attaches its context) carries that record's trace, and one
published outside any starts a trace of its own. FastStream's in-memory broker stands
in for Kafka: what is checked is the header the broker's publish path writes.
"""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaMessage, TestKafkaBroker
from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from chassis.config import ServiceSettings
from chassis.kafka import make_broker

CONSUMED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


async def test_a_message_published_while_a_record_is_handled_carries_the_records_trace() -> None:
    broker = make_broker(ServiceSettings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1"), "scheduler")
    seen: list[dict[str, Any]] = []

    @broker.subscriber("traced")
    async def got(message: KafkaMessage) -> None:
        seen.append(message.headers)

    async with TestKafkaBroker(broker) as testing:
        handled = TraceContextTextMapPropagator().extract({"traceparent": CONSUMED})
        token = otel_context.attach(handled)  # as chassis.batches does per record
        try:
            await testing.publish(b"caused", "traced")
        finally:
            otel_context.detach(token)
        await testing.publish(b"on its own", "traced")
        await testing.publish(b"on its own too", "traced")

    caused, alone, also_alone = (headers["traceparent"] for headers in seen)
    assert caused == CONSUMED
    for started in (alone, also_alone):
        version, trace_id, span_id, flags = started.split("-")
        assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "00")
        assert int(trace_id, 16) > 0
        assert int(span_id, 16) > 0
    assert alone.split("-")[1] != also_alone.split("-")[1] != CONSUMED.split("-")[1]
