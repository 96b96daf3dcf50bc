"""Who is booked when: the atomic guard against double booking.

Each bookable resource of a clinic (a therapist, a room, a client) has a sorted
set of its appointments, scored by start. One Lua script checks every claim of
an appointment set against those sets and, only if none overlaps, records them
all: a whole course is held or nothing is, and of several replicas racing for
one slot exactly one wins. Claims already recorded under the same appointment
id count as the caller's own, so a redelivered booking is a no-op.

A change of a schedule (a move, a drop) holds its new slots before it publishes
and lets the replaced ones go only after its save (`Moves`): a failure in
between undoes exactly the holds it added, and the ledger never shows a slot
free that a saved schedule still books.

Keys carry the `{clinic_id}` hash tag: every key one script touches is one
clinic's, hence in one Redis Cluster slot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from redis.asyncio import Redis

from shared.events import Appointment

log = logging.getLogger(__name__)

Resource = Literal["therapist", "room", "client"]
# No appointment is longer than this; bounds the overlap search to a short range.
LONGEST_APPOINTMENT_S = 8 * 60 * 60

_RESERVE = """
-- KEYS: one booking set per claim. ARGV: longest; the number of appointment ids
-- this change lets go of (their slots do not block it), those ids; then per
-- claim start, end, member. Returns {index, member} of the first conflict, or
-- {0, "", indices of the claims newly added...}.
local longest = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local released = {}
for j = 1, count do
  released[ARGV[2 + j]] = true
end
local first = 2 + count
for i, key in ipairs(KEYS) do
  local base = first + (i - 1) * 3
  local start, finish, member = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), ARGV[base + 3]
  local own_id = string.match(member, "^[^|]*|[^|]*|(.*)$")
  local near = redis.call("ZRANGEBYSCORE", key, start - longest, "(" .. finish)
  for _, other in ipairs(near) do
    local o_start, o_end, o_id = string.match(other, "^([^|]*)|([^|]*)|(.*)$")
    if o_id ~= own_id and not released[o_id]
      and tonumber(o_end) > start and tonumber(o_start) < finish then
      return {i, other}
    end
  end
end
local result = {0, ""}
for i, key in ipairs(KEYS) do
  local base = first + (i - 1) * 3
  if redis.call("ZADD", key, ARGV[base + 1], ARGV[base + 3]) == 1 then
    table.insert(result, i)
  end
end
return result
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
class Held:
    """Every claim is held; `added` are those this call added (not held before)."""

    added: tuple[Claim, ...]


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
        held = await self.hold(clinic_id, claims)
        return held if isinstance(held, Conflict) else None

    async def hold(
        self, clinic_id: str, claims: Sequence[Claim], *, releasing: Iterable[UUID] = ()
    ) -> Held | Conflict:
        """Hold every claim, or none; slots of the appointments in `releasing` do not block."""
        if not claims:
            return Held(added=())
        released = sorted({str(a) for a in releasing})
        keys = [_key(clinic_id, c.resource, c.resource_id) for c in claims]
        args: list[str | int] = [LONGEST_APPOINTMENT_S, len(released), *released]
        for claim in claims:
            args += [_epoch(claim.starts_at), _epoch(claim.ends_at), claim.member]
        index, other, *added = await self._reserve(keys=keys, args=args)
        if int(index) == 0:
            return Held(added=tuple(claims[int(i) - 1] for i in added))
        return Conflict(claims[int(index) - 1], UUID(text(other).split("|")[2]))

    def moves(self, clinic_id: str) -> Moves:
        return Moves(self, clinic_id)

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


@dataclass
class Moves:
    """The ledger side of one schedule change, kept in step with its save.

    New slots are held at once (`hold`), so no one else can take them while the
    change is published; slots it gives up are let go only once the change is
    saved (`settle`), so a failure before the save never frees a slot the saved
    schedule still books: `undo` then lets go of exactly the holds this change
    added. All of it runs under the client's lock. A crash between the save and
    `settle` leaves a slot held too long (never a double booking).
    """

    ledger: BookingLedger
    clinic_id: str
    added: list[Claim] = field(default_factory=list)
    held: list[Claim] = field(default_factory=list)
    releasing: list[Claim] = field(default_factory=list)

    async def hold(
        self, claims: Sequence[Claim], replacing: Sequence[Claim] = ()
    ) -> Conflict | None:
        """Hold `claims` in place of `replacing` (let go after the save), or nothing."""
        letting_go = {c.appointment_id for c in [*self.releasing, *replacing]}
        result = await self.ledger.hold(self.clinic_id, claims, releasing=letting_go)
        if isinstance(result, Conflict):
            return result
        self.added += result.added
        self.held += claims
        self.releasing += replacing
        return None

    def release_after_save(self, claims: Sequence[Claim]) -> None:
        self.releasing += claims

    async def undo(self) -> None:
        """The change failed before its save: let go of what it added, keep the rest."""
        added, self.added, self.held, self.releasing = self.added, [], [], []
        try:
            await self.ledger.release(self.clinic_id, added)
        except Exception:
            # Held too long is safe (nobody is double booked); say so, and go on failing.
            log.exception("could not let go of %d new ledger holds", len(added))

    async def settle(self) -> None:
        """The change is saved: let go of the slots it gave up (not those it holds again)."""
        kept = {(c.resource, c.resource_id, c.member) for c in self.held}
        stale = [c for c in self.releasing if (c.resource, c.resource_id, c.member) not in kept]
        self.added, self.held, self.releasing = [], [], []
        try:
            await self.ledger.release(self.clinic_id, stale)
        except Exception:
            # The change is saved: failing it now would make a retry a new change.
            # A slot held too long double-books no one; say so and carry on.
            log.exception("could not let go of %d replaced ledger holds", len(stale))
