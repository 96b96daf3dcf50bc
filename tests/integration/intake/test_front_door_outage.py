"""The front door during an outage, over plain HTTP against a real intake process.

While Kafka is stopped, every request (with and without an Idempotency-Key) is
accepted (202) within intake's own timeout: its state and its event are recorded
in Redis (the event in the outbox), and a retry with the same key gets the same
answer. Once Kafka is back the outbox relay publishes them: read back from the
topic, every accepted request's event is there exactly once, and a retry after
that publishes nothing more. While Redis is stopped requests get 503 with
Retry-After and nothing of them is recorded or published; a keyed retry after
recovery lands once.

Stopping the shared broker and Redis disturbs anyone else's tests: the run
takes /tmp/kap-outage.lock (holding its start time) and waits while another
run holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from ops.stack import Process, free_port
from shared.envelope import derived_event_id
from tests import infra
from tests.helpers import auth, write_clinics

pytestmark = pytest.mark.integration

TOPIC = "intake.consultation.requested.v1"
OUTAGE_LOCK = Path("/tmp/kap-outage.lock")
STALE_LOCK_S = 900.0  # no outage or stack run holds it this long
TIMEOUT_S = 3.0  # intake's own Kafka timeout in this test (KAFKA_REQUEST_TIMEOUT_MS)
ANSWER_WITHIN_S = TIMEOUT_S + 2.0  # its deadline, plus HTTP and scheduling slack
RELAY_GRACE_MS = 1000  # the relay takes an event this old for left to it
PUBLISHED_WITHIN_S = 30.0  # of Kafka's return: the relay's rounds and its restart backoff
LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
OUTBOX = "intake:{lisbon}:outbox"


@contextlib.contextmanager
def outage_lock(wait_s: float = 300.0) -> Iterator[None]:
    """Only one outage at a time on this machine; the file holds our start time."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(OUTAGE_LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - OUTAGE_LOCK.stat().st_mtime > STALE_LOCK_S:
                    OUTAGE_LOCK.unlink()  # left by a run that was killed: nobody holds it
                    continue
            if time.monotonic() > deadline:
                pytest.fail(f"{OUTAGE_LOCK} still held after {wait_s:.0f} s")
            time.sleep(1.0)
            continue
        with os.fdopen(fd, "w") as lock:
            lock.write(f"{datetime.now(UTC).isoformat()} {sys.argv[0]} pid {os.getpid()}\n")
        break
    try:
        yield
    finally:
        OUTAGE_LOCK.unlink(missing_ok=True)


@contextlib.contextmanager
def stopped(script: str) -> Iterator[None]:
    infra.restart_local(script, "down")
    try:
        yield
    finally:
        infra.restart_local(script, "up")


async def end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC) or ()]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def published_since(
    bootstrap: str, start: dict[TopicPartition, int], marker: str
) -> list[dict[str, Any]]:
    """Every copy on the topic after `start` of an event whose contact carries `marker`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(start))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all([await consumer.position(tp) >= ends[tp] for tp in start]):
                break
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    value = json.loads(record.value)
                    if marker in value.get("contact", {}).get("email", ""):
                        headers = {k: v.decode() for k, v in record.headers}
                        found.append({"value": value, "id": headers.get("ce_id")})
        return found
    finally:
        await consumer.stop()


def _digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


@pytest.fixture
def local_infra(kafka_bootstrap: str, redis_url: str) -> None:
    if kafka_bootstrap != LOCAL_KAFKA or redis_url != LOCAL_REDIS:
        pytest.skip("stops the broker and Redis: only done to the project's own local ones")
    if "running" not in _status("kafka.sh") or "running" not in _status("redis.sh"):
        pytest.skip("Kafka or Redis is not the project's local process (infra/*.sh)")


def _status(script: str) -> str:
    result = subprocess.run(
        ["bash", str(infra.ROOT / "infra" / script), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout


async def copies_once_published(
    start: dict[TopicPartition, int], marker: str, emails: set[str]
) -> Counter[str]:
    """How many copies of each event carrying `marker` the topic holds, read again until
    every one of `emails` is there (or PUBLISHED_WITHIN_S passed)."""
    deadline = time.monotonic() + PUBLISHED_WITHIN_S
    while True:
        events = await published_since(LOCAL_KAFKA, start, marker)
        copies = Counter(e["value"]["contact"]["email"] for e in events)
        if emails <= set(copies) or time.monotonic() > deadline:
            return copies
        await asyncio.sleep(1.0)


async def test_a_kafka_outage_is_accepted_and_published_once_when_kafka_returns(
    local_infra: None, tmp_path: Path, unique: str
) -> None:
    started = time.monotonic()
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": LOCAL_KAFKA,
        "REDIS_URL": LOCAL_REDIS,
        "KAP_CLINICS_FILE": str(write_clinics(tmp_path / "clinics.json")),
        "KAP_HTTP_PORT": str(port),
        "KAFKA_REQUEST_TIMEOUT_MS": str(int(TIMEOUT_S * 1000)),
        "KAP_RELAY_GRACE_MS": str(RELAY_GRACE_MS),
    }
    intake = Process(
        "intake-outage",
        [str(Path(sys.executable).parent / "kap-intake")],
        env,
        tmp_path / "intake.log",
        http_port=port,
    )
    url = f"http://127.0.0.1:{port}/v1/clinics/lisbon/consultation-requests"

    def email(name: str) -> str:
        return f"{name}.{unique}@example.org"

    def key(name: str) -> str | None:
        return None if name.endswith("nokey") else f"{name}-{unique}"

    async def post(http: httpx.AsyncClient, name: str) -> tuple[httpx.Response, float]:
        headers = {**auth("lisbon"), **({"Idempotency-Key": k} if (k := key(name)) else {})}
        sent = time.monotonic()
        response = await http.post(url, json={"name": "Ada", "email": email(name)}, headers=headers)
        return response, time.monotonic() - sent

    def answered_in_time(name: str, status: int, answer: tuple[httpx.Response, float]) -> None:
        response, took = answer
        print(f"outage: {name} answered {response.status_code} in {took:.2f} s")
        assert response.status_code == status, f"{name}: {response.text}"
        assert took < ANSWER_WITHIN_S, f"{name}: answered after {took:.1f} s"

    down = ["kafka-down-1", "kafka-down-2", "kafka-down-nokey"]
    accepted: dict[str, str] = {}  # name: the client id answered
    # One connection per phase: Redis is restarted in between.
    redis = Redis.from_url(LOCAL_REDIS, decode_responses=True)
    with outage_lock():
        before = await end_offsets(LOCAL_KAFKA)
        intake.start()
        try:
            await asyncio.to_thread(intake.wait_ready)
            # A generous client timeout: a hanging request is measured, not cut short.
            async with httpx.AsyncClient(timeout=ANSWER_WITHIN_S + 10) as http:
                # Warm the producer, so the outage meets a connected service.
                warm, _ = await post(http, "warm")
                assert warm.status_code == 202, warm.text
                accepted["warm"] = warm.json()["client_id"]

                with stopped("kafka.sh"):
                    answers = await asyncio.gather(*(post(http, name) for name in down))
                    # One more after those: it meets the producer they left behind.
                    down.append("kafka-down-3")
                    answers.append(await post(http, "kafka-down-3"))
                    for name, answer in zip(down, answers, strict=True):
                        answered_in_time(name, 202, answer)
                        accepted[name] = answer[0].json()["client_id"]
                    # The same key and body again: the same answer, still in time.
                    again = await post(http, "kafka-down-1")
                    answered_in_time("kafka-down-1 again", 202, again)
                    assert again[0].json() == answers[0][0].json()

                    # Recorded, not yet published: state, answer and event wait in Redis.
                    for name in down:
                        contact = f"intake:{{lisbon}}:contact:{_digest(email(name))}"
                        assert await redis.get(contact) == accepted[name]
                        assert await redis.exists(f"intake:{{lisbon}}:client:{accepted[name]}")
                        if k := key(name):
                            idem = f"intake:{{lisbon}}:idempotency:{_digest(k)}"
                            assert await redis.exists(idem) == 1
                            event_id = derived_event_id(f"lisbon/{k}", "ConsultationRequested")
                            assert await redis.hexists(OUTBOX, event_id)

                # Kafka is back: the relay publishes what waited, with no request retried.
                copies = await copies_once_published(before, unique, {email(n) for n in down})
                assert copies == Counter({email(n): 1 for n in accepted}), copies

                await redis.aclose()

                # A retry now answers the first answer and publishes nothing more.
                late = await post(http, "kafka-down-2")
                answered_in_time("kafka-down-2 after", 202, late)
                assert late[0].json()["client_id"] == accepted["kafka-down-2"]

                # Redis away: refused in time, nothing recorded, nothing published later.
                with stopped("redis.sh"):
                    for name in ["redis-down-1", "redis-down-nokey"]:
                        answer = await post(http, name)
                        answered_in_time(name, 503, answer)
                        assert answer[0].headers.get("Retry-After"), f"{name}: no Retry-After"
                await asyncio.to_thread(intake.wait_ready)
                deadline = time.monotonic() + 20
                while True:
                    response, _ = await post(http, "redis-down-1")
                    if response.status_code != 503 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                assert response.status_code == 202, response.text
                accepted["redis-down-1"] = response.json()["client_id"]
        finally:
            intake.stop()

    redis = Redis.from_url(LOCAL_REDIS, decode_responses=True)
    try:
        # The topic holds exactly the accepted requests, once each, for the client answered.
        events = await published_since(LOCAL_KAFKA, before, unique)
        copies = Counter(e["value"]["contact"]["email"] for e in events)
        assert copies == Counter({email(name): 1 for name in accepted}), copies
        assert len({e["id"] for e in events}) == len(accepted)
        by_email = {e["value"]["contact"]["email"]: e["value"]["client_id"] for e in events}
        assert by_email == {email(name): client for name, client in accepted.items()}
        # Nothing of ours left in the outbox; the refused request is nowhere in the store.
        for name in accepted:
            if k := key(name):
                event_id = derived_event_id(f"lisbon/{k}", "ConsultationRequested")
                assert not await redis.hexists(OUTBOX, event_id)
        refused = f"intake:{{lisbon}}:contact:{_digest(email('redis-down-nokey'))}"
        assert await redis.exists(refused) == 0
    finally:
        await redis.aclose()
    # Kept short: stopping the shared broker and Redis holds up everyone else.
    print(f"outage: the whole test took {time.monotonic() - started:.1f} s")
    assert time.monotonic() - started < 60
