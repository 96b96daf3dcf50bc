"""A partner reads the public topics with plain aiokafka and the published schemas."""

from __future__ import annotations

import sys

import pytest

from chassis.config import ServiceSettings
from chassis.kafka import apply_topics
from shared.topics import PUBLIC_STAGE_REACHED
from tests.helpers import (
    EXAMPLES,
    load_partner_example,
    partner_reads,
    publish_stage_reached,
)

pytestmark = pytest.mark.integration


def test_the_partner_example_imports_nothing_from_the_project() -> None:
    before = set(sys.modules)
    load_partner_example()
    leaked = {m for m in set(sys.modules) - before if m.split(".")[0] in ("shared", "chassis")}
    assert not leaked
    source = (EXAMPLES / "partner_consumer.py").read_text()
    assert "from shared" not in source
    assert "from chassis" not in source


async def test_partner_receives_a_validated_public_event(kafka_bootstrap: str, unique: str) -> None:
    await apply_topics(kafka_bootstrap)
    settings = ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap)
    client_id = await publish_stage_reached(settings)

    received = await partner_reads(client_id, kafka_bootstrap, f"partner-{unique}")
    assert received["topic"] == PUBLIC_STAGE_REACHED.name
    assert received["clinic"] == "lisbon"
    assert received["data"]["stage"] == "course_booked"
