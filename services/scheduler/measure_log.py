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
outcomes (`measures_of_many`). This module is the one reader and writer of the format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.scheduler.domain.measures import Answer
from services.scheduler.domain.outcomes import Measure
from shared import events as ev
from shared.events import MeasurePoint

log = logging.getLogger(__name__)

READ_CHUNK = 500  # clients' hashes per round trip when outcomes read a clinic

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

    async def measures_of(self, clinic_id: str, client_id: UUID) -> list[Measure]:
        """One client's measures for outcomes, oldest first."""
        return (await self.measures_of_many(clinic_id, [client_id]))[client_id]

    async def measures_of_many(
        self, clinic_id: str, client_ids: Sequence[UUID]
    ) -> dict[UUID, list[Measure]]:
        """Each client's measures for outcomes, a chunk of clients per round trip."""
        found: dict[UUID, list[Measure]] = {}
        for start in range(0, len(client_ids), READ_CHUNK):
            chunk = client_ids[start : start + READ_CHUNK]
            async with self._redis.pipeline(transaction=False) as reads:
                for client_id in chunk:
                    reads.hgetall(log_key(clinic_id, client_id))
                hashes = await reads.execute()
            for client_id, fields in zip(chunk, hashes, strict=True):
                found[client_id] = parsed({_text(k): _text(v) for k, v in fields.items()})
        return found

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


class _Recorded(BaseModel):
    """An entry as outcomes read it: tolerant of entries written before a field existed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    measure_id: UUID | None = None
    point: MeasurePoint | None = None
    course_id: UUID | None = None
    authored: AwareDatetime
    source: str | None = None
    phq9: int | None = None
    gad7: int | None = None


def parsed(fields: Mapping[str, str]) -> list[Measure]:
    """The measures of one client's hash, oldest first. A value that cannot be read is
    left out and logged by its field (an event id, no clinical data), so one bad record
    does not hide a clinic's outcomes."""
    measures = []
    for key, raw in fields.items():
        try:
            recorded = _Recorded.model_validate_json(raw)
        except ValidationError:
            log.warning("measure record %s is unreadable; left out of outcomes", key)
            continue
        measures.append(Measure(key=key, **recorded.model_dump()))
    return sorted(measures, key=lambda m: (m.authored, m.key))
