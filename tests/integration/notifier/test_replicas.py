"""Several notifier replicas, and one dying mid-send: every message still goes exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from chassis.events import EventPublisher
from chassis.unit_of_work import UnitOfWork
from services.notifier.config import Settings
from services.notifier.finishes import Finishes
from services.notifier.main import create_app
from services.notifier.queue import DeliveryQueue, Finish
from shared import events as ev
from tests.helpers import serving
from tests.integration.notifier.support import Rig, appointment, at, course

pytestmark = pytest.mark.integration


async def test_two_replicas_send_every_message_once_and_a_restart_resends_nothing(
    rig: Rig, notifier_settings: Settings
) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    people = [rig.person(f"Client {n}") for n in range(8)]
    requests = [
        ev.ConsultationRequested(**rig.fields(uuid.uuid4()), contact=person) for person in people
    ]
    async with serving(create_app(notifier_settings, rig.clock)):
        envelopes = await asyncio.gather(*(rig.publish(request) for request in requests))
        for person in people:
            await rig.mails(person.email)
        await rig.settled()
    # The second replica is gone; the first takes its partitions and gets the
    # same requests again, as after a crash before the offsets were committed.
    for request, envelope in zip(requests, envelopes, strict=True):
        await rig.inputs.publish(request, envelope)
    last = rig.person("Last Client")
    await rig.request(last)
    await rig.mails(last.email)
    await rig.settled()
    for person in people:
        [mail] = rig.mailbox.to(person.email)
        assert mail["Subject"] == f"Your consultation request at {rig.clinic.name}"


async def test_a_message_held_by_a_replica_that_died_is_sent_once_its_lease_runs_out(
    rig: Rig, notifier_publisher: EventPublisher
) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    session = appointment(ev.AppointmentKind.INTEGRATION, at("2026-03-26T15:00+00:00"))
    await rig.publish(course(rig, client_id, session))
    await rig.mails(ada.email, 2)

    # Another replica claims the 24 h reminder, then dies before sending it.
    due = at("2026-03-25T15:00+00:00")
    dead_replica = DeliveryQueue(rig.redis)
    [claim] = await dead_replica.claim_due(rig.clinic.id, due, limit=1, lease_ms=1500)
    assert claim.message.kind == "reminder_24h"
    rig.clock.set(due)
    states = {n["kind"]: n["state"] for n in await rig.notifications(client_id)}
    assert states["reminder_24h"] == "sending"
    assert len(rig.mailbox.to(ada.email)) == 2

    [_, _, reminder] = await rig.mails(ada.email, 3)
    assert reminder["Subject"] == "Reminder: your appointment on Thursday 26 March 2026, 15:00 WET"
    await rig.settled()
    [notification] = [n for n in await rig.notifications(client_id) if n["kind"] == "reminder_24h"]
    assert (notification["state"], notification["attempts"]) == ("sent", 2)
    # The dead replica's late outcome is refused: its lease is no longer the one held.
    assert not await dead_replica.still_held(claim)
    late = Finish(claim.lease, "planned", {"last_error": "late"}, at=due + timedelta(minutes=1))
    finishes = Finishes(dead_replica, UnitOfWork(rig.redis, "notifier", notifier_publisher))
    assert not await finishes.record(late)
    [notification] = [n for n in await rig.notifications(client_id) if n["kind"] == "reminder_24h"]
    assert (notification["state"], notification["attempts"]) == ("sent", 2)
