"""A quick local timing check of the planner (not a test: timings belong to no assertion).

    .venv/bin/python -m tests.unit.scheduler.timing_check [load ...]

A clinic of 20 therapists (each working 3 to 5 of 6 open days) and 8 rooms, with six weeks
of bookings filling `load` of every therapist's and room's hours. Each case is timed three
times and the fastest kept (CPU time of this thread), so a busy shared machine skews less.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from services.scheduler.domain import ClinicCalendar
from services.scheduler.domain_plans import Bookings, CoursePlan
from services.scheduler.planner import find_consultation_slot, plan_course

START = datetime(2026, 3, 16)  # a Monday, clinic-local wall time


def clinic(rng: random.Random) -> ClinicCalendar:
    day = [{"start": "08:00", "end": "20:00"}]
    split = [{"start": "08:00", "end": "13:00"}, {"start": "14:00", "end": "19:00"}]
    therapists = [
        {
            "id": f"t{n}",
            "display_name": f"Therapist {n}",
            "availability": {d: split for d in rng.sample(range(6), rng.randint(3, 5))},
        }
        for n in range(20)
    ]
    return ClinicCalendar.model_validate(
        {
            "clinic_id": "bench",
            "timezone": "Europe/Lisbon",
            "opening_hours": {d: day for d in range(6)},
            "therapists": therapists,
            "rooms": [{"id": f"r{n}", "name": f"Room {n}"} for n in range(8)],
            "closures": ["2026-04-03", "2026-04-25"],
        }
    )


def booked(calendar: ClinicCalendar, rng: random.Random, load: float) -> Bookings:
    def busy(share: float, lengths: list[int]) -> list[dict[str, datetime]]:
        spans = []
        for offset in range(42):
            at = (START + timedelta(days=offset, hours=8)).replace(tzinfo=calendar.tz)
            while at.hour < 19:
                length = timedelta(minutes=rng.choice(lengths))
                if rng.random() < share:
                    spans.append({"starts_at": at, "ends_at": at + length})
                at += length
        return spans

    return Bookings.model_validate(
        {
            "therapists": {t.id: busy(load, [60, 60, 180]) for t in calendar.therapists},
            "rooms": {r.id: busy(load, [180]) for r in calendar.rooms},
            "client": busy(0.05, [60]),
        }
    )


def fastest_of_three(run: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(3):
        started = time.thread_time()
        result = run(*args)
        best = min(best, time.thread_time() - started)
    return best * 1000, result


def percentiles(label: str, millis: list[float]) -> str:
    millis.sort()
    p50, p99 = millis[len(millis) // 2], millis[int(len(millis) * 0.99) - 1]
    return f"{label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {millis[-1]:.1f} ms"


def check(load: float, cases: int = 200) -> None:
    rng = random.Random(7)
    calendar = clinic(rng)
    started = time.perf_counter()
    bookings = booked(calendar, rng, load)
    loading = (time.perf_counter() - started) * 1000
    intervals = sum(len(v) for v in (*bookings.therapists.values(), *bookings.rooms.values()))
    courses, slots, planned = [], [], 0
    for _ in range(cases):
        not_before = START + timedelta(days=rng.randint(0, 6), hours=rng.randint(7, 18))
        at = not_before.replace(tzinfo=calendar.tz).astimezone(UTC)
        preferred = f"t{rng.randint(0, 19)}"
        millis, plan = fastest_of_three(plan_course, calendar, bookings, uuid4(), at, preferred)
        courses.append(millis)
        planned += isinstance(plan, CoursePlan)
        slots.append(fastest_of_three(find_consultation_slot, calendar, bookings, [], at)[0])
    print(f"load {load:.0%}: {intervals} booked intervals (building Bookings {loading:.0f} ms)")
    print("  " + percentiles(f"plan_course ({planned}/{cases} planned)", courses))
    print("  " + percentiles("find_consultation_slot", slots))


if __name__ == "__main__":
    for load in [float(arg) for arg in sys.argv[1:]] or [0.3, 0.45, 0.6]:
        check(load)
