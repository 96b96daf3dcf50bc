"""What the notifier's integration tests share: a clock to drive, the mailbox, the SMS
provider, the clinics file, publishing input events, and bounded waits on outcomes; and,
for tests that run a delivery of their own, a slow mail server and the delivery rig."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis

from chassis.clinics import ClinicDirectory
from chassis.clock import Clock
from chassis.events import EventPublisher
from chassis.kafka import group_id
from chassis.unit_of_work import UnitOfWork
from ops import mailcatcher
from ops.sms_sink import SmsSink, read_sms
from ops.stack import free_port as stack_free_port
from services.notifier import handlers
from services.notifier.channels import EmailChannel, Sender
from services.notifier.contacts import ContactChange, Contacts
from services.notifier.delivery import LEASE_MS, SEND_CONCURRENCY, Delivery, notifier_due_work
from services.notifier.pacing import ScheduleLagGauge
from services.notifier.plans import PlanStore
from services.notifier.queue import DeliveryQueue
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from tests.helpers import topic_messages, write_clinics

T = TypeVar("T")
WAIT_S = 10.0


class ManualClock:
    """The notifier's clock, moved only by the test (the Clock protocol)."""

    def __init__(self, at: datetime) -> None:
        self._now = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        self._now = at.astimezone(UTC)

    def advance(self, by: timedelta) -> None:
        self._now += by

    async def sleep(self, duration: timedelta) -> None:
        await asyncio.sleep(0)

    def real_seconds(self, duration: timedelta) -> float:
        return 0.0


def at(text: str) -> datetime:
    """An instant from ISO text with its offset, e.g. "2026-03-31T10:00+01:00"."""
    return datetime.fromisoformat(text).astimezone(UTC)


def free_port() -> int:
    return stack_free_port()


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, wait_s: float = WAIT_S
) -> T:
    """Poll `probe` until it returns something truthy; fail after `wait_s` naming `what`."""
    deadline = time.monotonic() + wait_s
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {wait_s}s for {what}")
        await asyncio.sleep(0.05)


async def caught_up(
    bootstrap: str, broker: KafkaBroker, wait_s: float = 120.0, service: str = "notifier"
) -> None:
    """Wait until the `service`'s group has handled what its topics held when it started.

    A new group starts from the earliest offsets (and a shared broker holds other
    tests' events): tests should not wait behind that backlog.
    """
    names = [t.name for s in broker.subscribers for t in getattr(s, "topics", ())]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(name, p)
            for name in names
            for p in consumer.partitions_for_topic(name) or ()
        ]
        ends = await consumer.end_offsets(partitions)

        async def handled() -> bool:
            committed = await admin.list_consumer_group_offsets(group_id(service))
            return all(
                tp in committed and committed[tp].offset >= end for tp, end in ends.items() if end
            )

        await eventually(handled, "the notifier to work through its backlog", wait_s)
    finally:
        await admin.close()
        await consumer.stop()


# --- the world outside the notifier ------------------------------------------


class Mailbox:
    """The real SMTP server (ops.mailcatcher); can be taken down and brought back."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.port = free_port()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = mailcatcher.start("127.0.0.1", self.port, self.maildir)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in mailcatcher.read_mails(self.maildir) if m["To"] == address]


class SlowMaildir(mailcatcher.MaildirHandler):
    """The local mail server, answering DATA only after `delay_s` (a busy relay, a remote
    one under load)."""

    def __init__(self, maildir: Path, delay_s: float) -> None:
        super().__init__(maildir)
        self.delay_s = delay_s

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        await asyncio.sleep(self.delay_s)
        return await super().handle_DATA(server, session, envelope)


@dataclass(frozen=True)
class SlowMailServer:
    """Where a slow mail server listens and where it keeps what it accepted."""

    port: int
    maildir: Path


def text_of(mail: EmailMessage) -> str:
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def html_of(mail: EmailMessage) -> str:
    body = mail.get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content())


def sent_at(mail: EmailMessage) -> datetime:
    return parsedate_to_datetime(str(mail["Date"])).astimezone(UTC)


class ClinicsFile:
    """The clinics file the notifier reads; tests add their own clinic and take it away."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._clinics: dict[str, dict[str, Any]] = {}
        self._stamp_ns = 0
        self._write()

    def add(self, clinic_id: str, spec: dict[str, Any]) -> None:
        self._clinics[clinic_id] = spec
        self._write()

    def remove(self, clinic_id: str) -> None:
        self._clinics.pop(clinic_id, None)
        self._write()

    def _write(self) -> None:
        write_clinics(self.path, self._clinics)
        # The directory reloads on a new mtime: make each write's visibly newer.
        self._stamp_ns = max(self._stamp_ns + 10_000_000, time.time_ns())
        os.utime(self.path, ns=(self._stamp_ns, self._stamp_ns))


@dataclass(frozen=True)
class ClinicUnderTest:
    id: str
    name: str
    timezone: str
    key: str

    @property
    def staff_email(self) -> str:
        return f"staff@{self.id}.example"  # as tests.helpers.write_clinics writes it


class Inputs:
    """Publishes what intake and the scheduler would, on the real topics."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker
        self._publishers = {
            service: EventPublisher(broker, service, topics.produced_by(service))
            for service in ("intake", "scheduler")
        }

    def _publisher(self, event: ev.Event) -> EventPublisher:
        return self._publishers[topics.topic_for(event).producers[0]]

    def envelope(self, event: ev.Event) -> Envelope:
        return self._publisher(event).envelope_for(event)

    async def publish(self, event: ev.Event, envelope: Envelope | None = None) -> Envelope:
        envelope = envelope or self.envelope(event)
        await self._publisher(event).publish(event, envelope)
        return envelope


# --- the test's view of everything -------------------------------------------


@dataclass
class Rig:
    clock: ManualClock
    mailbox: Mailbox
    sms: SmsSink
    inputs: Inputs
    redis: Redis
    http: httpx.AsyncClient
    kafka: str
    clinic: ClinicUnderTest
    unique: str
    _people: int = 0

    def person(self, name: str = "Ada Lovelace", **contact: Any) -> ev.Contact:
        """Contact details unique to this test: its mail and messages are its own."""
        self._people += 1
        number = (int(self.unique, 16) * 10 + self._people) % 10**9
        fields: dict[str, Any] = {
            "name": name,
            "email": f"{name.split()[0].lower()}.{self.unique}.{self._people}@example.org",
            "phone": f"+3519{number:09d}",
            **contact,
        }
        return ev.Contact(**fields)

    def fields(self, client_id: uuid.UUID) -> dict[str, Any]:
        return {
            "clinic_id": self.clinic.id,
            "client_id": client_id,
            "occurred_at": self.clock.now(),
        }

    async def publish(self, event: ev.Event, envelope: Envelope | None = None) -> Envelope:
        """Publish, and wait until the notifier has handled it (its effect is recorded)."""
        envelope = await self.inputs.publish(event, envelope)
        await self.handled(envelope)
        return envelope

    async def handled(self, envelope: Envelope) -> None:
        marks = f"notifier:{{{envelope.clinic_id}}}:marks:{envelope.subject}"

        async def recorded() -> bool:
            return bool(await self.redis.hexists(marks, envelope.id))

        await eventually(recorded, f"the notifier to handle {envelope.type}")

    async def request(self, contact: ev.Contact) -> tuple[uuid.UUID, Envelope]:
        client_id = uuid.uuid4()
        envelope = await self.publish(
            ev.ConsultationRequested(**self.fields(client_id), contact=contact)
        )
        return client_id, envelope

    async def mails(self, address: str, count: int = 1) -> list[EmailMessage]:
        async def arrived() -> list[EmailMessage]:
            found = self.mailbox.to(address)
            return found if len(found) >= count else []

        return await eventually(arrived, f"{count} mail(s)")

    async def texts(self, phone: str, count: int = 1) -> list[dict[str, Any]]:
        async def arrived() -> list[dict[str, Any]]:
            found = self.texts_now(phone)
            return found if len(found) >= count else []

        return await eventually(arrived, f"{count} SMS")

    def texts_now(self, phone: str) -> list[dict[str, Any]]:
        return [m for m in read_sms(self.sms.log_path) if m["to"] == phone]

    async def settled(self) -> None:
        """Wait until nothing due by the clock is left unsent or unpublished."""
        prefix = f"notifier:{{{self.clinic.id}}}"
        now = self.clock.now().timestamp()

        async def idle() -> bool:
            due = await self.redis.zcount(f"{prefix}:due", "-inf", now)
            busy = await self.redis.zcard(f"{prefix}:leased")
            unpublished = await self.redis.zcard(f"{prefix}:outbox:written")
            return due + busy + unpublished == 0

        await eventually(idle, "the notifier to send everything due")

    async def step_to(self, instant: datetime) -> None:
        self.clock.set(instant)
        await self.settled()

    async def notifications(self, client_id: uuid.UUID) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"/v1/clinics/{self.clinic.id}/clients/{client_id}/notifications",
            headers={"X-API-Key": self.clinic.key},
        )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def attempted(self, client_id: uuid.UUID, count: int) -> dict[str, Any]:
        """The client's one notification once `count` attempts have ended."""
        return await self.attempted_kind(client_id, None, count)

    async def attempted_kind(
        self, client_id: uuid.UUID, kind: str | None, count: int
    ) -> dict[str, Any]:
        async def ended() -> dict[str, Any] | None:
            found = await self.notifications(client_id)
            [notification] = [n for n in found if kind is None or n["kind"] == kind]
            done = notification["attempts"] == count and notification["state"] != "sending"
            return notification if done else None

        return await eventually(ended, f"attempt {count} to end")

    async def outcomes(
        self, client_id: uuid.UUID, topic: topics.Topic, expect: int = 1
    ) -> list[dict[str, Any]]:
        return await topic_messages(self.kafka, topic.name, key=str(client_id), expect=expect)

    async def dead_letters(self, topic: topics.Topic, key: str) -> list[dict[str, str]]:
        """The headers of `key`'s dead letters (the value may be unreadable: that is why)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic.dead_letters, p)
                for p in consumer.partitions_for_topic(topic.dead_letters) or ()
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            found = []
            while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found += [
                        {k: v.decode() for k, v in r.headers}
                        for r in records
                        if r.key == key.encode()
                    ]
            return found
        finally:
            await consumer.stop()


def appointment(
    kind: ev.AppointmentKind, starts_at: datetime, minutes: int = 60, dose: int | None = None
) -> ev.Appointment:
    return ev.Appointment(
        appointment_id=uuid.uuid4(),
        kind=kind,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=minutes),
        therapist_id="t-ana",
        room_id="r-1",
        dose_number=dose,
    )


def course(rig: Rig, client_id: uuid.UUID, *appointments: ev.Appointment) -> ev.CourseBooked:
    return ev.CourseBooked(
        **rig.fields(client_id),
        course_id=uuid.uuid4(),
        therapist_id="t-ana",
        window_ends_on=date(2026, 4, 20),
        appointments=appointments,
    )


# --- a delivery of the test's own, outside the package's notifier ------------


def write_own_clinic(folder: Path, clinic_id: str, unique: str) -> ClinicDirectory:
    """A clinics file in `folder` holding only the test's clinic, and its directory."""
    path = folder / "clinics.json"
    write_clinics(
        path, {clinic_id: {"name": f"Clinic {unique}", "timezone": "Europe/Lisbon", "key": "k"}}
    )
    return ClinicDirectory(path)


@dataclass(frozen=True)
class OwnClinic:
    """A clinic in a clinics file of the test's own, read by the test's own delivery."""

    id: str
    directory: ClinicDirectory


def by_email(smtp_port: int) -> dict[ev.Channel, Sender]:
    """Channels that send email only, through the local server at `smtp_port`."""
    return {"email": EmailChannel("127.0.0.1", smtp_port, "notifications@kap.example")}


@dataclass
class DeliveryRig:
    """A delivery and a planner wired as the service wires them: a plan tells delivery it
    holds a message, so delivery looks when it falls due rather than at its next poll."""

    plans: PlanStore
    delivery: Delivery
    planner: handlers.Planner
    publisher: EventPublisher
    clock: Clock

    async def plan(
        self,
        event: ev.Event,
        contact: ContactChange | None = None,
        envelope: Envelope | None = None,
    ) -> None:
        await self.planner.plan(event, envelope or self.publisher.envelope_for(event), contact)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Delivery's loop as a worker for the block; cancelled and waited for after it."""
        worker = asyncio.create_task(self.delivery.run())
        try:
            yield
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


def delivery_rig(
    redis: Redis,
    publisher: EventPublisher,
    clinics: ClinicDirectory,
    clock: Clock,
    senders: Mapping[ev.Channel, Sender],
    *,
    poll_s: float,
    schedule_lag: ScheduleLagGauge | None = None,
    send_concurrency: int = SEND_CONCURRENCY,
) -> DeliveryRig:
    delivery = notifier_delivery(
        redis,
        clinics,
        senders,
        publisher,
        clock,
        poll_s=poll_s,
        schedule_lag=schedule_lag,
        send_concurrency=send_concurrency,
    )
    # Planned through the delivery's unit of work, as in the service: its writes hint
    # the delivery's due index.
    deps = replace(
        planner_deps(redis, publisher, clinics, clock), unit_of_work=delivery.unit_of_work
    )
    planner = handlers.Planner(replace(deps, due_now=delivery.wake))
    return DeliveryRig(deps.plans, delivery, planner, publisher, clock)


def notifier_delivery(
    redis: Redis,
    clinics: ClinicDirectory,
    senders: Mapping[ev.Channel, Sender],
    publisher: EventPublisher,
    clock: Clock,
    *,
    poll_s: float,
    schedule_lag: ScheduleLagGauge | None = None,
    lease_ms: int = LEASE_MS,
    send_concurrency: int = SEND_CONCURRENCY,
) -> Delivery:
    """A delivery on `redis`, wired as the service wires it (main.create_app), but for its
    due index: one per test's clinics (replicas of one test share it), so no other test's
    replicas hold its buckets."""
    queue, uow = DeliveryQueue(redis), UnitOfWork(redis, "notifier", publisher)
    kind = "tests-" + min(clinic.id for clinic in clinics.all())
    return Delivery(
        queue,
        Contacts(redis),
        PlanStore(redis),
        clinics,
        senders,
        publisher,
        clock,
        poll_s=poll_s,
        unit_of_work=uow,
        lease_ms=lease_ms,
        schedule_lag=schedule_lag,
        send_concurrency=send_concurrency,
        due=notifier_due_work(queue, uow, clinics, clock, kind=kind),
    )


def planner_deps(
    redis: Redis,
    publisher: EventPublisher,
    clinics: ClinicDirectory,
    clock: Clock,
) -> handlers.Deps:
    """What a planner needs, writing through the notifier's unit of work; delivery not told
    of its plans (`due_now` is left as the default)."""
    return handlers.Deps(
        plans=PlanStore(redis),
        unit_of_work=UnitOfWork(redis, "notifier", publisher),
        clinics=clinics,
        clock=clock,
    )
