"""The schedule-lag gate on real Kafka (issue 14, fault 9): while the notifier's group has
left a scheduler event unhandled for longer than the bound, reminders and instructions
wait; an urgent clinical alert goes at once all the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from redis.asyncio import Redis

from chassis.clock import ScaledClock
from chassis.events import EventPublisher
from chassis.unit_of_work import UnitOfWork
from ops import mailcatcher
from services.notifier import handlers
from services.notifier.contacts import ContactChange
from services.notifier.lag import SCHEDULE_TOPICS, ScheduleLag
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from tests.integration.notifier.support import (
    DeliveryRig,
    Inputs,
    Mailbox,
    ManualClock,
    SlowMailServer,
    appointment,
    at,
    by_email,
    delivery_rig,
    eventually,
    write_own_clinic,
)

pytestmark = pytest.mark.integration

BOUND_S = 0.5


async def _mails(mailbox: Mailbox, address: str, count: int) -> list[EmailMessage]:
    async def arrived() -> list[EmailMessage]:
        found = mailbox.to(address)
        return found if len(found) >= count else []

    return await eventually(arrived, f"{count} mail(s) to {address}")


async def _commit_to_the_end(
    bootstrap: str, group: str, but: tuple[TopicPartition, int] | None = None
) -> None:
    """The watched group handles everything on the schedule topics (as a caught-up notifier),
    `but` one partition, left unhandled from the given offset on."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(t.name, p)
            for t in SCHEDULE_TOPICS
            for p in consumer.partitions_for_topic(t.name) or ()
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        if but is not None:
            ends[but[0]] = but[1]
        await consumer.commit(ends)
    finally:
        await consumer.stop()


async def _partition_and_end(
    bootstrap: str, topic: str, client_id: uuid.UUID
) -> tuple[TopicPartition, int]:
    """Where the default partitioner puts `client_id`'s events on `topic`, and that
    partition's end now (the next record's offset)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        count = len(consumer.partitions_for_topic(topic) or ())
        key = str(client_id).encode()
        tp = TopicPartition(topic, DefaultPartitioner()(key, list(range(count)), []))
        return tp, (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


def _client_on_another_partition(
    than: uuid.UUID, count: int = 6, *, same: bool = False
) -> uuid.UUID:
    """Another client whose events go to another partition (`same`: to the same one)."""
    taken = DefaultPartitioner()(str(than).encode(), list(range(count)), [])
    while True:
        other = uuid.uuid4()
        on = DefaultPartitioner()(str(other).encode(), list(range(count)), [])
        if (on == taken) == same:
            return other


@dataclass
class Gated:
    """A clinic of the test's own, delivered only by a delivery gated on the test's group."""

    clock: ManualClock
    clinic_id: str
    group: str
    kafka_bootstrap: str
    inputs: Inputs
    # Its delivery and planner, gated on the group's schedule lag (that gauge).
    delivery: DeliveryRig
    gauge: ScheduleLag

    async def plan(self, event: ev.Event, contact: ContactChange | None = None) -> None:
        await self.delivery.plan(event, contact)

    async def leave_unhandled(
        self, change: ev.Event, envelope: Envelope | None = None
    ) -> tuple[TopicPartition, int]:
        """`change` on its topic, older than the bound and not committed by the watched group
        (a real notifier's group would have handled it by now); where it is."""
        where = await _partition_and_end(
            self.kafka_bootstrap, topics.topic_for(change).name, change.client_id
        )
        await self.inputs.publish(change, envelope)
        await asyncio.sleep(BOUND_S + 0.2)
        return where

    def fields(self, client_id: uuid.UUID) -> dict[str, Any]:
        return {
            "clinic_id": self.clinic_id,
            "client_id": client_id,
            "occurred_at": self.clock.now(),
        }

    async def client(self, address: str, client_id: uuid.UUID | None = None) -> uuid.UUID:
        client_id = client_id or uuid.uuid4()
        request = ev.ConsultationRequested(
            **self.fields(client_id), contact=ev.Contact(name="Ada Lovelace", email=address)
        )
        await self.plan(request, handlers.requested(request))
        return client_id

    def consultation(self, client_id: uuid.UUID) -> ev.ConsultationBooked:
        session = appointment(ev.AppointmentKind.CONSULTATION, at("2026-03-23T13:00+00:00"), 30)
        return ev.ConsultationBooked(**self.fields(client_id), appointment=session)

    async def alert(self, client_id: uuid.UUID) -> None:
        await self.plan(
            ev.ClinicalAlertRaised(
                **self.fields(client_id),
                reason="phq9_item9_positive",
                phq9_item9=1,
                raised_during="session",
            )
        )


@pytest.fixture
async def gated(
    inputs: Inputs,
    notifier_publisher: EventPublisher,
    mailbox: Mailbox,
    redis_client: Redis,
    kafka_bootstrap: str,
    tmp_path: Path,
    unique: str,
) -> AsyncIterator[Gated]:
    clock = ManualClock(at("2026-03-23T10:00+00:00"))
    clinic_id = f"g-{unique}"
    group = f"tests-lag-{unique}"
    # A change the notifier applied (its handled mark, written with its effects) does not
    # wait, committed or not: as the service wires it.
    applied = UnitOfWork(redis_client, "notifier", notifier_publisher).handled
    gauge = ScheduleLag(kafka_bootstrap, group, BOUND_S, applied=applied)
    clinics = write_own_clinic(tmp_path, clinic_id, unique)
    delivery = delivery_rig(
        redis_client,
        notifier_publisher,
        clinics,
        clock,
        by_email(mailbox.port),
        poll_s=0.05,
        schedule_lag=gauge,
    )
    yield Gated(clock, clinic_id, group, kafka_bootstrap, inputs, delivery, gauge)
    await gauge.close()


async def test_reminders_wait_while_the_schedule_lags_and_a_clinical_alert_does_not(
    gated: Gated, mailbox: Mailbox, kafka_bootstrap: str, unique: str
) -> None:
    address = f"ada.{unique}@example.org"
    client_id = await gated.client(address)
    booking = gated.consultation(client_id)
    await gated.plan(booking)
    # Planned from the booking, but the watched group has not committed it: a change to
    # this appointment may still be on its way.
    await gated.leave_unhandled(booking)

    async with gated.delivery.running():
        await _mails(mailbox, address, 2)  # the request's and the booking's replies are not held
        gated.clock.set(at("2026-03-23T11:00+00:00"))  # the 2 h reminder is due
        await gated.alert(client_id)
        [staff_mail] = await _mails(mailbox, f"staff@{gated.clinic_id}.example", 1)
        assert staff_mail["Subject"].startswith("Urgent")

        await asyncio.sleep(0.5)  # several looks at the due reminder, all while lagging
        [reminder] = [
            n
            for n in await gated.delivery.plans.notifications(gated.clinic_id, client_id)
            # A finished message keeps its kind, not its plan (notifier.keys.finished_fields).
            if "reminder_2h" in n.get("plan", n.get("kind", ""))
        ]
        assert (reminder["state"], reminder["attempts"]) == ("planned", "0")
        assert len(mailbox.to(address)) == 2

        await _commit_to_the_end(kafka_bootstrap, gated.group)  # the group catches up
        mails = await _mails(mailbox, address, 3)
        assert mails[-1]["Subject"].startswith("Your appointment is coming up")


async def test_a_clinical_alert_is_not_stuck_behind_a_full_batch_of_waiting_reminders(
    gated: Gated, mailbox: Mailbox, unique: str
) -> None:
    address = f"ada.{unique}@example.org"
    client_id = await gated.client(address)
    # Eleven medicine sessions on one day: by that morning their instructions and 24 h
    # reminders (22, more than a claimed batch) are all due, and all wait for the lag.
    sessions = [
        appointment(ev.AppointmentKind.MEDICINE, at(f"2026-03-26T{hour}:00+00:00"), 60, dose=1)
        for hour in range(10, 21)
    ]
    booking = ev.CourseBooked(
        **gated.fields(client_id),
        course_id=uuid.uuid4(),
        therapist_id="t-ana",
        window_ends_on=date(2026, 4, 20),
        appointments=sessions,
    )
    await gated.plan(booking)
    await gated.leave_unhandled(booking)
    async with gated.delivery.running():
        await _mails(mailbox, address, 2)
        gated.clock.set(at("2026-03-26T07:00+00:00"))
        await asyncio.sleep(0.3)  # the reminders are claimed and put back, round after round
        await gated.alert(client_id)
        [staff_mail] = await _mails(mailbox, f"staff@{gated.clinic_id}.example", 1)
        assert staff_mail["Subject"].startswith("Urgent")
        assert len(mailbox.to(address)) == 2


async def test_a_change_applied_but_not_yet_committed_does_not_hold_a_reminder(
    gated: Gated, mailbox: Mailbox, unique: str
) -> None:
    # The notifier planned from the booking (plan and handled mark written together) and
    # has not committed its offset yet: its view already holds the change.
    address = f"ada.{unique}@example.org"
    client_id = await gated.client(address)
    booking = gated.consultation(client_id)
    envelope = gated.inputs.envelope(booking)
    lagging_at = await gated.leave_unhandled(booking, envelope)
    await _commit_to_the_end(gated.kafka_bootstrap, gated.group, but=lagging_at)
    await gated.delivery.plan(booking, envelope=envelope)

    await _two_hour_reminder_arrives(gated, mailbox, address)


async def _two_hour_reminder_arrives(gated: Gated, mailbox: Mailbox, address: str) -> None:
    """Delivery running, the consultation's replies arrive, then at 11:00 its 2 h reminder."""
    async with gated.delivery.running():
        await _mails(mailbox, address, 2)
        gated.clock.set(at("2026-03-23T11:00+00:00"))  # the 2 h reminder is due
        mails = await _mails(mailbox, address, 3)
        assert mails[-1]["Subject"].startswith("Your appointment is coming up")


async def _reminder_goes_despite(
    gated: Gated, mailbox: Mailbox, address: str, client_id: uuid.UUID, other: ev.Event
) -> None:
    """The client's 2 h reminder goes on time while `other` waits unhandled (and all else is
    handled)."""
    await gated.plan(gated.consultation(client_id))
    lagging_at = await gated.leave_unhandled(other)
    await _commit_to_the_end(gated.kafka_bootstrap, gated.group, but=lagging_at)
    assert await gated.gauge.behind({(other.client_id, None)}) == {(other.client_id, None)}

    await _two_hour_reminder_arrives(gated, mailbox, address)


async def test_a_lag_on_another_clients_partition_does_not_hold_a_reminder(
    gated: Gated, mailbox: Mailbox, unique: str
) -> None:
    address = f"ada.{unique}@example.org"
    someone = uuid.uuid4()
    client_id = await gated.client(address, _client_on_another_partition(someone))
    await _reminder_goes_despite(gated, mailbox, address, client_id, gated.consultation(someone))


async def test_another_clients_unhandled_change_on_the_same_partition_does_not_hold_a_reminder(
    gated: Gated, mailbox: Mailbox, unique: str
) -> None:
    # Keyed by client: what waits unread on the partition is someone else's change, so
    # nothing about this client's appointment can be waiting.
    address = f"ada.{unique}@example.org"
    someone = uuid.uuid4()
    client_id = await gated.client(address, _client_on_another_partition(someone, same=True))
    await _reminder_goes_despite(gated, mailbox, address, client_id, gated.consultation(someone))


async def test_a_change_to_another_of_the_clients_appointments_does_not_hold_a_reminder(
    gated: Gated, mailbox: Mailbox, unique: str
) -> None:
    # The unhandled change names the client's other appointment, not this one.
    address = f"ada.{unique}@example.org"
    client_id = await gated.client(address)
    await _reminder_goes_despite(gated, mailbox, address, client_id, gated.consultation(client_id))


async def test_the_lag_bound_is_also_that_span_on_the_service_clock(
    gated: Gated, kafka_bootstrap: str
) -> None:
    someone = uuid.uuid4()
    lagging_at = await gated.leave_unhandled(gated.consultation(someone))
    await _commit_to_the_end(kafka_bootstrap, gated.group, but=lagging_at)
    # The unhandled change is about a second old: far inside a minute of real time,
    # far beyond a minute on a clock a thousand times faster (60 real milliseconds).
    fast = ScaledClock(gated.clock.now(), datetime.now(UTC), 1000.0)
    on_the_fast_clock = ScheduleLag(kafka_bootstrap, gated.group, 60.0, clock=fast)
    in_real_time = ScheduleLag(kafka_bootstrap, gated.group, 60.0)
    try:
        subject = (someone, None)
        assert await on_the_fast_clock.behind({subject}) == {subject}
        assert await in_real_time.behind({subject}) == set()
    finally:
        await on_the_fast_clock.close()
        await in_real_time.close()


async def test_a_reminder_kept_waiting_for_its_turn_asks_the_lag_again_before_it_goes(
    inputs: Inputs,
    notifier_publisher: EventPublisher,
    redis_client: Redis,
    kafka_bootstrap: str,
    tmp_path: Path,
    unique: str,
    slow_mail_server: Callable[[float], SlowMailServer],
) -> None:
    """One hand-over at a time, a second each, and the reminder's turn comes after the
    request's reply: the round's answer (nothing waits) is a second old by then, and the
    consultation was cancelled meanwhile on a topic the notifier has not read. Asked
    again, the reminder waits (old main: sent, and untrue)."""
    clock = ManualClock(at("2026-03-23T10:00+00:00"))
    clinic_id, group = f"f-{unique}", f"tests-fresh-{unique}"
    applied = UnitOfWork(redis_client, "notifier", notifier_publisher).handled
    gauge = ScheduleLag(kafka_bootstrap, group, BOUND_S, applied=applied)
    server = slow_mail_server(1.0)
    rig = delivery_rig(
        redis_client,
        notifier_publisher,
        write_own_clinic(tmp_path, clinic_id, unique),
        clock,
        by_email(server.port),
        poll_s=0.05,
        schedule_lag=gauge,
        send_concurrency=1,
    )
    gated = Gated(clock, clinic_id, group, kafka_bootstrap, inputs, rig, gauge)
    address = f"ada.{unique}@example.org"

    def mail_to() -> list[EmailMessage]:
        return [m for m in mailcatcher.read_mails(server.maildir) if m["To"] == address]

    try:
        # Planned before delivery starts: the request's and the booking's replies and the
        # 2 h reminder are all due when it does, the replies first.
        client_id = await gated.client(address)
        session = appointment(ev.AppointmentKind.CONSULTATION, at("2026-03-23T13:00+00:00"), 30)
        await gated.plan(ev.ConsultationBooked(**gated.fields(client_id), appointment=session))
        await _commit_to_the_end(kafka_bootstrap, group)  # the group is caught up
        clock.set(at("2026-03-23T11:00+00:00"))
        async with rig.running():
            await asyncio.sleep(0.1)  # the round asked: nothing waits; a reply is on its way
            await inputs.publish(
                ev.ConsultationCancelled(
                    **gated.fields(client_id),
                    appointment_id=session.appointment_id,
                    starts_at=session.starts_at,
                )
            )

            async def replied() -> bool:
                return len(mail_to()) >= 2

            await eventually(replied, "the request's and the booking's replies")
            await asyncio.sleep(1.5)  # a reminder sent would have arrived by now
            assert sorted(m["Subject"].split(":")[0] for m in mail_to()) == [
                "Your consultation is booked",
                f"Your consultation request at Clinic {unique}",
            ]
            [reminder] = [
                n
                for n in await rig.plans.notifications(clinic_id, client_id)
                if "reminder_2h" in n.get("plan", n.get("kind", ""))
            ]
            assert (reminder["state"], reminder["attempts"]) == ("planned", "0")  # held
    finally:
        await gauge.close()
