"""Events and settings for the notifier's unit tests: one Lisbon clinic, late March 2026."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.notifier.domain import messages_for
from services.notifier.model import ClinicSettings, PlannedMessage
from services.notifier.prefs import ContactPrefs
from shared import events as ev

CLINIC = ClinicSettings(
    clinic_id="lisbon", name="Lisbon Wellbeing Clinic", timezone="Europe/Lisbon"
)
CLIENT = uuid.UUID("0b8e4a52-5f43-4c83-9d8e-2a4b8c1f0e11")
COURSE = uuid.UUID("7d1f0c7e-2b0a-4e52-8a4c-5e9b3d2f6a01")
# Monday 23 March 2026, 10:00 in Lisbon (WET = UTC): inside the send window.
NOW = datetime(2026, 3, 23, 10, 0, tzinfo=UTC)

EMAIL = ContactPrefs()
SMS = ContactPrefs(preferred_channel="sms", sms_consent=True, has_phone=True)


def at(text: str) -> datetime:
    """An instant from an ISO string with its offset, e.g. "2026-03-31T09:00+01:00"."""
    return datetime.fromisoformat(text).astimezone(UTC)


def appointment(
    kind: ev.AppointmentKind, starts_at: datetime, minutes: int = 60, dose: int | None = None
) -> ev.Appointment:
    return ev.Appointment(
        appointment_id=uuid.uuid5(COURSE, f"{kind}/{starts_at.isoformat()}"),
        kind=kind,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=minutes),
        therapist_id="t-ana",
        room_id="r-1",
        dose_number=dose,
    )


PREPARATION = appointment(ev.AppointmentKind.PREPARATION, at("2026-03-30T10:00+01:00"))
DOSE_1 = appointment(ev.AppointmentKind.MEDICINE, at("2026-04-01T10:00+01:00"), 180, dose=1)
INTEGRATION = appointment(ev.AppointmentKind.INTEGRATION, at("2026-04-02T10:00+01:00"))
BOOSTER = appointment(ev.AppointmentKind.BOOSTER, at("2026-03-26T10:00+00:00"), 180)
BOOSTER_INTEGRATION = appointment(ev.AppointmentKind.INTEGRATION, at("2026-03-27T10:00+00:00"))
CONSULTATION = appointment(ev.AppointmentKind.CONSULTATION, at("2026-03-26T15:00+00:00"), 30)


def event_fields(occurred_at: datetime = NOW) -> dict[str, Any]:
    """The fields every event has: this clinic, this client, and when."""
    return {"clinic_id": "lisbon", "client_id": CLIENT, "occurred_at": occurred_at}


def course_booked() -> ev.CourseBooked:
    return ev.CourseBooked(
        **event_fields(),
        course_id=COURSE,
        therapist_id="t-ana",
        window_ends_on=date(2026, 4, 20),
        appointments=(PREPARATION, DOSE_1, INTEGRATION),
    )


def every_event() -> list[ev.Event]:
    """At least one event for every message kind the notifier sends."""
    contact = ev.Contact(name="Maria Silva", email="maria@example.org", phone="+351912345678")
    return [
        ev.ConsultationRequested(**event_fields(), contact=contact),
        ev.ConsultationBookingFailed(**event_fields(), reason="no slot", earliest_available_at=NOW),
        ev.ConsultationBooked(**event_fields(), appointment=CONSULTATION),
        ev.ConsultationWaitlisted(
            **event_fields(), position=2, joined_at=NOW, earliest_available_at=NOW
        ),
        ev.ConsultationSlotOffered(
            **event_fields(),
            offer_id=COURSE,
            appointment=CONSULTATION,
            expires_at=NOW,
            accept_url="https://clinic.example/v1/offers/clinic-a.abc/accept",
        ),
        ev.ConsultationCancelled(
            **event_fields(),
            appointment_id=CONSULTATION.appointment_id,
            starts_at=CONSULTATION.starts_at,
        ),
        ev.ConsultationHeld(**event_fields(), outcome="no_show"),
        ev.ScreeningCompleted(**event_fields(), eligible=True),
        ev.ScreeningCompleted(
            **event_fields(),
            eligible=False,
            contraindications=(ev.Contraindication.PSYCHOSIS_OR_MANIA,),
        ),
        ev.ClinicalAlertRaised(
            **event_fields(), reason="phq9_item9_positive", phq9_item9=2, raised_during="enrolment"
        ),
        course_booked(),
        ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1),
        ev.SessionRescheduled(
            **event_fields(),
            course_id=COURSE,
            appointment=DOSE_1,
            previous_starts_at=at("2026-03-31T10:00+01:00"),
            within_window=False,
        ),
        ev.SessionCancelled(
            **event_fields(),
            course_id=COURSE,
            appointment_id=DOSE_1.appointment_id,
            kind=DOSE_1.kind,
            late=True,
        ),
        ev.SessionMissed(
            **event_fields(),
            course_id=COURSE,
            appointment_id=INTEGRATION.appointment_id,
            kind=INTEGRATION.kind,
        ),
        ev.SessionCompleted(
            **event_fields(),
            course_id=COURSE,
            appointment_id=DOSE_1.appointment_id,
            kind=DOSE_1.kind,
            dose_number=1,
            ride_home_confirmed=True,
        ),
        ev.CourseCompleted(**event_fields(), course_id=COURSE, medicine_sessions_completed=6),
        ev.BoosterDue(
            **event_fields(), course_id=COURSE, booster_number=1, due_at=NOW + timedelta(days=1)
        ),
        booster_session_booked(),
        *course_changes(),
        *measures_due(),
    ]


def measures_due() -> list[ev.MeasureDue]:
    """Two measures falling due now: dose 1's (closing as it starts) and the 3 month one."""
    common = {**event_fields(), "course_id": COURSE, "instruments": ("phq9", "gad7")}
    return [
        ev.MeasureDue(
            **common,
            measure_id=uuid.uuid5(COURSE, "measure/pre_dose"),
            point=ev.MeasurePoint.PRE_DOSE,
            opens_at=NOW,
            closes_at=DOSE_1.starts_at,
            dose_number=1,
            appointment_id=DOSE_1.appointment_id,
        ),
        ev.MeasureDue(
            **common,
            measure_id=uuid.uuid5(COURSE, "measure/month_3"),
            point=ev.MeasurePoint.MONTH_3,
            opens_at=NOW,
            closes_at=NOW + timedelta(days=14),
        ),
    ]


def check_in(passed: bool, *refused_for: ev.CheckInRefusal) -> ev.SessionCheckedIn:
    """A check-in before DOSE_1 (clinical answers: never shown to the client)."""
    high = ev.CheckInRefusal.BLOOD_PRESSURE_OVER_LIMIT in refused_for
    return ev.SessionCheckedIn(
        **event_fields(),
        course_id=COURSE,
        appointment_id=DOSE_1.appointment_id,
        starts_at=DOSE_1.starts_at,
        passed=passed,
        refused_for=refused_for,
        answers=ev.CheckInAnswers(
            ride_home_confirmed=ev.CheckInRefusal.NO_RIDE_HOME not in refused_for,
            fasting_confirmed=True,
            vitals=ev.VitalSigns(
                systolic=158 if high else 124, diastolic=99 if high else 80, heart_rate=71
            ),
            phq9_item9=0,
        ),
    )


def course_changes() -> list[ev.Event]:
    """A course paused, resumed on new times, ended; a check-in refused."""
    return [
        ev.CoursePaused(**event_fields(), course_id=COURSE, sessions_released=3),
        ev.CourseResumed(
            **event_fields(),
            course_id=COURSE,
            window_ends_on=date(2026, 4, 24),
            appointments=(DOSE_1, INTEGRATION),
        ),
        ev.CourseEnded(
            **event_fields(),
            course_id=COURSE,
            reason=ev.CourseEndCode.CLOSED_INCOMPLETE,
            sessions_released=2,
            medicine_sessions_completed=3,
            detail="window can no longer hold the remaining doses",
        ),
        check_in(False, ev.CheckInRefusal.BLOOD_PRESSURE_OVER_LIMIT),
    ]


def booster_session_booked() -> ev.BoosterSessionBooked:
    return ev.BoosterSessionBooked(
        **event_fields(),
        course_id=COURSE,
        booster_number=1,
        due_at=NOW,
        appointments=(BOOSTER, BOOSTER_INTEGRATION),
    )


def plan(
    event: ev.Event,
    prefs: ContactPrefs = EMAIL,
    now: datetime = NOW,
    cause_event_id: str = "cause-1",
) -> list[PlannedMessage]:
    return messages_for(event, prefs, CLINIC, now, cause_event_id=cause_event_id)
