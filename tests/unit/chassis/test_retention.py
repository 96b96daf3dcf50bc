"""The one retention table: every key the services build has a rule, the README shows it,
and a key breaking it is found."""

from __future__ import annotations

import json
import uuid

import pytest
from redis.asyncio import Redis

from chassis import retention
from chassis.leases import LeaseQueue
from chassis.outbox import Outbox
from chassis.unit_of_work import UnitOfWork
from ops import contracts
from services.intake import store as intake_store
from services.notifier import keys as notifier_keys
from services.notifier.contacts import contact_key
from services.notifier.measures import answered_key, legacy_answered_key
from services.scheduler import store as scheduler_store
from services.scheduler.ledger import booking_key
from services.scheduler.measure_log import log_key
from services.scheduler.waitlist_store import WaitlistStore

C, ID = "lisbon", uuid.uuid4()


def built_keys() -> list[str]:
    """A key of every family, as the services' own key builders make it."""
    n = notifier_keys.key
    s = scheduler_store.key
    i = intake_store._key
    redis = Redis()  # never connected: the key builders only name keys
    waitlist = WaitlistStore(redis)
    queues = [
        LeaseQueue(redis, "notifier"),
        scheduler_store.BoosterQueue(redis, "boosters"),
        scheduler_store.MeasureQueue(redis, "measure-timers"),
        waitlist.expiries,
    ]
    outbox_keys = Outbox(None, "scheduler", None)._keys(C)  # type: ignore[arg-type]
    return [
        UnitOfWork(None, "notifier", None).handled_key(C, str(ID)),  # type: ignore[arg-type]
        *outbox_keys,
        *(k for q in queues for k in (q.due_key(C), q.leased_key(C), q.tokens_key(C))),
        i(C, "client", str(ID)),
        i(C, "client", str(ID), "history"),
        i(C, "contact", "ab12"),
        i(C, "idempotency", "ab12"),
        i(C, "measure", str(ID), str(ID), "answered"),
        f"intake:{{{C}}}:rate:form:client:ab12",
        s(C, "client", str(ID)),
        s(C, "clients"),
        s(C, "appointment", str(ID)),
        scheduler_store.appointments_key(C),
        s(C, "calendar"),
        booking_key(C, "therapist", "t-ana"),
        booking_key(C, "client", str(ID)),
        waitlist.waitlist_key(C),
        waitlist.offer_key(C, ID),
        waitlist.token_key(C, "ab12"),
        log_key(C, ID),
        contact_key(C, ID),
        answered_key(C, ID),
        legacy_answered_key(C, ID, ID),
        intake_store.answered_key(C, ID),
        *(n(C, part, str(ID)) for part in ("msg", "appointment", "schedule", "client", "alert")),
        n(C, "slot", f"{ID}/reminder_24h"),
        n(C, "held"),
        n(C, "alerts"),
    ]


@pytest.mark.parametrize("key", built_keys())
def test_every_key_the_services_build_has_a_retention_rule(key: str) -> None:
    assert retention.rule_for(key) is not None, key


def test_the_readme_shows_the_table() -> None:
    readme = contracts.README.read_text()
    assert contracts.readme_with_retention(readme) == readme, "run `make docs`: README retention"


def test_a_key_with_no_rule_is_a_finding() -> None:
    assert "no retention rule" in str(retention.finding(f"scratch:{{{C}}}:thing", -1))


def test_a_key_whose_rule_needs_a_ttl_is_a_finding_without_one() -> None:
    key = notifier_keys.key(C, "slot", f"{ID}/notice")
    assert "no TTL" in str(retention.finding(key, -1))
    assert retention.finding(key, 3600) is None


def test_a_message_needs_a_ttl_only_once_it_ended() -> None:
    message = notifier_keys.key(C, "msg", str(ID))
    assert retention.finding(message, -1, "planned") is None
    assert retention.finding(message, -1, "sending") is None
    assert "no TTL" in str(retention.finding(message, -1, "sent"))
    assert retention.finding(message, 60, "sent") is None


def test_a_finished_message_keeps_short_fields_and_no_template_variables() -> None:
    plan = {
        "notification_id": str(ID),
        "cause_event_id": str(ID),
        "kind": "reminder_2h",
        "channel": "email",
        "recipient": "client",
        "send_at": "2027-01-04T09:00:00Z",
        "appointment_id": str(ID),
        "context": {"starts_at": "Monday 4 January, 9:00"},
    }
    kept = notifier_keys.finished_fields(json.dumps(plan), 2, {"reason": "x" * 300})
    assert "Monday" not in json.dumps(kept)
    assert max(len(v) for v in kept.values()) < notifier_keys.SHORT_VALUE
    assert kept["attempts"] == "2"
    assert kept["kind"] == "reminder_2h"
