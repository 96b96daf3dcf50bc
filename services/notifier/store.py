"""The notifier's Redis state: contact projection, planned messages, and their delivery.

Keys, all with the `{clinic_id}` hash tag so every transaction and script stays
in one Redis Cluster slot (the scripts derive message keys from a prefix rather
than declaring each one, which is safe only because of that tag):

    notifier:{c}:contact:{client}         JSON: contact and opt-outs (PHI: never logged)
    notifier:{c}:msg:{notification}       hash: plan, state, correlation, attempts, outcome
    notifier:{c}:due                      zset: planned ids by send_at (service clock, epoch s)
    notifier:{c}:sending                  zset: claimed ids by lease deadline (Redis time, ms)
    notifier:{c}:outbox                   zset: finished ids whose event is not yet published
    notifier:{c}:held                     zset: time-bound ids due while the schedule view
                                          lagged, by send_at; back to due once it caught up
    notifier:{c}:slot:{appointment}/{k}   the id holding a replaceable slot (PlannedMessage.slot)
    notifier:{c}:appointment:{id}         set: ids planned about one appointment
    notifier:{c}:schedule:{appointment}   JSON: the appointment as the scheduler's events say
                                          (model.AppointmentFact), for checks at send time
    notifier:{c}:client:{client}          set: ids planned for one client (for the API)

A message goes planned -> sending (leased) -> sent | failed | skipped, or
planned -> cancelled; a transient failure puts it back to planned at a later
time, and a time-bound message held back while the notifier's view of the
schedule lags stays planned, in the held set instead of the due set (so it
does not stand in front of other due messages, such as a clinical alert), the
attempt not counted, until the view catches up (release_held).
"skipped" is a time-bound message no longer true when it fell due.
Leases run on Redis's clock, not the service clock: the demo's clock runs
thousands of times faster than real time, and a lease guards a real send.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from services.notifier.model import (
    CHANGE_NOTICE_KINDS,
    TIME_BOUND_KINDS,
    AppointmentFact,
    ContactPrefs,
    PlannedMessage,
)
from services.notifier.pending import PendingNotice, supersede
from shared.envelope import Envelope
from shared.events import Channel, Contact, Event
from shared.topics import BY_NAME, topic_for

State = Literal["planned", "sending", "sent", "failed", "skipped", "cancelled"]
# Finished messages stay listable for this long, then expire.
RETAIN_S = 90 * 24 * 60 * 60
# Messages about when an appointment takes place: wrong once it moves or is cancelled.
AHEAD_KINDS = TIME_BOUND_KINDS
PLAN_CONFLICT_TRIES = 20

_CLAIM = """
-- KEYS: due, sending. ARGV: now (service clock, epoch s), lease ms, how many, lease token,
-- message key prefix. Expired leases (a replica died mid-send) are taken over first.
local t = redis.call("TIME")
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[3])
local ids = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", server_ms, "LIMIT", 0, limit)
if #ids < limit then
  local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, limit - #ids)
  for _, id in ipairs(due) do table.insert(ids, id) end
end
local claimed = {}
for _, id in ipairs(ids) do
  local key = ARGV[5] .. id
  local state = redis.call("HGET", key, "state")
  redis.call("ZREM", KEYS[1], id)
  if state == "planned" or state == "sending" then
    redis.call("ZADD", KEYS[2], server_ms + tonumber(ARGV[2]), id)
    redis.call("HSET", key, "state", "sending", "lease", ARGV[4])
    local attempts = redis.call("HINCRBY", key, "attempts", 1)
    local fields = redis.call("HMGET", key, "plan", "correlation_id")
    table.insert(claimed, {id, attempts, fields[1], fields[2]})
  else
    redis.call("ZREM", KEYS[2], id)
  end
end
return claimed
"""

_FINISH = """
-- KEYS: message, sending, due (or held), outbox. ARGV: id, lease token, next state,
-- due score (when planned again), retention s, then field/value pairs to record.
if redis.call("HGET", KEYS[1], "state") ~= "sending"
    or redis.call("HGET", KEYS[1], "lease") ~= ARGV[2] then
  return 0
end
redis.call("ZREM", KEYS[2], ARGV[1])
local fields = {"state", ARGV[3]}
for i = 6, #ARGV do table.insert(fields, ARGV[i]) end
redis.call("HSET", KEYS[1], unpack(fields))
redis.call("HDEL", KEYS[1], "lease")
if ARGV[3] == "planned" then
  redis.call("ZADD", KEYS[3], ARGV[4], ARGV[1])
else
  local t = redis.call("TIME")
  redis.call("ZADD", KEYS[4], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
  redis.call("EXPIRE", KEYS[1], ARGV[5])
end
return 1
"""


_RELEASE = """
-- KEYS: held, due. ARGV: ids. Those still held back to the due set at their own time.
local released = 0
for _, id in ipairs(ARGV) do
  local score = redis.call("ZSCORE", KEYS[1], id)
  if score then
    redis.call("ZADD", KEYS[2], score, id)
    redis.call("ZREM", KEYS[1], id)
    released = released + 1
  end
end
return released
"""

_RENEW = """
-- KEYS: message, sending. ARGV: id, lease token, lease ms.
-- The fence before a send: only the replica whose token the message still
-- carries gets a fresh lease; one whose lease ran out and was re-claimed gets 0.
if redis.call("HGET", KEYS[1], "state") ~= "sending"
    or redis.call("HGET", KEYS[1], "lease") ~= ARGV[2] then
  return 0
end
local t = redis.call("TIME")
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("ZADD", KEYS[2], server_ms + tonumber(ARGV[3]), ARGV[1])
return 1
"""


def _key(clinic_id: str, *parts: str) -> str:
    return ":".join(("notifier", f"{{{clinic_id}}}", *parts))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class KnownContact(BaseModel):
    """The notifier's own projection of how to reach a client, from the events it consumed."""

    model_config = ConfigDict(frozen=True)

    contact: Contact | None = None
    opted_out: frozenset[Channel] = frozenset()

    @property
    def prefs(self) -> ContactPrefs:
        if self.contact is None:
            return ContactPrefs(opted_out=self.opted_out)
        return ContactPrefs.from_contact(self.contact, self.opted_out)


ContactChange = Callable[[KnownContact | None], KnownContact]


@dataclass(frozen=True)
class Plan:
    """What one event makes the notifier send, and what it makes wrong."""

    cause: Envelope
    messages: Sequence[PlannedMessage]
    superseded_appointments: Sequence[UUID] = ()
    changed_at: datetime | None = None
    # What the event says about appointments (domain.appointment_facts).
    appointments: Sequence[AppointmentFact] = ()


@dataclass(frozen=True)
class Claim:
    message: PlannedMessage
    correlation_id: str
    attempts: int
    lease: str


@dataclass(frozen=True)
class Outcome:
    """How a claimed message ended, and the event that says so."""

    state: Literal["sent", "failed", "skipped"]
    event: Event
    envelope: Envelope
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Stored:
    notification_id: str
    state: str
    message: PlannedMessage
    changed_at: str | None
    version: str | None

    @property
    def pending(self) -> PendingNotice | None:
        if self.state != "planned" or self.changed_at is None:
            return None
        return PendingNotice(
            message=self.message,
            changed_at=datetime.fromisoformat(self.changed_at),
            version=int(self.version or 1),
        )


@dataclass
class _Changes:
    writes: list[tuple[PlannedMessage, PendingNotice | None]] = field(default_factory=list)
    cancels: set[str] = field(default_factory=set)
    cleared_slots: list[str] = field(default_factory=list)


def _resolve(
    plan: Plan, occupants: dict[str, _Stored], superseded: list[_Stored], exists: set[str]
) -> _Changes:
    """Which messages to write and which pending ones they replace (pure)."""
    changes = _Changes()
    for stored in superseded:
        if stored.state == "planned" and stored.message.kind in AHEAD_KINDS:
            changes.cancels.add(stored.notification_id)
    for message in plan.messages:
        if str(message.notification_id) in exists:
            continue  # planned when this event was handled before
        occupant = occupants.get(message.slot) if message.slot else None
        if message.slot is not None and message.kind in CHANGE_NOTICE_KINDS:
            pending = occupant.pending if occupant else None
            notice = supersede(pending, message, changed_at=plan.changed_at or message.send_at)
            if notice is None and occupant is not None:
                changes.cancels.add(occupant.notification_id)
                changes.cleared_slots.append(message.slot)
            elif notice is not None and notice is not pending:
                if occupant is not None and pending is not None:
                    changes.cancels.add(occupant.notification_id)
                changes.writes.append((notice.message, notice))
            continue
        if occupant is not None and occupant.state == "planned":
            changes.cancels.add(occupant.notification_id)
        changes.writes.append((message, None))
    return changes


class NotifierStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    # --- contact projection -------------------------------------------------

    async def contact(self, clinic_id: str, client_id: UUID) -> KnownContact | None:
        raw = await self._redis.get(_key(clinic_id, "contact", str(client_id)))
        return KnownContact.model_validate_json(raw) if raw else None

    # --- schedule projection ------------------------------------------------

    async def appointment(self, clinic_id: str, appointment_id: UUID) -> AppointmentFact | None:
        """The latest the notifier has heard of an appointment (None: nothing yet)."""
        raw = await self._redis.get(_key(clinic_id, "schedule", str(appointment_id)))
        return AppointmentFact.model_validate_json(raw) if raw else None

    # --- planning -----------------------------------------------------------

    async def record(
        self,
        plan: Plan,
        *,
        contact_change: ContactChange | None,
        client_id: UUID,
        effect: Callable[[Pipeline], None],
    ) -> None:
        """Store the plan, the contact change and the effect record in one transaction.

        Optimistic: every key read is watched, so a concurrent change (another
        event for the client, or a message being claimed) makes it start over.
        """
        for _ in range(PLAN_CONFLICT_TRIES):
            try:
                async with self._redis.pipeline(transaction=True) as tx:
                    await self._record_once(tx, plan, contact_change, client_id, effect)
                return
            except WatchError:
                continue
        raise RuntimeError("planning kept conflicting with concurrent changes")

    async def _record_once(
        self,
        tx: Pipeline,
        plan: Plan,
        contact_change: ContactChange | None,
        client_id: UUID,
        effect: Callable[[Pipeline], None],
    ) -> None:
        clinic = plan.cause.clinic_id
        slots = sorted({m.slot for m in plan.messages if m.slot})
        slot_keys = [_key(clinic, "slot", slot) for slot in slots]
        appointment_keys = [
            _key(clinic, "appointment", str(a)) for a in plan.superseded_appointments
        ]
        new_ids = [str(m.notification_id) for m in plan.messages]
        contact_key = _key(clinic, "contact", str(client_id))
        facts = list(plan.appointments)
        fact_keys = [_key(clinic, "schedule", str(f.appointment_id)) for f in facts]
        await tx.watch(
            contact_key,
            *slot_keys,
            *appointment_keys,
            *fact_keys,
            *[_key(clinic, "msg", i) for i in new_ids],
        )
        # Read in one round trip on another connection: the keys are watched, so
        # any change after the WATCH still makes this transaction start over.
        async with self._redis.pipeline(transaction=False) as reads:
            reads.get(contact_key)
            for key in slot_keys:
                reads.get(key)
            for i in new_ids:
                reads.exists(_key(clinic, "msg", i))
            for key in appointment_keys:
                reads.smembers(key)
            for key in fact_keys:
                reads.get(key)
            current, *found = await reads.execute()
        if fact_keys:
            found, known_facts = found[: -len(fact_keys)], found[-len(fact_keys) :]
        else:
            known_facts = []
        holders = dict(zip(slots, found[: len(slots)], strict=True))
        flags = found[len(slots) : len(slots) + len(new_ids)]
        exists = {i for i, there in zip(new_ids, flags, strict=True) if there}
        members = found[len(slots) + len(new_ids) :]
        superseded_ids = [_text(i) for ids in members for i in ids]
        wanted = {_text(i) for i in holders.values() if i} | set(superseded_ids)
        stored = await self._load(tx, clinic, wanted)
        occupants = {
            slot: stored[_text(i)] for slot, i in holders.items() if i and _text(i) in stored
        }
        changes = _resolve(
            plan, occupants, [stored[i] for i in superseded_ids if i in stored], exists
        )

        tx.multi()  # type: ignore[no-untyped-call]
        self._write(tx, clinic, plan.cause.correlation_id, changes)
        if contact_change is not None:
            known = KnownContact.model_validate_json(current) if current else None
            tx.set(contact_key, contact_change(known).model_dump_json())
        for fact, key, raw in zip(facts, fact_keys, known_facts, strict=True):
            earlier = AppointmentFact.model_validate_json(raw) if raw else None
            tx.set(key, fact.after(earlier).model_dump_json(), ex=RETAIN_S)
        effect(tx)
        await tx.execute()

    async def _load(self, tx: Pipeline, clinic: str, ids: set[str]) -> dict[str, _Stored]:
        """The stored messages `ids`, watched by `tx` (read together, after the WATCH)."""
        ordered = sorted(ids)
        if not ordered:
            return {}
        keys = [_key(clinic, "msg", i) for i in ordered]
        await tx.watch(*keys)
        async with self._redis.pipeline(transaction=False) as reads:
            for key in keys:
                reads.hmget(key, ["state", "plan", "changed_at", "version"])
            rows = await reads.execute()
        found = {}
        for notification_id, (state, plan, changed_at, version) in zip(ordered, rows, strict=True):
            if state and plan:
                found[notification_id] = _Stored(
                    notification_id,
                    _text(state),
                    PlannedMessage.model_validate_json(plan),
                    _text(changed_at) if changed_at else None,
                    _text(version) if version else None,
                )
        return found

    def _write(self, tx: Pipeline, clinic: str, correlation_id: str, changes: _Changes) -> None:
        for notification_id in changes.cancels:
            tx.hset(_key(clinic, "msg", notification_id), "state", "cancelled")
            tx.expire(_key(clinic, "msg", notification_id), RETAIN_S)
            tx.zrem(_key(clinic, "due"), notification_id)
            tx.zrem(_key(clinic, "held"), notification_id)
        for slot in changes.cleared_slots:
            tx.delete(_key(clinic, "slot", slot))
        for message, notice in changes.writes:
            notification_id = str(message.notification_id)
            fields = {
                "plan": message.model_dump_json(),
                "state": "planned",
                "correlation_id": correlation_id,
                "attempts": "0",
            }
            if notice is not None:
                fields |= {
                    "changed_at": notice.changed_at.isoformat(),
                    "version": str(notice.version),
                }
            pairs = [item for pair in fields.items() for item in pair]
            tx.hset(_key(clinic, "msg", notification_id), items=pairs)
            tx.zadd(_key(clinic, "due"), {notification_id: message.send_at.timestamp()})
            # Indexes live as long as what they point to may: refreshed on every write.
            client_key = _key(clinic, "client", str(message.client_id))
            tx.sadd(client_key, notification_id)
            tx.expire(client_key, RETAIN_S)
            if message.slot:
                tx.set(_key(clinic, "slot", message.slot), notification_id, ex=RETAIN_S)
            if message.appointment_id:
                appointment_key = _key(clinic, "appointment", str(message.appointment_id))
                tx.sadd(appointment_key, notification_id)
                tx.expire(appointment_key, RETAIN_S)

    # --- delivery -----------------------------------------------------------

    async def claim_due(
        self, clinic_id: str, now: datetime, *, limit: int, lease_ms: int
    ) -> list[Claim]:
        """Lease up to `limit` due messages to this replica; no other replica gets them."""
        lease = uuid.uuid4().hex
        rows = await self._claim(
            keys=[_key(clinic_id, "due"), _key(clinic_id, "sending")],
            args=[f"{now.timestamp():.6f}", lease_ms, limit, lease, _key(clinic_id, "msg", "")],
        )
        return [
            Claim(
                message=PlannedMessage.model_validate_json(plan),
                correlation_id=_text(correlation),
                attempts=int(attempts),
                lease=lease,
            )
            for _, attempts, plan, correlation in rows
        ]

    async def renew(self, claim: Claim, lease_ms: int) -> bool:
        """A full lease from now if `claim` still holds the message; False if it was lost.

        Called just before each send: a message that waited in a batch behind
        slow sends may have outlived its lease and been claimed by another
        replica, which then sends it; this one must not.
        """
        clinic, notification_id = claim.message.clinic_id, str(claim.message.notification_id)
        renewed = await self._renew(
            keys=[_key(clinic, "msg", notification_id), _key(clinic, "sending")],
            args=[notification_id, claim.lease, lease_ms],
        )
        return bool(renewed)

    async def hold(self, claim: Claim) -> bool:
        """Planned again, in the held set at its own time, the attempt not counted.

        For a time-bound message while the notifier's view of the schedule lags:
        out of the due set, so the next claims reach what is due behind it.
        """
        return await self._transition(
            claim,
            "planned",
            f"{claim.message.send_at.timestamp():.6f}",
            {"attempts": str(claim.attempts - 1)},
            planned_into="held",
        )

    async def held(self, clinic_id: str, limit: int) -> list[tuple[str, tuple[UUID, UUID | None]]]:
        """The clinic's first `limit` held messages (by send_at), each with the client and
        the appointment it is about."""
        ids = [_text(i) for i in await self._redis.zrange(_key(clinic_id, "held"), 0, limit - 1)]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as reads:
            for notification_id in ids:
                reads.hget(_key(clinic_id, "msg", notification_id), "plan")
            plans = await reads.execute()
        found = []
        for notification_id, plan in zip(ids, plans, strict=True):
            if plan is None:  # expired meanwhile: nothing to send, nothing to keep
                await self._redis.zrem(_key(clinic_id, "held"), notification_id)
                continue
            message = PlannedMessage.model_validate_json(plan)
            found.append((notification_id, (message.client_id, message.appointment_id)))
        return found

    async def release_held(self, clinic_id: str, ids: Sequence[str]) -> int:
        """These held messages due again at their own time (their schedule view caught up)."""
        if not ids:
            return 0
        released = await self._release(
            keys=[_key(clinic_id, "held"), _key(clinic_id, "due")], args=list(ids)
        )
        return int(released)

    async def due_summary(self, clinic_id: str) -> tuple[datetime | None, int]:
        """When the clinic's next planned message falls due (service clock), and how many wait
        held for the schedule view to catch up."""
        async with self._redis.pipeline(transaction=False) as reads:
            reads.zrange(_key(clinic_id, "due"), 0, 0, withscores=True)
            reads.zcard(_key(clinic_id, "held"))
            first, held = await reads.execute()
        earliest = datetime.fromtimestamp(float(first[0][1]), UTC) if first else None
        return earliest, int(held)

    async def retry_at(self, claim: Claim, at: datetime, reason: str) -> bool:
        return await self._transition(
            claim, "planned", f"{at.timestamp():.6f}", {"last_error": reason}
        )

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Record how the message ended and queue its event; False if the lease was lost."""
        record = {
            "topic": topic_for(outcome.event).name,
            "event": outcome.event.model_dump(mode="json"),
            "envelope": outcome.envelope.model_dump(mode="json"),
        }
        return await self._transition(
            claim, outcome.state, "", {**outcome.details, "outcome": json.dumps(record)}
        )

    async def _transition(
        self,
        claim: Claim,
        state: State,
        due_score: str,
        fields: dict[str, str],
        planned_into: Literal["due", "held"] = "due",
    ) -> bool:
        clinic, notification_id = claim.message.clinic_id, str(claim.message.notification_id)
        pairs = [item for pair in fields.items() for item in pair]
        done = await self._finish(
            keys=[
                _key(clinic, "msg", notification_id),
                _key(clinic, "sending"),
                _key(clinic, planned_into),
                _key(clinic, "outbox"),
            ],
            args=[notification_id, claim.lease, state, due_score, RETAIN_S, *pairs],
        )
        return bool(done)

    async def waiting(self, clinic_id: str) -> int:
        """How many messages are planned and not yet sent (due, later, or held)."""
        async with self._redis.pipeline(transaction=False) as reads:
            reads.zcard(_key(clinic_id, "due"))
            reads.zcard(_key(clinic_id, "held"))
            due, held = await reads.execute()
        return int(due) + int(held)

    async def unpublished(
        self, clinic_id: str, *, older_than_ms: int, limit: int
    ) -> list[tuple[str, Event, Envelope]]:
        """Outcome events recorded but not published (the publisher died in between)."""
        seconds, micros = await self._redis.time()
        cutoff = seconds * 1000 + micros // 1000 - older_than_ms
        ids = await self._redis.zrangebyscore(
            _key(clinic_id, "outbox"), "-inf", cutoff, start=0, num=limit
        )
        found = []
        for raw_id in ids:
            notification_id = _text(raw_id)
            raw = await self._redis.hget(_key(clinic_id, "msg", notification_id), "outcome")
            if raw is None:
                await self.published(clinic_id, notification_id)
                continue
            record = json.loads(raw)
            event = BY_NAME[record["topic"]].event.model_validate(record["event"])
            found.append((notification_id, event, Envelope.model_validate(record["envelope"])))
        return found

    async def published(self, clinic_id: str, notification_id: str) -> None:
        await self._redis.zrem(_key(clinic_id, "outbox"), notification_id)

    # --- reading ------------------------------------------------------------

    async def notifications(self, clinic_id: str, client_id: UUID) -> list[dict[str, str]]:
        """Every message planned for a client, as stored (ids, kinds, states; no contact data)."""
        ids = sorted(
            _text(i) for i in await self._redis.smembers(_key(clinic_id, "client", str(client_id)))
        )
        found = []
        for notification_id in ids:
            record = await self._redis.hgetall(_key(clinic_id, "msg", notification_id))
            if record:
                found.append({_text(k): _text(v) for k, v in record.items()})
        return found
