"""Kafka is the record: the notifier's Redis, wiped, is rebuilt from the topics
(`kapctl rebuild notifier`) and the rebuilt service answers as the old one did.

Real Kafka, Redis, SMTP and SMS; a notifier of the test's own (its own clinics file
with one clinic of its own) on the live Redis, then one on db 6 (flushed here) after
the rebuild. The comparison is over the notifier's HTTP API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from chassis.config import ServiceSettings
from chassis.kafka import make_broker
from ops import kapctl, mailcatcher, sms_sink
from ops.sms_sink import SmsSink
from services.notifier.config import Settings
from services.notifier.main import create_app
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from tests.helpers import serving, write_clinics
from tests.integration.notifier.support import (
    ClinicUnderTest,
    Inputs,
    Mailbox,
    ManualClock,
    Rig,
    appointment,
    caught_up,
    topic_messages,
)

pytestmark = pytest.mark.integration

REBUILT_DB = 6  # a spare database, flushed by this test only
# By design not on the topics, so allowed to differ: the send_at of a message planned
# for "now" is the instant its cause was handled; the rebuild can only take the cause's
# Kafka time, earlier by the consumer's lag (which a test on one machine keeps small).
HANDLING_LAG = timedelta(seconds=5)


class WallClock(ManualClock):
    """The Rig's clock, reading the wall: the rebuild's clock is Kafka's record time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[Mailbox]:
    box = Mailbox(tmp_path / "mail")
    box.start()
    yield box
    box.stop()


@pytest.fixture
def sms(tmp_path: Path) -> Iterator[SmsSink]:
    sink = sms_sink.start("127.0.0.1", 0, tmp_path / "sms.jsonl")
    yield sink
    sink.stop()


@pytest.fixture
def clinic(unique: str) -> ClinicUnderTest:
    return ClinicUnderTest(f"c-{unique}", f"Clinic {unique}", "Europe/Lisbon", f"key-{unique}")


@pytest.fixture
def clinics_path(tmp_path: Path, clinic: ClinicUnderTest) -> Path:
    spec = {"name": clinic.name, "timezone": clinic.timezone, "key": clinic.key}
    return write_clinics(tmp_path / "clinics.json", {clinic.id: spec})


@pytest.fixture
async def inputs(kafka_bootstrap: str) -> AsyncIterator[Inputs]:
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "tests")
    made = Inputs(broker)
    await broker.start()
    yield made
    await broker.stop()


def _settings(kafka: str, redis: str, clinics: Path, mailbox: Mailbox, sms: SmsSink) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        REDIS_URL=redis,
        KAP_CLINICS_FILE=clinics,
        KAP_SMTP_PORT=mailbox.port,
        KAP_SMS_API_URL=sms.url,
        KAP_DELIVERY_POLL_MS=50,
    )


async def _answers(rig: Rig, clients: list[uuid.UUID]) -> dict[str, Any]:
    """What the notifier's API says: every client's notifications, the clinic's alerts."""
    alerts = await rig.http.get(
        f"/v1/clinics/{rig.clinic.id}/alerts",
        params={"open": "false"},
        headers={"X-API-Key": rig.clinic.key},
    )
    assert alerts.status_code == 200, alerts.text
    return {
        "notifications": {
            str(c): {n["notification_id"]: n for n in await rig.notifications(c)} for c in clients
        },
        "alerts": alerts.json(),
    }


async def _lifecycle(rig: Rig) -> list[uuid.UUID]:
    """Three clients part-way: a course booked and a session moved; an opt-out and a
    consultation; an urgent alert acknowledged by staff."""
    now = rig.clock.now()
    days = lambda n: (now + timedelta(days=n)).replace(hour=10, minute=0, second=0, microsecond=0)  # noqa: E731

    ada = rig.person("Ada Lovelace")
    ada_id, _ = await rig.request(ada)
    kind = ev.AppointmentKind
    prep = appointment(kind.PREPARATION, days(4))
    dose = appointment(kind.MEDICINE, days(6), 180, dose=1)
    course_id = uuid.uuid4()
    await rig.publish(
        ev.CourseBooked(
            **rig.fields(ada_id),
            course_id=course_id,
            therapist_id="t-ana",
            window_ends_on=date.fromordinal(days(30).toordinal()),
            appointments=(prep, dose),
        )
    )
    moved = prep.model_copy(
        update={"starts_at": days(5), "ends_at": days(5) + timedelta(minutes=60)}
    )
    await rig.publish(
        ev.SessionRescheduled(
            **rig.fields(ada_id),
            course_id=course_id,
            appointment=moved,
            previous_starts_at=prep.starts_at,
        )
    )

    bob = rig.person("Bob Babbage")
    bob_id, _ = await rig.request(bob)
    await rig.publish(
        ev.ContactPreferencesChanged(**rig.fields(bob_id), channel="sms", opted_out=True)
    )
    await rig.publish(
        ev.ConsultationBooked(
            **rig.fields(bob_id), appointment=appointment(kind.CONSULTATION, days(3))
        )
    )

    cy = rig.person("Cy Hopper")
    cy_id, _ = await rig.request(cy)
    alert = await rig.publish(
        ev.ClinicalAlertRaised(
            **rig.fields(cy_id), reason="severe_adverse_event", raised_during="session"
        )
    )
    acknowledged = await rig.http.post(
        f"/v1/clinics/{rig.clinic.id}/alerts/{alert.id}/acknowledge",
        json={"acknowledged_by": "staff-1"},
        headers={"X-API-Key": rig.clinic.key},
    )
    assert acknowledged.status_code == 200, acknowledged.text
    await rig.settled()
    return [ada_id, bob_id, cy_id]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Where the rebuilt answers differ from the old, beyond what the topics cannot say."""
    found = []
    if old["alerts"] != new["alerts"]:
        found.append(f"alerts: {old['alerts']} != {new['alerts']}")
    for client, notifications in old["notifications"].items():
        rebuilt = new["notifications"][client]
        if set(notifications) != set(rebuilt):
            found.append(f"{client}: ids {sorted(notifications)} != {sorted(rebuilt)}")
            continue
        for nid, was in notifications.items():
            now = rebuilt[nid]
            if {**was, "send_at": None} != {**now, "send_at": None}:
                found.append(f"{client} {nid}: {was} != {now}")
            elif was["send_at"] != now["send_at"]:
                lag = _instant(was["send_at"]) - _instant(now["send_at"])
                if not timedelta(0) <= lag <= HANDLING_LAG:
                    found.append(f"{client} {nid}: send_at {was['send_at']} != {now['send_at']}")
    return found


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_the_notifier_rebuilt_from_the_topics_answers_as_before_and_sends_nothing_again(
    kafka_bootstrap: str,
    redis_url: str,
    rebuilt_url: str,
    rebuilt_redis: Redis,
    redis_client: Redis,
    clinic: ClinicUnderTest,
    clinics_path: Path,
    mailbox: Mailbox,
    sms: SmsSink,
    inputs: Inputs,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    live = create_app(_settings(kafka_bootstrap, redis_url, clinics_path, mailbox, sms))
    async with serving(live) as http:
        await caught_up(kafka_bootstrap, live.state.runtime.broker)
        rig = Rig(
            WallClock(datetime.now(UTC)),
            mailbox,
            sms,
            inputs,
            redis_client,
            http,
            kafka_bootstrap,
            clinic,
            unique,
        )
        clients = await _lifecycle(rig)
        before = await _answers(rig, clients)
    states = {n["state"] for c in before["notifications"].values() for n in c.values()}
    assert {"sent", "planned", "cancelled"} <= states, states  # the lifecycle did its part
    mails = len(mailcatcher.read_mails(mailbox.maildir))
    assert mails >= 5

    # The rebuild, as an operator runs it: the notifier's settings from the environment.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAP_CLINICS_FILE", str(clinics_path))
    command = ["rebuild", "notifier", "--redis", rebuilt_url, "--clinic", clinic.id]
    assert await asyncio.to_thread(kapctl.main, command) == 0  # it runs its own loop
    counts = json.loads(capsys.readouterr().out)
    assert counts["read"].get(topics.NOTIFICATION_SENT.name, 0) >= 1, counts
    assert counts["applied"] >= 10
    assert counts["refused"] == 0
    assert counts["keys_written"] == len(await rebuilt_redis.keys("*"))
    assert not await rebuilt_redis.keys(f"notifier:{{{clinic.id}}}:outbox*")  # nothing owed
    assert (
        await asyncio.to_thread(kapctl.main, command) == 2
    )  # never into a target holding the clinic's keys
    assert "--force" in capsys.readouterr().err

    rebuilt = create_app(_settings(kafka_bootstrap, rebuilt_url, clinics_path, mailbox, sms))
    async with serving(rebuilt) as http:
        await caught_up(kafka_bootstrap, rebuilt.state.runtime.broker)
        again = dataclasses.replace(rig, http=http, redis=rebuilt_redis)
        after = await _answers(again, clients)
        assert _differences(before, after) == []
        await again.settled()
        # What was sent is known sent: the rebuilt service sends none of it again.
        assert len(mailcatcher.read_mails(mailbox.maildir)) == mails

        # An already-handled event delivered again changes and sends nothing: its handled
        # mark was rebuilt with its effects.
        sent_before = await topic_messages(
            kafka_bootstrap, topics.NOTIFICATION_SENT.name, key=str(clients[0]), expect=2
        )
        [course] = await topic_messages(
            kafka_bootstrap, topics.COURSE_BOOKED.name, key=str(clients[0])
        )
        event = ev.CourseBooked.model_validate(course["value"])
        envelope = await inputs.publish(event, _envelope(course["headers"]))
        await again.handled(envelope)  # its mark, rebuilt (checked on db 6)
        await caught_up(kafka_bootstrap, rebuilt.state.runtime.broker)
        await again.settled()
        assert _differences(after, await _answers(again, clients)) == []
        sent_after = await topic_messages(
            kafka_bootstrap, topics.NOTIFICATION_SENT.name, key=str(clients[0]), expect=2
        )
        assert len(sent_after) == len(sent_before)
        assert len(mailcatcher.read_mails(mailbox.maildir)) == mails


def _envelope(headers: dict[str, str]) -> Envelope:
    return Envelope.from_headers(headers)
