"""Check-in before a medicine session and its record, over real Kafka and Redis (issue 16)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from services.scheduler.domain.schedule import ClientSchedule, Refused
from services.scheduler.store import unpack
from shared import events as ev
from shared import topics
from tests.builders.scheduler import PASSING_CHECKIN
from tests.helpers import auth, topic_messages
from tests.integration.scheduler.test_scheduler_service import booked_course, enrol
from tests.integration.scheduler.world import World, world

pytestmark = pytest.mark.integration

HIGH_BP = PASSING_CHECKIN.model_copy(
    update={"vitals": ev.VitalSigns(systolic=162, diastolic=96, heart_rate=90)}
)
VITALS = ev.VitalSigns(systolic=128, diastolic=82, heart_rate=76)


def first_dose(schedule: ClientSchedule) -> ev.Appointment:
    assert schedule.course is not None
    return next(
        a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
    )


async def at_start(w: World) -> tuple[ClientSchedule, ev.Appointment]:
    schedule = await w.booked_client()
    dose = first_dose(schedule)
    w.clock.advance(dose.starts_at - w.clock.now())
    return schedule, dose


async def test_a_check_in_refused_for_blood_pressure_publishes_the_refusal_and_alerts_staff(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule, dose = await at_start(w)
        after = await w.scheduler.check_in(w.clinic, dose.appointment_id, HIGH_BP)
        client = str(schedule.client_id)
        public = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_APPOINTMENT_CHECKED_IN.name, key=client
        )
        internal = await topic_messages(kafka_bootstrap, topics.SESSION_CHECKED_IN.name, key=client)
        alerts = await topic_messages(
            kafka_bootstrap, topics.CLINICAL_ALERT_RAISED.name, key=client
        )
        with pytest.raises(Refused, match="blood_pressure_over_limit"):
            await w.scheduler.complete(
                w.clinic, dose.appointment_id, ride_home_confirmed=True, phq9_total=5, phq9_item9=0
            )
    [fact] = public
    assert fact["value"]["outcome"] == "refused"
    assert fact["value"]["refused_for"] == ["blood_pressure_over_limit"]
    assert "answers" not in fact["value"]  # no measurements for partners
    # No measurement under any name (a uuid may well contain the digits "162").
    assert "systolic" not in json.dumps(fact["value"])
    assert 162 not in fact["value"].values()
    [checked] = internal
    assert checked["value"]["passed"] is False
    assert checked["value"]["answers"]["vitals"]["systolic"] == 162
    assert [(a["value"]["reason"], a["value"]["raised_during"]) for a in alerts] == [
        ("blood_pressure_over_limit", "check_in")
    ]
    assert alerts[0]["value"]["appointment_id"] == str(dose.appointment_id)
    assert after.course is not None
    assert after.course.status_of(dose.appointment_id) == ev.AppointmentStatus.BOOKED


async def test_a_completion_without_a_check_in_is_refused_and_one_after_a_passed_check_in_holds(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule, dose = await at_start(w)
        client = str(schedule.client_id)
        w.clock.advance(dose.ends_at - w.clock.now())
        with pytest.raises(Refused, match="no passed check-in"):
            await w.scheduler.complete(
                w.clinic, dose.appointment_id, ride_home_confirmed=True, phq9_total=5, phq9_item9=0
            )
        none_yet = await topic_messages(
            kafka_bootstrap, topics.SESSION_COMPLETED.name, key=client, wait_s=1
        )
        # The next dose, checked in as it starts, is then completed.
        assert schedule.course is not None
        second = [
            a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
        ][1]
        w.clock.advance(second.starts_at - w.clock.now())
        await w.scheduler.check_in(w.clinic, second.appointment_id, PASSING_CHECKIN)
        w.clock.advance(second.ends_at - w.clock.now())
        done = await w.scheduler.complete(
            w.clinic, second.appointment_id, ride_home_confirmed=True, phq9_total=5, phq9_item9=0
        )
        completed = await topic_messages(kafka_bootstrap, topics.SESSION_COMPLETED.name, key=client)
    assert none_yet == []
    assert done.course is not None
    assert done.course.status_of(second.appointment_id) == ev.AppointmentStatus.FULFILLED
    assert done.course.status_of(dose.appointment_id) == ev.AppointmentStatus.BOOKED
    assert [m["value"]["appointment_id"] for m in completed] == [str(second.appointment_id)]


async def test_a_session_record_lands_on_its_internal_topic_and_in_redis_and_a_severe_event_alerts(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule, dose = await at_start(w)
        await w.scheduler.check_in(w.clinic, dose.appointment_id, PASSING_CHECKIN)
        dosed = dose.starts_at + timedelta(minutes=15)
        record = ev.SessionRecord(
            route="sublingual",
            dose_mg=300,
            administered_by="staff-12",
            dosed_at=dosed,
            discharged_at=dosed + timedelta(minutes=125),
            vitals_at_dosing=VITALS,
            vitals_at_40_min=VITALS,
            vitals_at_discharge=VITALS,
            adverse_events=(
                ev.AdverseEvent(kind=ev.AdverseEventKind.HYPERTENSION, severity="severe"),
            ),
        )
        w.clock.advance(dose.ends_at - w.clock.now())
        await w.scheduler.record(w.clinic, dose.appointment_id, record)
        client = str(schedule.client_id)
        recorded = await topic_messages(kafka_bootstrap, topics.SESSION_RECORDED.name, key=client)
        alerts = await topic_messages(
            kafka_bootstrap, topics.CLINICAL_ALERT_RAISED.name, key=client
        )
        raw = await w.redis.get(w.scheduler.store.schedule_key(w.clinic, schedule.client_id))
    [message] = recorded
    assert ev.SessionRecord.model_validate(message["value"]["record"]) == record
    assert [(a["value"]["reason"], a["value"]["raised_during"]) for a in alerts] == [
        ("severe_adverse_event", "session")
    ]
    stored = unpack(raw)  # as the store keeps it: compressed
    assert stored.course is not None
    assert stored.course.records[str(dose.appointment_id)] == record


async def test_over_http_check_in_complete_and_a_record_too_short_is_a_422_naming_discharge(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
    redis_client: Redis,
) -> None:
    client, _ = await enrol(intake_events, clock)
    course = (await booked_course(kafka_bootstrap, client))["value"]
    dose = ev.Appointment.model_validate(
        next(a for a in course["appointments"] if a["kind"] == "medicine")
    )
    url = f"/v1/clinics/lisbon/appointments/{dose.appointment_id}"
    headers = auth("lisbon")
    clock.advance(dose.starts_at - clock.now())
    bad = await scheduler.post(
        f"{url}/check-in", json={"ride_home_confirmed": True}, headers=headers
    )
    assert bad.status_code == 422
    body = {
        "ride_home_confirmed": True,
        "fasting_confirmed": True,
        "vitals": {"systolic": 130, "diastolic": 85, "heart_rate": 70},
        "phq9_item9": 0,
    }
    checked = await scheduler.post(f"{url}/check-in", json=body, headers=headers)
    assert checked.status_code == 200, checked.text
    [session] = [
        a
        for a in checked.json()["course"]["appointments"]
        if a["appointment_id"] == str(dose.appointment_id)
    ]
    assert session["check_in"] == {
        "outcome": "passed",
        "refused_for": [],
        "proposed_for_rescheduling": False,
    }
    again = await scheduler.post(f"{url}/check-in", json=body, headers=headers)
    assert again.status_code == 200  # the same check-in sent again: a retry, nothing new
    other = await scheduler.post(
        f"{url}/check-in", json={**body, "fasting_confirmed": False}, headers=headers
    )
    assert other.status_code == 409  # another one for the same session time is refused
    clock.advance(dose.ends_at - clock.now())
    done = await scheduler.post(
        f"{url}/completion", json={"ride_home_confirmed": True}, headers=headers
    )
    assert done.status_code == 200, done.text
    vitals = body["vitals"]
    dosed = dose.starts_at + timedelta(minutes=10)
    record = {
        "route": "intramuscular",
        "dose_mg": 50,
        "administered_by": "staff-3",
        "dosed_at": dosed.isoformat(),
        "discharged_at": (dosed + timedelta(minutes=90)).isoformat(),
        "vitals_at_dosing": vitals,
        "vitals_at_40_min": vitals,
        "vitals_at_discharge": vitals,
    }
    short = await scheduler.post(f"{url}/record", json=record, headers=headers)
    assert short.status_code == 422
    assert short.json()["detail"][0]["loc"] == ["body", "discharged_at"]
    assert "minimum is 120 min" in short.json()["detail"][0]["msg"]
    record["discharged_at"] = (dosed + timedelta(minutes=130)).isoformat()
    kept = await scheduler.post(f"{url}/record", json=record, headers=headers)
    assert kept.status_code == 200, kept.text
    assert "dose_mg" not in kept.text  # the view says recorded, not what
    [session] = [
        a
        for a in kept.json()["course"]["appointments"]
        if a["appointment_id"] == str(dose.appointment_id)
    ]
    assert session["recorded"] is True
