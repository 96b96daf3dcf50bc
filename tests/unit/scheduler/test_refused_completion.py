"""A refused completion keeps the clinical alert its answers raise (issue 14, fault 10)."""

from __future__ import annotations

import pytest

from services.scheduler.domain import lifecycle
from services.scheduler.domain.schedule import Refused
from shared import events as ev
from tests.builders.scheduler import checked_in
from tests.unit.scheduler.builders import clinic
from tests.unit.scheduler.test_booster_lifecycle import booked


@pytest.mark.parametrize("item9", [1, 2, 3])
def test_no_ride_home_refuses_the_completion_but_not_the_alert(item9: int) -> None:
    calendar = clinic()
    schedule = booked(calendar)
    assert schedule.course is not None
    dose = next(
        a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
    )
    schedule = checked_in(schedule, dose, calendar)

    with pytest.raises(Refused, match="ride home") as refused:
        lifecycle.complete_session(
            schedule,
            dose.appointment_id,
            ride_home_confirmed=False,
            phq9_total=20,
            phq9_item9=item9,
            calendar=calendar,
            now=dose.ends_at,
        )

    [alert] = refused.value.events
    assert isinstance(alert, ev.ClinicalAlertRaised)
    assert (alert.phq9_item9, alert.raised_during) == (item9, "session")


def test_a_refusal_without_a_positive_item_9_brings_no_events() -> None:
    calendar = clinic()
    schedule = booked(calendar)
    assert schedule.course is not None
    dose = next(
        a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
    )

    with pytest.raises(Refused) as refused:
        lifecycle.complete_session(
            schedule,
            dose.appointment_id,
            ride_home_confirmed=False,
            phq9_total=3,
            phq9_item9=0,
            calendar=calendar,
            now=dose.ends_at,
        )

    assert refused.value.events == ()
