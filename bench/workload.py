"""The benchmark's load: the events intake publishes, for many clinics, ready to send.

Each simulated client is a small journey through intake's topics: a
consultation request (the scheduler books it, the notifier confirms it by
mail), and for some a screening, a preference change, an enrolment (the
scheduler plans and books a whole course, the notifier plans every session's
messages) or a clinical alert (staff are mailed at once). The events are
built with the contracts (`shared.events`, `shared.envelope`) exactly as
intake would publish them, and serialised once up front so the generator
costs little while it is being measured.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from shared.topics import topic_for

TIMEZONES = ("Europe/Lisbon", "America/New_York", "Australia/Sydney", "Europe/Berlin")
# Share of clients whose journey includes each event after the request.
MIX = {
    topics.SCREENING_COMPLETED.name: 0.5,
    topics.CONTACT_PREFERENCES_CHANGED.name: 0.2,
    topics.CLIENT_ENROLLED.name: 0.1,
    topics.CLINICAL_ALERT_RAISED.name: 0.03,
}


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    correlation_id: str
    clinic_id: str


def clinics(run: str, count: int) -> dict[str, dict[str, str]]:
    """`count` clinics of this run, spread over time zones (ids are unique per run)."""
    return {
        f"bench-{run}-{n:02d}": {"name": f"Bench Clinic {n}", "timezone": TIMEZONES[n % 4]}
        for n in range(count)
    }


def message(event: ev.Event, correlation_id: str | None = None) -> Message:
    topic = topic_for(event)
    event_id = str(uuid.uuid4())
    envelope = Envelope(
        id=event_id,
        source="/kap/intake",
        type=f"kap.{topic.name}",
        time=event.occurred_at,
        subject=str(event.client_id),
        clinic_id=event.clinic_id,
        correlation_id=correlation_id or event_id,
    )
    return Message(
        topic=topic.name,
        key=str(event.client_id).encode(),
        value=event.model_dump_json().encode(),
        headers=envelope.to_headers(),
        correlation_id=envelope.correlation_id,
        clinic_id=event.clinic_id,
    )


def journey(clinic_id: str, number: int, now: datetime, rng: random.Random) -> Iterator[ev.Event]:
    """One client's intake events, in the order intake would publish them."""
    client = uuid.uuid4()
    base = {"clinic_id": clinic_id, "client_id": client, "occurred_at": now}
    hour = rng.choice((9, 10, 13, 14))
    yield ev.ConsultationRequested(
        **base,
        contact=ev.Contact(
            name=f"Bench Person {number}",
            email=f"bench{number}.{client.hex[:8]}@bench.example",
            phone=f"+3519{rng.randrange(10**8):08d}",
        ),
        preferred_times=tuple(
            ev.PreferredTime(weekday=day, start=f"{hour:02d}:00", end=f"{hour + 4:02d}:00")
            for day in rng.sample(range(5), 3)
        ),
    )
    if rng.random() < MIX[topics.SCREENING_COMPLETED.name]:
        yield ev.ScreeningCompleted(**base, eligible=True)
    if rng.random() < MIX[topics.CONTACT_PREFERENCES_CHANGED.name]:
        yield ev.ContactPreferencesChanged(**base, channel="sms", opted_out=True)
    if rng.random() < MIX[topics.CLIENT_ENROLLED.name]:
        yield ev.ClientEnrolled(
            **base,
            consent_recorded_at=now - timedelta(minutes=5),
            phq9_total=12,
            phq9_band=ev.Phq9Band.MODERATE,
            gad7_total=9,
        )
    if rng.random() < MIX[topics.CLINICAL_ALERT_RAISED.name]:
        yield ev.ClinicalAlertRaised(
            **base, reason="phq9_item9_positive", phq9_item9=1, raised_during="enrolment"
        )


def lifecycle_mix(clinic_ids: list[str], events: int, now: datetime, seed: int) -> list[Message]:
    """About `events` intake events for clients spread over `clinic_ids`, journeys interleaved."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    out: list[Message] = []
    number = 0
    while len(out) < events:
        clinic_id = clinic_ids[number % len(clinic_ids)]
        out += [message(event) for event in journey(clinic_id, number, now, rng)]
        number += 1
    return out


def requests_only(clinic_ids: list[str], events: int, now: datetime, seed: int) -> list[Message]:
    """Consultation requests only: each ends in one confirmation mail (the latency probe)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    return [
        message(next(journey(clinic_ids[n % len(clinic_ids)], n, now, rng))) for n in range(events)
    ]


def through_requests(messages: list[Message], requests: int) -> int:
    """How many of `messages` hold the first `requests` journeys (each starts with its request)."""
    seen = 0
    for n, msg in enumerate(messages):
        if msg.topic == topics.CONSULTATION_REQUESTED.name:
            if seen == requests:
                return n
            seen += 1
    return len(messages)
