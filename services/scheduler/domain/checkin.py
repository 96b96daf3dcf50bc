"""Check-in before a medicine session and the session record: the rules (protocol 16, 17).

Pure: values in, verdicts out. The transitions that apply them to a client's
schedule are in domain.medicine.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

from services.scheduler.domain.clinic import CheckInPolicy
from shared import events as ev
from shared.events import AppointmentKind as Kind
from shared.events import CheckInRefusal as Refusal

# Booster sessions are medicine sessions too: the same check-in and record (rule 19).
DOSING = frozenset({Kind.MEDICINE, Kind.BOOSTER})


class CheckIn(BaseModel):
    """A check-in as the course keeps it: for the session's start it was made for, so
    a session moved since needs a new one."""

    model_config = ConfigDict(frozen=True)

    answers: ev.CheckInAnswers
    checked_in_at: AwareDatetime
    for_starts_at: AwareDatetime
    refused_for: tuple[Refusal, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.refused_for


def blood_pressure_over_limit(vitals: ev.VitalSigns, policy: CheckInPolicy) -> bool:
    return vitals.systolic > policy.systolic_limit or vitals.diastolic > policy.diastolic_limit


def refusals(answers: ev.CheckInAnswers, policy: CheckInPolicy) -> tuple[Refusal, ...]:
    """Why the session cannot be held now (empty: the check-in passed)."""
    found = []
    if not answers.ride_home_confirmed:
        found.append(Refusal.NO_RIDE_HOME)
    if not answers.fasting_confirmed:
        found.append(Refusal.NOT_FASTING)
    if blood_pressure_over_limit(answers.vitals, policy):
        found.append(Refusal.BLOOD_PRESSURE_OVER_LIMIT)
    return tuple(found)


def checkin_alerts(
    answers: ev.CheckInAnswers,
    policy: CheckInPolicy,
    *,
    clinic_id: str,
    client_id: UUID,
    appointment_id: UUID,
    now: datetime,
) -> list[ev.ClinicalAlertRaised]:
    """Staff are alerted at once for item 9 above 0 and for blood pressure over the limit,
    whether the check-in passes or not (rules 3, 16)."""
    base = {
        "clinic_id": clinic_id,
        "client_id": client_id,
        "occurred_at": now,
        "raised_during": "check_in",
        "appointment_id": appointment_id,
    }
    alerts = []
    if answers.phq9_item9 > 0:
        alerts.append(
            ev.ClinicalAlertRaised(
                **base, reason="phq9_item9_positive", phq9_item9=answers.phq9_item9
            )
        )
    if blood_pressure_over_limit(answers.vitals, policy):
        alerts.append(ev.ClinicalAlertRaised(**base, reason="blood_pressure_over_limit"))
    return alerts


def checkin_window_refusal(
    appointment: ev.Appointment, policy: CheckInPolicy, now: datetime
) -> str | None:
    if now < appointment.starts_at - timedelta(minutes=policy.opens_minutes_before):
        return f"check-in opens {policy.opens_minutes_before} min before the session"
    if now >= appointment.ends_at:
        return "the session is over: a check-in comes before it"
    return None


def completion_refusal(
    appointment: ev.Appointment, checkin: CheckIn | None, policy: CheckInPolicy
) -> str | None:
    """Why a session cannot be completed (or recorded) for want of a check-in, if it can't.

    A refused check-in always stops the session; a missing one does so when the
    clinic's policy requires a check-in (the default).
    """
    if appointment.kind not in DOSING:
        return None
    if checkin is not None and not checkin.passed:
        codes = ", ".join(checkin.refused_for)
        return f"the check-in was refused ({codes}): the session is proposed for rescheduling"
    if checkin is None and policy.completion_requires_checkin:
        return "no passed check-in: a medicine session is checked in before it is completed"
    return None


def record_problem(
    record: ev.SessionRecord, checkin: CheckIn | None, policy: CheckInPolicy, now: datetime
) -> tuple[str, str] | None:
    """The first field of a session record that the rules refuse, with why."""
    if record.discharged_at <= record.dosed_at:
        return "discharged_at", "discharge must come after dosing"
    monitored = (record.discharged_at - record.dosed_at) / timedelta(minutes=1)
    if monitored < policy.min_monitoring_minutes:
        return (
            "discharged_at",
            f"monitoring from dosing to discharge was {monitored:.0f} min; "
            f"the clinic's minimum is {policy.min_monitoring_minutes} min",
        )
    if record.discharged_at > now:
        return "discharged_at", "discharge cannot be in the future"
    if checkin is not None and record.dosed_at < checkin.checked_in_at:
        return "dosed_at", "dosing cannot come before the check-in"
    return None


def record_alerts(
    record: ev.SessionRecord,
    *,
    clinic_id: str,
    client_id: UUID,
    appointment_id: UUID,
    now: datetime,
) -> list[ev.ClinicalAlertRaised]:
    """One alert to staff, at once, for a record with any severe adverse event."""
    if not any(adverse.severity == "severe" for adverse in record.adverse_events):
        return []
    return [
        ev.ClinicalAlertRaised(
            clinic_id=clinic_id,
            client_id=client_id,
            occurred_at=now,
            reason="severe_adverse_event",
            raised_during="session",
            appointment_id=appointment_id,
        )
    ]
