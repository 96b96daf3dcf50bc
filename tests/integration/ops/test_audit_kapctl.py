"""`kapctl audit` against real Kafka: it reads the topics back and reports a planted failure.

The history is the unit tests' clean one (tests/unit/ops/scenario.py), published
with the project's own publisher, plus three planted faults: another client
booked onto the same therapist at the same time, the first booster announced a
second time under a new id, and a mail in the mailbox that no NotificationSent
accounts for.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest

from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import apply_topics, make_broker
from ops import kapctl
from ops.audit import Record
from shared import events as ev
from shared import topics
from tests.unit.ops.scenario import appointment, clean, utc

pytestmark = pytest.mark.integration


async def publish(bootstrap: str, records: list[Record]) -> None:
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=bootstrap), "tests-audit")
    publisher = EventPublisher(broker, "tests-audit", topics.ALL)
    await broker.start()
    try:
        items = []
        for record in records:
            event = topics.BY_NAME[record.topic].event.model_validate(record.value)
            items.append((event, publisher.envelope_for(event, event_id=record.id)))
        await publisher.publish_all(items)
    finally:
        await broker.stop()


def write_mailbox(maildir: Path, mails: list[tuple[str, str]]) -> None:
    maildir.mkdir(parents=True, exist_ok=True)
    for n, (message_id, date) in enumerate(mails):
        mail = EmailMessage()
        mail["Message-ID"], mail["Date"], mail["Subject"] = message_id, date, "Reminder"
        mail.set_content("text")
        (maildir / f"{n:05d}.eml").write_bytes(mail.as_bytes())


def test_kapctl_audit_reports_what_was_planted_on_the_topics(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A clinic no running service knows, so none reacts to these events.
    clinic = f"audit-{uuid.uuid4().hex[:10]}"
    clinics = tmp_path / "clinics.json"
    clinics.write_text(json.dumps([{"id": clinic, "timezone": "Europe/Lisbon"}]))
    case = clean(with_fields=False, clinic=clinic)  # as the notifier publishes today
    history = case.history
    other = uuid.uuid4()
    clash = appointment(ev.AppointmentKind.CONSULTATION, utc(6, 1, 10), 30, therapist="t-1")
    history.consultation(other, utc(5, 23, 9), clash)
    history.records.append(
        Record(**{**vars(case.booster), "id": str(uuid.uuid4())})  # same booster, new id
    )
    asyncio.run(apply_topics(kafka_bootstrap))
    asyncio.run(publish(kafka_bootstrap, history.records))
    stray = f"<{uuid.uuid4()}@kap>"
    mails = [(m.message_id, format_datetime(m.date)) for m in history.mails if m.date]
    write_mailbox(tmp_path / "mail", [*mails, (stray, format_datetime(utc(6, 2, 9)))])

    code = kapctl.main(
        [
            "--bootstrap", kafka_bootstrap,
            "audit",
            "--client", str(case.client),
            "--client", str(other),
            "--maildir", str(tmp_path / "mail"),
            "--clinic", clinic,
            "--clinics-file", str(clinics),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    counts = json.loads(out[-1].removeprefix("AUDIT "))
    assert code == 1
    planted = {"overlaps": 1, "boosters_repeated": 1, "mail_mismatches": 1}
    failing = ("rule_violations", "notifications_repeated", "stale_reminders", "lost")
    assert {k: counts[k] for k in (*planted, *failing, "mail_resends")} == {
        **planted,
        **dict.fromkeys(failing, 0),
        "mail_resends": 0,
    }
    assert "sms_mismatches" not in counts  # no SMS log given: not checked, not a zero
