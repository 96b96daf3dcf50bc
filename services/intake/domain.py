"""Intake's rules: who may be enrolled, how the scores read, what each step publishes.

Pure: no I/O and no clock; every function takes the time it needs.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared import events as ev

ZERO = timedelta(0)
# Protocol rule 2: blood pressure above 140/90 at screening blocks medicine.
MAX_SYSTOLIC, MAX_DIASTOLIC = 140, 90
# Protocol rule 3: PHQ-9 cut points 5/10/15/20.
PHQ9_BANDS = (
    (20, ev.Phq9Band.SEVERE),
    (15, ev.Phq9Band.MODERATELY_SEVERE),
    (10, ev.Phq9Band.MODERATE),
    (5, ev.Phq9Band.MILD),
    (0, ev.Phq9Band.MINIMAL),
)


class IntakeStatus(StrEnum):
    CONSULTATION_REQUESTED = "consultation_requested"
    CONSULTATION_HELD = "consultation_held"
    NOT_PROCEEDING = "not_proceeding"
    SCREENED_ELIGIBLE = "screened_eligible"
    SCREENED_INELIGIBLE = "screened_ineligible"
    ENROLLED = "enrolled"


SCREENED = frozenset(
    {IntakeStatus.SCREENED_ELIGIBLE, IntakeStatus.SCREENED_INELIGIBLE, IntakeStatus.ENROLLED}
)

STATUS_AFTER_CONSULTATION = {
    "proceed_to_screening": IntakeStatus.CONSULTATION_HELD,
    "not_proceeding": IntakeStatus.NOT_PROCEEDING,
    # A no-show may be booked again: the request stays open.
    "no_show": IntakeStatus.CONSULTATION_REQUESTED,
}


class StepRefused(Exception):
    """The step makes no sense for the client's current status (HTTP 409)."""


class Screening(BaseModel):
    model_config = ConfigDict(frozen=True)

    systolic_bp: int
    diastolic_bp: int
    pregnant_or_breastfeeding: bool
    active_psychosis_or_mania: bool
    substance_use_disorder_last_3_months: bool
    aneurysmal_vascular_disease_or_avm: bool
    intracerebral_haemorrhage_history: bool
    notes: str | None = None


class Scores(BaseModel):
    model_config = ConfigDict(frozen=True)

    phq9: tuple[int, ...] = Field(min_length=9, max_length=9)
    gad7: tuple[int, ...] = Field(min_length=7, max_length=7)

    @property
    def phq9_total(self) -> int:
        return sum(self.phq9)

    @property
    def gad7_total(self) -> int:
        return sum(self.gad7)

    @property
    def phq9_item9(self) -> int:
        return self.phq9[8]

    @property
    def phq9_band(self) -> ev.Phq9Band:
        return phq9_band(self.phq9_total)


class Baseline(BaseModel):
    """The enrolment's totals, as ClientEnrolled records them (its item answers are not
    on any topic: a record rebuilt from the topics has these and no `scores`)."""

    model_config = ConfigDict(frozen=True)

    phq9_total: int
    phq9_band: ev.Phq9Band
    gad7_total: int

    @classmethod
    def of(cls, scores: Scores) -> Baseline:
        return cls(
            phq9_total=scores.phq9_total, phq9_band=scores.phq9_band, gad7_total=scores.gad7_total
        )


class ClientRecord(BaseModel):
    """Intake's own record of one client of one clinic (holds PHI: never logged)."""

    model_config = ConfigDict(frozen=True)

    clinic_id: str
    client_id: UUID
    correlation_id: str
    status: IntakeStatus
    contact: ev.Contact
    requested_at: AwareDatetime
    updated_at: AwareDatetime
    screening: Screening | None = None
    contraindications: tuple[ev.Contraindication, ...] = ()
    scores: Scores | None = None
    baseline: Baseline | None = None  # None on records enrolled before it was kept
    consent_recorded_at: AwareDatetime | None = None

    @property
    def screened(self) -> bool:
        # Screening is the only way into these statuses (and enrolment needs it), so the
        # status says it, also on a record rebuilt without the screening's details.
        return self.screening is not None or self.status in SCREENED

    @property
    def enrolment_totals(self) -> Baseline | None:
        if self.baseline is not None:
            return self.baseline
        return Baseline.of(self.scores) if self.scores is not None else None


def phq9_band(total: int) -> ev.Phq9Band:
    return next(band for floor, band in PHQ9_BANDS if total >= floor)


def contraindications(screening: Screening) -> tuple[ev.Contraindication, ...]:
    found = []
    if screening.systolic_bp > MAX_SYSTOLIC or screening.diastolic_bp > MAX_DIASTOLIC:
        found.append(ev.Contraindication.UNCONTROLLED_HYPERTENSION)
    if screening.aneurysmal_vascular_disease_or_avm:
        found.append(ev.Contraindication.VASCULAR_DISEASE)
    if screening.intracerebral_haemorrhage_history:
        found.append(ev.Contraindication.INTRACEREBRAL_HAEMORRHAGE)
    if screening.pregnant_or_breastfeeding:
        found.append(ev.Contraindication.PREGNANCY_OR_BREASTFEEDING)
    if screening.active_psychosis_or_mania:
        found.append(ev.Contraindication.PSYCHOSIS_OR_MANIA)
    if screening.substance_use_disorder_last_3_months:
        found.append(ev.Contraindication.SUBSTANCE_USE)
    return tuple(found)


def _require(record: ClientRecord, *allowed: IntakeStatus, step: str) -> None:
    if record.status not in allowed:
        wanted = " or ".join(status.value for status in allowed)
        raise StepRefused(f"cannot {step}: client is {record.status.value}, needs {wanted}")


def request_consultation(
    *,
    clinic_id: str,
    client_id: UUID,
    correlation_id: str,
    contact: ev.Contact,
    preferred_times: tuple[ev.PreferredTime, ...],
    existing: ClientRecord | None,
    now: datetime,
) -> tuple[ClientRecord, ev.ConsultationRequested]:
    """A new lead, or the same person asking again: linked to their record, not duplicated."""
    if existing is not None:
        record = existing.model_copy(update={"contact": contact, "updated_at": now})
    else:
        record = ClientRecord(
            clinic_id=clinic_id,
            client_id=client_id,
            correlation_id=correlation_id,
            status=IntakeStatus.CONSULTATION_REQUESTED,
            contact=contact,
            requested_at=now,
            updated_at=now,
        )
    event = ev.ConsultationRequested(
        clinic_id=clinic_id,
        client_id=record.client_id,
        occurred_at=now,
        contact=contact,
        preferred_times=preferred_times,
        repeat_request=existing is not None,
    )
    return record, event


def hold_consultation(
    record: ClientRecord, outcome: str, now: datetime
) -> tuple[ClientRecord, ev.ConsultationHeld]:
    _require(record, IntakeStatus.CONSULTATION_REQUESTED, step="record the consultation")
    event = ev.ConsultationHeld(
        clinic_id=record.clinic_id,
        client_id=record.client_id,
        occurred_at=now,
        outcome=outcome,
    )
    status = STATUS_AFTER_CONSULTATION[event.outcome]
    return record.model_copy(update={"status": status, "updated_at": now}), event


def screen(
    record: ClientRecord, screening: Screening, now: datetime
) -> tuple[ClientRecord, ev.ScreeningCompleted]:
    # An enrolled client may be screened afresh: a returning client's new course
    # (protocol rule 18). Intake does not know whether the last course ended; the
    # scheduler books a new one only once it has, and says so otherwise.
    _require(
        record,
        IntakeStatus.CONSULTATION_HELD,
        IntakeStatus.SCREENED_INELIGIBLE,
        IntakeStatus.SCREENED_ELIGIBLE,
        IntakeStatus.ENROLLED,
        step="record screening",
    )
    found = contraindications(screening)
    event = ev.ScreeningCompleted(
        clinic_id=record.clinic_id,
        client_id=record.client_id,
        occurred_at=now,
        eligible=not found,
        contraindications=found,
    )
    status = IntakeStatus.SCREENED_INELIGIBLE if found else IntakeStatus.SCREENED_ELIGIBLE
    updated = record.model_copy(
        update={
            "status": status,
            "screening": screening,
            "contraindications": found,
            "updated_at": now,
        }
    )
    return updated, event


def clinical_alert(
    record: ClientRecord,
    scores: Scores,
    now: datetime,
    during: Literal["enrolment", "measure"] = "enrolment",
) -> ev.ClinicalAlertRaised | None:
    """Rule 3: any non-zero PHQ-9 item 9 alerts staff at once, whatever else happens."""
    if scores.phq9_item9 == 0:
        return None
    return ev.ClinicalAlertRaised(
        clinic_id=record.clinic_id,
        client_id=record.client_id,
        occurred_at=now,
        reason="phq9_item9_positive",
        phq9_item9=scores.phq9_item9,
        raised_during=during,
    )


def enrol(
    record: ClientRecord, scores: Scores, consent_at: datetime, now: datetime
) -> tuple[ClientRecord, ev.ClientEnrolled]:
    _require(record, IntakeStatus.SCREENED_ELIGIBLE, step="enrol")
    if record.consent_recorded_at is not None and consent_at <= record.consent_recorded_at:
        raise StepRefused("cannot enrol again: a new course needs a fresh consent")
    event = ev.ClientEnrolled(
        clinic_id=record.clinic_id,
        client_id=record.client_id,
        occurred_at=now,
        consent_recorded_at=consent_at,
        phq9_total=scores.phq9_total,
        phq9_band=scores.phq9_band,
        gad7_total=scores.gad7_total,
    )
    updated = record.model_copy(
        update={
            "status": IntakeStatus.ENROLLED,
            "scores": scores,
            "baseline": Baseline.of(scores),
            "consent_recorded_at": consent_at,
            "updated_at": now,
        }
    )
    return updated, event


MINUTES_PER_DAY, MINUTES_PER_WEEK = 24 * 60, 7 * 24 * 60


def preferred_times_in_clinic_zone(
    windows: tuple[ev.PreferredTime, ...],
    client_zone: ZoneInfo,
    clinic_zone: ZoneInfo,
    now: datetime,
) -> tuple[ev.PreferredTime, ...]:
    """Weekly windows given in the client's zone, as clinic-local windows.

    Shifted by the zones' offset difference now; a window pushed across midnight
    is split in two. (A DST change in only one of the zones can shift a window
    by an hour until the client updates it: the clinic confirms the booking.)
    """
    shift = (now.astimezone(clinic_zone).utcoffset() or ZERO) - (
        now.astimezone(client_zone).utcoffset() or ZERO
    )
    shift_min = int(shift.total_seconds() // 60)
    converted: list[ev.PreferredTime] = []
    for window in windows:
        start = window.weekday * MINUTES_PER_DAY + _minutes(window.start) + shift_min
        end = window.weekday * MINUTES_PER_DAY + _minutes(window.end) + shift_min
        while start < end:
            day_start = start // MINUTES_PER_DAY * MINUTES_PER_DAY
            piece_end = min(end, day_start + MINUTES_PER_DAY)
            converted.append(
                ev.PreferredTime(
                    weekday=(day_start // MINUTES_PER_DAY) % 7,
                    start=_clock(start - day_start),
                    end=_clock(piece_end - day_start),
                )
            )
            start = piece_end
    return tuple(converted)


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


def _clock(minutes: int) -> time:
    # 24:00 cannot be a `time`; the last minute of the day stands in for it.
    return time(23, 59) if minutes >= MINUTES_PER_DAY else time(minutes // 60, minutes % 60)
