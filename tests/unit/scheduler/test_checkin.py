"""Check-in before a medicine session and the session record: the pure rules (issue 16)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.domain import checkin as rules
from services.scheduler.domain import lifecycle, medicine
from services.scheduler.domain.clinic import CheckInPolicy, ClinicCalendar
from services.scheduler.domain.schedule import ClientSchedule, Invalid, Refused
from shared import events as ev
from tests.builders.scheduler import PASSING_CHECKIN, checked_in
from tests.unit.scheduler.builders import clinic
from tests.unit.scheduler.test_booster_lifecycle import booked

POLICY = CheckInPolicy()
Refusal = ev.CheckInRefusal


def answers(
    *,
    ride: bool = True,
    fasting: bool = True,
    bp: tuple[int, int] = (120, 80),
    item9: int = 0,
) -> ev.CheckInAnswers:
    vitals = ev.VitalSigns(systolic=bp[0], diastolic=bp[1], heart_rate=70)
    return ev.CheckInAnswers(
        ride_home_confirmed=ride, fasting_confirmed=fasting, vitals=vitals, phq9_item9=item9
    )


def first_dose(schedule: ClientSchedule) -> ev.Appointment:
    assert schedule.course is not None
    return next(
        a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
    )


def with_checkin(
    given_answers: ev.CheckInAnswers, calendar: ClinicCalendar | None = None
) -> tuple[ClinicCalendar, ClientSchedule, ev.Appointment, list[ev.Event]]:
    calendar = calendar or clinic()
    schedule = booked(calendar)
    dose = first_dose(schedule)
    schedule, events = medicine.check_in(
        schedule, dose.appointment_id, given_answers, calendar, dose.starts_at
    )
    return calendar, schedule, dose, events


def alerts(events: list[ev.Event] | tuple[ev.Event, ...]) -> list[tuple[str, str]]:
    return [(e.reason, e.raised_during) for e in events if isinstance(e, ev.ClinicalAlertRaised)]


# --- pass or refuse -------------------------------------------------------------


@given(ride=st.booleans(), fasting=st.booleans(), high_bp=st.booleans())
def test_a_check_in_passes_iff_ride_fasting_and_blood_pressure_are_all_fine(
    ride: bool, fasting: bool, high_bp: bool
) -> None:
    found = rules.refusals(
        answers(ride=ride, fasting=fasting, bp=(150, 80) if high_bp else (120, 80)), POLICY
    )
    expected = (
        [Refusal.NO_RIDE_HOME] * (not ride)
        + [Refusal.NOT_FASTING] * (not fasting)
        + [Refusal.BLOOD_PRESSURE_OVER_LIMIT] * high_bp
    )
    assert list(found) == expected


@pytest.mark.parametrize(
    ("bp", "over"),
    [((140, 90), False), ((141, 90), True), ((140, 91), True), ((139, 89), False)],
)
def test_blood_pressure_at_the_limit_passes_and_one_above_refuses(
    bp: tuple[int, int], over: bool
) -> None:
    assert rules.blood_pressure_over_limit(answers(bp=bp).vitals, POLICY) is over


def test_the_clinic_sets_its_own_blood_pressure_limit() -> None:
    strict = CheckInPolicy(systolic_limit=130, diastolic_limit=85)
    assert rules.refusals(answers(bp=(131, 80)), strict) == (Refusal.BLOOD_PRESSURE_OVER_LIMIT,)
    assert rules.refusals(answers(bp=(130, 85)), strict) == ()


def test_a_passed_check_in_is_kept_and_published_internally_and_to_partners() -> None:
    _, schedule, dose, events = with_checkin(PASSING_CHECKIN)
    assert schedule.course is not None
    kept = schedule.course.checkin_for(dose)
    assert kept is not None
    assert kept.passed
    internal, public = events
    assert isinstance(internal, ev.SessionCheckedIn)
    assert (internal.passed, internal.answers) == (True, PASSING_CHECKIN)
    assert isinstance(public, ev.AppointmentCheckedIn)
    assert (public.outcome, public.refused_for) == ("passed", ())


def test_a_refused_check_in_proposes_the_session_for_rescheduling_and_replans_nothing() -> None:
    _, schedule, dose, events = with_checkin(answers(ride=False, bp=(160, 100)))
    assert schedule.course is not None
    kept = schedule.course.checkin_for(dose)
    assert kept is not None
    assert kept.refused_for == (Refusal.NO_RIDE_HOME, Refusal.BLOOD_PRESSURE_OVER_LIMIT)
    assert schedule.course.status_of(dose.appointment_id) == ev.AppointmentStatus.BOOKED
    assert dose in schedule.course.plan.appointments  # still where it was
    public = next(e for e in events if isinstance(e, ev.AppointmentCheckedIn))
    assert (public.outcome, public.refused_for) == ("refused", kept.refused_for)
    assert not any(isinstance(e, ev.SessionRescheduled | ev.SessionScheduled) for e in events)


# --- alerts ---------------------------------------------------------------------


@pytest.mark.parametrize("ride", [True, False])
@pytest.mark.parametrize("item9", [1, 2, 3])
def test_item_9_above_0_alerts_staff_whether_the_check_in_passes_or_not(
    ride: bool, item9: int
) -> None:
    _, _, dose, events = with_checkin(answers(ride=ride, item9=item9))
    [alert] = [e for e in events if isinstance(e, ev.ClinicalAlertRaised)]
    assert (alert.reason, alert.phq9_item9, alert.raised_during) == (
        "phq9_item9_positive",
        item9,
        "check_in",
    )
    assert alert.appointment_id == dose.appointment_id


def test_blood_pressure_over_the_limit_alerts_staff_and_item_9_alerts_too() -> None:
    _, _, _, events = with_checkin(answers(bp=(141, 80), item9=1))
    assert alerts(events) == [
        ("phq9_item9_positive", "check_in"),
        ("blood_pressure_over_limit", "check_in"),
    ]


def test_a_fine_check_in_raises_no_alert() -> None:
    assert alerts(with_checkin(answers(bp=(140, 90)))[3]) == []


def test_a_check_in_refused_for_timing_still_carries_its_item_9_alert() -> None:
    calendar = clinic()
    schedule = booked(calendar)
    dose = first_dose(schedule)
    too_early = dose.starts_at - timedelta(minutes=POLICY.opens_minutes_before + 1)
    with pytest.raises(Refused, match="opens 120 min") as refused:
        medicine.check_in(schedule, dose.appointment_id, answers(item9=2), calendar, too_early)
    assert alerts(refused.value.events) == [("phq9_item9_positive", "check_in")]


def test_a_session_is_checked_in_once_and_only_while_it_is_ahead_or_under_way() -> None:
    calendar, schedule, dose, _ = with_checkin(answers(ride=False))
    with pytest.raises(Refused, match="already checked in"):
        medicine.check_in(schedule, dose.appointment_id, PASSING_CHECKIN, calendar, dose.starts_at)
    # The same check-in sent again (a retry after a lost answer) changes and says nothing.
    again, events = medicine.check_in(
        schedule, dose.appointment_id, answers(ride=False), calendar, dose.starts_at
    )
    assert (again, events) == (schedule, [])
    fresh = booked(calendar)
    later = first_dose(fresh)
    with pytest.raises(Refused, match="session is over"):
        medicine.check_in(fresh, later.appointment_id, PASSING_CHECKIN, calendar, later.ends_at)


def test_only_medicine_sessions_are_checked_in() -> None:
    calendar = clinic()
    schedule = booked(calendar)
    assert schedule.course is not None
    prep = schedule.course.plan.appointments[0]
    assert prep.kind == ev.AppointmentKind.PREPARATION
    with pytest.raises(Refused, match="medicine sessions"):
        medicine.check_in(schedule, prep.appointment_id, PASSING_CHECKIN, calendar, prep.starts_at)


# --- completion -----------------------------------------------------------------


def complete(calendar: ClinicCalendar, schedule: ClientSchedule, dose: ev.Appointment) -> None:
    lifecycle.complete_session(
        schedule,
        dose.appointment_id,
        ride_home_confirmed=True,
        phq9_total=5,
        phq9_item9=0,
        calendar=calendar,
        now=dose.ends_at,
    )


def test_a_medicine_session_is_not_completed_without_a_passed_check_in() -> None:
    calendar = clinic()
    schedule = booked(calendar)
    dose = first_dose(schedule)
    with pytest.raises(Refused, match="no passed check-in"):
        complete(calendar, schedule, dose)
    complete(calendar, checked_in(schedule, dose, calendar), dose)  # passes


def test_a_refused_check_in_stops_completion_even_when_the_policy_asks_for_none() -> None:
    lenient = clinic(policy={"checkin": {"completion_requires_checkin": False}})
    unchecked = booked(lenient)
    complete(lenient, unchecked, first_dose(unchecked))  # no check-in: allowed
    calendar, schedule, dose, _ = with_checkin(answers(fasting=False), lenient)
    with pytest.raises(Refused, match=r"refused \(not_fasting\)"):
        complete(calendar, schedule, dose)


def test_a_check_in_is_for_the_time_it_was_made_so_a_moved_session_needs_another() -> None:
    _, schedule, dose, _ = with_checkin(PASSING_CHECKIN)
    assert schedule.course is not None
    moved = dose.model_copy(update={"starts_at": dose.starts_at + timedelta(days=1)})
    assert schedule.course.checkin_for(moved) is None


# --- the session record ---------------------------------------------------------


def record(
    dose: ev.Appointment, monitored: timedelta, *severities: ev.Severity
) -> ev.SessionRecord:
    vitals = ev.VitalSigns(systolic=130, diastolic=85, heart_rate=80)
    dosed = dose.starts_at + timedelta(minutes=10)
    return ev.SessionRecord(
        route="intramuscular",
        dose_mg=60,
        administered_by="staff-7",
        dosed_at=dosed,
        discharged_at=dosed + monitored,
        vitals_at_dosing=vitals,
        vitals_at_40_min=vitals,
        vitals_at_discharge=vitals,
        adverse_events=tuple(
            ev.AdverseEvent(kind=ev.AdverseEventKind.NAUSEA, severity=s) for s in severities
        ),
    )


def test_a_session_record_is_kept_and_published_on_its_internal_topic() -> None:
    calendar, schedule, dose, _ = with_checkin(PASSING_CHECKIN)
    given_record = record(dose, timedelta(minutes=120), "mild")
    schedule, events = medicine.record_session(
        schedule, dose.appointment_id, given_record, calendar, dose.ends_at
    )
    assert schedule.course is not None
    assert schedule.course.records[str(dose.appointment_id)] == given_record
    [recorded] = events
    assert isinstance(recorded, ev.SessionRecorded)
    assert (recorded.record, recorded.dose_number) == (given_record, 1)


@pytest.mark.parametrize(("minutes", "accepted"), [(119, False), (120, True), (180, True)])
def test_monitoring_shorter_than_the_policy_minimum_is_refused_naming_discharge(
    minutes: int, accepted: bool
) -> None:
    calendar, schedule, dose, _ = with_checkin(PASSING_CHECKIN)
    given_record = record(dose, timedelta(minutes=minutes))
    now = dose.ends_at + timedelta(hours=1)
    if accepted:
        medicine.record_session(schedule, dose.appointment_id, given_record, calendar, now)
        return
    with pytest.raises(Invalid, match="minimum is 120 min") as invalid:
        medicine.record_session(schedule, dose.appointment_id, given_record, calendar, now)
    assert invalid.value.field == "discharged_at"


def test_the_clinic_sets_its_own_monitoring_minimum() -> None:
    calendar = clinic(policy={"checkin": {"min_monitoring_minutes": 150}})
    calendar, schedule, dose, _ = with_checkin(PASSING_CHECKIN, calendar)
    now = dose.ends_at + timedelta(hours=1)
    with pytest.raises(Invalid, match="minimum is 150 min"):
        medicine.record_session(
            schedule, dose.appointment_id, record(dose, timedelta(minutes=140)), calendar, now
        )


@pytest.mark.parametrize(
    ("severities", "alerted"),
    [((), False), (("mild", "moderate"), False), (("severe",), True), (("mild", "severe"), True)],
)
def test_a_severe_adverse_event_alerts_staff_at_once(
    severities: tuple[ev.Severity, ...], alerted: bool
) -> None:
    calendar, schedule, dose, _ = with_checkin(PASSING_CHECKIN)
    given_record = record(dose, timedelta(minutes=130), *severities)
    _, events = medicine.record_session(
        schedule, dose.appointment_id, given_record, calendar, dose.ends_at
    )
    assert alerts(events) == ([("severe_adverse_event", "session")] if alerted else [])


def test_a_severe_adverse_event_alerts_even_when_its_record_is_refused() -> None:
    calendar, schedule, dose, _ = with_checkin(PASSING_CHECKIN)
    short = record(dose, timedelta(minutes=60), "severe")
    with pytest.raises(Invalid) as invalid:
        medicine.record_session(schedule, dose.appointment_id, short, calendar, dose.ends_at)
    assert alerts(invalid.value.events) == [("severe_adverse_event", "session")]


def test_no_record_without_a_passed_check_in_nor_twice() -> None:
    calendar = clinic()
    schedule = booked(calendar)
    dose = first_dose(schedule)
    given_record = record(dose, timedelta(minutes=125))
    with pytest.raises(Refused, match="no passed check-in"):
        medicine.record_session(schedule, dose.appointment_id, given_record, calendar, dose.ends_at)
    schedule = checked_in(schedule, dose, calendar)
    schedule, _ = medicine.record_session(
        schedule, dose.appointment_id, given_record, calendar, dose.ends_at
    )
    # The same record sent again (a retry after a lost answer) changes and says nothing.
    again, events = medicine.record_session(
        schedule, dose.appointment_id, given_record, calendar, dose.ends_at
    )
    assert (again, events) == (schedule, [])
    other = record(dose, timedelta(minutes=130))
    with pytest.raises(Refused, match="already has its record"):
        medicine.record_session(schedule, dose.appointment_id, other, calendar, dose.ends_at)


def test_a_discharge_in_the_future_is_refused() -> None:
    calendar, schedule, dose, _ = with_checkin(PASSING_CHECKIN)
    given_record = record(dose, timedelta(minutes=125))
    with pytest.raises(Invalid) as invalid:
        medicine.record_session(
            schedule,
            dose.appointment_id,
            given_record,
            calendar,
            dose.starts_at + timedelta(hours=1),
        )
    assert invalid.value.field == "discharged_at"
