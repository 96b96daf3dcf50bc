"""A clinic's day calendar over real Kafka and Redis: GET .../calendar/day?date= lists
exactly the appointments that start on that clinic-local date, as the clients'
schedules hold them, sorted by start then therapist; none of another clinic's, of
another day or cancelled; a daylight-saving day is 23 or 25 hours long."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from redis.asyncio import Redis

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import claims_for
from services.scheduler.store import SchedulerStore
from shared import events as ev
from tests.builders.scheduler import PASSING_CHECKIN
from tests.helpers import auth
from tests.integration.scheduler.conftest import CALENDAR

pytestmark = pytest.mark.integration
LISBON = ZoneInfo("Europe/Lisbon")
NEW_YORK = ZoneInfo("America/New_York")
ZONES = {"lisbon": LISBON, "boston": NEW_YORK}
FIELDS = (
    "appointment_id",
    "client_id",
    "kind",
    "status",
    "starts_at",
    "ends_at",
    "therapist_id",
    "room_id",
    "dose_number",
)
View = dict[str, Any]


async def schedule_of(
    scheduler: httpx.AsyncClient,
    client: uuid.UUID,
    clinic: str = "lisbon",
    ready: Callable[[View], bool] = lambda _: True,
) -> View:
    """The client's schedule (GET .../schedule) once `ready` holds of it (20 s at most)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        response = await scheduler.get(
            f"/v1/clinics/{clinic}/clients/{client}/schedule", headers=auth(clinic)
        )
        if response.status_code == 200 and ready(response.json()):
            return dict(response.json())
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.1)


async def consultation(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    client: uuid.UUID | None = None,
    clinic: str = "lisbon",
) -> View:
    event = ev.ConsultationRequested(
        clinic_id=clinic,
        client_id=client or uuid.uuid4(),
        occurred_at=clock.now(),
        contact=ev.Contact(name="Ada", email="ada@example.org"),
    )
    await intake_events.publish(event, intake_events.envelope_for(event))
    return await schedule_of(
        scheduler, event.client_id, clinic, lambda v: v["consultation"] is not None
    )


async def course(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    client: uuid.UUID | None = None,
) -> View:
    event = ev.ClientEnrolled(
        clinic_id="lisbon",
        client_id=client or uuid.uuid4(),
        occurred_at=clock.now(),
        consent_recorded_at=clock.now(),
        phq9_total=14,
        phq9_band=ev.Phq9Band.MODERATE,
        gad7_total=9,
    )
    await intake_events.publish(event, intake_events.envelope_for(event))
    return await schedule_of(scheduler, event.client_id, ready=lambda v: v["course"] is not None)


def held(view: View) -> list[View]:
    """The client's appointments as GET .../schedule shows them, less cancelled ones,
    in the day view's fields."""
    found = []
    if view["consultation"] is not None:
        found.append({**view["consultation"], "status": view["consultation_status"]})
    if view["course"] is not None:
        found += view["course"]["appointments"]
    return [
        {**{f: a[f] for f in FIELDS if f != "client_id"}, "client_id": view["client_id"]}
        for a in found
        if a["status"] != "cancelled"
    ]


def local_date(appointment: View, tz: ZoneInfo = LISBON) -> date:
    return datetime.fromisoformat(appointment["starts_at"]).astimezone(tz).date()


async def day_view(scheduler: httpx.AsyncClient, day: date, clinic: str = "lisbon") -> View:
    response = await scheduler.get(
        f"/v1/clinics/{clinic}/calendar/day",
        params={"date": day.isoformat()},
        headers=auth(clinic),
    )
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert body["date"] == day.isoformat()
    assert body["timezone"] == ZONES[clinic].key
    starts = [(a["starts_at"], a["therapist_id"]) for a in body["appointments"]]
    assert starts == sorted(starts)
    for appointment in body["appointments"]:
        assert local_date(appointment, ZONES[clinic]) == day
    return body


def of_clients(body: View, clients: set[str]) -> list[View]:
    """The day's appointments of `clients` (the clinic's calendar is shared with other
    tests, each in a week of its own), in the compared fields."""
    return sorted(
        ({f: a[f] for f in FIELDS} for a in body["appointments"] if a["client_id"] in clients),
        key=lambda a: (a["starts_at"], a["therapist_id"], a["appointment_id"]),
    )


def expected_on(views: list[View], day: date) -> list[View]:
    return sorted(
        (a for view in views for a in held(view) if local_date(a) == day),
        key=lambda a: (a["starts_at"], a["therapist_id"], a["appointment_id"]),
    )


def first_dose(view: View) -> View:
    return next(a for a in view["course"]["appointments"] if a["kind"] == "medicine")


async def test_the_day_lists_exactly_its_appointments_and_none_of_another_clinic_or_day(
    scheduler: httpx.AsyncClient, intake_events: EventPublisher, clock: FrozenClock
) -> None:
    first = await consultation(scheduler, intake_events, clock)
    first = await course(scheduler, intake_events, clock, uuid.UUID(first["client_id"]))
    assert first["consultation"] is not None
    second = await consultation(scheduler, intake_events, clock)
    boston = await consultation(scheduler, intake_events, clock, clinic="boston")
    views, ours = [first, second], {first["client_id"], second["client_id"]}
    boston_id = boston["consultation"]["appointment_id"]

    dose_day = local_date(first_dose(first))
    days = {local_date(a) for view in views for a in held(view)}
    days |= {dose_day - timedelta(days=1), dose_day + timedelta(days=1)}
    listed: list[str] = []
    for day in sorted(days):
        body = await day_view(scheduler, day)
        assert of_clients(body, ours) == expected_on(views, day), day
        assert body["therapists"] == [t["id"] for t in CALENDAR["therapists"]]
        assert body["rooms"] == [r["id"] for r in CALENDAR["rooms"]]
        assert boston_id not in {a["appointment_id"] for a in body["appointments"]}
        for appointment in body["appointments"]:
            if appointment["client_id"] not in ours:
                continue
            listed.append(appointment["appointment_id"])
            if appointment["kind"] == "medicine":  # booked, not checked in yet
                assert "ride_home_unconfirmed" in appointment["flags"]
                assert "check_in_refused" not in appointment["flags"]
            else:
                assert appointment["flags"] == []
    # Every appointment of both clients, each on its own day only; both consultations too.
    everything = [a["appointment_id"] for view in views for a in held(view)]
    assert sorted(listed) == sorted(everything)
    assert first_dose(first)["appointment_id"] in listed
    assert first["consultation"]["appointment_id"] in listed
    assert second["consultation"]["appointment_id"] in listed

    # Boston's own day lists its consultation, on Boston's date.
    boston_day = await day_view(scheduler, local_date(boston["consultation"], NEW_YORK), "boston")
    assert boston_id in {a["appointment_id"] for a in boston_day["appointments"]}


async def test_a_cancelled_session_is_not_listed(
    scheduler: httpx.AsyncClient, intake_events: EventPublisher, clock: FrozenClock
) -> None:
    booked = await course(scheduler, intake_events, clock)
    client, dose = booked["client_id"], first_dose(booked)
    day = local_date(dose)
    before = await day_view(scheduler, day)
    assert dose["appointment_id"] in {a["appointment_id"] for a in before["appointments"]}

    cancelled = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{dose['appointment_id']}/cancellation",
        headers=auth("lisbon"),
    )
    assert cancelled.status_code == 200, cancelled.text
    after = await schedule_of(scheduler, uuid.UUID(client))
    days = {day} | {local_date(a) for a in held(after)}
    for each in sorted(days):
        body = await day_view(scheduler, each)
        assert dose["appointment_id"] not in {a["appointment_id"] for a in body["appointments"]}
        assert of_clients(body, {client}) == expected_on([after], each), each


async def test_a_dose_is_flagged_as_its_check_in_went(
    scheduler: httpx.AsyncClient, intake_events: EventPublisher, clock: FrozenClock
) -> None:
    booked = await course(scheduler, intake_events, clock)
    doses = [a for a in booked["course"]["appointments"] if a["kind"] == "medicine"]

    async def check_in(dose: View, **answers: bool) -> tuple[list[str], bool]:
        # Half an hour before it starts: its pre-dose measure is open (and unanswered)
        # until the session starts, when its timer closes it.
        starts_at = datetime.fromisoformat(dose["starts_at"])
        clock.advance(starts_at - timedelta(minutes=30) - clock.now())
        response = await scheduler.post(
            f"/v1/clinics/lisbon/appointments/{dose['appointment_id']}/check-in",
            json=PASSING_CHECKIN.model_copy(update=answers).model_dump(mode="json"),
            headers=auth("lisbon"),
        )
        assert response.status_code == 200, response.text
        body = await day_view(scheduler, local_date(dose))
        [listed] = [
            a for a in body["appointments"] if a["appointment_id"] == dose["appointment_id"]
        ]
        return listed["flags"], bool(response.json()["measure_overdue"])

    flags, overdue = await check_in(doses[0], ride_home_confirmed=False)
    assert overdue  # as the check-in itself says
    assert flags == ["check_in_refused", "ride_home_unconfirmed", "measure_overdue"]
    flags, overdue = await check_in(doses[1])
    assert overdue
    assert flags == ["measure_overdue"]


# --- the days the clocks change (Lisbon, 2027) ---------------------------------------
# No clinic opens at midnight, so the day's edges are tried with consultations recorded
# straight into the store (ledger, index, schedule) as the write step would: each its
# own client, ids fixed, so a later run records the same ones again.


def lisbon(day: date, hour: int, minute: int, fold: int = 0) -> datetime:
    wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=LISBON, fold=fold)
    return wall.astimezone(UTC)


EDGES = {
    "spring-0030": (lisbon(date(2027, 3, 28), 0, 30), date(2027, 3, 28)),
    "spring-2330": (lisbon(date(2027, 3, 28), 23, 30), date(2027, 3, 28)),
    "spring-next-0030": (lisbon(date(2027, 3, 29), 0, 30), date(2027, 3, 29)),
    "spring-eve-2330": (lisbon(date(2027, 3, 27), 23, 30), date(2027, 3, 27)),
    "autumn-0030": (lisbon(date(2027, 10, 31), 0, 30), date(2027, 10, 31)),
    "autumn-0130-again": (lisbon(date(2027, 10, 31), 1, 30, fold=1), date(2027, 10, 31)),
    "autumn-2330": (lisbon(date(2027, 10, 31), 23, 30), date(2027, 10, 31)),
    "autumn-next-0030": (lisbon(date(2027, 11, 1), 0, 30), date(2027, 11, 1)),
    "autumn-eve-2330": (lisbon(date(2027, 10, 30), 23, 30), date(2027, 10, 30)),
}
SEEDS = uuid.UUID("6d1f9a52-29c4-4d0e-9a51-2f3c8e0b7d11")


async def recorded(redis: Redis, name: str, starts_at: datetime) -> ev.Appointment:
    client = uuid.uuid5(SEEDS, f"client/{name}")
    appointment = ev.Appointment(
        appointment_id=uuid.uuid5(SEEDS, f"appointment/{name}"),
        kind=ev.AppointmentKind.CONSULTATION,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=30),
        therapist_id="t-ana",
    )
    schedule = ClientSchedule(
        clinic_id="lisbon",
        client_id=client,
        correlation_id=name,
        consultation=appointment,
        consultation_status=ev.AppointmentStatus.BOOKED,
    )
    store = SchedulerStore(redis)
    assert await store.ledger.reserve("lisbon", claims_for(client, [appointment])) is None
    async with redis.pipeline(transaction=True) as tx:
        store.save(tx, schedule)
        await tx.execute()
    return appointment


async def test_a_daylight_saving_day_is_bounded_by_its_local_midnights(
    scheduler: httpx.AsyncClient, redis_client: Redis
) -> None:
    on_day: dict[date, set[str]] = {}
    for name, (starts_at, day) in EDGES.items():
        appointment = await recorded(redis_client, name, starts_at)
        on_day.setdefault(day, set()).add(str(appointment.appointment_id))
    seeded = set().union(*on_day.values())
    for day, expected in on_day.items():
        body = await day_view(scheduler, day)
        listed = {a["appointment_id"] for a in body["appointments"]}
        assert listed & seeded == expected, day
    # 2027-03-28 lasts 23 hours: 00:30 on the 29th (23:30 UTC on the 28th) is the 29th's.
    spring = await day_view(scheduler, date(2027, 3, 28))
    assert str(uuid.uuid5(SEEDS, "appointment/spring-next-0030")) not in {
        a["appointment_id"] for a in spring["appointments"]
    }


# --- the request -----------------------------------------------------------------------


def names(response: httpx.Response, field: str) -> bool:
    return any(field in [str(p) for p in e["loc"]] for e in response.json()["detail"])


@pytest.mark.parametrize(
    "given", [None, "", "1999-12-31", "2101-01-01", "2027-02-30", "28-03-2027"]
)
async def test_a_missing_or_bad_date_is_a_422_naming_date(
    scheduler: httpx.AsyncClient, given: str | None
) -> None:
    params = {} if given is None else {"date": given}
    response = await scheduler.get(
        "/v1/clinics/lisbon/calendar/day", params=params, headers=auth("lisbon")
    )
    assert response.status_code == 422, response.text
    assert names(response, "date"), response.text


async def test_the_day_is_the_clinics_own_to_read(scheduler: httpx.AsyncClient) -> None:
    path = "/v1/clinics/lisbon/calendar/day"
    assert (await scheduler.get(path, params={"date": "2027-03-28"})).status_code == 401
    foreign = await scheduler.get(path, params={"date": "2027-03-28"}, headers=auth("boston"))
    assert foreign.status_code == 404
    # Refused as a stranger before the query is even looked at.
    assert (await scheduler.get(path, headers=auth("boston"))).status_code == 404
