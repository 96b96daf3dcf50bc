"""Outcomes over real Kafka and Redis, through the scheduler's HTTP API: a client's course
outcome, the cohort table, and the public cohort summary (none for 9 clients, one for 10,
the same figures never twice, changed figures as a new fact)."""

from __future__ import annotations

import asyncio
import json
import statistics
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn

from ops import demo_clinics, kapctl, outcomes
from services.scheduler.config import Settings
from services.scheduler.domain import endings, lifecycle
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.cohorts import cohort_id
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import Bookings, CoursePlan
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.main import create_app
from services.scheduler.measure_log import log_key as measures_key
from shared import events as ev
from shared import topics
from tests.builders.scheduler import checked_in, completed_course
from tests.helpers import topic_messages
from tests.integration.scheduler.world import World, world

pytestmark = pytest.mark.integration

END = ev.MeasurePoint.END_OF_COURSE
# Ten clients' PHQ-9 at enrolment and at the end of the course: 9 of 10 respond (the
# sixth does not: 10 from 14), 2 remit (4 and 3).
BASELINES = (14, 15, 16, 17, 18, 14, 15, 16, 17, 18)
ENDS = (4, 6, 8, 7, 9, 10, 5, 3, 8, 6)
PUBLIC = topics.PUBLIC_COHORT_OUTCOMES.name


@asynccontextmanager
async def outcomes_api(
    w: World, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The scheduler's HTTP API on the world's clinic and clock, served on a real port
    (kapctl talks to it as to a deployment)."""
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=tmp_path / f"{w.clinic}.json",
    )
    config = uvicorn.Config(create_app(settings, w.clock), host="127.0.0.1", port=0)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or serving.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the scheduler did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    headers = {"X-API-Key": demo_clinics.api_key(w.clinic)}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            yield api
    finally:
        server.should_exit = True
        await serving


def first_dose(schedule: ClientSchedule) -> datetime:
    assert schedule.course is not None
    return min(
        a.starts_at
        for a in schedule.course.plan.appointments
        if a.kind is ev.AppointmentKind.MEDICINE
    )


async def measured(
    w: World, schedule: ClientSchedule, baseline: int, end: int | None, ended_at: datetime
) -> ClientSchedule:
    """Save the schedule, and the measures the recorder would have kept: the enrolment
    PHQ-9 ten days before the first dose, and one named for the end of the course."""
    await w.save(schedule)
    assert schedule.course is not None
    key = measures_key(w.clinic, schedule.client_id)
    enrolment = {
        "measure_id": None,
        "point": "enrolment",
        "course_id": None,
        "authored": (first_dose(schedule) - timedelta(days=10)).isoformat(),
        "source": "staff",
        "phq9": baseline,
        "gad7": 11,
    }
    await w.redis.hset(key, f"enrolment:{uuid.uuid4()}", json.dumps(enrolment))
    if end is not None:
        answer = {
            "measure_id": str(uuid.uuid4()),
            "point": "end_of_course",
            "course_id": str(schedule.course.plan.course_id),
            "authored": (ended_at + timedelta(days=2)).isoformat(),
            "source": "link",
            "phq9": end,
            "gad7": 6,
        }
        await w.redis.hset(key, str(uuid.uuid4()), json.dumps(answer))
    return schedule


def withdrawn_after_two_doses(calendar: ClinicCalendar, ended_at: datetime) -> ClientSchedule:
    client = uuid.uuid4()
    schedule = ClientSchedule(clinic_id=calendar.clinic_id, client_id=client, correlation_id="w")
    start = ended_at - timedelta(days=45)
    plan = plan_course(calendar, Bookings(), uuid.uuid4(), start)
    assert isinstance(plan, CoursePlan)
    schedule, _ = lifecycle.course_booked(schedule, plan, start)
    doses = [a for a in plan.appointments if a.kind is ev.AppointmentKind.MEDICINE][:2]
    for dose in doses:
        schedule = checked_in(schedule, dose, calendar)
        schedule, _ = lifecycle.complete_session(
            schedule,
            dose.appointment_id,
            ride_home_confirmed=True,
            phq9_total=None,
            phq9_item9=None,
            calendar=calendar,
            now=dose.ends_at,
        )
    schedule, _, _ = endings.end_course(schedule, ev.CourseEndCode.WITHDRAWN, ended_at)
    return schedule


def row(table: dict[str, Any], month: str, point: str = "end_of_course") -> dict[str, Any]:
    return next(r for r in table["cohorts"] if r["month"] == month and r["point"] == point)


def status(report: dict[str, Any], month: str) -> dict[str, Any]:
    return next(c for c in report["cohorts"] if c["month"] == month and c["point"] == END)


async def test_a_cohort_of_9_publishes_nothing_and_10_publishes_once(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        world(kafka_bootstrap, redis_url, tmp_path) as w,
        outcomes_api(w, kafka_bootstrap, redis_url, tmp_path) as api,
    ):
        calendar = await w.scheduler.calendar(w.clinic)
        ended_at = w.clock.now()
        month = ended_at.astimezone(ZoneInfo("Europe/Lisbon")).strftime("%Y-%m")
        cohort = str(cohort_id(w.clinic, month, END))
        clients = [
            await measured(w, completed_course(calendar, ended_at), baseline, end, ended_at)
            for baseline, end in zip(BASELINES[:9], ENDS[:9], strict=True)
        ]
        w.clock.advance(timedelta(days=8))  # every end-of-course window has closed

        nine = (await api.post(f"/v1/clinics/{w.clinic}/outcomes/publish")).json()
        assert status(nine, month)["status"] == "suppressed"
        table = (await api.get(f"/v1/clinics/{w.clinic}/outcomes")).json()
        assert row(table, month)["clients_started"] == 9
        assert row(table, month)["suppressed"] is True
        assert await topic_messages(kafka_bootstrap, PUBLIC, key=cohort, wait_s=2) == []

        tenth = completed_course(calendar, ended_at)
        clients.append(await measured(w, tenth, BASELINES[9], ENDS[9], ended_at))
        ten = (await api.post(f"/v1/clinics/{w.clinic}/outcomes/publish")).json()
        assert status(ten, month)["status"] == "published"
        again = (await api.post(f"/v1/clinics/{w.clinic}/outcomes/publish")).json()
        assert status(again, month) == {**status(ten, month), "status": "already_published"}
        published = await topic_messages(kafka_bootstrap, PUBLIC, key=cohort, wait_s=3, expect=2)

        eleventh = withdrawn_after_two_doses(calendar, ended_at)
        await measured(w, eleventh, 18, None, ended_at)
        changed = (await api.post(f"/v1/clinics/{w.clinic}/outcomes/publish")).json()
        after = await topic_messages(kafka_bootstrap, PUBLIC, key=cohort, wait_s=2, expect=2)
        table = (await api.get(f"/v1/clinics/{w.clinic}/outcomes")).json()
        chart = tmp_path / "outcomes.png"
        argv = ["outcomes", "--clinic", w.clinic, "--url", str(api.base_url), "--chart", str(chart)]
        argv += ["--api-key", demo_clinics.api_key(w.clinic)]
        code = await asyncio.to_thread(kapctl.main, argv)
        printed = capsys.readouterr().out
        keys = {w.clinic: demo_clinics.api_key(w.clinic)}
        demo_chart = await outcomes.write_outcomes_chart(
            str(api.base_url), keys, tmp_path / "demo" / "outcomes.png"
        )

    assert len(published) == 1  # the second request published nothing
    message = published[0]
    assert message["headers"]["ce_id"] == status(ten, month)["event_id"]
    assert message["headers"]["ce_subject"] == cohort
    figures = message["value"]
    assert (figures["cohort_month"], figures["point"]) == (month, "end_of_course")
    assert (figures["clients_started"], figures["clients_measured"]) == (10, 10)
    mean = statistics.fmean(e - b for b, e in zip(BASELINES, ENDS, strict=True))
    assert figures["mean_change"] == round(mean, 2)
    low, high = figures["mean_change_ci95"]
    assert low < mean < high
    assert (figures["response_rate"], figures["remission_rate"]) == (0.9, 0.2)
    raw = json.dumps(message)
    assert not any(str(c.client_id) in raw for c in clients)  # no client named

    # Published once: the eleventh client changes the table, never the topic (two summaries
    # of one cohort could be subtracted to show that one client's change).
    assert status(changed, month)["status"] == "already_published"
    assert status(changed, month)["event_id"] == status(ten, month)["event_id"]
    assert [m["headers"]["ce_id"] for m in after] == [status(ten, month)["event_id"]]
    assert row(table, month)["clients_started"] == 11
    end_row = row(table, month)
    assert (end_row["final"], end_row["suppressed"], end_row["awaiting"]) == (True, False, 0)
    assert row(table, month, "month_1")["final"] is False  # its window is still to come

    assert code == 0
    line = next(t for t in printed.splitlines() if t.startswith(f"{month}  end_of_course"))
    assert line.split()[2:6] == ["11", "1", "10", "0"]  # started, ended, measured, awaiting
    assert f"{mean:+.1f} ({low:.1f} to {high:.1f})" in line
    assert line.endswith("final")
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert demo_chart.read_bytes()[:1000] == chart.read_bytes()[:1000]  # the same chart


async def test_a_clients_outcomes_show_the_baseline_and_the_change_at_each_point(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with (
        world(kafka_bootstrap, redis_url, tmp_path) as w,
        outcomes_api(w, kafka_bootstrap, redis_url, tmp_path) as api,
    ):
        calendar = await w.scheduler.calendar(w.clinic)
        ended_at = w.clock.now()
        schedule = await measured(w, completed_course(calendar, ended_at), 16, 7, ended_at)
        client = schedule.client_id
        found = await api.get(f"/v1/clinics/{w.clinic}/clients/{client}/outcomes")
        stranger = await api.get(f"/v1/clinics/{w.clinic}/clients/{uuid.uuid4()}/outcomes")

    assert found.status_code == 200, found.text
    assert stranger.status_code == 404
    body = found.json()
    assert [m["point"] for m in body["measures"]] == ["enrolment", "end_of_course"]
    course = body["course"]
    assert course["ending"] == "completed"
    assert course["baseline"]["phq9"] == 16
    end, *follow_ups = course["points"]
    assert (end["point"], end["phq9"], end["change"]) == ("end_of_course", 7, -9)
    assert (end["responded"], end["remitted"]) == (True, False)
    assert [p["phq9"] for p in follow_ups] == [None, None, None]
    assert course["cohort_month"] == ended_at.astimezone(ZoneInfo("Europe/Lisbon")).strftime(
        "%Y-%m"
    )
