"""Who is booked when: the atomic guard against double booking.

Each bookable resource of a clinic (a therapist, a room, a client) has a sorted
set of its appointments, scored by start. One Lua script checks every claim of
an appointment set against those sets and, only if none overlaps, records them
all: a whole course is held or nothing is, and of several writers racing for
one slot exactly one wins. Claims already recorded under the same appointment
id count as the caller's own, so a redelivered booking is a no-op.

A schedule change books through `Booking`, inside the one write step
(chassis.unit_of_work): `hold` WATCHes the sets its claims touch and runs the
script as a dry run (the check alone), and the step's MULTI lets go of the
replaced slots and runs the script for real, together with the schedule's
save. Whoever changes one of those sets in between makes the whole step run
again, so the ledger and the saved schedules never disagree: no hold to undo,
no release after the save.

Keys carry the `{clinic_id}` hash tag: every key one script touches is one
clinic's, hence in one Redis Cluster slot.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.unit_of_work import Transaction
from shared.events import Appointment

log = logging.getLogger(__name__)

Resource = Literal["therapist", "room", "client"]
# No appointment is longer than this; bounds the overlap search to a short range.
LONGEST_APPOINTMENT_S = 8 * 60 * 60
# Slots that ended this long ago are trimmed from a resource's set at its next booking:
# no booking is made in the past, so only the audit's second opinion ever read them,
# and without a trim every therapist's and room's set grows forever (issue 18).
BOOKINGS_KEPT = timedelta(days=30)

_RESERVE = """
-- KEYS: one booking set per claim. ARGV: longest; 1 for a dry run (check only);
-- the number of appointment ids this change lets go of (their slots do not block
-- it), those ids; then per claim start, end, member. Returns {index, member} of
-- the first conflict, or {0, "", indices of the claims newly added...}.
local longest = tonumber(ARGV[1])
local dry = ARGV[2] == "1"
local count = tonumber(ARGV[3])
local released = {}
for j = 1, count do
  released[ARGV[3 + j]] = true
end
local first = 3 + count
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
if dry then
  return result
end
for i, key in ipairs(KEYS) do
  local base = first + (i - 1) * 3
  if redis.call("ZADD", key, ARGV[base + 1], ARGV[base + 3]) == 1 then
    table.insert(result, i)
  end
end
return result
"""


# A set's members that ended by ARGV[1] (epoch s) go: members are "start|end|id" scored
# by start, so the end is read from each member that started by then.
_TRIM_ENDED = """
local gone = 0
for _, name in ipairs(KEYS) do
  for _, member in ipairs(redis.call("ZRANGEBYSCORE", name, "-inf", ARGV[1])) do
    local ends = tonumber(string.match(member, "^[^|]*|([^|]*)|"))
    if ends ~= nil and ends <= tonumber(ARGV[1]) then
      gone = gone + redis.call("ZREM", name, member)
    end
  end
end
return gone
"""


def queue_trim_ended(p: Pipeline, names: Sequence[str], now: datetime) -> None:
    """Queue, on a write step's MULTI, the removal of the slots of `names` (booking sets
    of one clinic's slot) ended by `now`: one script for them all (EVAL with the source,
    as `queue_hold`, for the same reasons)."""
    if names:
        p.eval(_TRIM_ENDED, len(names), *names, _epoch(now))


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


def booking_key(clinic_id: str, resource: Resource, resource_id: str) -> str:
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
        self,
        clinic_id: str,
        claims: Sequence[Claim],
        *,
        releasing: Iterable[UUID] = (),
        dry_run: bool = False,
    ) -> Held | Conflict:
        """Hold every claim, or none; slots of the appointments in `releasing` do not block.
        A dry run only checks (nothing is added)."""
        if not claims:
            return Held(added=())
        keys, args = self.reserve_call(clinic_id, claims, releasing, dry_run)
        return _outcome(claims, await self._reserve(keys=keys, args=args))

    def queue_hold(
        self, p: Pipeline, clinic_id: str, claims: Sequence[Claim], releasing: Iterable[UUID]
    ) -> None:
        """The script queued on a write step's MULTI (what it checks was read under WATCH)."""
        if claims:
            keys, args = self.reserve_call(clinic_id, claims, releasing, dry_run=False)
            # EVAL with the source, not EVALSHA: inside MULTI a NOSCRIPT cannot be retried,
            # a Redis Cluster primary promoted after a failover has an empty script cache,
            # and redis-py's cluster pipeline has no script preloading (`p.scripts`) at all.
            p.eval(_RESERVE, len(keys), *keys, *args)

    def reserve_call(
        self, clinic_id: str, claims: Sequence[Claim], releasing: Iterable[UUID], dry_run: bool
    ) -> tuple[list[str], list[str | int]]:
        released = sorted({str(a) for a in releasing})
        keys = [booking_key(clinic_id, c.resource, c.resource_id) for c in claims]
        args: list[str | int] = [LONGEST_APPOINTMENT_S, int(dry_run), len(released), *released]
        for claim in claims:
            args += [_epoch(claim.starts_at), _epoch(claim.ends_at), claim.member]
        return keys, args

    def booking(self, tx: Transaction, clinic_id: str) -> Booking:
        return Booking(self, tx, clinic_id)

    async def release(self, clinic_id: str, claims: Sequence[Claim]) -> None:
        for claim in claims:
            await self._redis.zrem(
                booking_key(clinic_id, claim.resource, claim.resource_id), claim.member
            )

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
                    booking_key(clinic_id, resource, resource_id),
                    _epoch(since) - LONGEST_APPOINTMENT_S,
                    f"({_epoch(until)}",
                )
            ranges = await reads.execute()
        return [_overlapping(members, _epoch(since)) for members in ranges]

    async def starting(
        self,
        clinic_id: str,
        resources: Sequence[tuple[Resource, str]],
        since: datetime,
        until: datetime,
    ) -> list[list[Booked]]:
        """For each resource, its appointments that start in [since, until), in one round
        trip (a pipeline: each range as it stands; a day's calendar, not a decision)."""
        async with self._redis.pipeline(transaction=False) as reads:
            for resource, resource_id in resources:
                reads.zrangebyscore(
                    booking_key(clinic_id, resource, resource_id),
                    _epoch(since),
                    f"({_epoch(until)}",
                )
            ranges = await reads.execute()
        return [_overlapping(members, _epoch(since)) for members in ranges]


def _overlapping(members: Iterable[Any], since_epoch: int) -> list[Booked]:
    found = []
    for member in members:
        ends, booked = _parsed(text(member))
        if ends > since_epoch:
            found.append(booked)
    return found


@functools.lru_cache(maxsize=16_384)
def _parsed(member: str) -> tuple[int, Booked]:
    """A booking set's member, parsed once: every consultation request reads every
    therapist's and room's bookings over its horizon, the same members again and
    again, and parsing them (an id, two instants) was a sixteenth of the scheduler's
    CPU (issue 19). A member is immutable; what is booked is still read each time."""
    start, end, appointment = member.split("|")
    return int(end), Booked(
        UUID(appointment),
        datetime.fromtimestamp(int(start), UTC),
        datetime.fromtimestamp(int(end), UTC),
    )


@dataclass
class Booking:
    """The ledger side of one schedule change, decided inside its write step.

    `hold` checks new claims against the booking sets as they stand, those sets
    watched from before the read, so the step's EXEC fails if anyone changes
    them before it; `release` names slots the change gives up. `write` queues
    both on the step's MULTI: the given-up slots go and the held ones are added
    (by the same script, which checks them once more) with the schedule's save.
    """

    ledger: BookingLedger
    tx: Transaction
    clinic_id: str
    held: list[Claim] = field(default_factory=list)
    releasing: list[Claim] = field(default_factory=list)
    # Writes of the same change outside the ledger and the schedule (the clinic's
    # waitlist and offers), queued on the same MULTI; what they decide on was read
    # under the step's WATCH (`tx`).
    also: list[Callable[[Pipeline], None]] = field(default_factory=list)
    # The step's instant: slots ended BOOKINGS_KEPT before it go from the sets it writes.
    now: datetime | None = None

    async def hold(
        self, claims: Sequence[Claim], replacing: Sequence[Claim] = ()
    ) -> Conflict | None:
        """Hold `claims` in place of `replacing`, or nothing (a conflict)."""
        if not claims:
            return None
        keys = sorted({booking_key(self.clinic_id, c.resource, c.resource_id) for c in claims})
        letting_go = {c.appointment_id for c in [*self.releasing, *replacing]}
        script_keys, args = self.ledger.reserve_call(
            self.clinic_id, claims, letting_go, dry_run=True
        )
        # The dry run goes with the WATCH, on the step's own connection: one round trip.
        async with await self.tx.watched_reads(*keys) as reads:
            reads.eval(_RESERVE, len(script_keys), *script_keys, *args)
            [reply] = await reads.execute()
        result = _outcome(claims, reply)
        if isinstance(result, Conflict):
            return result
        self.held += claims
        self.releasing += replacing
        return None

    def release(self, claims: Sequence[Claim]) -> None:
        self.releasing += claims

    def write(self, p: Pipeline) -> None:
        """Queue the change on the MULTI: slots given up go, the held ones are added."""
        kept = {(c.resource, c.resource_id, c.member) for c in self.held}
        for c in self.releasing:
            if (c.resource, c.resource_id, c.member) not in kept:
                p.zrem(booking_key(self.clinic_id, c.resource, c.resource_id), c.member)
        released = {c.appointment_id for c in self.releasing}
        self.ledger.queue_hold(p, self.clinic_id, self.held, released)
        if self.now is not None:
            # Scored by start: one that started LONGEST_APPOINTMENT_S before the cut ended.
            cut = _epoch(self.now - BOOKINGS_KEPT) - LONGEST_APPOINTMENT_S
            for name in sorted(
                {booking_key(self.clinic_id, c.resource, c.resource_id) for c in self.held}
            ):
                p.zremrangebyscore(name, "-inf", f"({cut}")
        for write in self.also:
            write(p)


def _outcome(claims: Sequence[Claim], reply: Sequence[Any]) -> Held | Conflict:
    """What the reserve script answered: every claim held (those it added), or the first
    claim that met a slot held by another appointment."""
    index, other, *added = reply
    if int(index) == 0:
        return Held(added=tuple(claims[int(i) - 1] for i in added))
    return Conflict(claims[int(index) - 1], UUID(text(other).split("|")[2]))
