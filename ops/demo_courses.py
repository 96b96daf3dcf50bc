"""The demo's courses as clinics live them: a pause and a resume, withdrawals, a returning
client on a second course, and a front desk that owns urgent alerts (all over HTTP).

What happened is counted by the auditor from the topics (ops/audit_course.py), never
from these calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ops import demo_clinics

if TYPE_CHECKING:
    from ops.demo import Person, Staff

# Who does what, among eligible people with an otherwise plain course (in this order).
ROLES = ("pauses", "pauses", "withdraws", "returns")
PAUSE_DAYS = 3  # clinic days a paused course waits before it resumes
RETURN_AFTER_DAYS = 2  # clinic days before a withdrawn client comes back
POLL_S = 0.1  # the front desk looks at its alerts this often (real time)


def assign_roles(crowd: Iterable[Person]) -> None:
    """Give the roles to the first eligible people whose course is otherwise plain."""
    plain = (
        p
        for p in crowd
        if p.eligible
        and not p.misses_a_dose
        and not p.reschedules
        and p.refused_at_check_in is None
        and p.item9 == 0
    )
    for role, person in zip(ROLES, plain, strict=False):
        person.role = role


def acts_now(staff: Staff, person: Person, upcoming: dict[str, Any]) -> bool:
    """A course changes once its first dose is held (the second is next), once per person."""
    return (
        person.role is not None
        and person.number not in staff.tally.course_changed
        and upcoming.get("dose_number") == 2
    )


async def change_course(
    staff: Staff, person: Person, clinic: str, client: str
) -> dict[str, Any] | None:
    """Pause and later resume (the course view after), or withdraw (None: the course ended)."""
    url = f"{staff.scheduler}/v1/clinics/{clinic}/clients/{client}/course"
    staff.tally.course_changed.add(person.number)
    if person.role == "pauses":
        paused = await staff.call("POST", f"{url}/pause", clinic)
        if paused.status_code != 200:
            staff.tally.refused["pause"] += 1
            return await staff.schedule(clinic, client, "course")
        await staff.until(staff.clock.now() + timedelta(days=PAUSE_DAYS))
        resumed = await staff.call("POST", f"{url}/resume", clinic)
        if resumed.status_code != 200:
            staff.tally.refused["resume"] += 1
            return await staff.schedule(clinic, client, "course")
        return dict(resumed.json())
    withdrawn = await staff.call("POST", f"{url}/withdrawal", clinic)
    if withdrawn.status_code != 200:
        staff.tally.refused["withdrawal"] += 1
    return None


async def come_back(
    staff: Staff, person: Person, clinic: str, client: str
) -> dict[str, Any] | None:
    """A withdrawn client returns: screened afresh, a fresh consent, then a second course."""
    if person.role != "returns" or person.number not in staff.tally.course_changed:
        return None
    before = await staff.schedule(clinic, client, "course")
    first = ((before or {}).get("course") or {}).get("course_id")
    await staff.until(staff.clock.now() + timedelta(days=RETURN_AFTER_DAYS))
    client_url = f"{staff.intake}/v1/clinics/{clinic}/clients/{client}"
    screening = {
        "systolic_bp": 126,
        "diastolic_bp": 80,
        "pregnant_or_breastfeeding": False,
        "active_psychosis_or_mania": False,
        "substance_use_disorder_last_3_months": False,
        "aneurysmal_vascular_disease_or_avm": False,
        "intracerebral_haemorrhage_history": False,
    }
    screened = await staff.call("POST", f"{client_url}/screening", clinic, json=screening)
    enrolment = {
        "consent_given": True,
        "phq9": [2, 2, 2, 2, 2, 1, 1, 1, 0],
        "gad7": [1, 2, 1, 1, 2, 1, 1],
    }
    enrolled = await staff.call("POST", f"{client_url}/enrolment", clinic, json=enrolment)
    if screened.status_code != 202 or enrolled.status_code != 202:
        staff.tally.refused["return"] += 1
        return None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        schedule = await staff.schedule(clinic, client, "course")
        course = (schedule or {}).get("course") or {}
        if course.get("course_id") not in (None, first):
            return schedule
        await asyncio.sleep(0.2)
    staff.tally.refused["second_course"] += 1
    return None


async def front_desk(staff: Staff, stop: asyncio.Event) -> None:
    """Staff own urgent alerts: each of this run's is acknowledged at once, but the first
    (a busy morning) is left to escalate to the on-call contact."""
    left: str | None = None
    while not stop.is_set():
        with contextlib.suppress(RuntimeError):  # no notifier answering: look again next round
            left = await _acknowledge(staff, left)
        await asyncio.sleep(POLL_S)


async def _acknowledge(staff: Staff, left: str | None) -> str | None:
    """One round of the front desk over every clinic; returns the alert left to escalate."""
    for clinic in demo_clinics.CLINICS:
        base = f"http://notifier/v1/clinics/{clinic}/alerts"
        listed = await staff.call("GET", base, clinic)
        if listed.status_code != 200:
            continue
        for alert in listed.json():
            if alert["client_id"] not in staff.tally.clients:
                continue  # another run's, on the same Redis
            left = left or alert["alert_id"]
            if alert["alert_id"] == left:
                continue
            body = {"acknowledged_by": f"staff-{clinic}-desk"}
            await staff.call("POST", f"{base}/{alert['alert_id']}/acknowledge", clinic, json=body)
    return left
