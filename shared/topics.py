"""Every topic, defined once: name, the event it carries, who produces it, how it is kept.

Names follow `<domain>.<entity>.<event>.v<major>`. A breaking change to an event
is a new major version, hence a new topic. Topics under `public.` are for
partners and carry no PHI. Every message is keyed by client id, so one client's
events stay in order within a topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared import events as ev

Service = Literal["intake", "scheduler", "notifier", "webhooks", "console"]
SERVICES: tuple[Service, ...] = ("intake", "scheduler", "notifier", "webhooks")

DAY_MS = 24 * 60 * 60 * 1000
LIFECYCLE_PARTITIONS = 6
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topic:
    name: str
    event: type[ev.Event]
    producers: tuple[Service, ...]
    description: str
    partitions: int = LIFECYCLE_PARTITIONS
    retention_days: int = 30
    config: dict[str, str] = field(default_factory=dict)

    @property
    def public(self) -> bool:
        return self.name.startswith("public.")

    @property
    def dead_letters(self) -> str:
        return self.name + DLQ_SUFFIX

    def kafka_config(self) -> dict[str, str]:
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_days * DAY_MS),
            **self.config,
        }


def _topic(
    name: str, event: type[ev.Event], producers: Service | tuple[Service, ...], description: str
) -> Topic:
    producers = producers if isinstance(producers, tuple) else (producers,)
    return Topic(name=name, event=event, producers=producers, description=description)


CONSULTATION_REQUESTED = _topic(
    "intake.consultation.requested.v1",
    ev.ConsultationRequested,
    "intake",
    "A person asked for a free consultation (carries contact details).",
)
CONSULTATION_HELD = _topic(
    "intake.consultation.held.v1",
    ev.ConsultationHeld,
    "intake",
    "The clinic recorded the consultation's outcome.",
)
SCREENING_COMPLETED = _topic(
    "intake.screening.completed.v1",
    ev.ScreeningCompleted,
    "intake",
    "Screening finished: eligible, or not with the contraindications found.",
)
CLIENT_ENROLLED = _topic(
    "intake.client.enrolled.v1",
    ev.ClientEnrolled,
    "intake",
    "Consent and baseline measures recorded; the client may be booked.",
)
CONTACT_PREFERENCES_CHANGED = _topic(
    "intake.contact.preferences-changed.v1",
    ev.ContactPreferencesChanged,
    "intake",
    "A client opted out of, or back into, a channel.",
)
CLINICAL_ALERT_RAISED = _topic(
    "clinical.alert.raised.v1",
    ev.ClinicalAlertRaised,
    ("intake", "scheduler"),
    "Urgent alert for clinic staff (PHQ-9 item 9 non-zero, blood pressure over the limit at "
    "check-in, a severe adverse event), at screening, check-in or a session.",
)
CLINICAL_ALERT_ACKNOWLEDGED = _topic(
    "clinical.alert.acknowledged.v1",
    ev.ClinicalAlertAcknowledged,
    "notifier",
    "A member of staff acknowledged an urgent alert (its escalation is called off).",
)
CLINICAL_ALERT_ESCALATED = _topic(
    "clinical.alert.escalated.v1",
    ev.ClinicalAlertEscalated,
    "notifier",
    "An urgent alert was not acknowledged in time and went to the clinic's on-call contact.",
)
CONSULTATION_BOOKED = _topic(
    "scheduler.consultation.booked.v1",
    ev.ConsultationBooked,
    "scheduler",
    "A free consultation was booked with a therapist.",
)
CONSULTATION_BOOKING_FAILED = _topic(
    "scheduler.consultation.booking-failed.v1",
    ev.ConsultationBookingFailed,
    "scheduler",
    "No consultation slot fitted the client's preferred times.",
)
CONSULTATION_WAITLISTED = _topic(
    "scheduler.consultation.waitlisted.v1",
    ev.ConsultationWaitlisted,
    "scheduler",
    "The client joined the clinic's consultation waitlist: position and earliest date.",
)
CONSULTATION_SLOT_OFFERED = _topic(
    "scheduler.consultation.slot-offered.v1",
    ev.ConsultationSlotOffered,
    "scheduler",
    "A freed consultation slot was offered to the next client on the waitlist.",
)
CONSULTATION_OFFER_ACCEPTED = _topic(
    "scheduler.consultation.offer-accepted.v1",
    ev.ConsultationOfferAccepted,
    "scheduler",
    "A waitlisted client accepted an offered slot; it is booked.",
)
CONSULTATION_OFFER_LAPSED = _topic(
    "scheduler.consultation.offer-lapsed.v1",
    ev.ConsultationOfferLapsed,
    "scheduler",
    "An offered slot expired (and went to the next in line) or was taken first.",
)
CONSULTATION_CANCELLED = _topic(
    "scheduler.consultation.cancelled.v1",
    ev.ConsultationCancelled,
    "scheduler",
    "The clinic cancelled a booked consultation; its slot is offered to the waitlist.",
)
COURSE_BOOKED = _topic(
    "scheduler.course.booked.v1",
    ev.CourseBooked,
    "scheduler",
    "A whole course (preparation, medicine, integration) was booked.",
)
COURSE_BOOKING_FAILED = _topic(
    "scheduler.course.booking-failed.v1",
    ev.CourseBookingFailed,
    "scheduler",
    "A full course did not fit; says why and the earliest day one would.",
)
SESSION_SCHEDULED = _topic(
    "scheduler.session.scheduled.v1",
    ev.SessionScheduled,
    "scheduler",
    "One appointment was added to a course.",
)
SESSION_RESCHEDULED = _topic(
    "scheduler.session.rescheduled.v1",
    ev.SessionRescheduled,
    "scheduler",
    "An appointment moved.",
)
SESSION_CANCELLED = _topic(
    "scheduler.session.cancelled.v1",
    ev.SessionCancelled,
    "scheduler",
    "An appointment was cancelled (late inside the cancellation window).",
)
SESSION_COMPLETED = _topic(
    "scheduler.session.completed.v1",
    ev.SessionCompleted,
    "scheduler",
    "An appointment was held.",
)
SESSION_MISSED = _topic(
    "scheduler.session.missed.v1",
    ev.SessionMissed,
    "scheduler",
    "The client did not attend.",
)
COURSE_COMPLETED = _topic(
    "scheduler.course.completed.v1",
    ev.CourseCompleted,
    "scheduler",
    "The last medicine session of a course was held.",
)
BOOSTER_PLAN_SET = _topic(
    "scheduler.booster.plan-set.v1",
    ev.BoosterPlanSet,
    "scheduler",
    "The booster plan was set or changed.",
)
BOOSTER_DUE = _topic(
    "scheduler.booster.due.v1",
    ev.BoosterDue,
    "scheduler",
    "A booster is due (announced once, at its clinic-local instant).",
)
BOOSTERS_STOPPED = _topic(
    "scheduler.booster.stopped.v1",
    ev.BoostersStopped,
    "scheduler",
    "No further boosters will be announced.",
)
BOOSTER_SESSION_BOOKED = _topic(
    "scheduler.booster-session.booked.v1",
    ev.BoosterSessionBooked,
    "scheduler",
    "A booster that fell due was booked: a medicine session and its integration.",
)
BOOSTER_BOOKING_FAILED = _topic(
    "scheduler.booster-session.booking-failed.v1",
    ev.BoosterBookingFailed,
    "scheduler",
    "A booster fell due but no session fits its window (the reason, the earliest day).",
)
BOOSTER_DECLINED = _topic(
    "scheduler.booster-session.declined.v1",
    ev.BoosterDeclined,
    "scheduler",
    "A booked booster was declined by the client or staff; the next booster still comes.",
)
SESSION_CHECKED_IN = _topic(
    "scheduler.session.checked-in.v1",
    ev.SessionCheckedIn,
    "scheduler",
    "A medicine session's check-in (ride, fasting, vitals, item 9): passed or refused with "
    "its codes. Clinical data: internal only.",
)
SESSION_RECORDED = _topic(
    "scheduler.session.recorded.v1",
    ev.SessionRecorded,
    "scheduler",
    "The record of a medicine session (dose, route, vitals, monitoring, adverse events). "
    "Clinical data: internal only.",
)
COURSE_PAUSED = _topic(
    "scheduler.course.paused.v1",
    ev.CoursePaused,
    "scheduler",
    "A course was paused: its future sessions released, its window frozen.",
)
COURSE_RESUMED = _topic(
    "scheduler.course.resumed.v1",
    ev.CourseResumed,
    "scheduler",
    "A paused course was re-planned, or a review hold lifted.",
)
COURSE_HELD_FOR_REVIEW = _topic(
    "scheduler.course.held-for-review.v1",
    ev.CourseHeldForReview,
    "scheduler",
    "Consecutive medicine no-shows: the course waits for a clinician.",
)
COURSE_ENDED = _topic(
    "scheduler.course.ended.v1",
    ev.CourseEnded,
    "scheduler",
    "A course ended: withdrawn, discharged or closed as incomplete; nothing more is booked.",
)
MEASURE_DUE = _topic(
    "scheduler.measure.due.v1",
    ev.MeasureDue,
    "scheduler",
    "A PHQ-9/GAD-7 measure of the client's schedule fell due; the notifier sends its link",
)
MEASURE_ANSWERED = _topic(
    "intake.measure.answered.v1",
    ev.MeasureAnswered,
    "intake",
    "A client's measure answered (link or staff), scored as QuestionnaireResponses; clinical",
)
NOTIFICATION_SENT = _topic(
    "notifier.notification.sent.v1",
    ev.NotificationSent,
    "notifier",
    "A message was accepted by its channel (SMTP server or SMS provider).",
)
NOTIFICATION_FAILED = _topic(
    "notifier.notification.failed.v1",
    ev.NotificationFailed,
    "notifier",
    "A message could not be sent; says why and whether it is final.",
)
PUBLIC_STAGE_REACHED = _topic(
    "public.client.stage-reached.v1",
    ev.ClientStageReached,
    "scheduler",
    "Partner feed: a client reached a lifecycle stage (pseudonymous).",
)
PUBLIC_APPOINTMENT_STATUS = _topic(
    "public.appointment.status-changed.v1",
    ev.AppointmentStatusChanged,
    "scheduler",
    "Partner feed: an appointment's FHIR status changed (pseudonymous).",
)
PUBLIC_APPOINTMENT_CHECKED_IN = _topic(
    "public.appointment.checked-in.v1",
    ev.AppointmentCheckedIn,
    "scheduler",
    "Partner feed: a medicine session's check-in passed or was refused, with codes "
    "(pseudonymous; no measurements).",
)

PUBLIC_COURSE_STATUS = _topic(
    "public.course.status-changed.v1",
    ev.CourseStatusChanged,
    "scheduler",
    "Partner feed: a course paused, resumed, on review or ended, with an end code.",
)
PUBLIC_COHORT_OUTCOMES = _topic(
    "public.outcomes.cohort-summarized.v1",
    ev.CohortOutcomesSummarized,
    "scheduler",
    "Partner feed: a clinic's de-identified outcomes per month of course completion and "
    "measure point; cohorts under 10 clients are never published.",
)

ALL: tuple[Topic, ...] = (
    CONSULTATION_REQUESTED,
    CONSULTATION_HELD,
    SCREENING_COMPLETED,
    CLIENT_ENROLLED,
    CONTACT_PREFERENCES_CHANGED,
    CLINICAL_ALERT_RAISED,
    CLINICAL_ALERT_ACKNOWLEDGED,
    CLINICAL_ALERT_ESCALATED,
    CONSULTATION_BOOKED,
    CONSULTATION_BOOKING_FAILED,
    CONSULTATION_WAITLISTED,
    CONSULTATION_SLOT_OFFERED,
    CONSULTATION_OFFER_ACCEPTED,
    CONSULTATION_OFFER_LAPSED,
    CONSULTATION_CANCELLED,
    COURSE_BOOKED,
    COURSE_BOOKING_FAILED,
    SESSION_SCHEDULED,
    SESSION_RESCHEDULED,
    SESSION_CANCELLED,
    SESSION_COMPLETED,
    SESSION_MISSED,
    COURSE_COMPLETED,
    BOOSTER_PLAN_SET,
    BOOSTER_DUE,
    BOOSTERS_STOPPED,
    BOOSTER_SESSION_BOOKED,
    BOOSTER_BOOKING_FAILED,
    BOOSTER_DECLINED,
    SESSION_CHECKED_IN,
    SESSION_RECORDED,
    COURSE_PAUSED,
    COURSE_RESUMED,
    COURSE_HELD_FOR_REVIEW,
    COURSE_ENDED,
    MEASURE_DUE,
    MEASURE_ANSWERED,
    NOTIFICATION_SENT,
    NOTIFICATION_FAILED,
    PUBLIC_STAGE_REACHED,
    PUBLIC_APPOINTMENT_STATUS,
    PUBLIC_APPOINTMENT_CHECKED_IN,
    PUBLIC_COURSE_STATUS,
    PUBLIC_COHORT_OUTCOMES,
)

BY_NAME: dict[str, Topic] = {topic.name: topic for topic in ALL}
BY_EVENT: dict[type[ev.Event], Topic] = {topic.event: topic for topic in ALL}


def topic_for(event: ev.Event) -> Topic:
    return BY_EVENT[type(event)]


def produced_by(service: Service) -> tuple[Topic, ...]:
    return tuple(topic for topic in ALL if service in topic.producers)


# --- configuration records: keyed by clinic id, outside the client-event catalogue -----


@dataclass(frozen=True)
class RecordTopic:
    """A topic of records, not client events: configuration (keyed by clinic id, written
    by operators, read whole by every service), or an audit trail (STAFF_SIGN_INS). No
    dead-letter topic: a record a reader cannot use is a configuration error, logged and
    counted, and the last good one kept."""

    name: str
    record: type[ev.Contract]
    description: str
    # The services that write it (besides operators' tools): the scheduler serves the
    # admin API (services.scheduler.admin_api).
    producers: tuple[Service, ...] = ("scheduler",)
    partitions: int = 1  # a few thousand small records: one partition keeps them in order
    config: dict[str, str] = field(default_factory=dict)

    def kafka_config(self) -> dict[str, str]:
        return dict(self.config)


CLINIC_REGISTRY = RecordTopic(
    "clinics.registry.v1",
    ev.ClinicConfigured,
    "Every clinic's configuration, the last record per clinic id (compacted); services "
    "build their clinic catalogue from it.",
    # Compacted: the latest record per clinic is kept forever, older ones go. A dirty
    # ratio of 0.1 and 1 h segments let a superseded config (an old key hash) go soon.
    config={
        "cleanup.policy": "compact",
        "min.cleanable.dirty.ratio": "0.1",
        "segment.ms": str(60 * 60 * 1000),
    },
)
CLINIC_CHANGES = RecordTopic(
    "clinics.changes.v1",
    ev.ClinicConfigured,
    "Audit trail: every accepted clinic change (who, when, the whole config), never compacted.",
    config={"cleanup.policy": "delete", "retention.ms": str(7 * 365 * DAY_MS)},
)
RECORD_TOPICS: tuple[RecordTopic, ...] = (CLINIC_REGISTRY, CLINIC_CHANGES)
# The console's audit of who signed in (and who tried): a record per attempt, keyed by
# the staff id, kept as long as the clinic changes. Written by the console only; not a
# configuration record, so not among RECORD_TOPICS (which every service reads whole).
STAFF_SIGN_INS = RecordTopic(
    "console.staff-sign-ins.v1",
    ev.StaffSignIn,
    "Audit trail: every console sign-in attempt and sign-out (pseudonymous staff id, "
    "outcome, clinic, role, when), never compacted.",
    producers=("console",),
    config={"cleanup.policy": "delete", "retention.ms": str(7 * 365 * DAY_MS)},
)
AUDIT_TOPICS: tuple[RecordTopic, ...] = (STAFF_SIGN_INS,)
