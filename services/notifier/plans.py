"""An event's plan: the reads and writes of the notifier's step in the unit of work, and
the reads of what it wrote.

The step (handlers.Planner, run by chassis.unit_of_work) reads what the plan touches
with those keys watched: the client's contact, the slots its messages take, the
pending messages of appointments it makes wrong, what is known of its appointments,
and whether its messages exist already. Its write is one MULTI with the unit of
work's handled mark: the messages it plans (into the due set), the pending ones
they replace (cancelled), the client's contact change, and what the event says
about appointments. Delivery takes the messages from the due set
(queue.DeliveryQueue) and checks a time-bound one against the appointment as last
heard (`appointment`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.unit_of_work import REMEMBER_S, Transaction
from services.notifier import tidy
from services.notifier.contacts import KnownContact, awaiting_key, contact_key
from services.notifier.keys import FINISHED_KEPT_S, RETAIN_S, finished_fields, key, text
from services.notifier.model import PlannedMessage
from services.notifier.planning import Changes, Plan, Stored, resolve
from services.notifier.staleness import AppointmentFact

Write = Callable[[Pipeline], None]


class PlanStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    # --- the planning step (inside a unit of work's transaction) ----------------

    async def client_view(
        self, tx: Transaction, clinic_id: str, client_id: UUID
    ) -> tuple[KnownContact | None, datetime | None]:
        """The client's contact as known (what the plan's prefs and the contact written with
        it derive from) and when the client was last tidied (None: never; what `writes`
        plans by), watched, in one round trip."""
        entry, marker = contact_key(clinic_id, client_id), tidy.marker_key(clinic_id, client_id)
        async with await tx.watched_reads(entry, marker) as reads:
            reads.get(entry)
            reads.get(marker)
            raw, tidied = await reads.execute()
        known = KnownContact.model_validate_json(raw) if raw else None
        return known, tidy.marker_time(tidied)

    async def writes(
        self,
        tx: Transaction,
        plan: Plan,
        *,
        client_id: UUID,
        contact: KnownContact | None,
        now: datetime,
        tidied: datetime | None,
    ) -> Write:
        """What recording `plan` writes (with `contact` as the client's contact, None: left
        as it is), decided from the keys it touches, read with them watched. A contact
        that reaches the client makes their messages awaiting it due at `now`. `tidied`:
        when the client was last tidied, as `client_view` read it.

        A concurrent change to any of them (another event for the client, or a message
        being claimed) fails the write, and the unit of work runs the step again.
        """
        clinic = plan.cause.clinic_id
        if tidy.too_late(plan.changed_at, tidied):
            # Long before the client's records were tidied (tidy.py): nothing to plan.
            plan = Plan(cause=plan.cause, messages=(), changed_at=plan.changed_at)
        slots = sorted({m.slot for m in plan.messages if m.slot})
        slot_keys = [key(clinic, "slot", slot) for slot in slots]
        appointment_keys = [
            key(clinic, "appointment", str(a)) for a in plan.superseded_appointments
        ]
        new_ids = [str(m.notification_id) for m in plan.messages]
        facts = list(plan.appointments)
        fact_keys = [key(clinic, "schedule", str(f.appointment_id)) for f in facts]
        # A contact that reaches the client releases their messages awaiting it (watched:
        # a retry listed after this read fails the write).
        awaiting = awaiting_key(clinic, client_id)
        brings_contact = contact is not None and contact.contact is not None
        touched = [
            *slot_keys,
            *appointment_keys,
            *fact_keys,
            *(key(clinic, "msg", i) for i in new_ids),
            *([awaiting] if brings_contact else []),
        ]
        # Watched and read in one round trip (an event planning nothing, an opt-out,
        # touches none): any change after the WATCH still makes the write fail.
        async with await tx.watched_reads(*touched) as reads:
            if brings_contact:
                reads.smembers(awaiting)
            for slot_key in slot_keys:
                reads.get(slot_key)
            for i in new_ids:
                reads.exists(key(clinic, "msg", i))
            for appointment_key in appointment_keys:
                reads.smembers(appointment_key)
            for fact_key in fact_keys:
                reads.get(fact_key)
            found = await reads.execute()
        released = sorted(text(i) for i in found.pop(0)) if brings_contact else []
        if fact_keys:
            found, known_facts = found[: -len(fact_keys)], found[-len(fact_keys) :]
        else:
            known_facts = []
        holders = dict(zip(slots, found[: len(slots)], strict=True))
        flags = found[len(slots) : len(slots) + len(new_ids)]
        exists = {i for i, there in zip(new_ids, flags, strict=True) if there}
        members = found[len(slots) + len(new_ids) :]
        superseded_ids = [text(i) for ids in members for i in ids]
        wanted = {text(i) for i in holders.values() if i} | set(superseded_ids)
        stored = await self._load(tx, clinic, wanted)
        occupants = {
            slot: stored[text(i)] for slot, i in holders.items() if i and text(i) in stored
        }
        changes = resolve(
            plan, occupants, [stored[i] for i in superseded_ids if i in stored], exists
        )
        updated = [
            (fact_key, fact.after(AppointmentFact.model_validate_json(raw) if raw else None))
            for fact, fact_key, raw in zip(facts, fact_keys, known_facts, strict=True)
            # A fact the tidy took away is not brought back by news arriving after it.
            if raw is not None or not tidy.taken(fact, tidied)
        ]
        cancelled = {s.notification_id: s for s in [*occupants.values(), *stored.values()]}
        tidying = tidy.Tidy()
        mark = max(filter(None, (tidied, plan.tidy_at)), default=None)
        if plan.tidy_at is not None and mark is not None:
            about = {str(m.appointment_id) for m in plan.messages if m.appointment_id}
            tidying = await tidy.decide(tx, clinic, client_id, plan.tidy_at, set(new_ids), about)
            tidying.inputs = await tidy.old_inputs(tx, clinic, client_id, mark)
        listed = tidy.inputs_key(clinic, client_id)
        with_facts = tidy.facts_key(clinic, client_id)

        def write(w: Pipeline) -> None:
            # First: what this plan writes (a fact, a slot) wins over what the tidy takes.
            tidying.write(w, clinic, client_id)
            if mark is not None and mark != tidied:
                w.set(tidy.marker_key(clinic, client_id), mark.isoformat())
            if plan.listed and plan.changed_at is not None:
                # Listed with its handled mark, for a later tidy to take (tidy.py).
                w.zadd(listed, {plan.cause.id: plan.changed_at.timestamp()})
                w.expire(listed, REMEMBER_S)
            self._write(w, clinic, plan.cause.correlation_id, changes, cancelled)
            if contact is not None:
                w.set(contact_key(clinic, client_id), contact.model_dump_json())
            if released:
                # Only those still due (planned): one being sent finds the contact itself.
                w.zadd(key(clinic, "due"), dict.fromkeys(released, now.timestamp()), xx=True)
                w.delete(awaiting)
            for fact_key, fact in updated:
                w.set(fact_key, fact.model_dump_json(), ex=RETAIN_S)
            if updated:  # listed for the client's tidy, which takes them once over
                w.sadd(with_facts, *(str(fact.appointment_id) for _, fact in updated))
                w.expire(with_facts, RETAIN_S)

        return write

    async def _load(self, tx: Transaction, clinic: str, ids: set[str]) -> dict[str, Stored]:
        """The stored messages `ids`, watched by `tx` (read together, after the WATCH)."""
        ordered = sorted(ids)
        if not ordered:
            return {}
        msg_keys = [key(clinic, "msg", i) for i in ordered]
        async with await tx.watched_reads(*msg_keys) as reads:
            for msg_key in msg_keys:
                reads.hmget(msg_key, ["state", "plan", "changed_at", "version", "attempts"])
            rows = await reads.execute()
        found = {}
        for notification_id, row in zip(ordered, rows, strict=True):
            state, plan, changed_at, version, attempts = row
            if state and plan:
                found[notification_id] = Stored(
                    notification_id,
                    text(state),
                    PlannedMessage.model_validate_json(plan),
                    text(changed_at) if changed_at else None,
                    text(version) if version else None,
                    int(attempts or 0),
                )
        return found

    def _write(
        self,
        tx: Pipeline,
        clinic: str,
        correlation_id: str,
        changes: Changes,
        known: dict[str, Stored],
    ) -> None:
        for notification_id in changes.cancels:
            cancel_message(tx, clinic, notification_id, known.get(notification_id))
        for slot in changes.cleared_slots:
            tx.delete(key(clinic, "slot", slot))
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
            tx.hset(key(clinic, "msg", notification_id), items=pairs)
            tx.zadd(key(clinic, "due"), {notification_id: message.send_at.timestamp()})
            # Indexes live as long as what they point to may: refreshed on every write.
            client_key = key(clinic, "client", str(message.client_id))
            tx.sadd(client_key, notification_id)
            tx.expire(client_key, RETAIN_S)
            if message.slot:
                tx.set(key(clinic, "slot", message.slot), notification_id, ex=RETAIN_S)
            if message.appointment_id:
                appointment_key = key(clinic, "appointment", str(message.appointment_id))
                tx.sadd(appointment_key, notification_id)
                tx.expire(appointment_key, RETAIN_S)

    # --- reading ------------------------------------------------------------

    async def appointment(self, clinic_id: str, appointment_id: UUID) -> AppointmentFact | None:
        """The latest the notifier has heard of an appointment (None: nothing yet)."""
        raw = await self._redis.get(key(clinic_id, "schedule", str(appointment_id)))
        return AppointmentFact.model_validate_json(raw) if raw else None

    async def notifications(self, clinic_id: str, client_id: UUID) -> list[dict[str, str]]:
        """Every message planned for a client, as stored (ids, kinds, states; no contact data)."""
        ids = sorted(
            text(i) for i in await self._redis.smembers(key(clinic_id, "client", str(client_id)))
        )
        found = []
        for notification_id in ids:
            record = await self._redis.hgetall(key(clinic_id, "msg", notification_id))
            if record:
                fields = {text(k): text(v) for k, v in record.items()}
                found.append({"notification_id": notification_id, **fields})
        return found


def cancel_message(
    p: Pipeline, clinic_id: str, notification_id: str, stored: Stored | None = None
) -> None:
    """Queue a planned message's cancellation on a write step's MULTI; with its `stored`
    plan, it is kept short as a finished one is (keys.finished_fields)."""
    message = key(clinic_id, "msg", notification_id)
    if stored is not None:
        p.delete(message)
        fields = finished_fields(stored.message.model_dump_json(), stored.attempts, {})
        p.hset(message, mapping=fields)  # type: ignore[arg-type]
    p.hset(message, "state", "cancelled")
    p.expire(key(clinic_id, "msg", notification_id), FINISHED_KEPT_S)
    p.zrem(key(clinic_id, "due"), notification_id)
    p.zrem(key(clinic_id, "held"), notification_id)
