"""Bounded retries, then the dead-letter topic: a bad message never stalls its partition.

Three outcomes for a message whose handler raises:
- the infrastructure is down (Redis, Kafka; a Redis Cluster between primaries)
  or the configuration is unusable:
  nothing is wrong with the message,
  so it is not dead-lettered; after a short backoff the error propagates and the
  subscriber's NACK_ON_ERROR policy rewinds the partition to redeliver it;
- the message itself is bad (invalid JSON, schema, envelope, or rejected by the
  domain): dead-lettered at once, retrying cannot help;
- anything else: retried with exponential backoff, dead-lettered after the last
  attempt.
A dead letter is published with acks=all before the offset is committed, so it is
never lost; if that publish fails the message is redelivered instead. The consumer
that applies this policy per record is chassis.batches.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotEnoughReplicasError
from pydantic import ValidationError

from chassis.clinics import ConfigurationError
from chassis.redis_client import TRANSIENT_REDIS_ERRORS, torn_connection
from shared.envelope import EnvelopeError
from shared.topics import DLQ_SUFFIX

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord
    from faststream.kafka import KafkaBroker

    from chassis.metrics import ServiceMetrics

log = logging.getLogger(__name__)

HEADER_ERROR = "kap_dlq_error"
HEADER_ERROR_TYPE = "kap_dlq_error_type"
HEADER_SERVICE = "kap_dlq_service"
HEADER_ATTEMPTS = "kap_dlq_attempts"
HEADER_TOPIC = "kap_dlq_topic"
HEADER_PARTITION = "kap_dlq_partition"
HEADER_OFFSET = "kap_dlq_offset"
HEADER_DEAD_AT = "kap_dlq_dead_at"


class Rejected(Exception):
    """The message is well-formed but makes no sense here (e.g. for the client's state)."""


def one_clinic(event: Any, envelope: Any) -> str:
    """The one clinic an event is about, or Rejected (dead-lettered, with the reason).

    The envelope's `ce_clinicid` and the payload's `clinic_id` must agree: a step
    that watched one clinic's keys and wrote its handled mark under the other's
    would span two Redis Cluster slots, and on one node would touch another
    clinic's keys. Neither is trusted over the other, so the event is refused."""
    if envelope.clinic_id != event.clinic_id:
        raise Rejected(
            f"the envelope names clinic {envelope.clinic_id!r}, the event {event.clinic_id!r}"
        )
    return str(event.clinic_id)


PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    ValidationError,
    EnvelopeError,
    Rejected,
    json.JSONDecodeError,
    UnicodeDecodeError,
)
INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (
    *TRANSIENT_REDIS_ERRORS,
    KafkaConnectionError,
    KafkaTimeoutError,
    NotEnoughReplicasError,
    ConnectionError,
    # Not the message's fault either: it waits for the operator's fix, never the DLQ.
    ConfigurationError,
)


Outcome = Literal["redeliver", "dead_letter", "retry"]


def classify(error: BaseException) -> Outcome:
    """What a handler's error means for its message: `redeliver` (the infrastructure's
    fault, never dead-lettered), `dead_letter` (the message's own), or `retry` (unknown:
    a few attempts, then the dead-letter topic)."""
    if isinstance(error, INFRASTRUCTURE_ERRORS) or torn_connection(error):
        return "redeliver"
    if isinstance(error, PERMANENT_ERRORS):
        return "dead_letter"
    return "retry"


@dataclass(frozen=True)
class DeadLetterPolicy:
    attempts: int = 3
    first_backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def backoff(self, attempt: int) -> float:
        return min(self.first_backoff_s * 2.0 ** (attempt - 1), self.max_backoff_s)


def describe(error: BaseException) -> str:
    """A one-line reason, without the offending values (they may hold PHI)."""
    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}" for e in error.errors()
        ]
        return "invalid payload: " + "; ".join(problems[:10])
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:1000]


async def dead_letter(
    broker: KafkaBroker,
    service: str,
    record: ConsumerRecord[bytes, bytes],
    error: BaseException,
    attempts: int,
    metrics: ServiceMetrics | None,
) -> None:
    """Publish `record` to its topic's dead-letter topic with the reason (acks=all)."""
    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or ()}
    headers.update(
        {
            HEADER_ERROR: describe(error),
            HEADER_ERROR_TYPE: type(error).__name__,
            HEADER_SERVICE: service,
            HEADER_ATTEMPTS: str(attempts),
            HEADER_TOPIC: record.topic,
            HEADER_PARTITION: str(record.partition),
            HEADER_OFFSET: str(record.offset),
            HEADER_DEAD_AT: datetime.now(UTC).isoformat(),
        }
    )
    await broker.publish(
        record.value or b"",
        topic=record.topic + DLQ_SUFFIX,
        key=record.key,
        headers=headers,
    )
    if metrics is not None:
        metrics.dead_lettered(record.topic, type(error).__name__)
    log.error(
        "dead-lettered %s[%d]@%d after %d attempt(s): %s",
        record.topic,
        record.partition,
        record.offset,
        attempts,
        type(error).__name__,
    )
