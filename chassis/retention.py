# ruff: noqa: E501  (the table reads best one row to a line, as in the README)
"""Every Redis key family, who owns it, why it exists and how long it stays: the one table.

Kafka is the record (issue 18); Redis holds what the services need to act, so every
key must either carry a TTL or be taken away by a named step. `RULES` is that table:
the README's "Redis keys and their retention" section is generated from it (`make
docs`; a unit test fails when it is stale) and `violations` checks a live Redis
against it (an end-to-end test scans the keys a whole lifecycle leaves). A key no rule
matches, or one without a TTL where its rule needs one, is a finding.

`ttl` says when a key must carry a TTL: "always"; "finished" (a notifier message:
none while it may still be sent, one once it ended; checked on its `state` field);
"never" (kept until the step in `retention` takes it). In the patterns, `{c}` is the
clinic's hash tag and `<id>` one key segment.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

Ttl = Literal["always", "finished", "never"]
# Message states after which a notifier message must carry a TTL (queue.py, plans.py).
FINISHED_STATES = frozenset({"sent", "failed", "skipped", "cancelled"})


@dataclass(frozen=True)
class Rule:
    pattern: str
    owner: str
    why: str
    retention: str
    ttl: Ttl

    @property
    def regex(self) -> re.Pattern[str]:
        body = re.escape(self.pattern)
        body = body.replace(re.escape("{c}"), r"\{[^}]+\}").replace(re.escape("<id>"), r"[^:]+")
        return re.compile(f"^{body}$")


_QUEUE = "per clinic; a member leaves when its work is done (chassis.leases `done`)"
_OUTBOX = "per clinic; an event leaves once Kafka acknowledged it (chassis.outbox)"
_HANDLED = "TTL `REMEMBER_S` (14 days): far past any redelivery (chassis.unit_of_work)"
_TIDY = "a course's end and each booster due tidy the client's (services/notifier/tidy.py): taken once no pending message needs it; "
_CLIENT = (
    "kept while the clinic serves the client; archival step: `kapctl export` then erasure "
    "(the topics keep the history)"
)

RULES: tuple[Rule, ...] = (
    # --- the chassis, for every service ------------------------------------------
    Rule("<id>:{c}:marks:<id>", "chassis", "the handled marks of one client's inputs (a field each, with when it was written): applied once", "TTL `REMEMBER_S` (14 days) from the last mark, refreshed on each; a hash of over `TRIM_MARKS_OVER` fields sheds those older than `REMEMBER_S` at the next mark (chassis.unit_of_work); the notifier's planning inputs' marks are taken sooner by a client's tidy, once the tidy refuses them (services/notifier/tidy.py)", "always"),
    Rule("<id>:{c}:handled:<id>", "chassis", "an input's handled mark, for an input of no one client's (a cohort summary) or written before the marks hashes", _HANDLED, "always"),
    Rule("<id>:{c}:outbox", "chassis", "events recorded with a write, not yet on Kafka", _OUTBOX, "never"),
    Rule("<id>:{c}:outbox:written", "chassis", "when each outbox event was written (relay)", _OUTBOX, "never"),
    Rule("<id>:{c}:public-seq:<id>", "chassis", "a client's last public sequence number (`clientsequence`): the next public event takes the one after", _CLIENT, "never"),
    # Due work (chassis.due_index, chassis.buckets): a fixed number of buckets per timer
    # kind and per service's outbox (`<service>-outbox`), so these do not grow with
    # clients; `{c}` here is the bucket's tag, not a clinic's.
    Rule("kap:due:{c}", "chassis", "a bucket's clinics by earliest due time (timers, deliveries; an outbox's: its oldest event + the relay's grace); or the kind's replica heartbeats", "a clinic leaves when nothing is due (`settle`; an outbox's once it is empty); a heartbeat past its deadline is dropped", "never"),
    Rule("kap:due:{c}:owner", "chassis", "which replica owns the bucket now", "TTL `KAP_DUE_LEASE_MS`, renewed by its owner", "always"),
    Rule("kap:due:{c}:tokens", "chassis", "the bucket's fencing counter", "one small counter per bucket, kept", "never"),
    # --- intake ------------------------------------------------------------------------
    Rule("intake:{c}:client:<id>", "intake", "the client's status and contact (PHI)", _CLIENT, "never"),
    Rule("intake:{c}:client:<id>:history", "intake", "the client's status history", _CLIENT, "never"),
    Rule("intake:{c}:contact:<id>", "intake", "digest of an e-mail or phone -> client (returning people)", _CLIENT, "never"),
    Rule("intake:{c}:directory", "intake", "the clinic's client search: normalised name words and phone digits -> client (PHI, in members only; `GET /clients?q=`)", "per clinic; a client's members are written with its record, and those of an old name or phone taken in that same write (services/intake/store.py `write`); kept while the clinic serves the client: its erasure takes them with the record (`directory.entries` of it)", "never"),
    Rule("intake:{c}:idempotency:<id>", "intake", "a keyed request's first answer", "TTL `IDEMPOTENCY_TTL_S`", "always"),
    Rule("intake:{c}:measures-answered:<id>", "intake", "the client's measure links used up (measure -> when|source)", "TTL `MEASURE_ANSWERED_TTL_S` from the latest answer", "always"),
    Rule("intake:{c}:measure:<id>:<id>:answered", "intake", "a measure link used up, as written before the per-client hash: still read", "TTL `MEASURE_ANSWERED_TTL_S`", "always"),
    Rule("intake:{c}:rate:<id>:<id>:<id>", "intake", "a rate limit's window count", "TTL: the window (`KAP_RATE_WINDOW_S`)", "always"),
    # --- scheduler -------------------------------------------------------------------
    Rule("sched:{c}:client:<id>", "scheduler", "the client's schedule: courses, boosters, measures due (stored compressed)", _CLIENT, "never"),
    Rule("sched:{c}:clients", "scheduler", "the clinic's clients (timers, outcomes)", "per clinic; one member per client, as the schedules", "never"),
    Rule("sched:{c}:appointments", "scheduler", "appointment -> client, for the clinic's routes: a field per appointment (ids in 22-character base64url)", "per clinic; a client's fields kept while the clinic serves the client (archival as the schedule's)", "never"),
    Rule("sched:{c}:appointment:<id>", "scheduler", "appointment -> client as written before the index became one hash per clinic: still read, no longer written", _CLIENT, "never"),
    Rule("sched:{c}:calendar", "scheduler", "the calendar set through the API", "per clinic; replaced when set again", "never"),
    Rule("sched:{c}:booked:<id>:<id>", "scheduler", "the booking ledger: a resource's slots", "per resource; slots ended `BOOKINGS_KEPT` (30 days) ago trimmed at the resource's next booking; a client's own slots trimmed at each change of their schedule once ended (gone with the last)", "never"),
    Rule("sched:{c}:boosters:<id>", "scheduler", "booster timers (due, inflight, tokens)", _QUEUE, "never"),
    Rule("sched:{c}:measure-timers:<id>", "scheduler", "measure timers (due, inflight, tokens)", _QUEUE, "never"),
    Rule("sched:{c}:offers:<id>", "scheduler", "waitlist offers' expiry timers", _QUEUE, "never"),
    Rule("sched:{c}:waitlist", "scheduler", "the clinic's waitlist", "per clinic; a client leaves when booked", "never"),
    Rule("sched:{c}:offer:<id>", "scheduler", "an offered slot", "TTL: the offer's expiry + `OFFER_KEPT`", "always"),
    Rule("sched:{c}:offer-token:<id>", "scheduler", "an offer link's token digest -> offer", "TTL: as its offer", "always"),
    Rule("{c}:measures:<id>", "scheduler", "the client's answered measures (outcomes)", _CLIENT, "never"),
    # --- notifier ----------------------------------------------------------------------
    Rule("notifier:{c}:contact:<id>", "notifier", "the client's contact and opt-outs (PHI)", _CLIENT, "never"),
    Rule("notifier:{c}:msg:<id>", "notifier", "a message: its plan while it may be sent; once it ended, what the API shows (no template variables)", "none while planned or sending; once sent, failed, skipped or cancelled it is written anew with short fields only (no template variables) and expires after `FINISHED_KEPT_S` (15 days: past the handled marks, which guard a re-plan first); taken at once by the client's next tidy (course ended, booster due)", "finished"),
    Rule("notifier:{c}:awaiting-contact:<id>", "notifier", "the client's messages tried before their contact arrived: due at once when it does", "TTL `AWAITING_CONTACT_S` (1 day: the retries give up within 15 minutes); taken when the contact arrives", "always"),
    Rule("notifier:{c}:due", "notifier", "planned messages by send time", _QUEUE, "never"),
    Rule("notifier:{c}:leased", "notifier", "messages being sent, by lease deadline", _QUEUE, "never"),
    Rule("notifier:{c}:tokens", "notifier", "fencing tokens of the claims", _QUEUE, "never"),
    Rule("notifier:{c}:held", "notifier", "time-bound messages held while the schedule view lags", "per clinic; a member leaves when released or sent", "never"),
    Rule("notifier:{c}:slot:<id>", "notifier", "the message holding a replaceable slot", _TIDY + "else TTL `RETAIN_S` (90 days)", "always"),
    Rule("notifier:{c}:appointment:<id>", "notifier", "messages planned about one appointment", _TIDY + "else TTL `RETAIN_S`", "always"),
    Rule("notifier:{c}:schedule:<id>", "notifier", "the appointment as last heard (checks at send time)", _TIDY + "and the appointment over, whether or not a message was about it; else TTL `RETAIN_S`", "always"),
    Rule("notifier:{c}:client:<id>", "notifier", "messages planned for one client (API)", "TTL `RETAIN_S`, refreshed on each plan; a tidy takes its finished members", "always"),
    Rule("notifier:{c}:facts:<id>", "notifier", "the client's appointments with a fact: a tidy takes those over that no pending message is about", "TTL `RETAIN_S`, refreshed on each fact; a tidy takes the members whose facts it took", "always"),
    Rule("notifier:{c}:inputs:<id>", "notifier", "the client's planning inputs by when they happened: a tidy takes the handled marks of those over `LATE` (7 days) before it", "TTL `REMEMBER_S`, refreshed on each input; a tidy takes the members whose marks it took", "always"),
    Rule("notifier:{c}:tidied:<id>", "notifier", "when the client's records were last tidied: later news of the ended course brings nothing back", _CLIENT, "never"),
    Rule("notifier:{c}:measures-answered:<id>", "notifier", "the client's measures answered: their requests are not sent", "TTL `RETAIN_S` from the latest answer", "always"),
    Rule("notifier:{c}:measure-answered:<id>", "notifier", "a measure answered, as written before the per-client hash: still read", "TTL `RETAIN_S`", "always"),
    Rule("notifier:{c}:alert:<id>", "notifier", "a clinical alert and who owns it", "TTL `RETAIN_S`", "always"),
    Rule("notifier:{c}:alerts", "notifier", "the clinic's alerts by time (API)", "per clinic; entries older than `RETAIN_S` trimmed at the next alert", "never"),
    # --- console -------------------------------------------------------------------
    Rule("console:{c}:member:<id>", "console", "a staff account: name, role, clinics, argon2id hash (slot `{staff}`)", "kept while the account exists; an operator removes it", "never"),
    Rule("console:{c}:session:<id>", "console", "a signed-in session: who, its CSRF token, the clinic worked at", "TTL `KAP_CONSOLE_SESSION_TTL_S` (8 h); taken at sign-out", "always"),
    Rule("console:{c}:failures:<id>", "console", "failed sign-ins of one account (lock-out)", "TTL `KAP_CONSOLE_LOCKOUT_S` (15 min) from the first failure; taken at a sign-in", "always"),
    # --- webhooks ------------------------------------------------------------------
    Rule("webhooks:{c}:partner:<id>", "webhooks", "a partner: its target, event types, clinics and signing secrets (slot `{partners}`)", "kept until the partner is deleted (`DELETE /partners/{id}`)", "never"),
    Rule("webhooks:{c}:ids", "webhooks", "the partners' ids", "a member leaves with its partner", "never"),
    Rule("webhooks:{c}:key:<id>", "webhooks", "a partner API key's SHA-256 -> the partner (its delivery log)", "taken with its partner", "never"),
    Rule("webhooks:{c}:client:<id>", "webhooks", "a client's order: the last number released to the partners, events read ahead of a lower one", "TTL `CLIENT_KEPT_S` (180 days) from the client's last public event", "always"),
    Rule("webhooks:{c}:queue:<id>:<id>", "webhooks", "a partner's events for one client, by number: the head is the next delivery", "an event leaves on its 2xx or its dead letter; the key with the last", "never"),
    Rule("webhooks:{c}:attempts:<id>:<id>", "webhooks", "the failures of a partner's next delivery for one client", "taken when that event is delivered or dead-lettered", "never"),
    Rule("webhooks:{c}:waiting:<id>", "webhooks", "a partner's clients with queued events (re-enabling wakes them)", "a client leaves when its sender finds its queue empty", "never"),
    Rule("webhooks:{c}:log:<id>", "webhooks", "a partner's delivery status per event (the partner's log)", "TTL `LOG_KEPT_S` (30 days) from the last write; the newest `LOG_ENTRIES` (10,000) kept", "always"),
    Rule("webhooks:{c}:log-order:<id>", "webhooks", "when each status in the partner's log last changed", "as the log", "always"),
    Rule("webhooks:{c}:dead:<id>", "webhooks", "a partner's dead letters: events with no 2xx for the retry policy's whole period", "TTL `LOG_KEPT_S` from the last dead letter", "always"),
    Rule("webhooks:{c}:due", "webhooks", "senders and gap timers by when they fall due", _QUEUE, "never"),
    Rule("webhooks:{c}:leased", "webhooks", "senders and gap timers being worked, by lease deadline", _QUEUE, "never"),
    Rule("webhooks:{c}:tokens", "webhooks", "fencing tokens of the claims", _QUEUE, "never"),
)  # fmt: skip


def rule_for(key: str) -> Rule | None:
    """The most specific rule matching `key` (the longest pattern), None: no rule."""
    matching = [rule for rule in RULES if rule.regex.match(key)]
    return max(matching, key=lambda r: len(r.pattern)) if matching else None


def finding(key: str, ttl_s: int, state: str | None = None) -> str | None:
    """What is wrong with `key` (its TTL in seconds, -1: none; a message's `state`)."""
    rule = rule_for(key)
    if rule is None:
        return f"{key}: no retention rule (chassis/retention.py)"
    needs = rule.ttl == "always" or (rule.ttl == "finished" and state in FINISHED_STATES)
    if needs and ttl_s < 0:
        return f"{key}: no TTL, but its rule says: {rule.retention}"
    return None


async def violations(redis: Redis, match: str = "*") -> AsyncIterator[str]:
    """Every key matching `match` that breaks the table."""
    async for raw in redis.scan_iter(match=match, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        rule = rule_for(key)
        state = None
        if rule is not None and rule.ttl == "finished":
            found = await redis.hget(key, "state")
            state = found.decode() if isinstance(found, bytes) else found
        ttl_s = int(await redis.ttl(key))
        if ttl_s == -2:
            continue  # taken since the scan saw it (a tidy, a cancellation): nothing kept
        problem = finding(key, ttl_s, state)
        if problem is not None:
            yield problem


def markdown(rules: Iterable[Rule] = RULES) -> str:
    """The README's table."""
    rows = ["| key | owner | why | retention |", "|---|---|---|---|"]
    rows += [f"| `{r.pattern}` | {r.owner} | {r.why} | {r.retention} |" for r in rules]
    return "\n".join(rows)
