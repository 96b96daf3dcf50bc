"""kapctl against real Kafka: lag, dead letters and their replay, timelines, clinics."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from chassis.kafka import apply_topics
from ops import kapctl
from shared import topics
from tests.helpers import topic_messages

pytestmark = pytest.mark.integration
TOPIC = topics.SESSION_MISSED.name


async def dead_letter(bootstrap: str, key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        headers = [
            ("ce_id", b"poison-1"),
            ("kap_dlq_error", b"invalid payload: appointment_id: Field required"),
            ("kap_dlq_service", b"notifier"),
            ("kap_dlq_attempts", b"1"),
            ("kap_dlq_topic", TOPIC.encode()),
            ("kap_dlq_partition", b"0"),
            ("kap_dlq_offset", b"42"),
        ]
        await producer.send_and_wait(
            TOPIC + ".dlq", b'{"broken": true}', key=key.encode(), headers=headers
        )
    finally:
        await producer.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = kapctl.main(list(argv))
    return code, capsys.readouterr().out


async def test_dead_letters_are_listed_with_their_reason_and_replayed_to_their_topic(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await apply_topics(kafka_bootstrap)
    key = str(uuid.uuid4())
    await dead_letter(kafka_bootstrap, key)

    code, out = await asyncio.to_thread(
        run,
        capsys,
        "--bootstrap",
        kafka_bootstrap,
        "dlq",
        "list",
        "--topic",
        TOPIC,
        "--limit",
        "100000",
    )
    assert code == 0
    listed = [json.loads(line) for line in out.splitlines() if key in line]
    assert listed[0]["error"] == "invalid payload: appointment_id: Field required"
    assert listed[0]["from"] == f"{TOPIC}[0]@42"

    code, out = await asyncio.to_thread(
        run,
        capsys,
        "--bootstrap",
        kafka_bootstrap,
        "dlq",
        "replay",
        "--topic",
        TOPIC,
        "--client",
        key,
    )
    assert code == 0
    assert "replayed 1 dead letter" in out
    [back] = await topic_messages(kafka_bootstrap, TOPIC, key=key)
    assert back["value"] == {"broken": True}
    assert back["headers"]["ce_id"] == "poison-1"
    assert not any(name.startswith("kap_dlq_") for name in back["headers"])


async def test_lag_shows_what_a_group_has_not_consumed(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await apply_topics(kafka_bootstrap)
    group = f"lag-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        await asyncio.wait_for(_assigned(consumer), 30)
        await consumer.commit()  # the group's position: the end, now
    finally:
        await consumer.stop()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for _ in range(3):
            await producer.send_and_wait(TOPIC, b"{}", key=b"same-partition")
    finally:
        await producer.stop()
    code, out = await asyncio.to_thread(
        run, capsys, "--bootstrap", kafka_bootstrap, "lag", "--group", group, "--json"
    )
    assert code == 0
    lags = json.loads(out)
    assert sum(entry["lag"] for entry in lags) == 3


async def _assigned(consumer: AIOKafkaConsumer) -> None:
    while not consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no assignment event
        await asyncio.sleep(0.1)
    for tp in consumer.assignment():
        await consumer.position(tp)


def test_a_clinic_is_added_and_updated_without_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clinics = tmp_path / "clinics.json"
    code, out = run(
        capsys,
        "clinics",
        "upsert",
        "porto",
        "--name",
        "Porto KAP",
        "--timezone",
        "Europe/Lisbon",
        "--api-key",
        "s3cret",
        "--file",
        str(clinics),
    )
    assert code == 0
    assert "added" in out
    code, out = run(
        capsys,
        "clinics",
        "upsert",
        "porto",
        "--staff-email",
        "team@porto.example",
        "--file",
        str(clinics),
    )
    assert "updated" in out
    [entry] = json.loads(clinics.read_text())
    assert entry["staff_email"] == "team@porto.example"
    assert "s3cret" not in clinics.read_text()
    assert (
        run(
            capsys,
            "clinics",
            "upsert",
            "faro",
            "--name",
            "Faro",
            "--timezone",
            "Mars/Base",
            "--api-key",
            "k",
            "--file",
            str(clinics),
        )[0]
        != 0
    )


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--help"],
        ["dlq", "--help"],
        ["dlq", "replay", "--help"],
        ["lag", "--help"],
        ["clinics", "upsert", "--help"],
        ["outcomes", "--help"],
    ):
        with pytest.raises(SystemExit) as done:
            kapctl.main(argv)
        assert done.value.code == 0
        assert "usage: kapctl" in capsys.readouterr().out


async def test_export_writes_a_clients_whole_history_from_the_topics_in_order(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    await apply_topics(kafka_bootstrap)
    client, other = str(uuid.uuid4()), str(uuid.uuid4())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key in [
            (topics.CONSULTATION_REQUESTED.name, client),
            (topics.CONSULTATION_BOOKED.name, other),
            (topics.CONSULTATION_BOOKED.name, client),
            (topics.SESSION_MISSED.name, client),
        ]:
            value = json.dumps({"client_id": key, "topic": topic}).encode()
            await producer.send_and_wait(
                topic, value, key=key.encode(), headers=[("ce_clinicid", b"lisbon")]
            )
    finally:
        await producer.stop()
    await dead_letter(kafka_bootstrap, client)
    out = tmp_path / "history.json"

    code, printed = await asyncio.to_thread(
        run, capsys, "--bootstrap", kafka_bootstrap, "export", client, "--out", str(out)
    )

    assert code == 0
    assert "4 event(s)" in printed
    history = json.loads(out.read_text())
    assert history["client_id"] == client
    assert [e["topic"] for e in history["events"]] == [
        topics.CONSULTATION_REQUESTED.name,
        topics.CONSULTATION_BOOKED.name,
        topics.SESSION_MISSED.name,
        TOPIC + ".dlq",  # what a service refused is part of the record too
    ]
    assert history["events"][0]["value"] == {
        "client_id": client,
        "topic": topics.CONSULTATION_REQUESTED.name,
    }
    assert history["events"][0]["headers"] == {"ce_clinicid": "lisbon"}
    assert history["events"][-1]["value"] == {"broken": True}
