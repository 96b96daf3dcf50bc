"""One valid instance of every event, as JSON a producer would send."""

from __future__ import annotations

from typing import Any

from shared import events as ev

CLIENT = "0b6f1d1e-7c55-4f5e-9d0a-3f1c2b9e8a10"
COURSE = "6a1e4c2b-1f3d-4e5a-8b9c-0d1e2f3a4b5c"
APPOINTMENT = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
BASE = {"clinic_id": "lisbon", "client_id": CLIENT, "occurred_at": "2026-03-27T10:00:00Z"}
APPOINTMENT_JSON = {
    "appointment_id": APPOINTMENT,
    "kind": "medicine",
    "starts_at": "2026-03-30T08:00:00Z",
    "ends_at": "2026-03-30T11:00:00Z",
    "therapist_id": "t-ana",
    "room_id": "recliner-1",
    "dose_number": 1,
}
VITALS = {"systolic": 150, "diastolic": 95, "heart_rate": 88}
SESSION = {"course_id": COURSE, "appointment_id": APPOINTMENT, "kind": "medicine"}

SAMPLES: dict[type[ev.Event], dict[str, Any]] = {
    ev.ConsultationRequested: {
        "contact": {
            "name": "Ada Example",
            "email": "ada@example.org",
            "phone": "+351912345678",
            "preferred_channel": "sms",
            "sms_consent": True,
        },
        "preferred_times": [{"weekday": 1, "start": "09:00:00", "end": "12:00:00"}],
    },
    ev.ConsultationHeld: {"outcome": "proceed_to_screening"},
    ev.ScreeningCompleted: {"eligible": False, "contraindications": ["pregnancy_or_breastfeeding"]},
    ev.ClientEnrolled: {
        "consent_recorded_at": "2026-03-27T09:55:00Z",
        "phq9_total": 16,
        "phq9_band": "moderately_severe",
        "gad7_total": 11,
    },
    ev.ContactPreferencesChanged: {"channel": "sms", "opted_out": True},
    ev.ClinicalAlertRaised: {
        "reason": "phq9_item9_positive",
        "phq9_item9": 1,
        "raised_during": "enrolment",
    },
    ev.ClinicalAlertAcknowledged: {"alert_id": "alert-1", "acknowledged_by": "nurse-7"},
    ev.ClinicalAlertEscalated: {"alert_id": "alert-1", "unacknowledged_minutes": 15},
    ev.ConsultationBooked: {"appointment": {**APPOINTMENT_JSON, "kind": "consultation"}},
    ev.ConsultationBookingFailed: {"reason": "no therapist free in the preferred times"},
    ev.ConsultationWaitlisted: {
        "position": 2,
        "joined_at": "2026-03-20T10:00:00Z",
        "earliest_available_at": "2026-05-04T08:00:00Z",
    },
    ev.ConsultationSlotOffered: {
        "offer_id": COURSE,
        "appointment": {**APPOINTMENT_JSON, "kind": "consultation"},
        "expires_at": "2026-03-21T10:00:00Z",
        "accept_url": "http://scheduler/v1/offers/clinic-a.token/accept",
    },
    ev.ConsultationOfferAccepted: {
        "offer_id": COURSE,
        "appointment": {**APPOINTMENT_JSON, "kind": "consultation"},
    },
    ev.ConsultationOfferLapsed: {"offer_id": COURSE, "lapsed_as": "expired"},
    ev.ConsultationCancelled: {
        "appointment_id": APPOINTMENT_JSON["appointment_id"],
        "starts_at": "2026-03-21T09:00:00Z",
    },
    ev.CourseBooked: {
        "course_id": COURSE,
        "therapist_id": "t-ana",
        "window_ends_on": "2026-04-19",
        "appointments": [APPOINTMENT_JSON],
    },
    ev.CourseBookingFailed: {"reason": "no room free", "earliest_fit_on": "2026-05-04"},
    ev.SessionScheduled: {"course_id": COURSE, "appointment": APPOINTMENT_JSON},
    ev.SessionRescheduled: {
        "course_id": COURSE,
        "appointment": APPOINTMENT_JSON,
        "previous_starts_at": "2026-03-29T08:00:00Z",
    },
    ev.SessionCancelled: {**SESSION, "late": True},
    ev.SessionCompleted: {**SESSION, "dose_number": 1, "ride_home_confirmed": True},
    ev.SessionMissed: SESSION,
    ev.CourseCompleted: {"course_id": COURSE, "medicine_sessions_completed": 6},
    ev.BoosterPlanSet: {
        "course_id": COURSE,
        "plan": {"interval_days": 14, "count": 4, "then_monthly": True},
        "first_due_at": "2026-05-04T08:00:00Z",
    },
    ev.BoosterDue: {"course_id": COURSE, "booster_number": 1, "due_at": "2026-05-04T08:00:00Z"},
    ev.BoostersStopped: {"course_id": COURSE, "reason": "discharged"},
    ev.BoosterSessionBooked: {
        "course_id": COURSE,
        "booster_number": 1,
        "due_at": "2026-05-04T08:00:00Z",
        "appointments": [{**APPOINTMENT_JSON, "kind": "booster", "dose_number": None}],
    },
    ev.BoosterBookingFailed: {
        "course_id": COURSE,
        "booster_number": 2,
        "due_at": "2026-05-18T08:00:00Z",
        "reason": "no booster session fits from 2026-05-18 to 2026-05-25",
        "earliest_fit_on": "2026-05-27",
    },
    ev.BoosterDeclined: {
        "course_id": COURSE,
        "booster_number": 1,
        "appointment_ids": [APPOINTMENT],
        "declined_by": "client",
    },
    ev.SessionCheckedIn: {
        "course_id": COURSE,
        "appointment_id": APPOINTMENT,
        "starts_at": "2026-03-30T08:00:00Z",
        "passed": False,
        "refused_for": ["blood_pressure_over_limit"],
        "answers": {
            "ride_home_confirmed": True,
            "fasting_confirmed": True,
            "vitals": VITALS,
            "phq9_item9": 0,
        },
    },
    ev.SessionRecorded: {
        "course_id": COURSE,
        "appointment_id": APPOINTMENT,
        "dose_number": 1,
        "record": {
            "route": "intramuscular",
            "dose_mg": 60,
            "administered_by": "staff-17",
            "dosed_at": "2026-03-30T08:15:00Z",
            "discharged_at": "2026-03-30T10:30:00Z",
            "vitals_at_dosing": VITALS,
            "vitals_at_40_min": VITALS,
            "vitals_at_discharge": VITALS,
            "adverse_events": [{"kind": "nausea", "severity": "mild"}],
        },
    },
    ev.CoursePaused: {"course_id": COURSE, "sessions_released": 5, "window_days_left": 12},
    ev.CourseResumed: {
        "course_id": COURSE,
        "window_ends_on": "2026-04-30",
        "appointments": [APPOINTMENT_JSON],
    },
    ev.CourseHeldForReview: {"course_id": COURSE, "consecutive_no_shows": 2},
    ev.CourseEnded: {
        "course_id": COURSE,
        "reason": "withdrawn",
        "sessions_released": 4,
        "medicine_sessions_completed": 2,
    },
    ev.NotificationSent: {
        "notification_id": APPOINTMENT,
        "message_kind": "reminder_24h",
        "channel": "email",
        "cause_event_id": "e1",
    },
    ev.NotificationFailed: {
        "notification_id": APPOINTMENT,
        "message_kind": "reminder_24h",
        "channel": "sms",
        "cause_event_id": "e1",
        "reason": "no SMS consent",
        "permanent": True,
    },
    ev.ClientStageReached: {"stage": "course_booked"},
    ev.AppointmentStatusChanged: {
        "appointment_id": APPOINTMENT,
        "kind": "medicine",
        "status": "fulfilled",
        "starts_at": "2026-03-30T08:00:00Z",
        "ends_at": "2026-03-30T11:00:00Z",
    },
    ev.AppointmentCheckedIn: {
        "appointment_id": APPOINTMENT,
        "kind": "medicine",
        "starts_at": "2026-03-30T08:00:00Z",
        "outcome": "refused",
        "refused_for": ["no_ride_home", "blood_pressure_over_limit"],
    },
    ev.CourseStatusChanged: {"course_id": COURSE, "status": "ended", "ended_as": "withdrawn"},
    ev.MeasureDue: {
        "measure_id": "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
        "course_id": COURSE,
        "point": "pre_dose",
        "instruments": ["phq9", "gad7"],
        "opens_at": "2026-03-28T08:00:00Z",
        "closes_at": "2026-03-30T08:00:00Z",
        "dose_number": 1,
        "appointment_id": APPOINTMENT,
    },
    ev.MeasureAnswered: {
        "responses": [
            {
                "questionnaire": "phq9",
                "items": [2, 2, 1, 2, 1, 1, 2, 1, 0],
                "total": 12,
                "loinc": "44261-6",
                "authored": "2026-03-29T18:00:00Z",
            },
            {
                "questionnaire": "gad7",
                "items": [1, 2, 1, 1, 0, 1, 2],
                "total": 8,
                "loinc": "70274-6",
                "authored": "2026-03-29T18:00:00Z",
            },
        ],
        "source": "link",
        "measure_id": "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
        "course_id": COURSE,
        "point": "pre_dose",
    },
    ev.CohortOutcomesSummarized: {
        "cohort_month": "2026-04",
        "point": "end_of_course",
        "clients_started": 12,
        "clients_measured": 11,
        "ended_early": 1,
        "mean_change": -7.4,
        "mean_change_ci95": [-9.8, -5.0],
        "response_rate": 0.58,
        "remission_rate": 0.33,
    },
}


def sample_json(event_type: type[ev.Event]) -> dict[str, Any]:
    return {**BASE, **SAMPLES[event_type]}
