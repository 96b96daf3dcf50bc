"""Webhooks end to end on real Kafka and Redis, to a real HTTP receiver that verifies
every request with the `standardwebhooks` library.

The public events are published as the scheduler publishes them (numbered per
client), some out of number order across topics; the receiver answers 200, then
500, goes down, answers slowly, answers 410. Afterwards, from the receiver's own
record: every event of the partner's clinic was answered 2xx exactly once (repeats
carry the same `webhook-id`), each client's events in number order, nothing of the
other clinic, and no bad signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import group_id, make_broker
from services.webhooks.config import Settings
from services.webhooks.main import create_app
from services.webhooks.store import WebhookStore
from shared import events as ev
from shared.envelope import Envelope
from shared.topics import ALL
from tests.helpers import serving, write_clinics
from tests.integration.webhooks.receiver import Receiver

pytestmark = pytest.mark.integration

ADMIN_KEY = "webhook-admin-key-for-tests"
ADMIN = {"X-Admin-Key": ADMIN_KEY}
PUBLIC = [t.name for t in ALL if t.public]


@pytest.fixture
def clinic_ids(unique: str) -> tuple[str, str]:
    return f"wha-{unique}", f"whb-{unique}"


@pytest.fixture
def settings(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, clinic_ids: tuple[str, str]
) -> Settings:
    clinics = {
        c: {"name": c, "timezone": "Europe/Lisbon", "key": f"{c}-key-123"} for c in clinic_ids
    }
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=write_clinics(tmp_path / "clinics.json", clinics),
        KAP_ADMIN_API_KEY_SHA256=hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
        KAP_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8",
        KAP_WEBHOOK_TIMEOUT_S=1.0,
        KAP_WEBHOOK_RETRY_FIRST_S=0.2,
        KAP_WEBHOOK_RETRY_LONGEST_S=0.5,
        KAP_WEBHOOK_POLL_MS=50,
        KAP_WEBHOOK_GAP_WAIT_S=30,
    )


@pytest.fixture
async def webhooks(settings: Settings, redis_client: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with started(settings, redis_client) as client:
        yield client


@asynccontextmanager
async def started(settings: Settings, redis_client: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The webhook service, alone with this test's partners and from the topics' ends."""
    # Partners are the deployment's: earlier tests' are taken out, so none of theirs
    # (pointing at receivers long gone) shares this test's events.
    store = WebhookStore(redis_client)
    for partner in await store.partners():
        async with redis_client.pipeline(transaction=True) as p:
            store.delete_partner(p, partner)
            await p.execute()
    await skip_to_the_end(settings.kafka_bootstrap_servers)
    async with serving(create_app(settings)) as client:
        yield client


async def skip_to_the_end(bootstrap: str) -> None:
    """The group starts at the topics' ends: a broker shared with earlier tests and
    benchmarks may hold far more public events than a test can wait for (a new
    deployment's group reads them all, in production as here)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id("webhooks"), enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, n)
            for topic in PUBLIC
            for n in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit({tp: offset for tp, offset in ends.items()})
    finally:
        await consumer.stop()


@pytest.fixture
async def scheduler_events(kafka_bootstrap: str) -> AsyncIterator[EventPublisher]:
    broker: KafkaBroker = make_broker(
        ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap), "scheduler"
    )
    publisher = EventPublisher(broker, "scheduler", [t for t in ALL if t.public])
    await broker.start()
    yield publisher
    await broker.stop()


@pytest.fixture
def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    r.start()
    yield r  # type: ignore[misc]
    r.stop()


class Client:
    """One client's public events, numbered as the scheduler numbers them."""

    def __init__(self, publisher: EventPublisher, clinic_id: str) -> None:
        self.publisher = publisher
        self.clinic_id = clinic_id
        self.id = uuid.uuid4()
        self.events: dict[int, str] = {}  # number -> event id

    def event(self, number: int) -> ev.Event:
        now = datetime.now(UTC)
        kinds: list[Callable[[], ev.Event]] = [
            lambda: ev.ClientStageReached(
                clinic_id=self.clinic_id,
                client_id=self.id,
                occurred_at=now,
                stage=ev.ClientStage.CONSULTATION_BOOKED,
            ),
            lambda: ev.AppointmentStatusChanged(
                clinic_id=self.clinic_id,
                client_id=self.id,
                occurred_at=now,
                appointment_id=uuid.uuid4(),
                kind=ev.AppointmentKind.MEDICINE,
                status=ev.AppointmentStatus.BOOKED,
                starts_at=now + timedelta(days=3),
                ends_at=now + timedelta(days=3, hours=2),
            ),
            lambda: ev.CourseStatusChanged(
                clinic_id=self.clinic_id,
                client_id=self.id,
                occurred_at=now,
                course_id=uuid.uuid4(),
                status=ev.CourseStatus.PAUSED,
            ),
        ]
        return kinds[number % len(kinds)]()

    async def publish(self, *numbers: int) -> None:
        for number in numbers:
            event = self.event(number)
            envelope: Envelope = self.publisher.envelope_for(event).model_copy(
                update={"sequence": number}
            )
            self.events[number] = envelope.id
            await self.publisher.publish(event, envelope)


async def until(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await _value(check):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.1)


async def _value(check: Callable[[], Any]) -> Any:
    result = check()
    return await result if asyncio.iscoroutine(result) else result


def delivered_ids(receiver: Receiver) -> set[str]:
    return {r.webhook_id for r in receiver.delivered()}


async def test_every_event_arrives_once_in_order_through_outages_and_410(
    webhooks: httpx.AsyncClient,
    scheduler_events: EventPublisher,
    receiver: Receiver,
    clinic_ids: tuple[str, str],
) -> None:
    ours, foreign = clinic_ids
    created = await webhooks.post(
        "/partners",
        headers=ADMIN,
        json={"name": "EHR", "url": receiver.url, "event_types": PUBLIC, "clinics": [ours]},
    )
    assert created.status_code == 201, created.text
    partner = created.json()
    receiver.secrets = [partner["secret"]]
    shown = (await webhooks.get(f"/partners/{partner['id']}", headers=ADMIN)).json()
    assert "secret" not in shown
    assert "api_key" not in shown
    assert partner["secret"] not in (await webhooks.get("/partners", headers=ADMIN)).text

    x, y = Client(scheduler_events, ours), Client(scheduler_events, ours)
    z = Client(scheduler_events, foreign)
    # Out of number order, across topics: 2 is read before 1.
    await x.publish(2, 1, 3)
    await y.publish(1, 2)
    await z.publish(1, 2)
    expected = lambda: {*x.events.values(), *y.events.values()}  # noqa: E731
    await until(lambda: delivered_ids(receiver) >= expected(), "the first events delivered")

    # A rotation: the receiver knows only the new secret now; both sign meanwhile.
    rotated = await webhooks.post(
        f"/partners/{partner['id']}/rotate-secret", headers=ADMIN, json={"keep_old_for_s": 3600}
    )
    receiver.secrets = [rotated.json()["secret"]]

    receiver.mode = "500"
    await x.publish(4)
    await until(lambda: sum(r.answered == 500 for r in receiver.received) >= 2, "two 500s")
    receiver.mode = "ok"
    await until(lambda: delivered_ids(receiver) >= expected(), "delivered after the 500s")

    receiver.stop()  # down for a while
    await x.publish(5)
    await y.publish(3)
    await asyncio.sleep(1.5)
    receiver.start()  # back on the same port
    await until(lambda: delivered_ids(receiver) >= expected(), "delivered after the outage")

    receiver.mode = "slow"  # answers after 2 s; the sender gives up after 1 s
    await y.publish(4)
    await until(lambda: any(r.answered == 0 for r in receiver.received), "a slow answer")
    receiver.mode = "ok"
    await until(lambda: delivered_ids(receiver) >= expected(), "delivered after the slow one")

    receiver.mode = "410"
    await x.publish(6)

    async def disabled() -> bool:
        got = await webhooks.get(f"/partners/{partner['id']}", headers=ADMIN)
        return got.json()["enabled"] is False

    await until(disabled, "the partner disabled by its 410")
    receiver.mode = "ok"
    await asyncio.sleep(1.0)
    assert x.events[6] not in delivered_ids(receiver), "sent while disabled"
    enabled = await webhooks.patch(
        f"/partners/{partner['id']}", headers=ADMIN, json={"enabled": True}
    )
    assert enabled.status_code == 200, enabled.text
    await until(lambda: delivered_ids(receiver) >= expected(), "delivered once enabled again")

    # The receiver's own record.
    assert receiver.bad_signatures == 0
    two_xx = [r for r in receiver.received if 200 <= r.answered < 300]
    assert len(two_xx) == len({r.webhook_id for r in two_xx}), "an event answered 2xx twice"
    assert all(r.webhook_id == r.event["id"] for r in receiver.received)
    assert not [r for r in receiver.received if r.event["clinicid"] != ours], "foreign clinic"
    for client, count in ((x, 6), (y, 4)):
        order = [r.event["clientsequence"] for r in two_xx if r.event["subject"] == str(client.id)]
        assert order == list(range(1, count + 1)), f"client order {order}"
    # The partner reads its own log.
    log = await webhooks.get(
        "/partner/deliveries", headers={"X-Partner-Key": partner["api_key"]}, params={"limit": 50}
    )
    assert log.status_code == 200, log.text
    statuses = {e["event_id"]: e["status"] for e in log.json()}
    assert all(statuses.get(i) == "delivered" for i in expected())


async def test_a_private_target_is_refused_when_saved(
    webhooks: httpx.AsyncClient, clinic_ids: tuple[str, str]
) -> None:
    refused = await webhooks.post(
        "/partners",
        headers=ADMIN,
        json={
            "name": "metadata",
            "url": "http://169.254.169.254/latest",
            "event_types": PUBLIC,
            "clinics": [clinic_ids[0]],
        },
    )
    assert refused.status_code == 422
    assert "url" in refused.text
    assert "169.254.169.254" in refused.text
    unknown = await webhooks.post(
        "/partners",
        headers=ADMIN,
        json={
            "name": "x",
            "url": "http://127.0.0.1:9/",
            "event_types": ["intake.consultation.requested.v1"],
            "clinics": [clinic_ids[0]],
        },
    )
    assert unknown.status_code == 422
    assert "event_types" in unknown.text
    plain = await webhooks.post(
        "/partners",
        headers=ADMIN,
        json={
            "name": "plain",
            "url": "http://93.184.216.34/hooks",
            "event_types": PUBLIC,
            "clinics": [clinic_ids[0]],
        },
    )
    assert plain.status_code == 422
    assert "https" in plain.text
    assert (await webhooks.get("/partners")).status_code == 401


async def test_a_hanging_partner_never_delays_another(
    settings: Settings,
    redis_client: Any,
    scheduler_events: EventPublisher,
    clinic_ids: tuple[str, str],
) -> None:
    """One partner never answers (within a 60 s timeout, longer than this test waits);
    the other's events, published after the hanging one's, all arrive meanwhile: the
    hanging partner holds its own sends only."""
    ours = clinic_ids[0]
    hanging, fast = Receiver(mode="hang"), Receiver()
    for receiver in (hanging, fast):
        receiver.start()
    patient = settings.model_copy(update={"webhook_timeout_s": 60.0})
    try:
        async with started(patient, redis_client) as webhooks:
            for name, receiver in (("hanging", hanging), ("fast", fast)):
                created = await webhooks.post(
                    "/partners",
                    headers=ADMIN,
                    json={
                        "name": name,
                        "url": receiver.url,
                        "event_types": PUBLIC,
                        "clinics": [ours],
                    },
                )
                assert created.status_code == 201, created.text
                receiver.secrets = [created.json()["secret"]]
            # More clients than the hanging partner's concurrent sends (8 per replica).
            clients = [Client(scheduler_events, ours) for _ in range(12)]
            for client in clients:
                await client.publish(1, 2)
            expected = {i for c in clients for i in c.events.values()}
            await until(lambda: delivered_ids(fast) >= expected, "the fast partner's events", 20)
            assert hanging.hanging >= 1, "the hanging partner was never called"
            assert not hanging.received, "the hanging partner answered"
            hanging.released.set()
    finally:
        hanging.released.set()
        hanging.stop()
        fast.stop()


async def test_an_event_failing_for_the_whole_policy_goes_to_dead_letters_and_the_next_goes(
    settings: Settings,
    redis_client: Any,
    scheduler_events: EventPublisher,
    receiver: Receiver,
    clinic_ids: tuple[str, str],
) -> None:
    """With a 2 s retry period: event 1 answered 500 until it is dead-lettered, then
    event 2 (waiting behind it) is delivered; the dead letter says why."""
    brief = settings.model_copy(update={"webhook_give_up_after_s": 2.0})
    receiver.mode = "500"
    async with started(brief, redis_client) as webhooks:
        created = await webhooks.post(
            "/partners",
            headers=ADMIN,
            json={
                "name": "EHR",
                "url": receiver.url,
                "event_types": PUBLIC,
                "clinics": [clinic_ids[0]],
            },
        )
        partner = created.json()
        receiver.secrets = [partner["secret"]]
        client = Client(scheduler_events, clinic_ids[0])
        await client.publish(1)
        await until(lambda: sum(r.answered == 500 for r in receiver.received) >= 2, "retries")
        await client.publish(2)
        await asyncio.sleep(0.5)
        assert client.events[2] not in {r.webhook_id for r in receiver.received}, "2 overtook 1"

        async def dead() -> list[Any]:
            got = await webhooks.get(f"/partners/{partner['id']}/dead-letters", headers=ADMIN)
            return list(got.json())

        await until(dead, "event 1 dead-lettered", 15)
        [letter] = await dead()
        assert letter["event"]["id"] == client.events[1]
        assert "HTTP 500" in letter["reason"]
        receiver.mode = "ok"
        await until(lambda: client.events[2] in delivered_ids(receiver), "event 2 delivered")
        assert client.events[1] not in delivered_ids(receiver)
