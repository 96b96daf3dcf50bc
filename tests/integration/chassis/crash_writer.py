"""One write through the unit of work, SIGKILLed at a crash point, for the crash tests.

    python -m tests.integration.chassis.crash_writer POINT CLINIC CLIENT INPUT_ID

POINT is where the process kills itself: `before_write` (the step has read, nothing is
written), `after_write` (state and outbox written, nothing published), `after_publish`
(published, the outbox not yet cleared), or `none` (the whole step: a redelivery).
Kafka and Redis are real (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import make_broker
from chassis.outbox import Output
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from shared import events as ev
from shared import topics
from shared.envelope import derived_event_id

SERVICE = "tests-crash"
GRACE_MS = 500  # how long a writer has to publish before a redelivery or the relay does


def state_key(clinic: str, client: str) -> str:
    return f"{SERVICE}:{{{clinic}}}:state:{client}"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def main(point: str, clinic: str, client: str, input_id: str) -> None:
    settings = ServiceSettings(kafka_bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    broker = make_broker(settings, SERVICE)
    publisher = EventPublisher(broker, "intake", topics.produced_by("intake"))
    redis = Redis.from_url(os.environ["REDIS_URL"])
    uow = UnitOfWork(redis, SERVICE, publisher, relay_grace_ms=GRACE_MS)
    await broker.start()
    if point == "after_write":
        original_publish = uow.publish

        async def publish(clinic_id: str, outputs: Sequence[Output]) -> None:
            if outputs:
                die()
            await original_publish(clinic_id, outputs)

        uow.publish = publish  # type: ignore[method-assign]
    if point == "after_publish":

        async def clear(clinic_id: str, ids: Sequence[str]) -> None:
            die()

        uow.outbox._clear = clear  # type: ignore[method-assign]

    async def step(tx: Transaction) -> Decision[Any]:
        key = state_key(clinic, client)
        await tx.watch(key)
        count = int(await redis.get(key) or 0)
        if point == "before_write":
            die()
        event = ev.ConsultationRequested(
            clinic_id=clinic,
            client_id=UUID(client),
            occurred_at=datetime.now(UTC),
            contact=ev.Contact(name="Crash Test", email=f"{client}@example.org"),
        )
        envelope = publisher.envelope_for(event, event_id=derived_event_id(input_id, "crash"))
        return Decision(lambda w: w.set(key, count + 1), [Output(event, envelope)])

    await uow.run(clinic, [input_id], step)
    await broker.stop()
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
