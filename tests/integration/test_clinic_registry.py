"""Clinics as data (issue 18): written to the compacted registry topic by the one checked
write (kapctl's and the scheduler's admin API's), and seen by a service's view built from
the topic; a refused clinic writes nothing. Each test has a registry topic of its own."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from chassis.clinic_registry import (
    ClinicRefused,
    read_registry,
    registry_producer,
    write_clinic,
)
from chassis.clinics import hash_api_key
from chassis.config import ServiceSettings
from chassis.kafka import apply_topics
from chassis.staff_tokens import Actor, Role, StaffTokens
from ops import kapctl
from ops.clinic_registry import SECTION_CHECKS
from ops.reading import read_to_end
from services.scheduler.config import Settings
from services.scheduler.main import create_app
from shared.topics import CLINIC_CHANGES, CLINIC_REGISTRY
from tests.helpers import serving
from tests.integration.scheduler.conftest import CALENDAR

pytestmark = pytest.mark.integration

ADMIN_KEY = "registry-admin-key-1"


@pytest.fixture
async def registry(kafka_bootstrap: str, unique: str) -> str:
    name = f"test.clinics.{unique}.v1"
    await apply_topics(
        kafka_bootstrap,
        topics=[],
        records=[dataclasses.replace(CLINIC_REGISTRY, name=name), CLINIC_CHANGES],
    )
    return name


@pytest.fixture
async def scheduler(
    kafka_bootstrap: str, redis_url: str, registry: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_SOURCE="topic",
        KAP_CLINICS_TOPIC=registry,
        KAP_CLINICS_FILE=tmp_path / "not-read.json",
        KAP_ADMIN_API_KEY_SHA256=hash_api_key(ADMIN_KEY),
    )
    async with serving(create_app(settings)) as client:
        await until(lambda: _ready(client), "the scheduler is ready")
        yield client


def clinic(clinic_id: str, key: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": clinic_id,
        "name": f"Clinic {clinic_id}",
        "timezone": "Europe/Lisbon",
        "api_key_sha256": hash_api_key(key),
        "scheduler": CALENDAR,
        **changes,
    }


async def test_a_clinic_written_by_the_function_or_the_admin_api_is_served_from_the_view(
    scheduler: httpx.AsyncClient, kafka_bootstrap: str, registry: str, unique: str
) -> None:
    by_tool, by_api = f"tool-{unique}", f"api-{unique}"
    async with registry_producer(kafka_bootstrap) as send:
        await write_clinic(send, clinic(by_tool, "k1"), SECTION_CHECKS, "test", registry=registry)
    await until(lambda: _answers(scheduler, by_tool, "k1", 200), "the view has the tool's clinic")

    response = await scheduler.put(
        f"/admin/clinics/{by_api}",
        json=clinic(by_api, "k2"),
        headers={"X-Admin-Key": ADMIN_KEY, "X-Admin-Actor": "ops@example"},
    )
    assert response.status_code == 200, response.text
    await until(lambda: _answers(scheduler, by_api, "k2", 200), "the view has the API's clinic")

    # A new key replaces the old one in every view; retiring makes the clinic unknown.
    response = await scheduler.put(
        f"/admin/clinics/{by_api}", json=clinic(by_api, "k3"), headers={"X-Admin-Key": ADMIN_KEY}
    )
    assert response.status_code == 200, response.text
    await until(lambda: _answers(scheduler, by_api, "k2", 404), "the old key no longer works")
    assert (await _calendar(scheduler, by_api, "k3")).status_code == 200
    response = await scheduler.delete(
        f"/admin/clinics/{by_tool}", headers={"X-Admin-Key": ADMIN_KEY}
    )
    assert response.status_code == 200, response.text
    await until(lambda: _answers(scheduler, by_tool, "k1", 404), "the retired clinic is gone")

    audit = [
        r for r in await _records(kafka_bootstrap, CLINIC_CHANGES.name) if unique in r.key.decode()
    ]
    actors = [json.loads(r.value)["changed_by"] for r in audit]
    assert actors == ["test", "admin-api:ops@example", "admin-api:unnamed", "admin-api:unnamed"]


async def test_a_clinic_a_service_would_refuse_is_a_422_naming_the_field_and_writes_nothing(
    scheduler: httpx.AsyncClient, kafka_bootstrap: str, registry: str, unique: str
) -> None:
    before = await _end(kafka_bootstrap, registry)
    impossible = {**CALENDAR, "policy": {"max_doses_per_week": 1, "course_window_days": 21}}
    refusals = [
        (clinic(f"a-{unique}", "k", timezone="Mars/Base"), ["body", "timezone"]),
        (clinic(f"b-{unique}", "k", scheduler=impossible), ["body", "scheduler", "policy"]),
        (
            clinic(f"c-{unique}", "k", notifier={"send_window": ["09:00", "25:00"]}),
            ["body", "notifier", "send_window", 1],
        ),
    ]
    for entry, loc in refusals:
        response = await scheduler.put(
            f"/admin/clinics/{entry['id']}", json=entry, headers={"X-Admin-Key": ADMIN_KEY}
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc
    async with registry_producer(kafka_bootstrap) as send:
        with pytest.raises(ClinicRefused) as refused:
            await write_clinic(send, refusals[1][0], SECTION_CHECKS, "test", registry=registry)
    assert refused.value.field == "scheduler.policy"
    assert await _end(kafka_bootstrap, registry) == before


async def test_an_admin_call_without_the_admin_key_is_refused_and_writes_nothing(
    scheduler: httpx.AsyncClient, kafka_bootstrap: str, registry: str, unique: str
) -> None:
    before = await _end(kafka_bootstrap, registry)
    entry = clinic(f"x-{unique}", "k")
    missing = await scheduler.put(f"/admin/clinics/{entry['id']}", json=entry)
    assert missing.status_code == 401
    wrong = await scheduler.put(
        f"/admin/clinics/{entry['id']}", json=entry, headers={"X-Admin-Key": "k"}
    )
    assert wrong.status_code == 403
    # A clinic's own key is not the admin's either.
    retire = await scheduler.delete(f"/admin/clinics/{entry['id']}", headers={"X-Admin-Key": "k"})
    assert retire.status_code == 403
    assert await _end(kafka_bootstrap, registry) == before


async def test_a_fresh_reader_rebuilds_the_last_write_of_every_clinic(
    kafka_bootstrap: str, registry: str, unique: str
) -> None:
    a, b, c = (f"{n}-{unique}" for n in "abc")
    async with registry_producer(kafka_bootstrap) as send:
        for entry in (clinic(a, "a1"), clinic(b, "b1"), clinic(a, "a2"), clinic(c, "c1")):
            await write_clinic(send, entry, SECTION_CHECKS, "test", registry=registry)
        await write_clinic(send, {"id": c}, SECTION_CHECKS, "test", registry=registry, retired=True)
    found = await read_registry(kafka_bootstrap, registry)
    assert found[a].config["api_key_sha256"] == hash_api_key("a2")
    assert found[b].config["api_key_sha256"] == hash_api_key("b1")
    assert found[c].retired
    assert set(found) == {a, b, c}


def test_kapctl_imports_a_clinics_file_all_checked_first(
    kafka_bootstrap: str,
    registry: str,
    unique: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good, bad = clinic(f"g-{unique}", "g"), clinic(f"h-{unique}", "h", timezone="Nowhere/City")
    clinics = tmp_path / "clinics.json"
    clinics.write_text(json.dumps([good, bad]))
    base = ["--bootstrap", kafka_bootstrap, "clinics"]
    assert kapctl.main([*base, "import", str(clinics), "--topic", registry]) == 2
    assert "timezone" in capsys.readouterr().err
    assert asyncio.run(read_registry(kafka_bootstrap, registry)) == {}

    clinics.write_text(json.dumps([good]))
    assert kapctl.main([*base, "import", str(clinics), "--topic", registry]) == 0
    upsert = [*base, "upsert", good["id"], "--registry", "--topic", registry]
    assert kapctl.main([*upsert, "--staff-email", "team@g.example"]) == 0
    found = asyncio.run(read_registry(kafka_bootstrap, registry))
    assert found[good["id"]].config["staff_email"] == "team@g.example"
    assert found[good["id"]].config["scheduler"] == CALENDAR  # merged, not replaced


# --- helpers -------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.2)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _calendar(client: httpx.AsyncClient, clinic_id: str, key: str) -> httpx.Response:
    return await client.get(f"/v1/clinics/{clinic_id}/calendar", headers={"X-API-Key": key})


async def _answers(client: httpx.AsyncClient, clinic_id: str, key: str, status: int) -> bool:
    return (await _calendar(client, clinic_id, key)).status_code == status


async def _end(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _records(bootstrap: str, topic: str) -> list[Any]:
    return await read_to_end(bootstrap, [topic])


async def test_a_clinic_admin_overrides_a_template_through_the_registry_a_broken_one_refused(
    scheduler: httpx.AsyncClient, kafka_bootstrap: str, registry: str, unique: str
) -> None:
    """The console's message templates (issue 21): written into the clinic's registry entry
    by the one checked write, its audit copy naming the staff member; a template that does
    not compile is refused with its part named and writes nothing; a front desk may not."""
    clinic_id = f"tpl-{unique}"
    async with registry_producer(kafka_bootstrap) as send:
        entry = clinic(clinic_id, "kt", notifier={"send_window": ["08:00", "20:00"]})
        await write_clinic(send, entry, SECTION_CHECKS, "test", registry=registry)
    await until(lambda: _answers(scheduler, clinic_id, "kt", 200), "the view has the clinic")
    path = f"/v1/clinics/{clinic_id}/message-templates"
    tokens = StaffTokens(ServiceSettings().staff_token_secret_list())
    admin = Actor(uuid.uuid4().hex, Role.CLINIC_ADMIN, clinic_id)
    front_desk = Actor(uuid.uuid4().hex, Role.FRONT_DESK, clinic_id)
    as_admin = {"X-API-Key": "kt", "X-Staff-Token": tokens.issue(admin)}

    listed = await scheduler.get(path, headers={"X-API-Key": "kt"})
    assert listed.status_code == 200
    assert "reminder_24h" in listed.json()["kinds"]
    assert listed.json()["overrides"] == {}
    with_built_in = await scheduler.get(
        path, params={"kind": "reminder_24h"}, headers={"X-API-Key": "kt"}
    )
    assert "{{ clinic_name }}" in with_built_in.json()["built_in"]["sms"]

    before = await _end(kafka_bootstrap, registry)
    broken = await scheduler.put(
        f"{path}/reminder_24h", json={"sms": "{{ unclosed"}, headers=as_admin
    )
    assert broken.status_code == 422, broken.text
    assert broken.json()["detail"][0]["loc"] == ["body", "sms"]
    refused = await scheduler.put(
        f"{path}/reminder_24h",
        json={"sms": "See you tomorrow"},
        headers={"X-API-Key": "kt", "X-Staff-Token": tokens.issue(front_desk)},
    )
    assert refused.status_code == 403
    unknown = await scheduler.put(f"{path}/no_such_kind", json={"sms": "x"}, headers=as_admin)
    assert unknown.status_code == 422
    assert await _end(kafka_bootstrap, registry) == before

    sms = "{{ clinic_name }}: see you tomorrow, {{ starts_at }}."
    saved = await scheduler.put(f"{path}/reminder_24h", json={"sms": sms}, headers=as_admin)
    assert saved.status_code == 200, saved.text
    [written] = [
        json.loads(r.value)
        for r in await _records(kafka_bootstrap, registry)
        if r.key.decode() == clinic_id and "templates" in json.loads(r.value)["config"]["notifier"]
    ]
    assert written["config"]["notifier"]["templates"] == {"reminder_24h": {"sms": sms}}
    assert written["config"]["notifier"]["send_window"] == ["08:00", "20:00"]  # kept
    assert written["changed_by"] == f"staff:{admin.staff_id}/clinic_admin"

    async def shown() -> bool:
        answer = await scheduler.get(path, headers={"X-API-Key": "kt"})
        return bool(answer.json()["overrides"] == {"reminder_24h": {"sms": sms}})

    await until(shown, "the view has the override")
