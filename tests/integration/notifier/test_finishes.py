"""How deliveries end, through the unit of work on real Redis and Kafka: many ending at
once (while claims go on) are all recorded with their events, a message cancelled
meanwhile only lets its lease go, and what the version before the lease queue left
(its leased set, its outbox of unpublished outcomes) is taken over."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from chassis.events import EventPublisher
from chassis.unit_of_work import UnitOfWork
from services.notifier.earlier import take_over
from services.notifier.finishes import Finishes
from services.notifier.keys import key
from services.notifier.model import MessageKind, PlannedMessage
from services.notifier.outcomes import Outcomes
from services.notifier.queue import DeliveryQueue, Finish
from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.notifier.support import ManualClock

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 23, 10, tzinfo=UTC)
LEASE_MS = 60_000


def message(clinic_id: str, client_id: uuid.UUID) -> PlannedMessage:
    return PlannedMessage(
        notification_id=uuid.uuid4(),
        cause_event_id=str(uuid.uuid4()),
        clinic_id=clinic_id,
        client_id=client_id,
        kind=MessageKind.CONSULTATION_REQUEST_RECEIVED,
        channel="email",
        recipient="client",
        send_at=NOW,
        context={},
    )


async def planned(redis: Redis, messages: list[PlannedMessage]) -> None:
    """As planning writes them (plans.PlanStore): the message, and its id due."""
    async with redis.pipeline(transaction=True) as p:
        for m in messages:
            fields = ["plan", m.model_dump_json(), "state", "planned", "correlation_id", "c"]
            p.hset(key(m.clinic_id, "msg", str(m.notification_id)), items=[*fields, "attempts", 0])
            p.zadd(key(m.clinic_id, "due"), {str(m.notification_id): m.send_at.timestamp()})
        await p.execute()


async def states(redis: Redis, clinic_id: str, messages: list[PlannedMessage]) -> list[Any]:
    return [
        await redis.hget(key(clinic_id, "msg", str(m.notification_id)), "state") for m in messages
    ]


async def test_deliveries_ending_at_once_are_all_recorded_with_their_events_while_claims_go_on(
    redis_client: Redis, notifier_publisher: EventPublisher, kafka_bootstrap: str, unique: str
) -> None:
    clinic, client = f"finishes-{unique}", uuid.uuid4()
    queue = DeliveryQueue(redis_client)
    uow = UnitOfWork(redis_client, "notifier", notifier_publisher)
    outcomes = Outcomes(Finishes(queue, uow), notifier_publisher, ManualClock(NOW))
    first, later = [message(clinic, client) for _ in range(40)], [message(clinic, client)]
    await planned(redis_client, first)
    claims = await queue.claim_due(clinic, NOW, limit=100, lease_ms=LEASE_MS)
    assert len(claims) == 40
    await planned(redis_client, later)

    async def claiming() -> None:  # the next rounds claim meanwhile (the tokens change)
        for _ in range(20):
            await queue.claim_due(clinic, NOW, limit=1, lease_ms=LEASE_MS)

    await asyncio.gather(
        claiming(), *(outcomes.sent(claim, claim.message, NOW) for claim in claims)
    )
    assert await states(redis_client, clinic, first) == ["sent"] * 40
    assert await redis_client.zrange(queue.leases.leased_key(clinic), 0, -1) == [
        str(later[0].notification_id)
    ]
    assert await uow.pending(clinic) == 0
    sent = await topic_messages(
        kafka_bootstrap, topics.NOTIFICATION_SENT.name, key=str(client), expect=40
    )
    assert {m["value"]["notification_id"] for m in sent} == {str(m.notification_id) for m in first}


async def test_a_message_cancelled_while_leased_only_lets_its_lease_go(
    redis_client: Redis, notifier_publisher: EventPublisher, unique: str
) -> None:
    clinic = f"finishes-{unique}"
    queue = DeliveryQueue(redis_client)
    finishes = Finishes(queue, UnitOfWork(redis_client, "notifier", notifier_publisher))
    cancelled = message(clinic, uuid.uuid4())
    await planned(redis_client, [cancelled])
    [claim] = await queue.claim_due(clinic, NOW, limit=1, lease_ms=LEASE_MS)
    await redis_client.hset(
        key(clinic, "msg", str(cancelled.notification_id)), "state", "cancelled"
    )

    retry = Finish(claim.lease, "planned", {"last_error": "x"}, at=NOW + timedelta(minutes=1))
    assert not await finishes.record(retry)
    assert await states(redis_client, clinic, [cancelled]) == ["cancelled"]
    assert await redis_client.exists(queue.leases.leased_key(clinic), key(clinic, "due")) == 0
    assert not await queue.still_held(claim)


async def test_what_the_version_before_the_lease_queue_left_is_taken_over(
    redis_client: Redis, notifier_publisher: EventPublisher, kafka_bootstrap: str, unique: str
) -> None:
    clinic, client = f"finishes-{unique}", uuid.uuid4()
    queue = DeliveryQueue(redis_client)
    mid_send, finished = message(clinic, client), message(clinic, client)
    await planned(redis_client, [mid_send, finished])
    # The earlier version: one message leased in its own set, one finished with its
    # outcome event recorded in the message and listed as unpublished.
    await redis_client.zrem(key(clinic, "due"), str(mid_send.notification_id))
    await redis_client.hset(key(clinic, "msg", str(mid_send.notification_id)), "state", "sending")
    await redis_client.zadd(key(clinic, "sending"), {str(mid_send.notification_id): 1})
    await redis_client.zrem(key(clinic, "due"), str(finished.notification_id))
    event = ev.NotificationSent(
        clinic_id=clinic,
        client_id=client,
        occurred_at=NOW,
        notification_id=finished.notification_id,
        message_kind=finished.kind,
        channel="email",
        cause_event_id=finished.cause_event_id,
    )
    record = {
        "topic": topics.NOTIFICATION_SENT.name,
        "event": event.model_dump(mode="json"),
        "envelope": notifier_publisher.envelope_for(event).model_dump(mode="json"),
    }
    fields = ["state", "sent", "outcome", json.dumps(record)]
    await redis_client.hset(key(clinic, "msg", str(finished.notification_id)), items=fields)
    await redis_client.zadd(key(clinic, "outbox"), {str(finished.notification_id): 1})

    await take_over(redis_client, queue, notifier_publisher, clinic)
    assert await redis_client.exists(key(clinic, "sending"), key(clinic, "outbox")) == 0
    [claim] = await queue.claim_due(clinic, NOW, limit=10, lease_ms=LEASE_MS)
    assert (claim.message.notification_id, claim.attempts) == (mid_send.notification_id, 1)
    [sent] = await topic_messages(kafka_bootstrap, topics.NOTIFICATION_SENT.name, key=str(client))
    assert sent["value"]["notification_id"] == str(finished.notification_id)
