"""A partner reads the public topics with plain aiokafka and the published schemas."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import apply_topics, make_broker
from shared import events as ev
from shared.topics import PUBLIC_STAGE_REACHED

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "partner_consumer.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("partner_consumer", EXAMPLE)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_partner_example_imports_nothing_from_the_project() -> None:
    before = set(sys.modules)
    load_example()
    leaked = {m for m in set(sys.modules) - before if m.split(".")[0] in ("shared", "chassis")}
    assert not leaked
    source = EXAMPLE.read_text()
    assert "from shared" not in source
    assert "from chassis" not in source


async def test_partner_receives_a_validated_public_event(kafka_bootstrap: str, unique: str) -> None:
    await apply_topics(kafka_bootstrap)
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "scheduler")
    publisher = EventPublisher(broker, "scheduler", [PUBLIC_STAGE_REACHED])
    client_id = uuid.uuid4()
    event = ev.ClientStageReached(
        clinic_id="lisbon",
        client_id=client_id,
        occurred_at=datetime.now(UTC),
        stage=ev.ClientStage.COURSE_BOOKED,
    )
    await broker.start()
    try:
        await publisher.publish(event, publisher.envelope_for(event))
    finally:
        await broker.stop()

    partner = load_example()

    async def first_of_ours() -> dict[str, object]:
        stream = partner.public_events(kafka_bootstrap, f"partner-{unique}", from_beginning=True)
        async for received in stream:
            if received["data"]["client_id"] == str(client_id):
                await stream.aclose()
                return dict(received)
        raise AssertionError("stream ended")

    received = await asyncio.wait_for(first_of_ours(), timeout=30)
    assert received["topic"] == PUBLIC_STAGE_REACHED.name
    assert received["clinic"] == "lisbon"
    assert received["data"]["stage"] == "course_booked"
