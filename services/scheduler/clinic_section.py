"""The scheduler's check of a clinic's `scheduler` section, run before the clinic is
written to the registry (chassis.clinic_registry) with what the scheduler does on use."""

from __future__ import annotations

from datetime import UTC, date, datetime

from chassis.clinic_registry import ClinicRefused
from chassis.clinics import Clinic
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.feasibility import why_no_course_fits


def check_section(clinic: Clinic) -> None:
    """Raises ValidationError or ClinicRefused if the scheduler could not use the section."""
    section = clinic.section("scheduler")
    if not section:
        return  # the clinic's staff may give the calendar later (PUT .../calendar)
    calendar = ClinicCalendar.model_validate(
        {**section, "clinic_id": clinic.id, "timezone": clinic.timezone}
    )
    # The scheduler refuses such a calendar on first use (a 409 to every booking);
    # at write time it is refused before any clinic is left without bookings.
    impossible = why_no_course_fits(calendar, date(datetime.now(UTC).year, 1, 1))
    if impossible is not None:
        # Named as the calendar API names it (PUT .../calendar answers loc `policy`).
        why = f"no full course can ever be planned: {impossible}"
        raise ClinicRefused([(("scheduler", "policy"), why)])
