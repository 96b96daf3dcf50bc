"""Several clients' events of one clinic planned in one write step (issue 19's "one atomic
step per clinic"): their reads go to Redis together, one EXEC records every plan, and a
redelivered event among new ones plans nothing twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection

from chassis.clock import ScaledClock
from chassis.events import EventPublisher
from services.notifier import handlers
from services.notifier.contacts import contact_key
from shared import events as ev
from shared.envelope import Envelope
from tests.integration.notifier.support import OwnClinic, planner_deps

pytestmark = pytest.mark.integration

CLIENTS = 4


def _request(clinic_id: str, at: datetime, n: int, unique: str) -> tuple[ev.Event, Envelope]:
    event = ev.ConsultationRequested(
        clinic_id=clinic_id,
        client_id=uuid.uuid4(),
        occurred_at=at,
        contact=ev.Contact(name=f"Client {n}", email=f"client{n}.{unique}@example.org"),
    )
    envelope = Envelope(
        id=str(uuid.uuid4()),
        source="/kap/intake",
        type="kap.intake.consultation-requested.v1",
        time=at,
        subject=str(event.client_id),
        clinic_id=clinic_id,
        correlation_id=str(uuid.uuid4()),
    )
    return event, envelope


async def test_one_clinics_events_are_planned_in_one_step_and_a_replay_among_them_changes_nothing(
    redis_client: Redis,
    notifier_publisher: EventPublisher,
    own_clinic: OwnClinic,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ScaledClock(datetime(2026, 3, 23, 10, tzinfo=UTC), datetime.now(UTC), 1.0)
    deps = planner_deps(redis_client, notifier_publisher, own_clinic.directory, clock)
    planner = handlers.Planner(deps)
    items = [_request(own_clinic.id, clock.now(), n, unique) for n in range(CLIENTS)]
    contacts = [contact_key(own_clinic.id, event.client_id).encode() for event, _ in items]

    writes: list[bytes] = []  # every write to Redis while planning
    real_send = RedisConnection.send_packed_command

    async def counted(self: RedisConnection, command: Any, check_health: bool = True) -> None:
        writes.append(b"".join(command) if isinstance(command, list) else command)
        await real_send(self, command, check_health)

    monkeypatch.setattr(RedisConnection, "send_packed_command", counted)
    await planner.plan_together([(e, env, handlers.contact_change(e)) for e, env in items])
    monkeypatch.undo()

    # Every client's contact is read in one write, and written in one EXEC.
    reads = [w for w in writes if b"WATCH" in w and any(c in w for c in contacts)]
    assert len(reads) == 1
    assert all(c in reads[0] for c in contacts)
    assert sum(b"EXEC" in w for w in writes) == 1
    for event, _ in items:  # each client's acknowledgement, to its own contact
        [planned] = await deps.plans.notifications(own_clinic.id, event.client_id)
        assert planned["state"] == "planned"
        assert str(event.client_id) in planned["plan"]
        stored = await redis_client.get(contact_key(own_clinic.id, event.client_id))
        assert isinstance(event, ev.ConsultationRequested)
        assert stored is not None
        assert str(event.contact.email) in stored

    # Two handled before, with two new clients: only the new ones planned, once each.
    again = [*items[:2], *(_request(own_clinic.id, clock.now(), n, unique) for n in (8, 9))]
    await planner.plan_together([(e, env, handlers.contact_change(e)) for e, env in again])
    for event, _ in again:
        assert len(await deps.plans.notifications(own_clinic.id, event.client_id)) == 1

    # All handled before: nothing written at all.
    writes.clear()
    monkeypatch.setattr(RedisConnection, "send_packed_command", counted)
    await planner.plan_together([(e, env, handlers.contact_change(e)) for e, env in again])
    monkeypatch.undo()
    assert writes
    assert not any(b"MULTI" in w or b"EXEC" in w for w in writes)
    for event, _ in again:
        assert len(await deps.plans.notifications(own_clinic.id, event.client_id)) == 1


async def test_two_events_of_one_client_are_not_planned_in_one_step(
    redis_client: Redis, notifier_publisher: EventPublisher, own_clinic: OwnClinic, unique: str
) -> None:
    clock = ScaledClock(datetime(2026, 3, 23, 10, tzinfo=UTC), datetime.now(UTC), 1.0)
    planner = handlers.Planner(
        planner_deps(redis_client, notifier_publisher, own_clinic.directory, clock)
    )
    event, envelope = _request(own_clinic.id, clock.now(), 1, unique)
    twice = event.model_copy(update={"occurred_at": clock.now()})
    other = Envelope.model_validate({**envelope.model_dump(), "id": str(uuid.uuid4())})
    with pytest.raises(ValueError, match="one event per client"):
        await planner.plan_together([(event, envelope, None), (twice, other, None)])
