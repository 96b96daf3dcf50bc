"""The client's answered measures, as the scheduler records them, read back for outcomes.

`{<clinic_id>}:measures:<client_id>` is a hash: field = the answer's event id (or
`enrolment:<event id>` for the enrolment measure), value = JSON with
`measure_id`, `point`, `course_id`, `authored` (ISO-8601 UTC), `source`, and the
`phq9` and `gad7` totals (either may be null). Written by the scheduler's
reaction to MeasureAnswered; this module only reads. A value it cannot read is
left out and logged by its field (an event id, no clinical data), so one bad
record does not hide a clinic's outcomes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis

from services.scheduler.domain.outcomes import Measure
from services.scheduler.ledger import text
from shared.events import MeasurePoint

log = logging.getLogger(__name__)

READ_CHUNK = 500


def measures_key(clinic_id: str, client_id: UUID) -> str:
    return f"{{{clinic_id}}}:measures:{client_id}"


class _Recorded(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    measure_id: UUID | None = None
    point: MeasurePoint | None = None
    course_id: UUID | None = None
    authored: AwareDatetime
    source: str | None = None
    phq9: int | None = None
    gad7: int | None = None


def parsed(fields: Mapping[str, str]) -> list[Measure]:
    """The measures of one client's hash, oldest first; unreadable values left out."""
    measures = []
    for key, raw in fields.items():
        try:
            recorded = _Recorded.model_validate_json(raw)
        except ValidationError:
            log.warning("measure record %s is unreadable; left out of outcomes", key)
            continue
        measures.append(Measure(key=key, **recorded.model_dump()))
    return sorted(measures, key=lambda m: (m.authored, m.key))


class MeasureRecords:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def of(self, clinic_id: str, client_id: UUID) -> list[Measure]:
        return (await self.of_many(clinic_id, [client_id]))[client_id]

    async def of_many(
        self, clinic_id: str, client_ids: Sequence[UUID]
    ) -> dict[UUID, list[Measure]]:
        """Each client's measures, a chunk of clients per round trip."""
        found: dict[UUID, list[Measure]] = {}
        for start in range(0, len(client_ids), READ_CHUNK):
            chunk = client_ids[start : start + READ_CHUNK]
            async with self.redis.pipeline(transaction=False) as reads:
                for client_id in chunk:
                    reads.hgetall(measures_key(clinic_id, client_id))
                hashes = await reads.execute()
            for client_id, fields in zip(chunk, hashes, strict=True):
                found[client_id] = parsed({text(k): text(v) for k, v in fields.items()})
        return found
