"""Tidying a client's records once their course ended (issue 18: Redis keeps what the
notifier still acts on; the topics keep what was sent).

When a course completes or ends, and when each booster falls due, the step planning
that event's messages (plans.PlanStore.writes) also takes away, in the same MULTI:
- the client's finished messages (sent, failed, skipped, cancelled, or expired): their
  record and their place in the client's set;
- the slots and appointment sets of appointments that no pending message is about any
  more;
- the facts of the client's appointments (listed per client, `facts_key`) that no
  pending message is about and that are over (held, missed, or started before the
  tidying event; a cancelled one still ahead stays), whether or not a message was
  about them: a booster session's reminders are sent, and tidied, before the session,
  so its fact was once left for its TTL (90 days).
Pending messages and everything they are checked against stay.

Exactly-once: a message's cause handled again finds its handled mark (REMEMBER_S, 14
days) before anything is planned, so a record taken away sooner is never re-sent. A
tidied client keeps one small marker, the time of the event that tidied it (T):
- an event that happened more than `LATE` before T, and arrives after the tidy, plans
  no message: it is a redelivery whose mark expired, or news of a course long over;
- a later-arriving event about an appointment that is over by T writes no fact for
  it (it would only bring back what the tidy took away): its messages, if any, are
  recorded as usual and go at the next tidy.
A contact change (an opt-out) always applies.

Handled marks: the notifier's plain planning inputs (not a contact change nor a
clinical alert: those write more than messages) are listed per client by when they
happened (`inputs_key`, written with the mark). A tidy at T takes the handled marks of
those that happened before T - LATE: handled again, such an input finds the marker (T
or later: it only grows) and is `too_late`, so its step writes nothing (no message, no
appointment fact, no cancellation: plans.PlanStore.writes empties its plan) and has no
outputs. So nothing is applied twice without its mark; the marks of the inputs within
LATE of T stay (14 days, as every mark), as do those of contact changes and alerts
(their steps write a contact or an alert's record even when too late).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from pydantic import ValidationError
from redis.asyncio.client import Pipeline

from chassis.unit_of_work import Transaction, handled_key, marks_key
from services.notifier.keys import SERVICE, key, text
from services.notifier.model import CHANGE_NOTICE_KINDS, PlannedMessage
from services.notifier.staleness import AppointmentFact
from shared import events as ev

# Topics are not ordered with each other: an event that happened up to this long before
# the tidy (the last session completed with its course) still plans its messages.
LATE = timedelta(days=7)
# What a tidying event sets off (the cancellation notices of the sessions a course's end
# released, its last message) finishes within this long after it: deliveries finishing
# then tidy the client again (after_finish).
AFTERMATH = timedelta(days=7)
LIVE_STATES = frozenset({"planned", "sending"})


def tidies(event: ev.Event) -> bool:
    """Whether `event` tidies its client's records (the course is over, or a booster fell
    due: what came before it has been sent)."""
    return isinstance(event, ev.CourseCompleted | ev.CourseEnded | ev.BoosterDue)


def marker_key(clinic_id: str, client_id: UUID) -> str:
    return key(clinic_id, "tidied", str(client_id))


def facts_key(clinic_id: str, client_id: UUID) -> str:
    """The client's appointments with a fact (`notifier:{c}:schedule:<id>`), for a tidy."""
    return key(clinic_id, "facts", str(client_id))


def inputs_key(clinic_id: str, client_id: UUID) -> str:
    return key(clinic_id, "inputs", str(client_id))


def handled_keys(clinic_id: str, client_id: UUID) -> tuple[str, Callable[[str], str]]:
    """Where the unit of work keeps the handled marks of the client's inputs: their hash,
    and the key of one written before the hashes (chassis.unit_of_work.Marks)."""
    return (
        marks_key(SERVICE, clinic_id, str(client_id)),
        lambda input_id: handled_key(SERVICE, clinic_id, input_id),
    )


def lists_input(event: ev.Event) -> bool:
    """Whether the input's mark may go at a tidy: its step only plans messages and facts."""
    return not isinstance(
        event, ev.ConsultationRequested | ev.ContactPreferencesChanged | ev.ClinicalAlertRaised
    )


def is_over(fact: AppointmentFact, at: datetime) -> bool:
    """Nothing more will be said about the appointment: it was held or missed, or its time
    has passed. A cancelled one still ahead is not over: its fact is what refuses a
    reminder planned from older news of it arriving late (topics are not ordered with
    each other)."""
    if fact.status in (ev.AppointmentStatus.FULFILLED, ev.AppointmentStatus.NOSHOW):
        return True
    return fact.starts_at is not None and fact.starts_at < at


def taken(fact: AppointmentFact, tidied: datetime | None) -> bool:
    """A fact the tidy at `tidied` took away, or would have: news from before it of an
    appointment over by then (newer news, such as a returning client's new course, is
    written as usual)."""
    return tidied is not None and fact.as_of <= tidied and is_over(fact, tidied)


def too_late(occurred_at: datetime | None, tidied: datetime | None) -> bool:
    return tidied is not None and occurred_at is not None and occurred_at < tidied - LATE


def slot_of(kind: str, appointment_id: str | None) -> str | None:
    """A message's slot (PlannedMessage.slot) from what its finished record keeps."""
    if not appointment_id:
        return None
    name = "notice" if kind in CHANGE_NOTICE_KINDS else kind
    return f"{appointment_id}/{name}"


@dataclass
class Tidy:
    """What a tidy takes away, decided from what it read (watched)."""

    messages: list[str] = field(default_factory=list)
    slots: list[str] = field(default_factory=list)
    appointments: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # appointment ids
    inputs: list[str] = field(default_factory=list)  # whose handled marks go

    def write(self, w: Pipeline, clinic_id: str, client_id: UUID) -> None:
        """Queue the taking away on a write step's MULTI."""
        for gone in self.messages:
            w.delete(key(clinic_id, "msg", gone))
        if self.messages:
            w.srem(key(clinic_id, "client", str(client_id)), *self.messages)
        for stale in [*self.slots, *self.appointments]:
            w.delete(stale)
        if self.facts:
            w.delete(*(key(clinic_id, "schedule", a) for a in self.facts))
            w.srem(facts_key(clinic_id, client_id), *self.facts)
        if self.inputs:
            marks, single = handled_keys(clinic_id, client_id)
            w.hdel(marks, *self.inputs)
            w.delete(*(single(i) for i in self.inputs))
            w.zrem(inputs_key(clinic_id, client_id), *self.inputs)


def follows(tidied: datetime | None, at: datetime) -> bool:
    """Whether a delivery finishing at `at` is part of the aftermath of the client's tidy."""
    return tidied is not None and tidied <= at <= tidied + AFTERMATH


async def after_finish(
    tx: Transaction, clinic_id: str, client_id: UUID, at: datetime
) -> Tidy | None:
    """The tidy again once one of the client's deliveries finished at `at` within the
    AFTERMATH of their tidy (None: not tidied, or long after): what the tidying event
    set off, the released sessions' cancellation notices and the course's last message,
    is planned, sent and cancelled after the tidy ran, and would otherwise stay, with
    its slots, appointment sets and facts, for their TTLs (15 to 90 days)."""
    tidied = await tidied_at(tx, clinic_id, client_id)
    if not follows(tidied, at):
        return None
    assert tidied is not None
    tidying = await decide(tx, clinic_id, client_id, at, set(), every_fact=False)
    tidying.inputs = await old_inputs(tx, clinic_id, client_id, tidied)
    return tidying


async def old_inputs(tx: Transaction, clinic_id: str, client_id: UUID, at: datetime) -> list[str]:
    """The client's listed inputs that happened before `at` - LATE, watched."""
    listed = inputs_key(clinic_id, client_id)
    await tx.watch(listed)
    horizon = (at - LATE).timestamp()
    return [text(i) for i in await tx.redis.zrangebyscore(listed, "-inf", f"({horizon}")]


async def tidied_at(tx: Transaction, clinic_id: str, client_id: UUID) -> datetime | None:
    """When the client was last tidied (None: never), watched."""
    marker = marker_key(clinic_id, client_id)
    async with await tx.watched_reads(marker) as reads:
        reads.get(marker)
        [raw] = await reads.execute()
    return marker_time(raw)


def marker_time(raw: bytes | str | None) -> datetime | None:
    """When a client was last tidied, from their marker's value (None: never)."""
    return datetime.fromisoformat(text(raw)) if raw else None


async def decide(
    tx: Transaction,
    clinic_id: str,
    client_id: UUID,
    at: datetime,
    keep: set[str],
    about: set[str] | None = None,
    *,
    every_fact: bool = True,
) -> Tidy:
    """What tidying the client at `at` takes away (`keep`: ids the step itself plans,
    `about`: the appointments those are about). `every_fact`: also the facts of the
    client's listed appointments no message was about (a tidying event's step; not the
    deliveries' steps of its aftermath, which take what those deliveries ended and
    keep their reads and watched keys few)."""
    client_key = key(clinic_id, "client", str(client_id))
    await tx.watch(client_key)
    ids = sorted({text(i) for i in await tx.redis.smembers(client_key)} - keep)
    msg_keys = [key(clinic_id, "msg", i) for i in ids]
    rows: list[list[bytes | None]] = []
    if msg_keys:
        await tx.watch(*msg_keys)
        async with tx.reads() as reads:
            for msg_key in msg_keys:
                reads.hmget(msg_key, ["state", "plan", "kind", "appointment_id"])
            rows = await reads.execute()
    tidy = Tidy()
    live_slots: set[str] = set()
    live_appointments: set[str] = set(about or ())
    ended: dict[str, set[str]] = {}  # appointment -> slots of its finished messages
    for notification_id, (state, plan, kind, appointment) in zip(ids, rows, strict=True):
        if state is not None and text(state) in LIVE_STATES and plan is not None:
            try:
                message = PlannedMessage.model_validate_json(plan)
            except ValidationError:
                continue  # not ours to judge: left as it is
            if message.appointment_id is not None:
                live_appointments.add(str(message.appointment_id))
            if message.slot is not None:
                live_slots.add(message.slot)
            continue
        tidy.messages.append(notification_id)
        if state is not None and appointment is not None and kind is not None:
            slots = ended.setdefault(text(appointment), set())
            if slot := slot_of(text(kind), text(appointment)):
                slots.add(slot)
        elif state is not None and plan is not None:  # cancelled before it was kept short
            try:
                message = PlannedMessage.model_validate_json(plan)
            except ValidationError:
                continue
            if message.appointment_id is not None and message.slot is not None:
                ended.setdefault(str(message.appointment_id), set()).add(message.slot)
    done = sorted(set(ended) - live_appointments)
    tidy.slots = sorted({s for a in ended for s in ended[a]} - live_slots)
    tidy.appointments = [key(clinic_id, "appointment", a) for a in done]
    with_facts: set[str] = set()
    if every_fact:
        listed = facts_key(clinic_id, client_id)
        await tx.watch(listed)
        with_facts = {text(a) for a in await tx.redis.smembers(listed)}
    candidates = sorted((with_facts | set(done)) - live_appointments)
    fact_keys = [key(clinic_id, "schedule", a) for a in candidates]
    if fact_keys:
        await tx.watch(*fact_keys)
        async with tx.reads() as reads:
            for fact_key in fact_keys:
                reads.get(fact_key)
            facts = await reads.execute()
        tidy.facts = [
            appointment
            for appointment, raw in zip(candidates, facts, strict=True)
            if raw is None  # expired: only its place in the list is left
            or is_over(AppointmentFact.model_validate_json(raw), at)
        ]
    tidy.slots = [key(clinic_id, "slot", s) for s in tidy.slots]
    return tidy
