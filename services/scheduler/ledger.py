"""Who is booked when: the atomic guard against double booking.

Each bookable resource of a clinic (a therapist, a room, a client) has a sorted
set of its appointments, scored by start. One Lua script checks every claim of
an appointment set against those sets and, only if none overlaps, records them
all: a whole course is held or nothing is, and of several replicas racing for
one slot exactly one wins. Claims already recorded under the same appointment
id count as the caller's own, so a redelivered booking is a no-op.

Keys carry the `{clinic_id}` hash tag: every key one script touches is one
clinic's, hence in one Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from redis.asyncio import Redis

from shared.events import Appointment

Resource = Literal["therapist", "room", "client"]
# No appointment is longer than this; bounds the overlap search to a short range.
LONGEST_APPOINTMENT_S = 8 * 60 * 60

_RESERVE = """
-- KEYS: one booking set per claim. ARGV: longest, then per claim start, end, member.
local longest = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 3
  local start, finish, member = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), ARGV[base + 3]
  local own_id = string.match(member, "^[^|]*|[^|]*|(.*)$")
  local near = redis.call("ZRANGEBYSCORE", key, start - longest, "(" .. finish)
  for _, other in ipairs(near) do
    local o_start, o_end, o_id = string.match(other, "^([^|]*)|([^|]*)|(.*)$")
    if o_id ~= own_id and tonumber(o_end) > start and tonumber(o_start) < finish then
      return {i, other}
    end
  end
end
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 3
  redis.call("ZADD", key, ARGV[base + 1], ARGV[base + 3])
end
return {0, ""}
"""


@dataclass(frozen=True)
class Claim:
    resource: Resource
    resource_id: str
    appointment_id: UUID
    starts_at: datetime
    ends_at: datetime

    @property
    def member(self) -> str:
        return f"{_epoch(self.starts_at)}|{_epoch(self.ends_at)}|{self.appointment_id}"


@dataclass(frozen=True)
class Conflict:
    claim: Claim
    taken_by: UUID


@dataclass(frozen=True)
class Booked:
    appointment_id: UUID
    starts_at: datetime
    ends_at: datetime


def text(value: Any) -> str:
    """Redis replies as str (decode_responses) or bytes, depending on the client."""
    return value if isinstance(value, str) else bytes(value).decode()


def _epoch(instant: datetime) -> int:
    return int(instant.timestamp())


def _key(clinic_id: str, resource: Resource, resource_id: str) -> str:
    return f"sched:{{{clinic_id}}}:booked:{resource}:{resource_id}"


def claims_for(client_id: UUID, appointments: Iterable[Appointment]) -> list[Claim]:
    """Every resource each appointment holds: its therapist, its room, its client."""
    claims = []
    for a in appointments:
        held: list[tuple[Resource, str]] = [
            ("therapist", a.therapist_id),
            ("client", str(client_id)),
        ]
        if a.room_id:
            held.append(("room", a.room_id))
        claims += [Claim(r, rid, a.appointment_id, a.starts_at, a.ends_at) for r, rid in held]
    return claims


class BookingLedger:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._reserve = redis.register_script(_RESERVE)

    async def reserve(self, clinic_id: str, claims: Sequence[Claim]) -> Conflict | None:
        """Hold every claim, or none: the first overlapping claim is returned."""
        if not claims:
            return None
        keys = [_key(clinic_id, c.resource, c.resource_id) for c in claims]
        args: list[str | int] = [LONGEST_APPOINTMENT_S]
        for claim in claims:
            args += [_epoch(claim.starts_at), _epoch(claim.ends_at), claim.member]
        index, other = await self._reserve(keys=keys, args=args)
        if int(index) == 0:
            return None
        return Conflict(claims[int(index) - 1], UUID(text(other).split("|")[2]))

    async def release(self, clinic_id: str, claims: Sequence[Claim]) -> None:
        async with self._redis.pipeline(transaction=True) as tx:
            for claim in claims:
                tx.zrem(_key(clinic_id, claim.resource, claim.resource_id), claim.member)
            await tx.execute()

    async def booked(
        self,
        clinic_id: str,
        resources: Sequence[tuple[Resource, str]],
        since: datetime,
        until: datetime,
    ) -> list[list[Booked]]:
        """For each resource, its appointments that overlap [since, until).

        One round trip for them all (a pipeline, not a transaction: each range
        is read as it stands, and the reservation script re-checks every claim).
        """
        async with self._redis.pipeline(transaction=False) as reads:
            for resource, resource_id in resources:
                reads.zrangebyscore(
                    _key(clinic_id, resource, resource_id),
                    _epoch(since) - LONGEST_APPOINTMENT_S,
                    f"({_epoch(until)}",
                )
            ranges = await reads.execute()
        return [_overlapping(members, _epoch(since)) for members in ranges]


def _overlapping(members: Iterable[Any], since_epoch: int) -> list[Booked]:
    found = []
    for member in members:
        start, end, appointment = text(member).split("|")
        if int(end) > since_epoch:
            found.append(
                Booked(
                    UUID(appointment),
                    datetime.fromtimestamp(int(start), UTC),
                    datetime.fromtimestamp(int(end), UTC),
                )
            )
    return found
