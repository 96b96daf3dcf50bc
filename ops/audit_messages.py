"""The auditor's message checks: each notification resolved to what it was about, and the sinks.

A NotificationSent names its kind, channel and cause; newer ones also name the
appointment and the start they refer to. What they leave out is derived from
the causing fact on the topics (ops/audit_rebuild.py), never from the
notifier's store. The mailbox and the SMS log are read as independent copies.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ops import audit_rules
from ops.audit_rebuild import BOOKED, LIVE, Rebuilt, instant, occurred
from services.notifier.model import MessageKind, Recipient, notification_id
from services.notifier.reminders import reminder_send_at
from shared import topics
from shared.events import Channel

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ops.audit import Record
    from ops.audit_rules import ClinicRules

REMINDERS = frozenset({MessageKind.REMINDER_24H.value, MessageKind.REMINDER_2H.value})
TIME_BOUND = REMINDERS | {MessageKind.SESSION_INSTRUCTIONS.value}
# Failure reasons the notifier may give when it drops a message that no longer holds.
SKIP_WORDS = ("stale", "skip", "superseded", "no longer", "too late", "started")


@dataclass(frozen=True)
class Mail:
    """One copy the SMTP sink kept: its Message-ID and Date (the notifier's compose time)."""

    message_id: str
    date: datetime | None = None
    accepted_at: float | None = None  # real time (s) the sink accepted it, if it says
    began_at: float | None = None  # real time (s) its hand-over began (MAIL), if it says


@dataclass(frozen=True)
class Text:
    """One SMS the provider accepted, with the Idempotency-Key it came with."""

    key: str | None
    accepted_at: float | None = None  # real time (s) the provider accepted it, if it says


@dataclass(frozen=True)
class Send:
    """One notification (sent or given up), resolved to what it was about."""

    notification_id: str
    client: str
    kind: str
    channel: str
    at: datetime
    cause: int | None  # index of the causing record
    appointment: str | None
    refers_to: datetime | None
    version: tuple[str, ...]


# --- notifications ------------------------------------------------------------


def _fingerprint(record: Record) -> str:
    """What a fact says, whatever its id and the instant it was (re)published."""
    if record.topic == topics.BOOSTER_DUE.name:
        return f"{record.topic}/{record.value['course_id']}/{record.value['booster_number']}"
    said = {k: v for k, v in record.value.items() if k != "occurred_at"}
    return record.topic + "/" + json.dumps(said, sort_keys=True, default=str)


def resolve_notifications(
    records: list[Record], rebuilt: Rebuilt, mail_dates: Mapping[str, datetime]
) -> tuple[list[Send], list[Send]]:
    """Each distinct notification sent (and each given up as no longer true), resolved."""
    by_id: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_id[r.id].append(i)
    # A returning client's second round of care (screening again, a new course) says
    # the same facts anew: a course finished before them makes them new messages.
    finished: dict[str, list[datetime]] = defaultdict(list)
    for r in records:
        if r.topic in (topics.COURSE_COMPLETED.name, topics.COURSE_ENDED.name):
            finished[r.key].append(occurred(r))
    sent: dict[str, Send] = {}
    skipped: list[Send] = []
    for r in records:
        if r.topic == topics.NOTIFICATION_SENT.name:
            nid = str(r.value["notification_id"])
            at = occurred(r)
            composed = mail_dates.get(_mail_id(nid))
            # The mail's Date is when it was composed: the truer "sent" instant.
            at = min(at, composed) if composed is not None else at
            if nid not in sent:
                sent[nid] = _resolve(r, nid, at, records, by_id, rebuilt, finished)
        elif r.topic == topics.NOTIFICATION_FAILED.name:
            reason = str(r.value.get("reason", "")).lower()
            if any(word in reason for word in SKIP_WORDS):
                nid = str(r.value["notification_id"])
                skipped.append(_resolve(r, nid, occurred(r), records, by_id, rebuilt, finished))
    return list(sent.values()), skipped


def _resolve(
    r: Record,
    nid: str,
    at: datetime,
    records: list[Record],
    by_id: Mapping[str, list[int]],
    rebuilt: Rebuilt,
    finished: Mapping[str, list[datetime]],
) -> Send:
    cause_id = str(r.value.get("cause_event_id", ""))
    candidates = by_id.get(cause_id, [])
    # Ids can be reused (a re-derived id): take the latest such fact before the send.
    before = [i for i in candidates if occurred(records[i]) <= at]
    chosen = before or candidates
    cause = chosen[-1] if chosen else None
    kind, channel = str(r.value["message_kind"]), str(r.value["channel"])
    appointment = r.value.get("appointment_id")
    if appointment is None and cause is not None:
        appointment = _appointment_of(records[cause], cause_id, nid, kind, channel)
    refers_to = instant(r.value["refers_to"]) if r.value.get("refers_to") else None
    if appointment is not None and cause is not None:
        state = rebuilt.state_after.get((cause, str(appointment)))
        if refers_to is None and kind in TIME_BOUND and state is not None:
            refers_to = state.starts_at
        version = rebuilt.version_after.get((cause, str(appointment)))
        known = rebuilt.appointments.get(str(appointment))
        if version is None and known is not None:
            # Planned from a fact about something else: the version standing then.
            version = known.version_at(occurred(records[cause]))
        planned_from: tuple[str, ...] = (
            ("version", str(version)) if version is not None else ("id", cause_id)
        )
    elif cause is not None:
        said_at = occurred(records[cause])
        round_of_care = sum(1 for end in finished.get(r.key, ()) if end < said_at)
        planned_from = ("fact", _fingerprint(records[cause]), str(round_of_care))
    else:
        planned_from = ("id", cause_id)
    return Send(
        nid,
        r.key,
        kind,
        channel,
        at,
        cause,
        str(appointment) if appointment is not None else None,
        refers_to,
        planned_from,
    )


def _appointment_of(cause: Record, cause_id: str, nid: str, kind: str, channel: str) -> Any:
    """The appointment a message (without the field) was about, from the fact that caused it."""
    value = cause.value
    if "appointment" in value:
        return value["appointment"]["appointment_id"]
    if "appointment_id" in value:
        return value["appointment_id"]
    if "appointments" in value and kind in {k.value for k in MessageKind}:
        # Older NotificationSent name no appointment; a course booking plans one message
        # per appointment, and only the one it was planned for reproduces its id.
        recipient: Recipient = "staff" if kind == MessageKind.CLINICAL_ALERT else "client"
        way: Channel = "sms" if channel == "sms" else "email"
        for appt in value["appointments"]:
            derived = notification_id(
                cause_id, MessageKind(kind), way, recipient, UUID(appt["appointment_id"])
            )
            if str(derived) == nid:
                return appt["appointment_id"]
    return None


def notifications_repeated(sends: list[Send]) -> int:
    messages: Counter[tuple[Any, ...]] = Counter(
        (s.client, s.kind, s.appointment, s.refers_to, s.version) for s in sends
    )
    return sum(n - 1 for n in messages.values())


# Real seconds: a change that reached the topics this little before a message's hand-over
# to its sink began (the sink's time of its MAIL command; of an SMS, its acceptance)
# crossed it in flight. The notifier's view of the client's schedule is asked for at
# most 45 ms before the hand-over (services/notifier/handover.py FRESH_S) and cannot
# read a change that reached its topic after that; nothing can, short of one
# lock across two services. On the demo's clock (a clinic day per real second) these
# 60 ms are 86 clinic minutes, at a clinic's own pace they are simultaneous.
CROSSING_S = 0.06


def stale(
    sends: list[Send],
    rebuilt: Rebuilt,
    detail: Counter[str],
    records: list[Record] | None = None,
    handed_over: Mapping[str, float] | None = None,
) -> tuple[int, int]:
    """(stale messages, messages that crossed their change in flight and were corrected).

    A message that went out untrue is stale unless all of these hold, judged by
    clocks outside the notifier: the change became readable (a witness's first read,
    ops/witness.py; without one, Kafka's record time) less than CROSSING_S before the
    message's hand-over to its sink began (the sink's time), and the client was then
    told of the change (a later notification caused by that very fact). Without those
    times it is stale.
    """
    crossed = 0
    found: Counter[str] = Counter()
    for s in sends:
        if s.kind not in TIME_BOUND or (why := _staleness(s, rebuilt)) is None:
            continue
        if why == "moved_or_dropped" and _crossed(s, rebuilt, records or [], sends, handed_over):
            crossed += 1
        else:
            found[why] += 1
            _explain(s, why, rebuilt, records or [], handed_over or {})
    for why, n in found.items():
        detail[f"stale_{why}"] += n
    return sum(found.values()), crossed


def _explain(
    s: Send, why: str, rebuilt: Rebuilt, records: list[Record], handed_over: Mapping[str, float]
) -> None:
    """One line per stale message, ids and instants only (no PHI): what was sent, what the
    topics said of its appointment then, and the change in force with when it reached
    its topic, against when the message's hand-over to its sink began (real time)."""
    appt = rebuilt.appointments.get(s.appointment or "")
    state = appt.at(s.at) if appt else None
    change = _change_in_force(s, rebuilt)
    record = records[change] if change is not None and change < len(records) else None
    cause = records[s.cause] if s.cause is not None and s.cause < len(records) else None
    log.warning(
        "stale (%s): %s %s about %s announcing %s, sent at %s (sink: %s); the topics had it"
        " %s at %s; change in force: %s %s occurred %s, on its topic at %s (first read at %s);"
        " planned from"
        " %s %s occurred %s, on its topic at %s",
        why,
        s.kind,
        s.notification_id,
        s.appointment,
        s.refers_to,
        s.at,
        handed_over.get(s.notification_id),
        state.status if state else None,
        state.starts_at if state else None,
        record.type if record else None,
        record.id if record else None,
        record.time if record else None,
        record.appended_ms / 1000 if record and record.appended_ms else None,
        record.seen_ms / 1000 if record and record.seen_ms else None,
        cause.type if cause else None,
        cause.id if cause else None,
        cause.time if cause else None,
        cause.appended_ms / 1000 if cause and cause.appended_ms else None,
    )


def _crossed(
    s: Send,
    rebuilt: Rebuilt,
    records: list[Record],
    sends: list[Send],
    handed_over: Mapping[str, float] | None,
) -> bool:
    change = _change_in_force(s, rebuilt)
    handed_over_at = (handed_over or {}).get(s.notification_id)
    if change is None or handed_over_at is None:
        return False
    # When the change could first be read (a witness's sight), else Kafka's record time.
    readable_ms = records[change].seen_ms or records[change].appended_ms
    if readable_ms is None or readable_ms / 1000 <= handed_over_at - CROSSING_S:
        return False
    return any(
        t.client == s.client
        and t.cause is not None
        and t.at > s.at
        and records[t.cause].id == records[change].id
        for t in sends
    )


def _change_in_force(s: Send, rebuilt: Rebuilt) -> int | None:
    """The record whose change to the appointment stood when `s` was sent."""
    appt = rebuilt.appointments.get(s.appointment or "")
    if appt is None:
        return None
    version = appt.version_at(s.at)
    for (index, appointment), after in rebuilt.version_after.items():
        if appointment == s.appointment and after == version:
            return index
    return None


def _staleness(s: Send, rebuilt: Rebuilt) -> str | None:
    """Why a time-bound message no longer held when sent, or None if it did (or is unknown).

    Judged against the appointment as the topics had it at the send instant:
    the message's own referred start must still be the start, the appointment
    still booked, and the start still ahead.
    """
    if s.appointment is None or s.refers_to is None:
        return None
    appt = rebuilt.appointments.get(s.appointment)
    state = appt.at(s.at) if appt else None
    if state is None:
        return None
    if s.at >= s.refers_to:
        return "after_start"
    if state.status != BOOKED or state.starts_at != s.refers_to:
        return "moved_or_dropped"
    return None


def reminder_timing(
    sends: list[Send],
    skips: list[Send],
    records: list[Record],
    rebuilt: Rebuilt,
    rules: dict[str, ClinicRules],
    now: datetime | None,
    tolerance: timedelta,
    detail: Counter[str] | None = None,
) -> tuple[int, int, int]:
    """Reminders on time or late against the instant they were planned for; and those skipped.

    The plan is recomputed with the notifier's own pure timing rule from the
    fact that caused it; a stale reminder is neither on time nor late (it is
    counted as stale). Skipped: the notifier said it dropped one as no longer
    true, or the final schedule called for one that never went out.

    `detail` gets the late ones' parts: `late_due_on_arrival` (due already when
    the fact that planned it happened, so the whole hop from that fact to the
    hand-over counts) or `late_planned_ahead`, and how late in tolerances
    (`late_by_1x` up to twice the tolerance, `late_by_2x` up to 4, `late_by_4x` more).
    """
    stale_ids = {s.notification_id for s in sends if _staleness(s, rebuilt)}
    on_time_count = late_count = 0
    told: set[tuple[str | None, str, datetime | None]] = set()
    for s in sends:
        if s.kind not in REMINDERS or s.refers_to is None or s.cause is None:
            continue
        told.add((s.appointment, s.kind, s.refers_to))
        if s.notification_id in stale_ids:
            continue
        clinic = audit_rules.of(rules, str(records[s.cause].value.get("clinic_id", "")))
        lead = clinic.notices.reminder_leads.get(MessageKind(s.kind))
        if lead is None:
            continue
        planned_at = occurred(records[s.cause])
        planned = reminder_send_at(
            s.refers_to, lead, clinic.tz, clinic.notices.send_window, now=planned_at
        )
        on_time = planned is not None and s.at <= planned + tolerance
        on_time_count += on_time
        late_count += not on_time
        if not on_time and planned is not None and detail is not None:
            detail["late_due_on_arrival" if planned <= planned_at else "late_planned_ahead"] += 1
            by = (s.at - planned) / tolerance
            detail["late_by_1x" if by <= 2 else "late_by_2x" if by <= 4 else "late_by_4x"] += 1
    missing = {(s.appointment, s.kind, s.refers_to) for s in skips if s.kind in REMINDERS}
    reached = {s.client for s in sends if s.kind != MessageKind.CLINICAL_ALERT}
    for appt in rebuilt.appointments.values():
        if appt.client not in reached or appt.final.status not in LIVE or now is None:
            continue
        clinic = audit_rules.of(rules, appt.clinic)
        since = appt.current_since()
        for kind, lead in clinic.notices.reminder_leads.items():
            start = appt.final.starts_at
            planned = reminder_send_at(
                start, lead, clinic.tz, clinic.notices.send_window, now=since
            )
            due = planned is not None and since < planned and planned + tolerance <= now
            if due and (appt.appointment_id, kind.value, start) not in told:
                missing.add((appt.appointment_id, kind.value, start))
    return on_time_count, late_count, len(missing)


# --- the sinks ----------------------------------------------------------------


def _mail_id(nid: str) -> str:
    # As services/notifier/channels.py message_id writes it; compared, never trusted.
    return f"<{nid}@kap>"


def sent_ids(records: list[Record], channel: str, *, mail_form: bool) -> set[str]:
    return {
        _mail_id(str(r.value["notification_id"])) if mail_form else str(r.value["notification_id"])
        for r in records
        if r.topic == topics.NOTIFICATION_SENT.name and r.value.get("channel") == channel
    }


def sink_checks(
    copies: list[str], sent: set[str], in_flight: frozenset[str] = frozenset()
) -> tuple[int, int]:
    """(extra copies of one message, copies without a sent fact + sent facts without a copy).

    `in_flight`: copies the sink accepted after the topics were read; their sent
    fact may be published just after, so they are not required to have one yet.
    (The other way needs no such grace: a sent fact is published after its copy
    was accepted, and the sinks are read after the topics.)
    """
    kept = Counter(c.strip() for c in copies)
    resends = sum(n - 1 for n in kept.values() if n > 1)
    unmatched = set(kept) - sent - {c.strip() for c in in_flight}
    return resends, len(unmatched) + len(sent - set(kept))
