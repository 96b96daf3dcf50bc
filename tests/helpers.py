"""What the integration tests share: clinics, running apps, reading topics back."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from chassis.clinics import hash_api_key
from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import make_broker
from shared import events as ev
from shared.topics import PUBLIC_STAGE_REACHED

CLINICS = {
    "lisbon": {"name": "Lisbon KAP", "timezone": "Europe/Lisbon", "key": "lisbon-key-123"},
    "boston": {"name": "Boston KAP", "timezone": "America/New_York", "key": "boston-key-456"},
}


def write_clinics(path: Path, clinics: dict[str, dict[str, Any]] = CLINICS) -> Path:
    entries = [
        {
            "id": clinic_id,
            "name": spec["name"],
            "timezone": spec["timezone"],
            "api_key_sha256": hash_api_key(spec["key"]),
            "staff_email": f"staff@{clinic_id}.example",
            **spec.get("sections", {}),
        }
        for clinic_id, spec in clinics.items()
    ]
    path.write_text(json.dumps(entries))
    return path


def auth(clinic_id: str) -> dict[str, str]:
    return {"X-API-Key": CLINICS[clinic_id]["key"]}


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run (broker started), and an HTTP client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def topic_messages(
    bootstrap: str, topic: str, *, key: str | None = None, wait_s: float = 10.0, expect: int = 1
) -> list[dict[str, Any]]:
    """Every message on `topic` (for one key if given), read from the start.

    Reads until `expect` messages were found and the end of every partition was
    reached, or for at most `wait_s` seconds; the caller asserts on what came back.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if key is None or (record.key or b"").decode() == key:
                        found.append(
                            {
                                "key": (record.key or b"").decode(),
                                "partition": record.partition,
                                "value": json.loads(record.value),
                                "headers": {k: v.decode() for k, v in record.headers},
                            }
                        )
            if len(found) >= expect:
                ends = await consumer.end_offsets(partitions)
                if all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                    break
        return found
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """examples/<name>.py, loaded from its file as a partner runs it (not a package of ours)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_partner_example() -> ModuleType:
    return load_example("partner_consumer")


async def publish_stage_reached(settings: ServiceSettings) -> uuid.UUID:
    """One public ClientStageReached, published as the scheduler; its client's id."""
    broker = make_broker(settings, "scheduler")
    publisher = EventPublisher(broker, "scheduler", [PUBLIC_STAGE_REACHED])
    event = ev.ClientStageReached(
        clinic_id="lisbon",
        client_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        stage=ev.ClientStage.COURSE_BOOKED,
    )
    await broker.start()
    try:
        await publisher.publish(event, publisher.envelope_for(event))
    finally:
        await broker.stop()
    return event.client_id


async def partner_reads(
    client_id: uuid.UUID, bootstrap: str, group: str, **login: str
) -> dict[str, Any]:
    """The first public event about this client the example partner receives (30 s).

    Replayed from a minute ago, not from the beginning: a shared broker's public
    topics may hold far more than can be read and validated in 30 s (make bench).
    """
    since = datetime.now(UTC) - timedelta(minutes=1)
    stream = load_partner_example().public_events(bootstrap, group, since=since, **login)

    async def first_of_ours() -> dict[str, Any]:
        async for received in stream:
            if received["data"]["client_id"] == str(client_id):
                return dict(received)
        raise AssertionError("stream ended")

    try:
        return await asyncio.wait_for(first_of_ours(), timeout=30)
    finally:
        await stream.aclose()
