"""One notifier for the whole package (a consumer group join costs seconds), real Kafka,
Redis, SMTP server and SMS provider; each test brings its own clinic and contacts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import apply_topics, make_broker
from ops import sms_sink
from ops.sms_sink import SmsSink
from services.notifier.config import Settings
from services.notifier.main import create_app
from shared import topics
from tests.helpers import serving
from tests.integration.notifier.support import (
    ClinicsFile,
    ClinicUnderTest,
    Inputs,
    Mailbox,
    ManualClock,
    OwnClinic,
    Rig,
    SlowMaildir,
    SlowMailServer,
    at,
    caught_up,
    free_port,
    write_own_clinic,
)


@pytest.fixture(scope="package")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    box = Mailbox(tmp_path_factory.mktemp("mail"))
    box.start()
    yield box
    box.stop()


@pytest.fixture(scope="package")
def sms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmsSink]:
    sink = sms_sink.start("127.0.0.1", 0, tmp_path_factory.mktemp("sms") / "sms.jsonl")
    yield sink
    sink.stop()


@pytest.fixture(scope="package")
def clinics_file(tmp_path_factory: pytest.TempPathFactory) -> ClinicsFile:
    return ClinicsFile(tmp_path_factory.mktemp("config") / "clinics.json")


@pytest.fixture(scope="package")
def clock() -> ManualClock:
    return ManualClock(at("2026-03-23T10:00+00:00"))


@pytest.fixture(scope="package")
def notifier_settings(
    kafka_bootstrap: str, redis_url: str, clinics_file: ClinicsFile, mailbox: Mailbox, sms: SmsSink
) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=clinics_file.path,
        KAP_SMTP_PORT=mailbox.port,
        KAP_SMS_API_URL=sms.url,
        KAP_DELIVERY_POLL_MS=50,
        # Buckets of a replica a test stopped are taken over within a second, not five.
        KAP_DUE_LEASE_MS=600,
    )


@pytest.fixture(scope="package")
async def notifier(
    notifier_settings: Settings, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(notifier_settings, clock)
    async with serving(app) as client:
        await caught_up(notifier_settings.kafka_bootstrap_servers, app.state.runtime.broker)
        yield client


@pytest.fixture(scope="package")
async def inputs(kafka_bootstrap: str) -> AsyncIterator[Inputs]:
    await apply_topics(kafka_bootstrap)
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "tests")
    inputs = Inputs(broker)
    await broker.start()
    yield inputs
    await broker.stop()


@pytest.fixture
async def notifier_publisher(kafka_bootstrap: str) -> AsyncIterator[EventPublisher]:
    """Publishes as the notifier does, for a test that runs a delivery of its own."""
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "tests-notifier")
    publisher = EventPublisher(broker, "notifier", topics.produced_by("notifier"))
    await broker.start()
    yield publisher
    await broker.stop()


@pytest.fixture
def slow_mail_server(tmp_path: Path) -> Iterator[Callable[[float], SlowMailServer]]:
    """Starts a mail server that takes `delay_s` over every message; all stop after the test."""
    controllers: list[Controller] = []

    def start(delay_s: float) -> SlowMailServer:
        server = SlowMailServer(free_port(), tmp_path / f"mail-{len(controllers)}")
        controller = Controller(
            SlowMaildir(server.maildir, delay_s), hostname="127.0.0.1", port=server.port
        )
        controller.start()
        controllers.append(controller)
        return server

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def own_clinic(tmp_path: Path, unique: str) -> OwnClinic:
    """A clinic for a test's own delivery, in a clinics file the package notifier never reads."""
    clinic_id = f"c-{unique}"
    return OwnClinic(clinic_id, write_own_clinic(tmp_path, clinic_id, unique))


@pytest.fixture
def clinic_spec(request: pytest.FixtureRequest) -> dict[str, object]:
    """The test's clinic: Lisbon with defaults, or what the test parametrises indirectly."""
    spec: dict[str, object] = getattr(request, "param", {})
    return {"timezone": "Europe/Lisbon", "sections": {}, **spec}


@pytest.fixture
def clinic(
    clinics_file: ClinicsFile, clinic_spec: dict[str, object], unique: str
) -> Iterator[ClinicUnderTest]:
    """A clinic of this test's own, so leftovers of other tests are never sent with it."""
    made = ClinicUnderTest(
        id=f"c-{unique}",
        name=f"Clinic {unique}",
        timezone=str(clinic_spec["timezone"]),
        key=f"key-{unique}",
    )
    clinics_file.add(
        made.id,
        {
            "name": made.name,
            "timezone": made.timezone,
            "key": made.key,
            "sections": clinic_spec.get("sections", {}),
        },
    )
    yield made
    clinics_file.remove(made.id)


@pytest.fixture
def rig(
    notifier: httpx.AsyncClient,
    clock: ManualClock,
    mailbox: Mailbox,
    sms: SmsSink,
    inputs: Inputs,
    redis_client: Redis,
    kafka_bootstrap: str,
    clinic: ClinicUnderTest,
    unique: str,
) -> Rig:
    return Rig(
        clock=clock,
        mailbox=mailbox,
        sms=sms,
        inputs=inputs,
        redis=redis_client,
        http=notifier,
        kafka=kafka_bootstrap,
        clinic=clinic,
        unique=unique,
    )
