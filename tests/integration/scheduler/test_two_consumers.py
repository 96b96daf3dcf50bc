"""Two processes consume the same partitions at once; nothing is applied twice.

Each scheduler process has a consumer group of its own, so both handle every
event of the run, concurrently, against the same Redis: the situation of a
zombie consumer after a rebalance, made permanent. Counted from the topics:
each client has exactly one consultation booked and one course booked (every
copy of an event that appears twice carries the same id and the same content),
and no therapist, room or client holds two appointments at once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from chassis.events import EventPublisher
from ops.reading import read_to_end
from ops.stack import BIN, Process, free_port
from shared import events as ev
from shared import topics
from tests.helpers import CLINICS, write_clinics
from tests.integration.scheduler.conftest import CALENDAR

pytestmark = pytest.mark.integration
CLIENTS = 6


async def _start_groups_at_the_end(bootstrap: str, groups: list[str]) -> None:
    """New groups start from the earliest offset: start these at this run's events instead."""
    for group in groups:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic.name, p)
                for topic in topics.ALL
                for p in consumer.partitions_for_topic(topic.name) or ()
            ]
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.commit(dict(ends.items()))
        finally:
            await consumer.stop()


def _requests(clinic: str, now: datetime) -> list[ev.Event]:
    made: list[ev.Event] = []
    for n in range(CLIENTS):
        client = uuid.uuid4()
        made.append(
            ev.ConsultationRequested(
                clinic_id=clinic,
                client_id=client,
                occurred_at=now,
                contact=ev.Contact(name=f"Client {n}", email=f"c{n}@example.org"),
            )
        )
        made.append(
            ev.ClientEnrolled(
                clinic_id=clinic,
                client_id=client,
                occurred_at=now,
                consent_recorded_at=now,
                phq9_total=12,
                phq9_band=ev.Phq9Band.MODERATE,
                gad7_total=8,
            )
        )
    return made


def _overlaps(appointments: list[tuple[str, datetime, datetime]]) -> int:
    """Pairs of appointments of one holder (therapist, room, client) that overlap."""
    by_holder: defaultdict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for holder, start, end in appointments:
        by_holder[holder].append((start, end))
    found = 0
    for spans in by_holder.values():
        latest_end: datetime | None = None
        for start, end in sorted(spans):
            found += latest_end is not None and start < latest_end
            latest_end = end if latest_end is None else max(latest_end, end)
    return found


async def test_two_processes_on_the_same_partitions_apply_each_event_once(
    kafka_bootstrap: str,
    redis_url: str,
    intake_events: EventPublisher,
    tmp_path: Path,
    unique: str,
) -> None:
    clinic = f"zombie-{unique}"
    clinics_file = write_clinics(
        tmp_path / "clinics.json",
        {clinic: {**CLINICS["lisbon"], "sections": {"scheduler": CALENDAR}}},
    )
    groups = [f"a-{unique}", f"b-{unique}"]
    await _start_groups_at_the_end(kafka_bootstrap, [f"kap-scheduler-{g}" for g in groups])
    # Published before either process starts, so both find every event waiting.
    made = _requests(clinic, datetime.now(UTC) - timedelta(minutes=1))
    for event in made:
        await intake_events.publish(event, intake_events.envelope_for(event))

    processes = []
    for group in groups:
        port = free_port()
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "REDIS_URL": redis_url,
            "KAP_CLINICS_FILE": str(clinics_file),
            "KAP_HTTP_PORT": str(port),
            "PATH": str(BIN),
        }
        processes.append(
            Process(
                f"scheduler-{group}",
                [str(BIN / "python"), "-m", "tests.integration.scheduler.zombie_scheduler", group],
                env,
                tmp_path / f"scheduler-{group}.log",
                http_port=port,
            )
        )
    try:
        for process in processes:
            process.start()
        for process in processes:
            await asyncio.to_thread(process.wait_ready)
        clients = {str(e.client_id) for e in made}
        courses = await _all_for(kafka_bootstrap, topics.COURSE_BOOKED.name, clients)
        consultations = await _all_for(kafka_bootstrap, topics.CONSULTATION_BOOKED.name, clients)
    finally:
        for process in processes:
            await asyncio.to_thread(process.stop)

    for name, found in (("course", courses), ("consultation", consultations)):
        by_client: defaultdict[str, dict[str, str]] = defaultdict(dict)
        for message in found:
            event_id = message["headers"]["ce_id"]
            content = json.dumps(message["value"], sort_keys=True)
            seen = by_client[message["key"]].setdefault(event_id, content)
            assert seen == content, f"two different {name} events share the id {event_id}"
        assert set(by_client) == clients, f"every client has its {name} booked"
        repeated = {client: ids for client, ids in by_client.items() if len(ids) != 1}
        assert repeated == {}, f"a {name} was booked more than once"

    booked: list[tuple[str, datetime, datetime]] = []
    for message in [*courses, *consultations]:
        value = message["value"]
        for appointment in value.get("appointments") or [value["appointment"]]:
            start = datetime.fromisoformat(appointment["starts_at"])
            end = datetime.fromisoformat(appointment["ends_at"])
            booked.append((f"therapist:{appointment['therapist_id']}", start, end))
            if appointment.get("room_id"):
                booked.append((f"room:{appointment['room_id']}", start, end))
            booked.append((f"client:{message['key']}", start, end))
    assert _overlaps(sorted(set(booked))) == 0


async def _all_for(bootstrap: str, topic: str, clients: set[str]) -> list[dict[str, Any]]:
    """Every message of `clients` on `topic`, once each client has at least one."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        found = await _messages_of(bootstrap, topic, clients)
        if {m["key"] for m in found} == clients or asyncio.get_running_loop().time() > deadline:
            # Both processes handle everything: give the slower one a moment to add its copies.
            await asyncio.sleep(2)
            return await _messages_of(bootstrap, topic, clients)
        await asyncio.sleep(1)


async def _messages_of(bootstrap: str, topic: str, clients: set[str]) -> list[dict[str, Any]]:
    """Only these clients' records are decoded: the bad-input tests leave junk on the topics."""
    return [
        {
            "key": key,
            "value": json.loads(record.value),
            "headers": {k: v.decode() for k, v in record.headers},
        }
        for record in await read_to_end(bootstrap, [topic])
        if (key := (record.key or b"").decode(errors="replace")) in clients
    ]
