"""The front door during an outage, over plain HTTP against a real intake process.

Kafka is stopped, then Redis: every request (with and without an
Idempotency-Key) gets 503 with Retry-After within intake's own timeout, and
nothing of it is recorded or published later. After recovery the keyed
requests are retried: exactly those are on the topic, once each, and exactly
those are in intake's Redis store.

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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from ops.stack import Process, free_port
from tests import infra
from tests.helpers import auth, write_clinics

pytestmark = pytest.mark.integration

TOPIC = "intake.consultation.requested.v1"
OUTAGE_LOCK = Path("/tmp/kap-outage.lock")
STALE_LOCK_S = 900.0  # no outage or stack run holds it this long
TIMEOUT_S = 3.0  # intake's own Kafka timeout in this test (KAFKA_REQUEST_TIMEOUT_MS)
ANSWER_WITHIN_S = TIMEOUT_S + 2.0  # its deadline, plus HTTP and scheduling slack
LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


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
    """Every event on the topic after `start` whose contact carries `marker`."""
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


async def test_outage_answers_503_in_time_and_only_retried_requests_land_once(
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
    }
    intake = Process(
        "intake-outage",
        [str(Path(sys.executable).parent / "kap-intake")],
        env,
        tmp_path / "intake.log",
        http_port=port,
    )
    url = f"http://127.0.0.1:{port}/v1/clinics/lisbon/consultation-requests"

    def body(name: str) -> dict[str, Any]:
        return {"name": "Ada Example", "email": f"{name}.{unique}@example.org"}

    async def post(
        http: httpx.AsyncClient, name: str, key: str | None
    ) -> tuple[httpx.Response, float]:
        headers = {**auth("lisbon"), **({"Idempotency-Key": f"{name}-{unique}"} if key else {})}
        sent = time.monotonic()
        response = await http.post(url, json=body(name), headers=headers)
        return response, time.monotonic() - sent

    keyed = ["kafka-down-1", "kafka-down-2", "kafka-down-3", "redis-down-1"]
    unkeyed = ["kafka-down-nokey", "redis-down-nokey"]
    with outage_lock():
        before = await end_offsets(LOCAL_KAFKA)
        intake.start()
        try:
            await asyncio.to_thread(intake.wait_ready)
            # A generous client timeout: a hanging request is measured, not cut short.
            async with httpx.AsyncClient(timeout=ANSWER_WITHIN_S + 10) as http:
                # Warm the producer, so the outage meets a connected service.
                warm, _ = await post(http, "warm", key="yes")
                assert warm.status_code == 202, warm.text
                keyed.append("warm")

                refused: dict[str, tuple[int, str | None, float]] = {}
                with stopped("kafka.sh"):
                    answers = await asyncio.gather(
                        post(http, "kafka-down-1", key="yes"),
                        post(http, "kafka-down-2", key="yes"),
                        post(http, "kafka-down-nokey", key=None),
                        return_exceptions=True,
                    )
                    for name, answer in zip(
                        ["kafka-down-1", "kafka-down-2", "kafka-down-nokey"], answers, strict=True
                    ):
                        assert not isinstance(answer, BaseException), f"{name}: {answer!r}"
                        response, took = answer
                        refused[name] = (
                            response.status_code,
                            response.headers.get("Retry-After"),
                            took,
                        )
                    # One more after those failed: it meets the producer they left.
                    response, took = await post(http, "kafka-down-3", key="yes")
                    refused["kafka-down-3"] = (
                        response.status_code,
                        response.headers.get("Retry-After"),
                        took,
                    )
                    # Outlive the producer's own retries while the broker is still away.
                    await asyncio.sleep(1.0)
                with stopped("redis.sh"):
                    for name in ["redis-down-1", "redis-down-nokey"]:
                        response, took = await post(
                            http, name, key="yes" if name in keyed else None
                        )
                        refused[name] = (
                            response.status_code,
                            response.headers.get("Retry-After"),
                            took,
                        )
                for name, (status, retry_after, took) in refused.items():
                    print(f"outage: {name} answered {status} in {took:.2f} s")
                    assert status == 503, f"{name}: {status}"
                    assert retry_after, f"{name}: no Retry-After"
                    assert took < ANSWER_WITHIN_S, f"{name}: answered after {took:.1f} s"

                # Give a batch that survived the refusal the chance to go out after all.
                await asyncio.to_thread(intake.wait_ready)
                await asyncio.sleep(2.0)

                client_ids: dict[str, str] = {}
                for name in keyed:
                    deadline = time.monotonic() + 20
                    while True:
                        response, _ = await post(http, name, key="yes")
                        if response.status_code != 503 or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.5)
                    assert response.status_code == 202, f"{name}: {response.text}"
                    client_ids[name] = response.json()["client_id"]
        finally:
            intake.stop()

    # The topic holds exactly the accepted requests, once each, with distinct ids.
    events = await published_since(LOCAL_KAFKA, before, unique)
    emails = sorted(e["value"]["contact"]["email"] for e in events)
    assert emails == sorted(body(name)["email"] for name in keyed)
    assert len({e["id"] for e in events}) == len(keyed)
    by_email = {e["value"]["contact"]["email"]: e["value"]["client_id"] for e in events}
    for name, client_id in client_ids.items():
        assert by_email[body(name)["email"]] == client_id

    # Intake's store holds exactly those: contact index, record, idempotency key.
    redis = Redis.from_url(LOCAL_REDIS, decode_responses=True)
    try:
        for name in keyed:
            email = body(name)["email"]
            assert (
                await redis.get(f"intake:{{lisbon}}:contact:{_digest(email)}") == client_ids[name]
            )
            assert await redis.exists(f"intake:{{lisbon}}:client:{client_ids[name]}") == 1
            idem = _digest(f"{name}-{unique}")
            assert await redis.exists(f"intake:{{lisbon}}:idempotency:{idem}") == 1
        for name in unkeyed:
            email = body(name)["email"]
            assert await redis.exists(f"intake:{{lisbon}}:contact:{_digest(email)}") == 0
    finally:
        await redis.aclose()
    # Kept short: stopping the shared broker and Redis holds up everyone else.
    print(f"outage: the whole test took {time.monotonic() - started:.1f} s")
    assert time.monotonic() - started < 90
