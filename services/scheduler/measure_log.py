"""The client's answered measures, as the scheduler keeps them: one Redis hash per client.

    {<clinic_id>}:measures:<client_id>     hash, one field per answered measure
        field   the MeasureAnswered event id, or "enrolment:<ClientEnrolled event id>"
        value   JSON {"measure_id": str|null, "point": str|null, "course_id": str|null,
                      "authored": ISO 8601 instant, "source": "link"|"staff",
                      "phq9": PHQ-9 total|null, "gad7": GAD-7 total|null}

The enrolment measure has point "enrolment", no measure or course, source "staff".
Written in the write step of the event it records (chassis.unit_of_work), so a
redelivered event writes the same field with the same value; kept with no expiry
(outcomes compare every point with the baseline). Read by the measure timers (an
answered measure is not sent), the check-in (a pre-dose measure overdue) and the
outcomes. This module is the one reader and writer of the format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.scheduler.domain.measures import Answer
from shared import events as ev

ENROLMENT = "enrolment"


def log_key(clinic_id: str, client_id: UUID) -> str:
    return f"{{{clinic_id}}}:measures:{client_id}"


def enrolment_field(event_id: str) -> str:
    return f"{ENROLMENT}:{event_id}"


@dataclass(frozen=True)
class MeasureEntry:
    measure_id: str | None
    point: str | None
    course_id: str | None
    authored: str
    source: Literal["link", "staff"]
    phq9: int | None
    gad7: int | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> MeasureEntry:
        return cls(**json.loads(raw))

    @property
    def answer(self) -> Answer:
        measure = UUID(self.measure_id) if self.measure_id else None
        return Answer(measure, self.point, datetime.fromisoformat(self.authored))


def answered_entry(event: ev.MeasureAnswered) -> MeasureEntry:
    totals = {response.questionnaire: response.total for response in event.responses}
    return MeasureEntry(
        measure_id=str(event.measure_id) if event.measure_id else None,
        point=event.point.value if event.point else None,
        course_id=str(event.course_id) if event.course_id else None,
        authored=max(response.authored for response in event.responses).isoformat(),
        source=event.source,
        phq9=totals.get(ev.Instrument.PHQ9),
        gad7=totals.get(ev.Instrument.GAD7),
    )


def enrolment_entry(event: ev.ClientEnrolled) -> MeasureEntry:
    return MeasureEntry(
        measure_id=None,
        point=ENROLMENT,
        course_id=None,
        authored=event.occurred_at.isoformat(),
        source="staff",
        phq9=event.phq9_total,
        gad7=event.gad7_total,
    )


class MeasureLog:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def record(
        self, p: Pipeline, clinic_id: str, client_id: UUID, field: str, entry: MeasureEntry
    ) -> None:
        """Queue one entry on a write step's MULTI."""
        p.hset(log_key(clinic_id, client_id), field, entry.to_json())

    async def entries(self, clinic_id: str, client_id: UUID) -> dict[str, MeasureEntry]:
        raw = await self._redis.hgetall(log_key(clinic_id, client_id))
        return {_text(f): MeasureEntry.from_json(v) for f, v in raw.items()}

    async def answers_of(
        self, clinic_id: str, client_ids: Sequence[UUID]
    ) -> dict[UUID, list[Answer]]:
        """Each client's answers, read in one round trip."""
        if not client_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as reads:
            for client_id in client_ids:
                reads.hvals(log_key(clinic_id, client_id))
            found = await reads.execute()
        return {
            client_id: [MeasureEntry.from_json(v).answer for v in values]
            for client_id, values in zip(client_ids, found, strict=True)
        }


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
