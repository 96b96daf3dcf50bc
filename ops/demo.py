"""`make demo`: real clinics moving people from a consultation request to boosters.

Starts the local SMTP server, the SMS provider and the three services as
separate processes (the commands and environment docker-compose uses), on a
scaled clock shared by all of them (one clinic day per real second by
default), then acts as the clinics' staff over HTTP for a few dozen people.
At the end the auditor (ops/audit.py) checks what really happened from the
topics, the mailbox and the SMS log alone, and the demo prints `DEMO {json}` as
its last line; it exits non-zero if the auditor found any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from chassis.clock import ScaledClock
from chassis.config import ServiceSettings
from chassis.redis_client import connect_redis
from ops import (
    audit,
    audit_measures,
    demo_clinics,
    demo_courses,
    demo_measures,
    demo_waitlist,
    demo_webhooks,
    outcomes,
    witness,
)
from ops.stack import ROOT, SERVICES, Stack
from shared import topics

ORIGIN = datetime(2026, 3, 16, 6, 0, tzinfo=UTC)  # a Monday morning in Lisbon
STAGES = (
    "requested",
    "consultation",
    "screened",
    "enrolled",
    "course",
    "sessions",
    "completed",
    "booster",
)
OUTCOMES_CHART = "outcomes.png"  # beside the run's mail folder
FIRST_NAMES = ("Ada", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas")


@dataclass
class Person:
    run: str  # the same Redis and Kafka serve many runs: each run's people are new
    number: int
    clinic: str
    eligible: bool
    misses_a_dose: bool
    reschedules: bool
    item9: int
    sms: bool
    windows: list[dict[str, Any]]
    role: str | None = None  # pauses, withdraws, or returns (withdraws, then a second course)
    client: str | None = None  # their client id, once their request was accepted

    @property
    def refused_at_check_in(self) -> str | None:
        """Why this person's first dose cannot be given at check-in, if it cannot (rule 16)."""
        return {3: "no_ride_home", 8: "blood_pressure_over_limit"}.get(self.number % 11)

    def check_in(self, dose_number: int, refused_before: bool) -> dict[str, Any]:
        refuse = None if refused_before or dose_number != 1 else self.refused_at_check_in
        high = refuse == "blood_pressure_over_limit"
        return {
            "ride_home_confirmed": refuse != "no_ride_home",
            "fasting_confirmed": True,
            "vitals": {
                "systolic": 152 if high else 124,
                "diastolic": 96 if high else 80,
                "heart_rate": 74,
            },
            "phq9_item9": 0,
        }

    def adverse_events(self, dose_number: int) -> list[dict[str, str]]:
        """Mild nausea now and then; a severe event for a few (it alerts staff)."""
        if self.number % 12 == 7 and dose_number == 3:
            return [{"kind": "hypertension", "severity": "severe"}]
        if (self.number + dose_number) % 5 == 0:
            return [{"kind": "nausea", "severity": "mild"}]
        return []

    @property
    def email(self) -> str:
        return f"person{self.number}.{self.run}.{self.clinic}@demo.example"

    @property
    def phone(self) -> str:
        return f"+3519{zlib.crc32(self.email.encode()) % 10**8:08d}"

    def request(self) -> dict[str, Any]:
        return {
            "name": f"{FIRST_NAMES[self.number % len(FIRST_NAMES)]} Demo{self.number}",
            "email": self.email,
            "phone": self.phone,
            "preferred_channel": "sms" if self.sms else "email",
            "sms_consent": self.sms,
            "preferred_times": self.windows,
        }


@dataclass
class Tally:
    progress: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    clients: dict[str, str] = field(default_factory=dict)  # client id -> clinic
    expected: Counter[str] = field(default_factory=Counter)  # topic -> accepted requests
    completed_appointments: set[str] = field(default_factory=set)
    ineligible: int = 0
    consultations_only: int = 0  # the waitlist's people: no course follows (ops/demo_waitlist.py)
    accepted: int = 0  # requests the services answered with success
    refused: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)  # why (status and reason), to print
    refused_check_ins: set[int] = field(default_factory=set)  # people refused once at check-in
    course_changed: set[int] = field(default_factory=set)  # people who paused or withdrew

    def reached(self, clinic: str, stage: str, n: int = 1) -> None:
        self.progress[clinic][stage] += n


def people(
    count: int, seed: int, run: str, clinic_ids: Iterable[str] = demo_clinics.CLINICS
) -> list[Person]:
    """`count` people of `run`, spread over `clinic_ids` in turn."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    clinics = list(clinic_ids)
    crowd = []
    for number in range(count):
        days = rng.sample(range(5), 2)
        hour = rng.choice((9, 11, 14, 16))
        crowd.append(
            Person(
                run=run,
                number=number,
                clinic=clinics[number % len(clinics)],
                eligible=rng.random() > 0.2,
                misses_a_dose=rng.random() < 0.15,
                reschedules=rng.random() < 0.15,
                item9=1 if number == 5 else 0,
                sms=rng.random() < 0.4,
                windows=[
                    {"weekday": d, "start": f"{hour:02d}:00", "end": f"{hour + 2:02d}:00"}
                    for d in days
                ],
            )
        )
    demo_courses.assign_roles(crowd)
    return crowd


def next_booked(schedule: dict[str, Any]) -> dict[str, Any] | None:
    """The course's earliest appointment still booked (the scheduler's client view), if any."""
    booked = [a for a in schedule["course"]["appointments"] if a["status"] == "booked"]
    return min(booked, key=lambda a: a["starts_at"], default=None)


class Staff:
    """Clinic staff at the front desk: HTTP calls, retried politely on 503/409.

    `replicas` maps a service to its replicas' base URLs; a call goes to the
    next replica when one does not answer (as a load balancer would).
    """

    def __init__(self, replicas: dict[str, list[str]], clock: ScaledClock, tally: Tally) -> None:
        self.http = httpx.AsyncClient(timeout=30)
        self.replicas, self.clock, self.tally = replicas, clock, tally
        self.intake, self.scheduler = "http://intake", "http://scheduler"

    async def call(self, method: str, url: str, clinic: str, **kw: Any) -> httpx.Response:
        headers = {"X-API-Key": demo_clinics.api_key(clinic), **kw.pop("headers", {})}
        service = httpx.URL(url).host
        path = url.removeprefix(f"http://{service}")
        bases = self.replicas[service]
        for attempt in range(120):
            base = bases[attempt % len(bases)]
            try:
                response = await self.http.request(method, base + path, headers=headers, **kw)
            except httpx.TransportError:
                await asyncio.sleep(0.5)  # that replica is down: try the next one
                continue
            if response.status_code not in (503, 409) or "retry" not in response.text:
                self.tally.accepted += method == "POST" and response.is_success
                return response
            await asyncio.sleep(min(0.2 * (attempt + 1), 2))
        raise RuntimeError(f"{service} did not answer {method} {path}")

    async def doses_held(self, person: Person) -> int:
        """Medicine doses the person's current course has held (the scheduler's view)."""
        if person.client is None:
            return 0
        url = f"{self.scheduler}/v1/clinics/{person.clinic}/clients/{person.client}/schedule"
        response = await self.call("GET", url, person.clinic)
        course = response.json().get("course") if response.status_code == 200 else None
        return sum(
            1
            for a in (course or {}).get("appointments", [])
            if a["kind"] == "medicine" and a["status"] == "fulfilled"
        )

    async def until(self, instant: datetime) -> None:
        await asyncio.sleep(max(self.clock.real_seconds(instant - self.clock.now()), 0) + 0.05)

    async def schedule(
        self, clinic: str, client: str, ready: str, wait_s: float = 60
    ) -> dict[str, Any] | None:
        url = f"{self.scheduler}/v1/clinics/{clinic}/clients/{client}/schedule"
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            response = await self.call("GET", url, clinic)
            if response.status_code == 200 and response.json().get(ready):
                return dict(response.json())
            await asyncio.sleep(0.2)
        return None

    async def journey(self, person: Person, boosters_until: datetime) -> None:
        enrolled = await self.enrol(person)
        if enrolled is None:
            return
        clinic, (client, schedule) = person.clinic, enrolled
        await self.attend(person, clinic, client, schedule)
        again = await demo_courses.come_back(self, person, clinic, client)
        if again is not None:
            await self.attend(person, clinic, client, again)
        await self.await_booster(clinic, client, boosters_until)

    async def enrol(self, person: Person) -> tuple[str, dict[str, Any]] | None:
        """From the request to a course booked: the client id and their schedule (None: the
        person stopped on the way: refused, not eligible, or not booked in time)."""
        clinic, tally = person.clinic, self.tally
        base = f"{self.intake}/v1/clinics/{clinic}"
        key = {"Idempotency-Key": f"demo-{person.email}"}
        requested = await self.call(
            "POST", f"{base}/consultation-requests", clinic, json=person.request(), headers=key
        )
        if requested.status_code != 202:
            tally.refused["consultation_request"] += 1
            return None
        client = person.client = requested.json()["client_id"]
        tally.clients[client] = clinic
        tally.expected[topics.CONSULTATION_REQUESTED.name] += 1
        tally.reached(clinic, "requested")
        schedule = await self.schedule(clinic, client, "consultation")
        if schedule is None:
            return None
        tally.reached(clinic, "consultation")
        await self.until(datetime.fromisoformat(schedule["consultation"]["ends_at"]))
        client_url = f"{base}/clients/{client}"
        await self.call(
            "POST",
            f"{client_url}/consultation-outcome",
            clinic,
            json={"outcome": "proceed_to_screening"},
        )
        screening = {
            "systolic_bp": 128 if person.eligible else 156,
            "diastolic_bp": 82 if person.eligible else 97,
            "pregnant_or_breastfeeding": False,
            "active_psychosis_or_mania": False,
            "substance_use_disorder_last_3_months": False,
            "aneurysmal_vascular_disease_or_avm": False,
            "intracerebral_haemorrhage_history": False,
        }
        screened = await self.call("POST", f"{client_url}/screening", clinic, json=screening)
        tally.expected[topics.SCREENING_COMPLETED.name] += screened.status_code == 202
        tally.reached(clinic, "screened")
        if not person.eligible:
            tally.ineligible += 1
            return None
        phq9 = [2, 2, 2, 1, 2, 1, 1, 1, person.item9]
        enrolled = await self.call(
            "POST",
            f"{client_url}/enrolment",
            clinic,
            json={"consent_given": True, "phq9": phq9, "gad7": [1, 2, 1, 1, 2, 1, 1]},
        )
        if enrolled.status_code != 202:
            tally.refused["enrolment"] += 1
            return None
        tally.expected[topics.CLIENT_ENROLLED.name] += 1
        tally.reached(clinic, "enrolled")
        schedule = await self.schedule(clinic, client, "course")
        if schedule is None:
            return None
        tally.reached(clinic, "course")
        return client, schedule

    async def attend(
        self, person: Person, clinic: str, client: str, schedule: dict[str, Any]
    ) -> None:
        appointments = f"{self.scheduler}/v1/clinics/{clinic}/appointments"
        missed = rescheduled = False
        while schedule["course"]["completed_at"] is None:
            upcoming = next_booked(schedule)
            if upcoming is None:
                return
            if person.reschedules and not rescheduled and upcoming.get("dose_number") == 3:
                rescheduled = True
                later = datetime.fromisoformat(upcoming["starts_at"]) + timedelta(days=1)
                if self.clock.now() < later - timedelta(days=2):
                    moved = await self.call(
                        "POST",
                        f"{appointments}/{upcoming['appointment_id']}/reschedule",
                        clinic,
                        json={"new_starts_at": later.isoformat()},
                    )
                    if moved.status_code == 200:
                        schedule = moved.json()
                        continue
            if demo_courses.acts_now(self, person, upcoming):
                changed = await demo_courses.change_course(self, person, clinic, client)
                if changed is None:
                    return  # withdrawn: the course has ended
                schedule = changed
                continue
            miss = person.misses_a_dose and not missed and upcoming.get("dose_number") == 2
            missed = missed or miss
            response = await self.hold(person, clinic, upcoming, miss=miss)
            if response.status_code != 200:
                self.tally.refused["session"] += 1
                return
            schedule = response.json()
        self.tally.expected[topics.COURSE_COMPLETED.name] += 1
        self.tally.reached(clinic, "completed")

    async def hold(
        self, person: Person, clinic: str, upcoming: dict[str, Any], *, miss: bool
    ) -> httpx.Response:
        """A medicine session is checked in as it starts: refused, it is cancelled (and
        re-planned like any cancellation). At the session's end it is recorded held
        (and tallied), or missed when `miss`; a dose's record follows its completion."""
        appointment = upcoming["appointment_id"]
        url = f"{self.scheduler}/v1/clinics/{clinic}/appointments/{appointment}"
        medicine = upcoming["kind"] == "medicine"
        checked_at: datetime | None = None
        if medicine and not miss:
            await self.until(datetime.fromisoformat(upcoming["starts_at"]))
            refused_before = person.number in self.tally.refused_check_ins
            answers = person.check_in(upcoming["dose_number"], refused_before)
            checked = await self.call("POST", f"{url}/check-in", clinic, json=answers)
            checked_at = self.clock.now()  # the dose follows the check-in, not the booked start
            if checked.status_code == 404 and checked.json().get("detail") == "Not Found":
                medicine = False  # a replica from before check-ins (make upgrade): none needed
            elif checked.status_code != 200:
                # Not checked in while the session could be (under make chaos a replica's
                # restart can outlive a session on the fast clock): it is cancelled and
                # re-planned, as a refused one is, and the journey goes on.
                self.tally.refused["check_in"] += 1
                self.tally.refusals[f"check_in {checked.status_code} {checked.text[:90]}"] += 1
                return await self.call("POST", f"{url}/cancellation", clinic)
            mine = medicine and next(
                a
                for a in checked.json()["course"]["appointments"]
                if a["appointment_id"] == appointment
            )
            if mine and mine["check_in"]["outcome"] == "refused":
                self.tally.refused_check_ins.add(person.number)
                return await self.call("POST", f"{url}/cancellation", clinic)
        await self.until(datetime.fromisoformat(upcoming["ends_at"]))
        if miss:
            return await self.call("POST", f"{url}/missed", clinic)
        response = await self.call(
            "POST",
            f"{url}/completion",
            clinic,
            json={"ride_home_confirmed": True, "phq9_total": 9},
        )
        if response.status_code == 200:
            self.tally.completed_appointments.add(appointment)
            self.tally.reached(clinic, "sessions")
            if medicine:
                await self.record(person, clinic, url, upcoming, checked_at)
        return response

    async def record(
        self,
        person: Person,
        clinic: str,
        url: str,
        session: dict[str, Any],
        checked_at: datetime | None,
    ) -> None:
        # The demo's staff check in once the session's start is seen (a fast clock moves
        # on meanwhile): dosing follows the check-in, discharge the monitoring.
        start = datetime.fromisoformat(session["starts_at"]) + timedelta(minutes=15)
        dosed = max(start, (checked_at or start) + timedelta(minutes=1))
        vitals = {"systolic": 128, "diastolic": 82, "heart_rate": 78}
        record = {
            "route": "intramuscular",
            "dose_mg": 50 + 10 * min(session["dose_number"], 4),
            "administered_by": f"staff-{person.clinic}-1",
            "dosed_at": dosed.isoformat(),
            "discharged_at": (dosed + timedelta(minutes=125)).isoformat(),
            "vitals_at_dosing": vitals,
            "vitals_at_40_min": vitals,
            "vitals_at_discharge": vitals,
            "adverse_events": person.adverse_events(session["dose_number"]),
        }
        recorded = await self.call("POST", f"{url}/record", clinic, json=record)
        if recorded.status_code != 200:
            self.tally.refused["record"] += 1
            self.tally.refusals[f"record {recorded.status_code} {recorded.text[:90]}"] += 1

    async def await_booster(self, clinic: str, client: str, until: datetime) -> None:
        schedule = await self.schedule(clinic, client, "course")
        course = (schedule or {}).get("course") or {}
        due = course.get("next_booster_due_at")
        if not due or datetime.fromisoformat(due) > until:
            return
        await self.until(datetime.fromisoformat(due))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            schedule = await self.schedule(clinic, client, "course")
            if schedule and (schedule["course"]["next_booster"] or 0) > 1:
                self.tally.reached(clinic, "booster")
                return
            await asyncio.sleep(0.2)


async def live_view(tally: Tally, clock: ScaledClock, stop: asyncio.Event) -> None:
    while not stop.is_set():
        day = clock.now().strftime("%a %d %b")
        parts = [
            f"{clinic}: "
            + " ".join(f"{stage[:5]} {tally.progress[clinic][stage]:>2}" for stage in STAGES)
            for clinic in demo_clinics.CLINICS
        ]
        print(f"[{day}] " + " | ".join(parts), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=3)


def answering(stack: Stack, crowd: list[Person], staff: Staff) -> demo_measures.Answering:
    """The crowd answering the measure links their mail and texts bring."""
    return demo_measures.Answering(
        stack.maildir,
        stack.sms_log,
        {address: p for p in crowd for address in (p.email.lower(), p.phone)},
        crowd[0].run if crowd else "",
        staff.doses_held,
    )


async def drive(
    stack: Stack, clock: ScaledClock, crowd: list[Person], bootstrap: str, redis_url: str
) -> dict[str, Any]:
    # When each of the scheduler's facts first became readable (ops/witness.py): what the
    # auditor judges a message that crossed a change in flight from.
    scheduler_topics = [t.name for t in topics.produced_by("scheduler")]
    with witness.watching(bootstrap, scheduler_topics) as seen:
        summary = await _drive(stack, clock, crowd, bootstrap, redis_url, seen)
    return summary


async def _drive(
    stack: Stack,
    clock: ScaledClock,
    crowd: list[Person],
    bootstrap: str,
    redis_url: str,
    seen: witness.Witness,
) -> dict[str, Any]:
    tally = Tally()
    staff = Staff(stack.replica_urls(), clock, tally)
    boosters_until = clock.now() + timedelta(days=80)
    stop = asyncio.Event()
    view = asyncio.create_task(live_view(tally, clock, stop))
    desk = asyncio.create_task(demo_courses.front_desk(staff, stop))
    clients_answer = asyncio.create_task(answering(stack, crowd, staff).loop(stop))
    started = time.monotonic()
    try:
        journeys = [staff.journey(person, boosters_until) for person in crowd]
        queue = demo_waitlist.queue(crowd[0].run, Person) if crowd else []
        journeys.append(demo_waitlist.scene(staff, queue, bootstrap))
        await asyncio.wait_for(asyncio.gather(*journeys), timeout=200)
    finally:
        stop.set()
        await view
        await desk
        await clients_answer
        await staff.http.aclose()
    # Let the notifier send what is due by now, then read what really happened.
    await settle(bootstrap, tally)
    await outcomes.write_outcomes_chart(
        stack.url("scheduler"),
        {clinic: demo_clinics.api_key(clinic) for clinic in demo_clinics.CLINICS},
        stack.workdir / OUTCOMES_CHART,
    )
    journal = await audit.read_journal(bootstrap, tally.clients)
    journal.records = [
        dataclasses.replace(r, seen_ms=seen.seen_ms.get(r.id)) for r in journal.records
    ]
    print(witness_line(seen), flush=True)
    redis = connect_redis(redis_url, ServiceSettings().redis_mode)
    try:
        double = await audit.double_bookings(redis, demo_clinics.CLINICS)
    finally:
        await redis.aclose()
    findings = audit_of(stack, tally, journal)
    return report(stack, tally, journal, double, time.monotonic() - started, findings)


def witness_line(seen: witness.Witness) -> str:
    """How long after their record time the scheduler's facts became readable."""
    delays = sorted(seen.delays_ms)
    if not delays:
        return "Witness: no record of the scheduler seen"
    p50, p99 = (delays[min(len(delays) - 1, int(q * len(delays)))] for q in (0.5, 0.99))
    return (
        f"Witness: {len(delays)} scheduler records first readable, after their record time,"
        f" p50 {p50} ms, p99 {p99} ms, max {delays[-1]} ms ({seen.errors} failed fetches"
        " tried again)"
    )


def audit_of(stack: Stack, tally: Tally, journal: audit.Journal) -> audit.Findings:
    """The auditor over this run's people: its topics, its mailbox and its SMS log."""
    expected = audit.Expected(dict(tally.expected), frozenset(tally.completed_appointments))
    return audit.audit_topics(
        journal,
        maildir=stack.maildir,
        sms_log=stack.sms_log,
        clinics_file=stack.workdir / "clinics.json",
        expected=expected,
    )


async def settle(bootstrap: str, tally: Tally, quiet_s: float = 4.0, wait_s: float = 30.0) -> None:
    deadline, last, still = time.monotonic() + wait_s, -1, 0.0
    while time.monotonic() < deadline and still < quiet_s:
        journal = await audit.read_journal(bootstrap, tally.clients)
        sent = len(journal.of(topics.NOTIFICATION_SENT.name))
        still = still + 1.0 if sent == last else 0.0
        last = sent
        await asyncio.sleep(1.0)


def report(
    stack: Stack,
    tally: Tally,
    journal: audit.Journal,
    double: int,
    elapsed: float,
    findings: audit.Findings,
) -> dict[str, Any]:
    completed_seen = {r.value["appointment_id"] for r in journal.of(topics.SESSION_COMPLETED.name)}
    rates = audit_measures.outcome_rates(journal.records)
    summary = {
        "clients": len(tally.clients),
        "consultations_booked": len(journal.clients_with(topics.CONSULTATION_BOOKED.name)),
        "ineligible": tally.ineligible,
        "consultations_only": tally.consultations_only,
        "enrolled": len(journal.clients_with(topics.CLIENT_ENROLLED.name)),
        "courses_booked": len(journal.clients_with(topics.COURSE_BOOKED.name)),
        "sessions_completed": len(completed_seen),
        "sessions_missed": journal.distinct(topics.SESSION_MISSED.name),
        "sessions_rescheduled": journal.distinct(topics.SESSION_RESCHEDULED.name),
        "courses_completed": len(journal.clients_with(topics.COURSE_COMPLETED.name)),
        "boosters_due": journal.distinct(topics.BOOSTER_DUE.name),
        "clinical_alerts": journal.distinct(topics.CLINICAL_ALERT_RAISED.name),
        "alerts_acknowledged": len(
            {r.value["alert_id"] for r in journal.of(topics.CLINICAL_ALERT_ACKNOWLEDGED.name)}
        ),
        "checkins_refused": len(
            {
                r.value["appointment_id"]
                for r in journal.of(topics.PUBLIC_APPOINTMENT_CHECKED_IN.name)
                if r.value["outcome"] == "refused"
            }
        ),
        "adverse_events": sum(
            len(r.value["record"]["adverse_events"])
            for r in {r.id: r for r in journal.of(topics.SESSION_RECORDED.name)}.values()
        ),
        "notifications_sent": len(
            {r.value["notification_id"] for r in journal.of(topics.NOTIFICATION_SENT.name)}
        ),
        "measures_sent": audit_measures.measures_sent(journal.records),
        "measures_answered": audit_measures.measures_answered(journal.records),
        "response_rate": rates.response_rate,
        "remission_rate": rates.remission_rate,
        "notifications_failed": len(
            {r.value["notification_id"] for r in journal.of(topics.NOTIFICATION_FAILED.name)}
        ),
        # The auditor's counts, from the topics and the sinks alone (ops/audit_checks.py).
        **audit.summary_of(findings),
        # What the counts are made of (late reminders: due on arrival or planned ahead).
        "parts": dict(findings.detail),
        # What the scheduler's own ledger says: it refuses overlaps, so a second opinion only.
        "ledger_double_bookings_second_opinion": double,
        "refused": dict(tally.refused),
        "refusals": dict(tally.refusals),
        "seconds": round(elapsed, 1),
    }
    example = next(
        (c for c in tally.clients if c in journal.clients_with(topics.COURSE_COMPLETED.name)),
        next(iter(tally.clients), None),
    )
    if example:
        print(f"\nTimeline of client {example} ({tally.clients[example]}):")
        for record in journal.timeline(example):
            print(f"  {record.time[:19]}  {record.topic}")
    mails = len(list(stack.maildir.glob("*.eml")))
    print(f"\nSent mail: {mails} messages, one .eml file each, in {stack.maildir}")
    print(f"SMS: {stack.sms_log}")
    # Why messages failed, by reason (reasons carry no contact details or names).
    failed = {r.value["notification_id"]: r for r in journal.of(topics.NOTIFICATION_FAILED.name)}
    reasons = Counter(r.value["reason"] for r in failed.values())
    if reasons:
        print("Failed messages by reason: " + json.dumps(dict(reasons.most_common())))
    return summary


# The partner's receiver's counts that must be 0 (ops/demo_webhooks.py).
WEBHOOK_FAILING = (
    "webhooks_missing",
    "webhook_signatures_bad",
    "webhooks_out_of_order",
    "webhooks_foreign_clinic",
)


def adds_up(summary: dict[str, Any]) -> bool:
    """Everyone eligible who came for a course got one, clients answered measures from their
    links, and the auditor found nothing (resends are reported apart)."""
    eligible = summary["clients"] - summary["ineligible"] - summary["consultations_only"]
    failing = (*audit.FAILING, "ledger_double_bookings_second_opinion", *WEBHOOK_FAILING)
    return bool(
        summary["clients"] > 0
        and summary["webhooks_delivered"] > 0  # the partner heard the two clinics (issue 20)
        and summary["courses_booked"] == eligible
        and summary["measures_answered"] > 0  # clients answered their links (issue 17)
        and all(summary[name] == 0 for name in failing)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=36)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--day-seconds", type=float, default=1.0, help="real seconds per clinic day"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / ".infra" / "demo")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    run = args.workdir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    clinics = demo_clinics.write(run / "clinics.json", saturday_desk=demo_clinics.SATURDAY_DESK)
    asyncio.run(demo_clinics.reset(args.redis))
    # The services read their clinics from the registry topic, as in production; the
    # file stays the import format (and what the auditor reads the clinics from).
    asyncio.run(demo_clinics.register(args.kafka, json.loads(clinics.read_text())))
    anchor = datetime.now(UTC)
    scale = 86400 / args.day_seconds
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": args.kafka,
        "REDIS_URL": args.redis,
        "KAP_CLINICS_SOURCE": "topic",
        "KAP_CLINICS_FILE": str(clinics),
        "KAP_CLOCK_SCALE": str(scale),
        "KAP_CLOCK_ORIGIN": ORIGIN.isoformat(),
        "KAP_CLOCK_ANCHOR": anchor.isoformat(),
        "KAP_LOG_LEVEL": "INFO",
        # The webhook service's admin API (the demo's key), and its partner on this machine.
        "KAP_ADMIN_API_KEY_SHA256": hashlib.sha256(demo_webhooks.ADMIN_KEY.encode()).hexdigest(),
        "KAP_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    }
    clock = ScaledClock(origin=ORIGIN, anchor=anchor, scale=scale)
    pace = f"one clinic day per {args.day_seconds:g} s"
    print(f"demo: {args.people} people, 3 clinics, {pace}; logs in {run}/logs", flush=True)
    stack = Stack(workdir=run, env=env, services=(*SERVICES, "webhooks"))
    partner_clinics = sorted(entry["id"] for entry in json.loads(clinics.read_text()))[:2]
    try:
        with stack.running():
            urls = ", ".join(f"{name} {stack.url(name)}" for name in stack.services)
            print(f"demo: services ready ({urls})", flush=True)
            partner = asyncio.run(
                demo_webhooks.subscribe(stack.url("webhooks"), partner_clinics, args.kafka, run)
            )
            print(f"demo: webhook partner for {', '.join(partner_clinics)}", flush=True)
            try:
                summary = asyncio.run(
                    drive(
                        stack,
                        clock,
                        people(args.people, args.seed, run.name),
                        args.kafka,
                        args.redis,
                    )
                )
                summary.update(asyncio.run(demo_webhooks.counts(partner, args.kafka)))
            finally:
                partner.stop()
    except KeyboardInterrupt:
        print("demo: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
    ok = adds_up(summary)
    print(
        f"\nSummary: {summary['clients']} people, {summary['courses_booked']} courses booked, "
        f"{summary['courses_completed']} completed, {summary['boosters_due']} boosters due, "
        f"{summary['notifications_sent']} notifications sent; "
        f"counts add up: {'yes' if ok else 'NO'}"
    )
    failing = {n: summary[n] for n in (*audit.FAILING, *WEBHOOK_FAILING) if summary[n]}
    if failing:
        print(f"Auditor (topics, mailbox, SMS log) found: {json.dumps(failing, sort_keys=True)}")
    print(f"Auditor's parts of its counts: {json.dumps(summary['parts'], sort_keys=True)}")
    for why, n in summary.pop("refusals", {}).items():
        print(f"Refused {n}x: {why}")
    print(f"Outcomes chart (mean PHQ-9 by measure point, 95% intervals): {run / OUTCOMES_CHART}")
    print("DEMO " + json.dumps(summary, sort_keys=True), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
