"""The notifier's Redis keys, shared by its contacts, plans and delivery queue.

All with the `{clinic_id}` hash tag so every transaction and script stays in one
Redis Cluster slot; every script is handed each key it touches (none builds one):

    notifier:{c}:contact:{client}         JSON: contact and opt-outs (PHI: never logged)
    notifier:{c}:awaiting-contact:{client}  set: ids tried before the contact arrived
    notifier:{c}:msg:{notification}       hash: plan, state, correlation, attempts, how it ended
    notifier:{c}:due                      zset: planned ids by send_at (service clock, epoch s)
    notifier:{c}:leased                   zset: claimed ids by lease deadline (Redis time, ms)
    notifier:{c}:tokens                   hash: claimed ids' fencing tokens
    notifier:{c}:held                     zset: time-bound ids due while the schedule view
                                          lagged, by send_at; back to due once it caught up
    notifier:{c}:slot:{appointment}/{k}   the id holding a replaceable slot (PlannedMessage.slot)
    notifier:{c}:appointment:{id}         set: ids planned about one appointment
    notifier:{c}:schedule:{appointment}   JSON: the appointment as the scheduler's events say
                                          (staleness.AppointmentFact), for checks at send time
    notifier:{c}:client:{client}          set: ids planned for one client (for the API)
    notifier:{c}:facts:{client}           set: the client's appointments with a schedule
                                          fact, for the client's tidy (tidy.py)

due, leased and tokens are the delivery's lease queue (chassis.leases, named LEASES);
outcome events wait in the unit of work's outbox (notifier:{c}:outbox, chassis.unit_of_work).
"""

from __future__ import annotations

import json
from typing import Any, Final

SERVICE: Final = "notifier"  # also the first part of every key (chassis' keys too: handled marks)
# The lease queue's name: its due set is key(clinic, "due"), the one planning writes into.
LEASES = "notifier"

# Indexes and facts about appointments (slots, appointment and client sets, schedule
# facts, alerts) stay this long after their last write, then expire.
RETAIN_S = 90 * 24 * 60 * 60
# A finished message (sent, failed, skipped, cancelled) stays this long: it is what the
# API lists and what a re-plan of its id finds. The topics keep what was sent
# (notifier.notification.*); a re-plan comes only from its cause handled again, which
# the unit of work's handled marks (REMEMBER_S, 14 days) refuse first, so the marker
# outlives them by a day. Every key's rule: chassis/retention.py.
FINISHED_KEPT_S = 15 * 24 * 60 * 60


# Redis keeps a hash compact (a listpack) while every value is at most this long, and
# never compacts it again once a value was longer (a plan is): a finished message is
# written anew with short values only, about a quarter of its planned size.
SHORT_VALUE = 64


def finished_fields(plan_json: str, attempts: int, details: dict[str, str]) -> dict[str, str]:
    """What a finished message keeps: what the API lists, no template variables (what was
    said to the client is on the topics, notifier.notification.*), each value short."""
    plan = json.loads(plan_json)
    fields = {
        "kind": plan["kind"],
        "channel": plan["channel"],
        "recipient": plan["recipient"],
        "send_at": plan["send_at"],
        "cause_event_id": plan["cause_event_id"],
        "attempts": str(attempts),
        **({"appointment_id": plan["appointment_id"]} if plan.get("appointment_id") else {}),
        **details,
    }
    return {name: str(value)[: SHORT_VALUE - 1] for name, value in fields.items()}


def key(clinic_id: str, *parts: str) -> str:
    return ":".join((SERVICE, f"{{{clinic_id}}}", *parts))


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
