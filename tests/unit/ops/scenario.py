"""A small, clean clinic history as the topics and the sinks would hold it, to plant faults in.

One Lisbon client: a consultation, then a course (preparation and two doses),
every confirmation and every reminder sent exactly when the notifier's timing
rule says, each email with its one copy in the mailbox, and the first booster
announced at 09:00 clinic time. Tests add or remove one thing and check the
auditor counts exactly that.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ops.audit import Mail, Record, Text
from services.notifier.model import MessageKind, notification_id
from services.notifier.reminders import reminder_send_at
from shared import events as ev
from shared.topics import topic_for

CLINIC = "lisbon"
TZ = ZoneInfo("Europe/Lisbon")
LEADS = {
    MessageKind.REMINDER_24H: timedelta(hours=24),
    MessageKind.REMINDER_2H: timedelta(hours=2),
}
INSTRUCTIONS_LEAD = timedelta(hours=48)


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def appointment(
    kind: ev.AppointmentKind,
    starts_at: datetime,
    minutes: int,
    therapist: str = "t-1",
    room: str | None = None,
    dose: int | None = None,
) -> ev.Appointment:
    return ev.Appointment(
        appointment_id=uuid.uuid4(),
        kind=kind,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=minutes),
        therapist_id=therapist,
        room_id=room,
        dose_number=dose,
    )


@dataclass
class History:
    """What the topics and the sinks hold; `with_fields` mirrors the newer NotificationSent."""

    with_fields: bool = True
    clinic: str = CLINIC
    records: list[Record] = field(default_factory=list)
    mails: list[Mail] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)

    def add(self, event: ev.Event, event_id: str | None = None) -> Record:
        topic = topic_for(event)
        record = Record(
            topic.name,
            str(event.client_id),
            event_id or str(uuid.uuid4()),
            event.occurred_at.isoformat(),
            f"kap.{topic.name}",
            event.model_dump(mode="json"),
        )
        self.records.append(record)
        return record

    def send(
        self,
        cause: Record,
        kind: MessageKind,
        at: datetime,
        appt: ev.Appointment | None = None,
        *,
        channel: ev.Channel = "email",
        nid: uuid.UUID | None = None,
        mail: bool = True,
    ) -> Record:
        """A NotificationSent (and its mail) as the notifier publishes it."""
        recipient = "staff" if kind == MessageKind.CLINICAL_ALERT else "client"
        appt_id = appt.appointment_id if appt else None
        nid = nid or notification_id(cause.id, kind, channel, recipient, appt_id)
        sent = ev.NotificationSent(
            clinic_id=self.clinic,
            client_id=uuid.UUID(cause.key),
            occurred_at=at,
            notification_id=nid,
            message_kind=kind,
            channel=channel,
            cause_event_id=cause.id,
        )
        record = self.add(sent)
        if self.with_fields and appt is not None:
            record.value["appointment_id"] = str(appt.appointment_id)
            if kind in (*LEADS, MessageKind.SESSION_INSTRUCTIONS):
                record.value["refers_to"] = appt.starts_at.isoformat()
        if mail and channel == "email":
            self.mails.append(Mail(f"<{nid}@kap>", at))
        elif mail:
            self.texts.append(Text(str(nid)))
        return record

    def planned(self, cause: Record, appt: ev.Appointment, lead: timedelta) -> datetime:
        planned_at = datetime.fromisoformat(cause.value["occurred_at"])
        send_at = reminder_send_at(appt.starts_at, lead, TZ, now=planned_at)
        assert send_at is not None
        assert send_at > planned_at
        return send_at

    def remind(self, cause: Record, appt: ev.Appointment, *, skip: tuple[str, ...] = ()) -> None:
        """Every reminder (and, for doses, the instructions) `cause` plans for `appt`, on time."""
        for kind, lead in LEADS.items():
            if kind not in skip:
                self.send(cause, kind, self.planned(cause, appt, lead), appt)
        if appt.kind == ev.AppointmentKind.MEDICINE and "instructions" not in skip:
            at = self.planned(cause, appt, INSTRUCTIONS_LEAD)
            self.send(cause, MessageKind.SESSION_INSTRUCTIONS, at, appt)

    def base(self, client: uuid.UUID, at: datetime) -> dict[str, Any]:
        return {"clinic_id": self.clinic, "client_id": client, "occurred_at": at}

    def consultation(self, client: uuid.UUID, at: datetime, appt: ev.Appointment) -> Record:
        """A consultation booked, confirmed at once, and reminded of."""
        booked = self.add(ev.ConsultationBooked(**self.base(client, at), appointment=appt))
        self.send(booked, MessageKind.CONSULTATION_BOOKED, at, appt)
        self.remind(booked, appt)
        return booked


@dataclass
class Clean:
    history: History
    client: uuid.UUID
    course_id: uuid.UUID
    consultation: ev.Appointment
    preparation: ev.Appointment
    dose1: ev.Appointment
    dose2: ev.Appointment
    course: Record
    booster: Record
    now: datetime


def clean(
    with_fields: bool = True, *, dose2_at: datetime | None = None, clinic: str = CLINIC
) -> Clean:
    history = History(with_fields, clinic)
    client, course_id = uuid.uuid4(), uuid.uuid4()
    contact = ev.Contact(name="Test Person", email="someone@example.test")
    requested = history.add(
        ev.ConsultationRequested(**history.base(client, utc(5, 22, 8)), contact=contact)
    )
    history.send(requested, MessageKind.CONSULTATION_REQUEST_RECEIVED, utc(5, 22, 8))
    consult = appointment(ev.AppointmentKind.CONSULTATION, utc(5, 25, 9), 30)
    history.consultation(client, utc(5, 22, 9), consult)
    history.add(
        ev.ClientEnrolled(
            **history.base(client, utc(5, 26, 9)),
            consent_recorded_at=utc(5, 26, 9),
            phq9_total=12,
            phq9_band=ev.Phq9Band.MODERATE,
            gad7_total=9,
        )
    )
    prep = appointment(ev.AppointmentKind.PREPARATION, utc(5, 29, 9), 60)
    medicine = ev.AppointmentKind.MEDICINE
    dose1 = appointment(medicine, utc(6, 1, 9), 180, room="recliner-1", dose=1)
    dose2 = appointment(medicine, dose2_at or utc(6, 4, 9), 180, room="recliner-1", dose=2)
    course = history.add(
        ev.CourseBooked(
            **history.base(client, utc(5, 27, 8)),
            course_id=course_id,
            therapist_id="t-1",
            window_ends_on=date(2026, 6, 21),
            appointments=(prep, dose1, dose2),
        )
    )
    history.send(course, MessageKind.COURSE_BOOKED, utc(5, 27, 8))
    for appt in (prep, dose1, dose2):
        history.remind(course, appt)
    # 09:00 in Lisbon is 08:00 UTC in June (summer time).
    booster = history.add(
        ev.BoosterDue(
            **history.base(client, utc(6, 20, 8)),
            course_id=course_id,
            booster_number=1,
            due_at=utc(6, 20, 8),
        )
    )
    return Clean(
        history, client, course_id, consult, prep, dose1, dose2, course, booster, utc(6, 21, 8)
    )
