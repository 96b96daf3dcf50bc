"""An event's plan recorded: the notifier's write step, and the reads of what it wrote.

One transaction per event: the messages it plans (into the due set), the
pending ones they replace (cancelled), the client's contact change, what the
event says about appointments, and the record that the event was handled.
Delivery takes the messages from the due set (queue.DeliveryQueue) and checks
a time-bound one against the appointment as last heard (`appointment`).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from services.notifier.contacts import ContactChange, KnownContact, contact_key
from services.notifier.keys import RETAIN_S, key, text
from services.notifier.model import AppointmentFact, PlannedMessage
from services.notifier.planning import Changes, Plan, Stored, resolve

PLAN_CONFLICT_TRIES = 20


class PlanStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

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
        slot_keys = [key(clinic, "slot", slot) for slot in slots]
        appointment_keys = [
            key(clinic, "appointment", str(a)) for a in plan.superseded_appointments
        ]
        new_ids = [str(m.notification_id) for m in plan.messages]
        contact_entry = contact_key(clinic, client_id)
        facts = list(plan.appointments)
        fact_keys = [key(clinic, "schedule", str(f.appointment_id)) for f in facts]
        await tx.watch(
            contact_entry,
            *slot_keys,
            *appointment_keys,
            *fact_keys,
            *[key(clinic, "msg", i) for i in new_ids],
        )
        # Read in one round trip on another connection: the keys are watched, so
        # any change after the WATCH still makes this transaction start over.
        async with self._redis.pipeline(transaction=False) as reads:
            reads.get(contact_entry)
            for slot_key in slot_keys:
                reads.get(slot_key)
            for i in new_ids:
                reads.exists(key(clinic, "msg", i))
            for appointment_key in appointment_keys:
                reads.smembers(appointment_key)
            for fact_key in fact_keys:
                reads.get(fact_key)
            current, *found = await reads.execute()
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

        tx.multi()  # type: ignore[no-untyped-call]
        self._write(tx, clinic, plan.cause.correlation_id, changes)
        if contact_change is not None:
            known = KnownContact.model_validate_json(current) if current else None
            tx.set(contact_entry, contact_change(known).model_dump_json())
        for fact, fact_key, raw in zip(facts, fact_keys, known_facts, strict=True):
            earlier = AppointmentFact.model_validate_json(raw) if raw else None
            tx.set(fact_key, fact.after(earlier).model_dump_json(), ex=RETAIN_S)
        effect(tx)
        await tx.execute()

    async def _load(self, tx: Pipeline, clinic: str, ids: set[str]) -> dict[str, Stored]:
        """The stored messages `ids`, watched by `tx` (read together, after the WATCH)."""
        ordered = sorted(ids)
        if not ordered:
            return {}
        msg_keys = [key(clinic, "msg", i) for i in ordered]
        await tx.watch(*msg_keys)
        async with self._redis.pipeline(transaction=False) as reads:
            for msg_key in msg_keys:
                reads.hmget(msg_key, ["state", "plan", "changed_at", "version"])
            rows = await reads.execute()
        found = {}
        for notification_id, (state, plan, changed_at, version) in zip(ordered, rows, strict=True):
            if state and plan:
                found[notification_id] = Stored(
                    notification_id,
                    text(state),
                    PlannedMessage.model_validate_json(plan),
                    text(changed_at) if changed_at else None,
                    text(version) if version else None,
                )
        return found

    def _write(self, tx: Pipeline, clinic: str, correlation_id: str, changes: Changes) -> None:
        for notification_id in changes.cancels:
            tx.hset(key(clinic, "msg", notification_id), "state", "cancelled")
            tx.expire(key(clinic, "msg", notification_id), RETAIN_S)
            tx.zrem(key(clinic, "due"), notification_id)
            tx.zrem(key(clinic, "held"), notification_id)
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
                found.append({text(k): text(v) for k, v in record.items()})
        return found
