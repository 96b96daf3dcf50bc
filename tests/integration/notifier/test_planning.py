"""An event's plan written through the unit of work on real Redis: once per event (its
handled mark written with it), and decided again from fresh reads when another replica
changes what it read before its write."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis

from chassis.events import EventPublisher
from chassis.unit_of_work import Transaction
from services.notifier import handlers
from services.notifier.contacts import KnownContact, contact_key
from services.notifier.planning import Plan
from services.notifier.plans import PlanStore, Write
from shared import events as ev
from tests.integration.notifier.support import ManualClock, OwnClinic, at, planner_deps

pytestmark = pytest.mark.integration


async def _state(redis: Redis, clinic_id: str) -> dict[str, Any]:
    """Every notifier key of the clinic, with its value."""
    found: dict[str, Any] = {}
    async for name in redis.scan_iter(match=f"notifier:{{{clinic_id}}}:*"):
        kind = await redis.type(name)
        if kind == "hash":
            found[name] = await redis.hgetall(name)
        elif kind == "zset":
            found[name] = await redis.zrange(name, 0, -1, withscores=True)
        elif kind == "set":
            found[name] = await redis.smembers(name)
        else:
            found[name] = await redis.get(name)
    return found


def _request(clinic_id: str, clock: ManualClock, unique: str) -> ev.ConsultationRequested:
    contact = ev.Contact(
        name="Ada Lovelace",
        email=f"ada.{unique}@example.org",
        phone="+351912345678",
        sms_consent=True,
    )
    return ev.ConsultationRequested(
        clinic_id=clinic_id, client_id=uuid.uuid4(), occurred_at=clock.now(), contact=contact
    )


async def test_an_event_delivered_twice_is_planned_once_and_its_handled_mark_kept(
    redis_client: Redis, notifier_publisher: EventPublisher, own_clinic: OwnClinic, unique: str
) -> None:
    clock = ManualClock(at("2026-03-23T10:00+00:00"))
    woken: list[tuple[str, datetime]] = []
    deps = replace(
        planner_deps(redis_client, notifier_publisher, own_clinic.directory, clock),
        due_now=lambda clinic_id, due_at: woken.append((clinic_id, due_at)),
    )
    planner = handlers.Planner(deps)
    request = _request(own_clinic.id, clock, unique)
    envelope = notifier_publisher.envelope_for(request)

    await planner.plan(request, envelope, handlers.requested(request))

    marks = f"notifier:{{{own_clinic.id}}}:marks:{request.client_id}"
    assert await redis_client.hexists(marks, envelope.id)
    [planned] = await deps.plans.notifications(own_clinic.id, request.client_id)
    assert planned["state"] == "planned"
    assert woken == [(own_clinic.id, clock.now())]
    before = await _state(redis_client, own_clinic.id)
    assert marks in before

    # Redelivered (a lost commit), later: the handled mark says so; nothing is written.
    clock.set(at("2026-03-23T11:00+00:00"))
    await planner.plan(request, envelope, handlers.requested(request))

    assert await _state(redis_client, own_clinic.id) == before
    assert len(woken) == 1


class ChangedUnderStep(PlanStore):
    """Another replica opts the client out of email once the first step has read, before
    its write."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.steps = 0

    async def writes(
        self,
        tx: Transaction,
        plan: Plan,
        *,
        client_id: UUID,
        contact: KnownContact | None,
        now: datetime,
        tidied: datetime | None,
    ) -> Write:
        write = await super().writes(
            tx, plan, client_id=client_id, contact=contact, now=now, tidied=tidied
        )
        self.steps += 1
        if self.steps == 1:
            opted_out = KnownContact(opted_out=frozenset({"email"}))
            entry = contact_key(plan.cause.clinic_id, client_id)
            await self._redis.set(entry, opted_out.model_dump_json())
        return write


async def test_a_contact_changed_before_the_write_replans_from_the_new_contact(
    redis_client: Redis, notifier_publisher: EventPublisher, own_clinic: OwnClinic, unique: str
) -> None:
    clock = ManualClock(at("2026-03-23T10:00+00:00"))
    plans = ChangedUnderStep(redis_client)
    deps = replace(
        planner_deps(redis_client, notifier_publisher, own_clinic.directory, clock), plans=plans
    )
    request = _request(own_clinic.id, clock, unique)
    envelope = notifier_publisher.envelope_for(request)

    await handlers.Planner(deps).plan(request, envelope, handlers.requested(request))

    # The first write failed on the watched contact; the step ran again from its reads,
    # so the opt-out is kept and the message planned by SMS, as the stored prefs say.
    assert plans.steps == 2
    stored = await redis_client.get(contact_key(own_clinic.id, request.client_id))
    assert stored is not None
    known = KnownContact.model_validate_json(stored)
    assert known.opted_out == {"email"}
    assert known.contact == request.contact
    [planned] = await plans.notifications(own_clinic.id, request.client_id)
    assert '"channel":"sms"' in planned["plan"]
    assert await deps.unit_of_work.is_handled(own_clinic.id, envelope.id, str(request.client_id))
