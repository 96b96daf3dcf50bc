"""A calendar whose policy can never hold a full course is refused when saved, and one in
the clinics file is refused when loaded, with the reason (issue 16)."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import CLINICS, auth, write_clinics
from tests.integration.scheduler.conftest import CALENDAR

pytestmark = pytest.mark.integration

ONE_DOSE_A_WEEK = {"max_doses_per_week": 1, "course_window_days": 21}
MONDAYS_AND_THURSDAYS = {day: [{"start": "08:00", "end": "19:00"}] for day in ("0", "3")}
# Clinics of this module's own: a saved calendar stays in the Redis the tests share.
FRESH = f"fresh-{uuid.uuid4().hex[:12]}"
IMPOSSIBLE = "impossible"
KEY = "feasibility-key-789"


def _calendar(**changes: Any) -> dict[str, Any]:
    calendar: dict[str, Any] = copy.deepcopy(CALENDAR)
    calendar.update(changes)
    return calendar


@pytest.mark.parametrize(
    ("calendar", "why"),
    [
        (_calendar(policy=ONE_DOSE_A_WEEK), "at most 1 dose(s) a calendar week"),
        (_calendar(opening_hours=MONDAYS_AND_THURSDAYS), "opening days (Mon, Thu)"),
    ],
)
async def test_a_calendar_that_can_never_hold_a_course_is_a_422_that_says_why(
    scheduler: httpx.AsyncClient, calendar: dict[str, Any], why: str
) -> None:
    before = await scheduler.get("/v1/clinics/lisbon/calendar", headers=auth("lisbon"))
    response = await scheduler.put(
        "/v1/clinics/lisbon/calendar", json=calendar, headers=auth("lisbon")
    )
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", "policy"]
    assert why in problem["msg"]
    after = await scheduler.get("/v1/clinics/lisbon/calendar", headers=auth("lisbon"))
    assert after.json() == before.json(), "nothing was saved"


async def test_a_clinic_open_two_days_a_week_with_a_policy_that_fits_is_saved(
    scheduler: httpx.AsyncClient,
) -> None:
    calendar = _calendar(
        opening_hours=MONDAYS_AND_THURSDAYS,
        policy={"max_doses_per_week": 1, "course_window_days": 42},
    )
    response = await scheduler.put(f"/v1/clinics/{FRESH}/calendar", json=calendar, headers=_key())
    assert response.status_code == 200, response.text
    saved = await scheduler.get(f"/v1/clinics/{FRESH}/calendar", headers=_key())
    assert saved.json()["policy"]["course_window_days"] == 42


async def test_a_clinics_file_calendar_that_can_never_hold_a_course_is_refused_at_load(
    scheduler: httpx.AsyncClient,
) -> None:
    response = await scheduler.get(f"/v1/clinics/{IMPOSSIBLE}/calendar", headers=_key())
    assert response.status_code == 409, response.text
    assert "no full course can ever be planned" in response.text
    assert "at most 1 dose(s) a calendar week" in response.text


def _key() -> dict[str, str]:
    return {"X-API-Key": KEY}


@pytest.fixture
def clinics_file(tmp_path: Path) -> Path:
    ours = {"name": "Ours", "timezone": "Europe/Lisbon", "key": KEY}
    clinics = {
        **{
            clinic_id: {**spec, "sections": {"scheduler": CALENDAR}}
            for clinic_id, spec in CLINICS.items()
        },
        FRESH: {**ours, "sections": {"scheduler": CALENDAR}},
        IMPOSSIBLE: {**ours, "sections": {"scheduler": _calendar(policy=ONE_DOSE_A_WEEK)}},
    }
    return write_clinics(tmp_path / "clinics.json", clinics)
