"""The course search's shortcuts change no plan: an exhaustive search is the oracle.

The single-therapist search stops early (no later first dose could end sooner) and drops
therapists whose working days alone rule out a sooner end. With both bounds switched off
it tries every therapist day by day until each has a course: the same plans must come out.
"""

from __future__ import annotations

import random
from datetime import UTC, timedelta
from uuid import UUID

import pytest

from services.scheduler.domain import planner
from services.scheduler.domain.planner import plan_course
from tests.builders.scheduler import START, booked, clinic

COURSE = UUID("6f1c2b9e-0000-4000-8000-00000000c0de")


@pytest.mark.parametrize("seed", range(8))
def test_the_search_bounds_change_no_plan(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    calendar = clinic(rng, therapists=rng.randint(2, 8), rooms=rng.randint(1, 4))
    bookings = booked(calendar, rng, rng.uniform(0.2, 0.8))
    cases = [
        (
            (START + timedelta(days=rng.randint(0, 6), hours=rng.randint(7, 18)))
            .replace(tzinfo=calendar.tz)
            .astimezone(UTC),
            rng.choice([None, *(t.id for t in calendar.therapists)]),
            rng.choice([10, 30, 120]),
        )
        for _ in range(6)
    ]

    bounded = [plan_course(calendar, bookings, COURSE, *case) for case in cases]
    monkeypatch.setattr(planner._CoursePlanner, "_cannot_end_before", lambda *_: False)
    monkeypatch.setattr(planner._CoursePlanner, "_alone_cannot_end_before", lambda *_: False)
    exhaustive = [plan_course(calendar, bookings, COURSE, *case) for case in cases]

    assert bounded == exhaustive
