"""The demo's consultation waitlist: a queue at the Saturday desk, a cancellation, an offer taken.

A few people in one clinic can only come on Saturday mornings, when it sees one person a
week (demo_clinics.SATURDAY_DESK): the first ones fill the Saturdays of the next four
weeks, the rest join the waitlist. The front desk then cancels the furthest of those
consultations; its slot is offered to the first in line (`accept_url` on
scheduler.consultation.slot-offered.v1), and the client takes it through the link, with
no API key. These people come for a consultation only (no course follows).

What happened is counted by the auditor from the topics (ops/audit_course.py), never
from these calls.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from ops import demo_clinics
from ops.reading import read_to_end
from shared import topics

if TYPE_CHECKING:
    from ops.demo import Person, Staff

CLINIC = demo_clinics.SATURDAY_DESK
SATURDAY_MORNING = {"weekday": 5, "start": "09:00", "end": "09:30"}
# Four Saturdays fit in the 28-day horizon: the other three wait (with room to spare
# should the first requests be answered a clinic day or two late).
PEOPLE = 7
FIRST_NUMBER = 10_000  # apart from the crowd's numbers (their e-mail addresses differ)
ANSWER_S = 30.0
OFFER_S = 30.0


def queue(run: str, person: type[Person]) -> list[Person]:
    return [
        person(
            run=run,
            number=FIRST_NUMBER + n,
            clinic=CLINIC,
            eligible=True,
            misses_a_dose=False,
            reschedules=False,
            item9=0,
            sms=False,
            windows=[SATURDAY_MORNING],
            role="waitlist",
        )
        for n in range(PEOPLE)
    ]


async def scene(staff: Staff, people: list[Person], bootstrap: str) -> None:
    """Everyone asks at once; the desk cancels one booked slot; the first offer is taken."""
    requested = await asyncio.gather(*(_request(staff, p) for p in people))
    clients = [c for c in requested if c is not None]
    answers = await _answers(staff, clients)
    booked = {c: a["consultation"] for c, a in answers.items() if a["consultation"]}
    if len(booked) == len(clients) or not booked:
        staff.tally.refused["waitlist_not_formed"] += 1
        return
    consultation = max(booked.values(), key=lambda a: datetime.fromisoformat(a["starts_at"]))
    if datetime.fromisoformat(consultation["starts_at"]) < staff.clock.now() + timedelta(days=4):
        staff.tally.refused["waitlist_slot_too_soon"] += 1
        return
    url = f"{staff.scheduler}/v1/clinics/{CLINIC}/consultations"
    cancelled = await staff.call(
        "POST", f"{url}/{consultation['appointment_id']}/cancellation", CLINIC
    )
    if cancelled.status_code != 200:
        staff.tally.refused["consultation_cancellation"] += 1
        return
    waiting = set(clients) - set(booked)
    if not await _take_an_offer(staff, waiting, bootstrap):
        staff.tally.refused["waitlist_offer"] += 1


async def _request(staff: Staff, person: Person) -> str | None:
    tally = staff.tally
    base = f"{staff.intake}/v1/clinics/{CLINIC}"
    key = {"Idempotency-Key": f"demo-{person.email}"}
    requested = await staff.call(
        "POST", f"{base}/consultation-requests", CLINIC, json=person.request(), headers=key
    )
    if requested.status_code != 202:
        tally.refused["consultation_request"] += 1
        return None
    client = str(requested.json()["client_id"])
    tally.clients[client] = CLINIC
    tally.expected[topics.CONSULTATION_REQUESTED.name] += 1
    tally.consultations_only += 1
    tally.reached(CLINIC, "requested")
    return client


async def _answers(staff: Staff, clients: list[str]) -> dict[str, dict[str, Any]]:
    """Each client's schedule once the scheduler answered them: booked, or (none) waiting."""
    answers: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + ANSWER_S
    while len(answers) < len(clients) and time.monotonic() < deadline:
        for client in set(clients) - set(answers):
            url = f"{staff.scheduler}/v1/clinics/{CLINIC}/clients/{client}/schedule"
            response = await staff.call("GET", url, CLINIC)
            if response.status_code == 200:
                answers[client] = dict(response.json())
                staff.tally.reached(CLINIC, "consultation", bool(answers[client]["consultation"]))
        await asyncio.sleep(0.2)
    return answers


async def _take_an_offer(staff: Staff, waiting: set[str], bootstrap: str) -> bool:
    """Accept the offer of a waiting client through its link; a lapsed one goes to the next
    in line, whose offer is tried in turn."""
    tried: set[str] = set()
    deadline = time.monotonic() + OFFER_S
    while time.monotonic() < deadline:
        for record in await read_to_end(bootstrap, [topics.CONSULTATION_SLOT_OFFERED.name]):
            client = (record.key or b"").decode(errors="replace")
            if client not in waiting:
                continue  # another run's, or no event at all (the bad-input tests put some)
            offer = json.loads(record.value)
            if offer["offer_id"] in tried:
                continue
            tried.add(offer["offer_id"])
            if await _accept(staff, offer["accept_url"]):
                return True
        await asyncio.sleep(0.3)
    return False


async def _accept(staff: Staff, accept_url: str) -> bool:
    """POST to the link as the client would: no API key (the token is the credential). The
    link names the scheduler's public address; the demo's replicas listen elsewhere."""
    path = httpx.URL(accept_url).path
    for base in staff.replicas["scheduler"] * 3:
        try:
            response = await staff.http.post(base + path)
        except httpx.TransportError:
            await asyncio.sleep(0.5)
            continue
        if response.status_code == 409 and "retry" in response.text:
            await asyncio.sleep(0.3)
            continue
        return response.status_code == 200
    return False
