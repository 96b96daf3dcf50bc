"""Bad input: what cannot be sent is reported with its reason, what cannot be read goes to
the dead-letter topic, and the notifier goes on with the next message."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chassis.events import EventPublisher
from services.notifier import handlers
from services.notifier.contacts import awaiting_key
from services.notifier.finishes import Finishes
from services.notifier.outcomes import Outcomes, UnknownClient
from services.notifier.queue import DeliveryQueue
from shared import events as ev
from shared import topics
from tests.integration.notifier.support import (
    ManualClock,
    Rig,
    appointment,
    at,
    course,
    delivery_rig,
    write_own_clinic,
)

pytestmark = pytest.mark.integration

BROKEN_TEMPLATES = {
    "sections": {
        "notifier": {
            "templates": {
                "consultation_request_received": {"subject": "Hello {{ no_such_field }}"},
                "screening_outcome": {"text": "{% if %}"},
            }
        }
    }
}


async def test_messages_for_a_client_never_heard_of_fail_with_the_reason(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    stranger = uuid.uuid4()
    session = appointment(ev.AppointmentKind.INTEGRATION, at("2026-04-02T10:00+01:00"))
    await rig.publish(course(rig, stranger, session))

    # Its contact may still be on its way on another topic: tried again, then given up.
    for attempt, wait in enumerate((1, 2, 4, 8), start=1):
        await rig.attempted_kind(stranger, "course_booked", attempt)
        rig.clock.advance(timedelta(minutes=wait))
    [failed] = await rig.outcomes(stranger, topics.NOTIFICATION_FAILED)
    assert failed["value"]["message_kind"] == "course_booked"
    assert failed["value"]["permanent"] is True
    assert failed["value"]["reason"] == (
        "gave up after 5 attempts: unknown client: no contact details received"
    )


async def test_a_message_waiting_for_its_contact_goes_when_the_contact_arrives(rig: Rig) -> None:
    """Topics are not ordered with each other: a booking may be handled before the request
    that brings the client's contact. Its confirmation, tried once and found without an
    address, goes as soon as the contact arrives, not at its next retry (a minute on)."""
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id = uuid.uuid4()
    session = appointment(ev.AppointmentKind.CONSULTATION, at("2026-03-25T15:00+00:00"), 30)
    await rig.publish(ev.ConsultationBooked(**rig.fields(client_id), appointment=session))
    waiting = await rig.attempted_kind(client_id, "consultation_booked", 1)
    assert waiting["state"] == "planned"

    await rig.publish(ev.ConsultationRequested(**rig.fields(client_id), contact=ada))

    mails = await rig.mails(ada.email, count=2)  # the clock stands still: no retry is due
    subjects = {str(m["Subject"]) for m in mails}
    assert "Your consultation is booked: Wednesday 25 March 2026, 15:00 WET" in subjects
    sent = await rig.attempted_kind(client_id, "consultation_booked", 2)  # its write follows
    assert sent["state"] == "sent"


@pytest.mark.parametrize("clinic_spec", [BROKEN_TEMPLATES], indirect=True)
async def test_a_template_that_fails_fails_only_its_own_messages(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    await rig.publish(ev.ScreeningCompleted(**rig.fields(client_id), eligible=True))
    session = appointment(ev.AppointmentKind.CONSULTATION, at("2026-03-25T15:00+00:00"), 30)
    await rig.publish(ev.ConsultationBooked(**rig.fields(client_id), appointment=session))

    [booked] = await rig.mails(ada.email)
    assert booked["Subject"] == "Your consultation is booked: Wednesday 25 March 2026, 15:00 WET"
    failed = await rig.outcomes(client_id, topics.NOTIFICATION_FAILED, expect=2)
    reasons = {f["value"]["message_kind"]: f["value"]["reason"] for f in failed}
    assert reasons == {
        "consultation_request_received": (
            "cannot render subject of consultation_request_received: 'no_such_field' is undefined"
        ),
        "screening_outcome": (
            "clinic template override of screening_outcome is unusable: "
            "cannot render body.txt of screening_outcome: "
            "Expected an expression, got 'end of statement block'"
        ),
    }
    assert all(f["value"]["permanent"] for f in failed)


async def test_unreadable_or_foreign_messages_are_dead_lettered_and_consuming_goes_on(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    topic = topics.CONSULTATION_REQUESTED
    elsewhere = uuid.uuid4()
    stray = ev.ConsultationRequested(
        clinic_id=f"nowhere-{rig.unique}",
        client_id=elsewhere,
        occurred_at=rig.clock.now(),
        contact=rig.person(),
    )
    await rig.inputs.publish(stray)

    garbled, incomplete, unlabelled = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for client_id, value in (
        (garbled, b'{"clinic_id": "not json'),
        (incomplete, json.dumps({**rig.fields(incomplete), "contact": None}, default=str).encode()),
    ):
        envelope = rig.inputs.envelope(
            ev.ConsultationRequested(**rig.fields(client_id), contact=rig.person())
        )
        await rig.inputs.broker.publish(
            value,
            topic=topic.name,
            key=str(client_id).encode(),
            headers={k: v.decode() for k, v in envelope.to_headers()},
        )
    request = ev.ConsultationRequested(**rig.fields(unlabelled), contact=rig.person())
    await rig.inputs.broker.publish(
        request.model_dump_json().encode(), topic=topic.name, key=str(unlabelled).encode()
    )

    ada = rig.person()
    await rig.request(ada)  # behind the bad ones: handled, so they were too
    await rig.mails(ada.email)

    [foreign] = await rig.dead_letters(topic, str(elsewhere))
    assert foreign["kap_dlq_service"] == "notifier"
    assert foreign["kap_dlq_error"] == f"Rejected: unknown clinic nowhere-{rig.unique}"
    [unreadable] = await rig.dead_letters(topic, str(garbled))
    assert unreadable["kap_dlq_error_type"] == "JSONDecodeError"
    [invalid] = await rig.dead_letters(topic, str(incomplete))
    assert invalid["kap_dlq_error"].startswith("invalid payload: contact")
    [unenveloped] = await rig.dead_letters(topic, str(unlabelled))
    assert unenveloped["kap_dlq_error_type"] == "EnvelopeError"


async def test_a_retry_whose_contact_arrived_before_its_write_is_due_at_once(
    redis_client: Redis, notifier_publisher: EventPublisher, tmp_path: Path, unique: str
) -> None:
    """The contact's step ran between the try that found no contact and the write of its
    retry: the retry, which the contact's step could not release (not yet listed), finds
    the contact itself and is due at once, not a minute on."""
    clock = ManualClock(at("2026-03-23T10:00+00:00"))
    clinic_id, client_id = f"w-{unique}", uuid.uuid4()
    rig = delivery_rig(
        redis_client,
        notifier_publisher,
        write_own_clinic(tmp_path, clinic_id, unique),
        clock,
        {},
        poll_s=0.05,
    )
    session = appointment(ev.AppointmentKind.CONSULTATION, at("2026-03-25T15:00+00:00"), 30)
    fields = {"clinic_id": clinic_id, "client_id": client_id, "occurred_at": clock.now()}
    await rig.plan(ev.ConsultationBooked(**fields, appointment=session))
    queue = DeliveryQueue(redis_client)
    [claim] = await queue.claim_due(clinic_id, clock.now(), limit=10, lease_ms=60_000)

    contact = ev.Contact(name="Ada Lovelace", email=f"ada.{unique}@example.org")
    request = ev.ConsultationRequested(**fields, contact=contact)
    await rig.plan(request, handlers.requested(request))  # the contact arrives
    clock.advance(timedelta(seconds=5))
    outcomes = Outcomes(Finishes(queue, rig.delivery.unit_of_work), notifier_publisher, clock)
    await outcomes.send_failed(claim, UnknownClient("unknown client: no contact details received"))

    due = await redis_client.zscore(queue.leases.due_key(clinic_id), claim.lease.member)
    assert due == clock.now().timestamp()  # at once, not a minute on
    assert not await redis_client.exists(awaiting_key(clinic_id, client_id))
