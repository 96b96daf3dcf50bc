"""Every fact the KAP services publish, as frozen pydantic models.

Names are past-tense facts. Readers are tolerant: unknown fields are ignored, so
a producer may add optional fields inside a major version (see docs/schemas).
Instants are UTC; clinics show them in their own IANA time zone.
"""

from __future__ import annotations

from datetime import date, time
from enum import StrEnum
from functools import cache
from typing import Annotated, Literal, Self
from uuid import UUID
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)

ClinicId = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9-]{1,39}$", description="Clinic slug, e.g. 'lisbon'"),
]
Channel = Literal["email", "sms"]


MAX_ZONE_NAME = 64  # the longest IANA name is 32 characters


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _known_zone(name: str) -> str:
    # A name is looked up in the set read once, never opened as a file: to
    # ZoneInfo a name is a path, so "Europe" (a directory) or 10 KB of text
    # would raise OSErrors, not a validation error.
    if len(name) > MAX_ZONE_NAME or name not in _zone_names():
        raise ValueError(f"unknown IANA time zone {name[:MAX_ZONE_NAME]!r}")
    return name


TimeZoneName = Annotated[
    str, AfterValidator(_known_zone), Field(description="IANA time zone, e.g. 'Europe/Lisbon'")
]


class AppointmentKind(StrEnum):
    CONSULTATION = "consultation"
    PREPARATION = "preparation"
    MEDICINE = "medicine"
    INTEGRATION = "integration"
    BOOSTER = "booster"


class AppointmentStatus(StrEnum):
    """FHIR R4 Appointment.status values the lifecycle uses."""

    BOOKED = "booked"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"


class Contraindication(StrEnum):
    UNCONTROLLED_HYPERTENSION = "uncontrolled_hypertension"
    VASCULAR_DISEASE = "aneurysmal_vascular_disease_or_avm"
    INTRACEREBRAL_HAEMORRHAGE = "intracerebral_haemorrhage_history"
    PREGNANCY_OR_BREASTFEEDING = "pregnancy_or_breastfeeding"
    PSYCHOSIS_OR_MANIA = "active_psychosis_or_mania"
    SUBSTANCE_USE = "substance_use_disorder_last_3_months"


class Phq9Band(StrEnum):
    """PHQ-9 severity by the cut points 5/10/15/20."""

    MINIMAL = "minimal"
    MILD = "mild"
    MODERATE = "moderate"
    MODERATELY_SEVERE = "moderately_severe"
    SEVERE = "severe"


class Contract(BaseModel):
    """Frozen and tolerant: extra fields from newer producers are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(Contract):
    """A fact about one client of one clinic, at one instant."""

    clinic_id: ClinicId
    client_id: UUID = Field(description="Pseudonymous client id; the Kafka message key")
    occurred_at: AwareDatetime = Field(description="When the fact happened (UTC)")


# --- value objects ---------------------------------------------------------


class Contact(Contract):
    """How to reach a client. Internal topics only: never on a public topic."""

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)
    phone: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164")
    preferred_channel: Channel = "email"
    sms_consent: bool = False


class PreferredTime(Contract):
    """A weekly window in clinic-local time when the client can attend."""

    weekday: int = Field(ge=0, le=6, description="0 = Monday")
    start: time
    end: time


class Appointment(Contract):
    appointment_id: UUID
    kind: AppointmentKind
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    therapist_id: str
    room_id: str | None = None
    dose_number: int | None = Field(default=None, ge=1, description="Medicine sessions only")


class BoosterPlan(Contract):
    """Every `interval_days` for `count` boosters, then monthly until stopped."""

    interval_days: int = Field(default=14, ge=1, le=90)
    count: int = Field(default=4, ge=0, le=52)
    then_monthly: bool = True


# --- intake ----------------------------------------------------------------


class ConsultationRequested(Event):
    contact: Contact
    preferred_times: tuple[PreferredTime, ...] = ()
    repeat_request: bool = Field(
        default=False, description="The same person asked before; client_id is theirs"
    )


class ConsultationHeld(Event):
    outcome: Literal["proceed_to_screening", "not_proceeding", "no_show"]


class ScreeningCompleted(Event):
    eligible: bool
    contraindications: tuple[Contraindication, ...] = ()


class ClientEnrolled(Event):
    consent_recorded_at: AwareDatetime
    phq9_total: int = Field(ge=0, le=27)
    phq9_band: Phq9Band
    gad7_total: int = Field(ge=0, le=21)


AlertReason = Literal["phq9_item9_positive", "blood_pressure_over_limit", "severe_adverse_event"]


class ClinicalAlertRaised(Event):
    """Urgent: staff are told at once, outside any send window.

    Added within v1 (optional or new values only): the check-in's and the session
    record's reasons, `raised_during` "check_in", and the appointment concerned.
    `phq9_item9` is set for (and only for) a PHQ-9 item 9 alert.
    """

    reason: AlertReason
    phq9_item9: int | None = Field(default=None, ge=1, le=3)
    raised_during: Literal["enrolment", "session", "check_in", "measure"]
    appointment_id: UUID | None = Field(default=None, description="The session concerned, if any")

    @model_validator(mode="after")
    def _item9_with_its_reason(self) -> Self:
        if (self.reason == "phq9_item9_positive") != (self.phq9_item9 is not None):
            raise ValueError("phq9_item9 is given with, and only with, reason phq9_item9_positive")
        return self


class ClinicalAlertAcknowledged(Event):
    """A member of staff took ownership of an urgent alert: its escalation is called off."""

    alert_id: str = Field(description="The id (ce_id) of the ClinicalAlertRaised it answers")
    acknowledged_by: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$", description="A staff id"
    )


class ClinicalAlertEscalated(Event):
    """No one acknowledged an urgent alert in time: the clinic's on-call contact was told."""

    alert_id: str = Field(description="The id (ce_id) of the ClinicalAlertRaised it escalates")
    unacknowledged_minutes: int = Field(ge=0, description="How long it waited unacknowledged")


class ContactPreferencesChanged(Event):
    """A client opted out of (or back into) a channel; honoured at once."""

    channel: Channel
    opted_out: bool


# --- scheduler -------------------------------------------------------------


class ConsultationBooked(Event):
    appointment: Appointment


class ConsultationBookingFailed(Event):
    reason: str
    earliest_available_at: AwareDatetime | None = None


class ConsultationWaitlisted(Event):
    """No consultation fitted (or a no-show's rebooking was used up): the client is on
    the clinic's waitlist, in order of joining, for a freed slot to be offered."""

    position: int = Field(ge=1, description="Place on the clinic's waitlist (1: first)")
    joined_at: AwareDatetime
    earliest_available_at: AwareDatetime | None = Field(
        default=None, description="Earliest consultation in the client's times, if any"
    )


class ConsultationSlotOffered(Event):
    """A freed consultation slot offered to the first waiting client in line; the link
    (a single-use token) accepts it until it expires, then it goes to the next."""

    offer_id: UUID
    appointment: Appointment
    expires_at: AwareDatetime
    accept_url: str = Field(description="POST here to accept; the token is the credential")


class ConsultationOfferAccepted(Event):
    offer_id: UUID
    appointment: Appointment


class ConsultationOfferLapsed(Event):
    """An offer that can no longer be taken: it expired, or the slot was taken first."""

    offer_id: UUID
    lapsed_as: Literal["expired", "slot_taken"]


class ConsultationCancelled(Event):
    """The clinic cancelled a booked consultation (its slot goes to the waitlist): the
    client is no longer reminded of it."""

    appointment_id: UUID
    starts_at: AwareDatetime


class CourseBooked(Event):
    course_id: UUID
    therapist_id: str
    window_ends_on: date = Field(description="Last clinic-local day of the course window")
    appointments: tuple[Appointment, ...]


class CourseBookingFailed(Event):
    reason: str
    earliest_fit_on: date | None = Field(
        default=None, description="Earliest clinic-local day a full course would fit"
    )


class SessionScheduled(Event):
    course_id: UUID
    appointment: Appointment


class SessionRescheduled(Event):
    course_id: UUID
    appointment: Appointment
    previous_starts_at: AwareDatetime
    within_window: bool = True


class SessionCancelled(Event):
    course_id: UUID
    appointment_id: UUID
    kind: AppointmentKind
    late: bool = Field(description="Cancelled inside the cancellation window")


class SessionCompleted(Event):
    course_id: UUID
    appointment_id: UUID
    kind: AppointmentKind
    dose_number: int | None = None
    ride_home_confirmed: bool
    phq9_total: int | None = Field(default=None, ge=0, le=27)


class SessionMissed(Event):
    course_id: UUID
    appointment_id: UUID
    kind: AppointmentKind


class CourseCompleted(Event):
    course_id: UUID
    medicine_sessions_completed: int = Field(ge=0)


class BoosterPlanSet(Event):
    course_id: UUID
    plan: BoosterPlan
    first_due_at: AwareDatetime | None


class BoosterDue(Event):
    course_id: UUID
    booster_number: int = Field(ge=1)
    due_at: AwareDatetime


class BoostersStopped(Event):
    course_id: UUID
    reason: Literal["stopped_by_care_team", "discharged"]


class BoosterSessionBooked(Event):
    """A booster that fell due, booked: its medicine session, then its integration."""

    course_id: UUID
    booster_number: int = Field(ge=1)
    due_at: AwareDatetime
    appointments: tuple[Appointment, ...] = Field(description="In time order")


class BoosterBookingFailed(Event):
    """A booster fell due (and was announced) but no session fits its window."""

    course_id: UUID
    booster_number: int = Field(ge=1)
    due_at: AwareDatetime
    reason: str
    earliest_fit_on: date | None = Field(
        default=None, description="Earliest clinic-local day a booster session would fit"
    )


class BoosterDeclined(Event):
    """A booked booster declined: its sessions released; the booster plan goes on."""

    course_id: UUID
    booster_number: int = Field(ge=1)
    appointment_ids: tuple[UUID, ...]
    declined_by: Literal["client", "staff"]


class CheckInRefusal(StrEnum):
    """Why a check-in before a medicine session was refused (protocol rule 16)."""

    NO_RIDE_HOME = "no_ride_home"
    NOT_FASTING = "not_fasting"
    BLOOD_PRESSURE_OVER_LIMIT = "blood_pressure_over_limit"


class VitalSigns(Contract):
    """Clinical data: internal topics and the scheduler's store only."""

    systolic: int = Field(ge=50, le=300, description="mmHg")
    diastolic: int = Field(ge=20, le=200, description="mmHg")
    heart_rate: int = Field(ge=20, le=250, description="Beats per minute")


class CheckInAnswers(Contract):
    """What staff record before a dose: clinical data, never on a public topic."""

    ride_home_confirmed: bool
    fasting_confirmed: bool = Field(description="No food for 2 h, no liquids for 30 min")
    vitals: VitalSigns
    phq9_item9: int = Field(ge=0, le=3)


class SessionCheckedIn(Event):
    """A check-in before a medicine session, passed or refused (then proposed for rescheduling)."""

    course_id: UUID
    appointment_id: UUID
    starts_at: AwareDatetime
    passed: bool
    refused_for: tuple[CheckInRefusal, ...] = ()
    answers: CheckInAnswers


MedicineRoute = Literal["sublingual", "intramuscular", "intravenous"]
Severity = Literal["mild", "moderate", "severe"]


class AdverseEventKind(StrEnum):
    NAUSEA = "nausea"
    VOMITING = "vomiting"
    ANXIETY = "anxiety"
    DISSOCIATION_DISTRESS = "dissociation_distress"
    HYPERTENSION = "hypertension"
    TACHYCARDIA = "tachycardia"
    SEDATION = "sedation"
    HEADACHE = "headache"
    DIZZINESS = "dizziness"
    OTHER = "other"


class AdverseEvent(Contract):
    kind: AdverseEventKind
    severity: Severity


class SessionRecord(Contract):
    """What was given and how the client was monitored (protocol rule 17). Clinical data."""

    medicine: Literal["ketamine", "esketamine"] = "ketamine"
    route: MedicineRoute
    dose_mg: float = Field(gt=0, le=1000)
    administered_by: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="Staff id (not a name)"
    )
    dosed_at: AwareDatetime
    discharged_at: AwareDatetime
    vitals_at_dosing: VitalSigns
    vitals_at_40_min: VitalSigns
    vitals_at_discharge: VitalSigns
    adverse_events: tuple[AdverseEvent, ...] = Field(default=(), max_length=20)


class SessionRecorded(Event):
    course_id: UUID
    appointment_id: UUID
    dose_number: int | None = None
    record: SessionRecord


class CourseEndCode(StrEnum):
    """Why a course ended before (or instead of) running its booster plan to the end."""

    WITHDRAWN = "withdrawn"
    DISCHARGED = "discharged"
    CLOSED_INCOMPLETE = "closed_incomplete"


class CoursePaused(Event):
    """Future sessions released; the window frozen with `window_days_left` (None: the
    window had not opened, the first dose not yet held)."""

    course_id: UUID
    sessions_released: int = Field(ge=0)
    window_days_left: int | None = Field(default=None, ge=0)


class CourseResumed(Event):
    """A paused course re-planned, or a review hold lifted (`appointments` newly booked)."""

    course_id: UUID
    window_ends_on: date
    appointments: tuple[Appointment, ...] = ()


class CourseHeldForReview(Event):
    """Consecutive medicine no-shows: nothing is rebooked until a clinician decides."""

    course_id: UUID
    consecutive_no_shows: int = Field(ge=1)


class CourseEnded(Event):
    course_id: UUID
    reason: CourseEndCode
    sessions_released: int = Field(ge=0)
    medicine_sessions_completed: int = Field(ge=0)
    detail: str | None = Field(default=None, description="Why, for clinic staff (no PHI)")


# --- measures (protocol rules 3 and 21) ---------------------------------------


class Instrument(StrEnum):
    PHQ9 = "phq9"
    GAD7 = "gad7"


# Items per instrument, and the LOINC code of its total (FHIR QuestionnaireResponse).
INSTRUMENT_ITEMS = {Instrument.PHQ9: 9, Instrument.GAD7: 7}
LOINC_TOTAL = {Instrument.PHQ9: "44261-6", Instrument.GAD7: "70274-6"}


class MeasurePoint(StrEnum):
    """Where a measure stands in a client's care: its schedule (clinic policy)."""

    ENROLMENT = "enrolment"
    PRE_DOSE = "pre_dose"
    END_OF_COURSE = "end_of_course"
    MONTH_1 = "month_1"
    MONTH_3 = "month_3"
    MONTH_6 = "month_6"


class MeasureDue(Event):
    """A measure of the client's schedule fell due: the client is asked to answer it.

    `measure_id` names one (course, point, dose) and is the same on a replay; a
    pre-dose measure names its session. Answered between `opens_at` and `closes_at`.
    """

    measure_id: UUID
    course_id: UUID
    point: MeasurePoint
    instruments: tuple[Instrument, ...] = Field(min_length=1)
    opens_at: AwareDatetime
    closes_at: AwareDatetime
    dose_number: int | None = Field(default=None, ge=1, description="Pre-dose measures only")
    appointment_id: UUID | None = Field(default=None, description="Pre-dose: the session")


class QuestionnaireResponse(Contract):
    """One instrument answered, in FHIR QuestionnaireResponse terms. Clinical data."""

    questionnaire: Instrument
    status: Literal["completed"] = "completed"
    items: tuple[int, ...] = Field(description="Each item's answer, 0-3, in the form's order")
    total: int = Field(ge=0, le=27)
    loinc: str = Field(description="LOINC code of the total: 44261-6 PHQ-9, 70274-6 GAD-7")
    authored: AwareDatetime

    @model_validator(mode="after")
    def _scored(self) -> Self:
        if len(self.items) != INSTRUMENT_ITEMS[self.questionnaire]:
            raise ValueError(
                f"{self.questionnaire} has {INSTRUMENT_ITEMS[self.questionnaire]} items"
            )
        if any(not 0 <= item <= 3 for item in self.items):
            raise ValueError("every item is answered 0-3")
        if self.total != sum(self.items):
            raise ValueError("total is the sum of the items")
        if self.loinc != LOINC_TOTAL[self.questionnaire]:
            raise ValueError(
                f"the LOINC code of a {self.questionnaire} total is "
                f"{LOINC_TOTAL[self.questionnaire]}"
            )
        return self

    @property
    def phq9_item9(self) -> int | None:
        return self.items[8] if self.questionnaire == Instrument.PHQ9 else None


class MeasureAnswered(Event):
    """A client's answers, from a measure link or entered by staff, scored. Internal only."""

    responses: tuple[QuestionnaireResponse, ...] = Field(min_length=1)
    source: Literal["link", "staff"]
    measure_id: UUID | None = Field(default=None, description="None: outside the schedule")
    course_id: UUID | None = None
    point: MeasurePoint | None = None
    entered_by: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Staff id (staff entry)"
    )


# --- notifier --------------------------------------------------------------


class NotificationSent(Event):
    notification_id: UUID
    message_kind: str
    channel: Channel
    cause_event_id: str
    # Optional (added within v1): what identifies the logical message to an auditor.
    appointment_id: UUID | None = Field(
        default=None, description="The appointment the message is about, if any"
    )
    refers_to: AwareDatetime | None = Field(
        default=None,
        description="The appointment start the message announces (reminders, instructions, "
        "booking and change notices), as planned",
    )


class NotificationFailed(Event):
    notification_id: UUID
    message_kind: str
    channel: Channel
    cause_event_id: str
    reason: str
    permanent: bool
    # Optional (added within v1). A reminder or instructions no longer true when due
    # (moved, cancelled, or its session started) is skipped: permanent, reason "stale: ...".
    appointment_id: UUID | None = Field(
        default=None, description="The appointment the message is about, if any"
    )
    refers_to: AwareDatetime | None = Field(
        default=None, description="The appointment start the message announced, as planned"
    )


# --- public (partner) events: pseudonymous ids, times, statuses, kinds only --


class ClientStage(StrEnum):
    CONSULTATION_REQUESTED = "consultation_requested"
    CONSULTATION_BOOKED = "consultation_booked"
    ENROLLED = "enrolled"
    COURSE_BOOKED = "course_booked"
    COURSE_COMPLETED = "course_completed"
    BOOSTER_DUE = "booster_due"
    BOOSTERS_STOPPED = "boosters_stopped"


class ClientStageReached(Event):
    stage: ClientStage


class AppointmentStatusChanged(Event):
    appointment_id: UUID
    kind: AppointmentKind
    status: AppointmentStatus
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class AppointmentCheckedIn(Event):
    """Partner feed: a medicine session's check-in passed, or was refused (and the
    session is proposed for rescheduling). Codes only, no measurements."""

    appointment_id: UUID
    kind: AppointmentKind
    starts_at: AwareDatetime
    outcome: Literal["passed", "refused"]
    refused_for: tuple[CheckInRefusal, ...] = ()


class CourseStatus(StrEnum):
    PAUSED = "paused"
    RESUMED = "resumed"
    ON_REVIEW = "on_review"
    ENDED = "ended"


class CourseStatusChanged(Event):
    """Partner feed: a course paused, resumed, held for review or ended (with its code)."""

    course_id: UUID
    status: CourseStatus
    ended_as: CourseEndCode | None = None


class CohortOutcomesSummarized(Event):
    """Partner feed: one clinic's outcomes for the clients whose course completed (or
    ended) in one month, de-identified, published only for cohorts of at least 10.

    No client is named: `client_id` is the cohort's own id (uuid5 of clinic, month
    and measure point), which keys the message. Withdrawn and incomplete courses
    count in the rates as not responded, and are also given apart.
    """

    cohort_month: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM, clinic time")
    point: MeasurePoint
    questionnaire: Instrument = Instrument.PHQ9
    clients_started: int = Field(ge=10, description="Everyone in the cohort who started a course")
    clients_measured: int = Field(ge=0)
    ended_early: int = Field(ge=0, description="Withdrawn, discharged or closed incomplete")
    mean_change: float | None = Field(default=None, description="From baseline; negative: better")
    mean_change_ci95: tuple[float, float] | None = None
    response_rate: float = Field(ge=0, le=1)
    remission_rate: float = Field(ge=0, le=1)


# --- the clinic registry (keyed by clinic, not client: see shared.topics.CLINIC_REGISTRY) --


class ClinicConfigured(Contract):
    """One clinic's whole configuration as it stands after a change, or its retirement.

    The registry topic is compacted on the clinic id, so the last record per clinic is
    the clinic. A retired clinic is an explicit record (`retired: true`), not a
    tombstone: it keeps who retired it and when, and a reader long after compaction
    still tells "retired" from "never configured" (a tombstone is deleted after
    `delete.retention.ms`). Carries no PHI: names, hours, policy, the key's SHA-256.
    """

    record_id: UUID = Field(description="This change's id (the same on its audit copy)")
    clinic_id: ClinicId
    config: dict[str, JsonValue] = Field(description="The clinic's entry, as in the clinics file")
    retired: bool = False
    changed_by: str = Field(min_length=1, max_length=200, description="Who made the change")
    changed_at: AwareDatetime
    schema_version: Literal[1] = 1


class StaffSignIn(Contract):
    """One console sign-in attempt, or a sign-out: the staff audit trail (a record keyed by
    the staff id, not a client event). Pseudonymous: the staff id is derived from the
    account's email, which is not carried; no password, no address."""

    record_id: UUID = Field(description="This attempt's id")
    staff_id: UUID = Field(description="Pseudonymous: derived from the account's email")
    outcome: Literal["signed_in", "refused", "locked", "signed_out"] = Field(
        description="refused: unknown account or wrong password (not told apart); locked: "
        "too many failures in the window, the password not checked"
    )
    clinic_id: ClinicId | None = Field(
        default=None, description="Where the session works (signed in or out); else none"
    )
    role: str | None = Field(default=None, description="The account's role, when it is known")
    at: AwareDatetime
