"""Garbage on every consumed topic ends in its dead-letter topic, with the reason,
and the service goes on consuming."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI

from chassis.config import ServiceSettings
from services.notifier.config import Settings as NotifierSettings
from services.notifier.main import create_app as notifier_app
from services.scheduler.config import Settings as SchedulerSettings
from services.scheduler.main import create_app as scheduler_app
from shared.envelope import Envelope
from tests.helpers import serving, write_clinics

pytestmark = pytest.mark.integration

APPS: dict[str, tuple[type[ServiceSettings], Callable[..., FastAPI]]] = {
    "scheduler": (SchedulerSettings, scheduler_app),
    "notifier": (NotifierSettings, notifier_app),
}


def envelope_headers(
    topic: str, key: str, event_type: str | None = None
) -> list[tuple[str, bytes]]:
    return Envelope(
        id=str(uuid.uuid4()),
        source="/tests",
        type=event_type or f"kap.{topic}",
        time=datetime.now(UTC),
        subject=key,
        clinic_id="lisbon",
        correlation_id=str(uuid.uuid4()),
    ).to_headers()


def garbage(topic: str, key: str) -> dict[str, tuple[bytes, list[tuple[str, bytes]]]]:
    valid_headers = envelope_headers(topic, key)
    plausible = json.dumps(
        {"clinic_id": "lisbon", "client_id": key, "occurred_at": datetime.now(UTC).isoformat()}
    ).encode()
    return {
        "malformed JSON": (b'{"clinic_id": "lisbon", ', valid_headers),
        "wrong types": (
            json.dumps({"clinic_id": 7, "client_id": "nope", "occurred_at": "yesterday"}).encode(),
            valid_headers,
        ),
        "unknown event type": (plausible, envelope_headers(topic, key, "kap.martian.landed.v1")),
        "missing envelope": (plausible, [("content-type", b"application/json")]),
        "huge payload": (json.dumps({"blob": "x" * 900_000}).encode(), valid_headers),
        "random bytes": (os.urandom(512), valid_headers),
    }


@pytest.fixture
async def running(
    request: pytest.FixtureRequest, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, FastAPI, httpx.AsyncClient]]:
    service = request.param
    settings_type, create_app = APPS[service]
    settings = settings_type(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=write_clinics(tmp_path / "clinics.json"),
    )
    app = create_app(settings)
    async with serving(app) as client:
        yield service, app, client


def consumed_topics(app: FastAPI) -> list[str]:
    broker = app.state.runtime.broker
    return sorted(
        {
            str(getattr(t, "name", t))
            for sub in broker.subscribers
            for t in getattr(sub, "topics", ())
        }
    )


@pytest.mark.parametrize("running", sorted(APPS), indirect=True)
async def test_every_kind_of_garbage_on_every_consumed_topic_is_dead_lettered(
    running: tuple[str, FastAPI, httpx.AsyncClient], kafka_bootstrap: str
) -> None:
    service, app, client = running
    topics = consumed_topics(app)
    assert topics, f"{service} consumes nothing?"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=2_000_000
    )
    await producer.start()
    sent: dict[str, list[str]] = {}
    try:
        for topic in topics:
            key = str(uuid.uuid4())
            kinds = garbage(topic, key)
            for value, headers in kinds.values():
                await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
            sent[topic] = [key, *kinds]
    finally:
        await producer.stop()

    for topic, (key, *kinds) in sent.items():
        dead = await topic_messages_raw(kafka_bootstrap, f"{topic}.dlq", key, service, len(kinds))
        # At least once: a rebalance may dead-letter a message twice; count originals.
        originals = {(h["kap_dlq_partition"], h["kap_dlq_offset"]) for h in dead}
        assert len(originals) == len(kinds), (
            f"{service} on {topic}: {sorted(h['kap_dlq_error_type'] for h in dead)}"
        )
        for headers in dead:
            assert headers["kap_dlq_service"] == service
            assert headers["kap_dlq_topic"] == topic
            assert headers["kap_dlq_error"]
    health = await client.get("/readyz")
    assert health.status_code == 200
    metrics = (await client.get("/metrics")).text
    assert "kap_dead_letters_total" in metrics


async def topic_messages_raw(
    bootstrap: str, topic: str, key: str, service: str, expect: int
) -> list[dict[str, Any]]:
    """Headers of the dead letters for one key (their bodies need not be JSON)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + 30

        def originals() -> int:
            return len({(h["kap_dlq_partition"], h["kap_dlq_offset"]) for h in found})

        while originals() < expect and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                headers = [
                    {k: v.decode() for k, v in r.headers} for r in records if r.key == key.encode()
                ]
                # Other services reading the same topic dead-letter their own copies.
                found += [h for h in headers if h.get("kap_dlq_service") == service]
        return found
    finally:
        await consumer.stop()
