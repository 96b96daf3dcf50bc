"""The auditor's counters, computed from the topics and the sinks, never from a service's store.

Every counter here exists to rule out one failure, and tests/unit/ops/test_audit.py
plants that failure to show the counter sees it:

- `overlaps`: pairs of live appointments (booked or held) that overlap in time,
  per therapist, per room and per client, in the schedule rebuilt from events;
- `rule_violations`: medicine doses closer than the minimum spacing, doses over
  the weekly maximum (clinic-local Monday-Sunday weeks), doses after the course
  window (unless the move announced it), windows longer than the policy allows,
  and doses beyond the course's count;
- `boosters_repeated`: BoosterDue records beyond the first per (client, course,
  booster number), however many ids they carry, plus boosters due at another
  clinic-local time than the policy's or announced before they were due;
- `notifications_repeated`: distinct notifications beyond the first per logical
  message (client, kind, appointment, the start it refers to, and the version of
  the appointment, or the fact, it was planned from);
- `stale_reminders`: reminders and instructions whose referred start was not the
  appointment's start (or the appointment was no longer booked) when sent, or
  that were sent at or after that start; one whose change reached the topics too
  little before its copy reached the sink for any notifier to read it, and whose
  client was told the change after, is counted apart as `reminders_crossed`
  (reported, not a failure; see ops/audit_messages.py CROSSING_S);
- `mail_resends` / `sms_resends`: extra copies of one notification in the sinks
  (the same Message-ID / Idempotency-Key), reported apart: the crash between the
  provider's acceptance and the sent mark cannot be closed by the notifier alone;
- `mail_mismatches` / `sms_mismatches`: sink copies with no NotificationSent and
  NotificationSent with no copy in the sink of its channel;
- `lost`: requests whose expected downstream fact never reached the topics;
- `doses_without_checkin` / `booked_after_course_ended`: ops/audit_course.py, which also
  counts what courses lived through (`courses_paused`, `courses_withdrawn`,
  `courses_restarted`, `alerts_escalated`, `booster_sessions_booked`, `waitlisted`,
  `waitlist_offers_taken`; reported, not failures).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from ops import audit_course, audit_rules
from ops.audit_messages import (
    Mail,
    Text,
    notifications_repeated,
    reminder_timing,
    resolve_notifications,
    sent_ids,
    sink_checks,
    stale,
)
from ops.audit_rebuild import LIVE, Appointment, Rebuilt, instant, occurred, rebuild
from shared import topics

if TYPE_CHECKING:
    from ops.audit import Record
    from ops.audit_rules import ClinicRules

ON_TIME_TOLERANCE = timedelta(minutes=10)  # clinic time; the grace a notice may take
FAILING = (
    "overlaps",
    "rule_violations",
    "boosters_repeated",
    "notifications_repeated",
    "stale_reminders",
    "mail_mismatches",
    "sms_mismatches",
    "lost",
    "doses_without_checkin",
    "booked_after_course_ended",
)


@dataclass(frozen=True)
class Expected:
    """What the caller saw accepted over HTTP: topic -> clients, and the completions."""

    accepted: Mapping[str, int] = field(default_factory=dict)
    completed: frozenset[str] = frozenset()


@dataclass
class Findings:
    overlaps: int = 0
    rule_violations: int = 0
    boosters_repeated: int = 0
    notifications_repeated: int = 0
    stale_reminders: int = 0
    mail_resends: int = 0
    mail_mismatches: int = 0
    sms_resends: int = 0
    sms_mismatches: int = 0
    lost: int = 0
    reminders_on_time: int = 0
    reminders_late: int = 0
    reminders_skipped: int = 0
    reminders_crossed: int = 0
    doses_without_checkin: int = 0
    booked_after_course_ended: int = 0
    courses_paused: int = 0
    courses_withdrawn: int = 0
    courses_restarted: int = 0
    alerts_escalated: int = 0
    booster_sessions_booked: int = 0
    waitlisted: int = 0
    waitlist_offers_taken: int = 0
    detail: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "detail"}

    def failures(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FAILING if getattr(self, name)}


def audit(
    records: list[Record],
    rules: dict[str, ClinicRules] | None = None,
    *,
    mails: Iterable[Mail] | None = None,
    texts: Iterable[Text] | None = None,
    expected: Expected | None = None,
    now: datetime | None = None,
    tolerance: timedelta = ON_TIME_TOLERANCE,
    in_flight_after: float | None = None,
    sent_elsewhere: frozenset[str] = frozenset(),
) -> Findings:
    """Count every failure in `records` (and the sinks' copies, when given).

    `in_flight_after`: the real time (s) after which a copy the sink accepted may
    still lack its sent fact on the topics as read (see `sink_checks`);
    `sent_elsewhere`: notification ids sent to clients outside `records`, whose
    copies a shared sink may hold: theirs, neither matched nor mismatched here.
    """
    rules = rules if rules is not None else audit_rules.load()
    findings = Findings()
    rebuilt = rebuild(records)
    now = now or max((occurred(r) for r in records), default=None)
    mail_list = list(mails) if mails is not None else None
    text_list = list(texts) if texts is not None else None
    mail_dates = {m.message_id: m.date for m in mail_list or () if m.date is not None}
    sends, skips = resolve_notifications(records, rebuilt, mail_dates)
    findings.overlaps = overlaps(rebuilt, findings.detail)
    findings.rule_violations = rule_violations(rebuilt, rules, findings.detail)
    findings.boosters_repeated = boosters_repeated(records, rules, findings.detail)
    findings.notifications_repeated = notifications_repeated(sends)
    # When each copy's hand-over to its sink first began (real time), by notification id.
    handed_over: dict[str, float] = {}
    copies = [(_mail_nid(m.message_id), m.began_at or m.accepted_at) for m in mail_list or ()]
    for nid, began in copies + [(t.key or "", t.accepted_at) for t in text_list or ()]:
        if began is not None:
            handed_over[nid] = min(began, handed_over.get(nid, began))
    findings.stale_reminders, findings.reminders_crossed = stale(
        sends,
        rebuilt,
        findings.detail,
        records,
        handed_over,
    )
    on_time, late, skipped = reminder_timing(
        sends, skips, records, rebuilt, rules, now, tolerance, findings.detail
    )
    findings.reminders_on_time, findings.reminders_late = on_time, late
    findings.reminders_skipped = skipped
    if mail_list is not None:
        findings.mail_resends, findings.mail_mismatches = sink_checks(
            [m.message_id for m in mail_list if _mail_nid(m.message_id) not in sent_elsewhere],
            sent_ids(records, "email", mail_form=True),
            _in_flight([(m.message_id, m.accepted_at) for m in mail_list], in_flight_after),
        )
    if text_list is not None:
        findings.sms_resends, findings.sms_mismatches = sink_checks(
            [t.key or "" for t in text_list if (t.key or "") not in sent_elsewhere],
            sent_ids(records, "sms", mail_form=False),
            _in_flight([(t.key or "", t.accepted_at) for t in text_list], in_flight_after),
        )
    findings.lost = lost(records, expected or Expected(), now, findings.detail)
    findings.doses_without_checkin = audit_course.doses_without_checkin(records, findings.detail)
    findings.booked_after_course_ended = audit_course.booked_after_course_ended(
        records, rebuilt, findings.detail
    )
    findings.courses_paused = audit_course.courses_paused(records)
    findings.courses_withdrawn = audit_course.courses_withdrawn(records)
    findings.courses_restarted = audit_course.courses_restarted(records)
    findings.alerts_escalated = audit_course.alerts_escalated(records)
    findings.booster_sessions_booked = audit_course.booster_sessions_booked(records)
    findings.waitlisted = audit_course.waitlisted(records)
    findings.waitlist_offers_taken = audit_course.waitlist_offers_taken(records)
    return findings


def _mail_nid(message_id: str) -> str:
    """The notification id in a Message-ID (`<id@kap>`, as audit_messages._mail_id writes)."""
    return message_id.strip()[1:].split("@")[0]


def _in_flight(copies: list[tuple[str, float | None]], after: float | None) -> frozenset[str]:
    """The copies a sink accepted at or after `after` (real time): maybe not on the topics yet."""
    if after is None:
        return frozenset()
    return frozenset(key for key, accepted in copies if accepted is not None and accepted >= after)


# --- overlaps and course rules -------------------------------------------


def _overlapping_pairs(spans: list[tuple[datetime, datetime]]) -> int:
    pairs = 0
    spans.sort()
    for i, (_, ends) in enumerate(spans):
        for other_start, _ in spans[i + 1 :]:
            if other_start >= ends:
                break
            pairs += 1
    return pairs


def overlaps(rebuilt: Rebuilt, detail: Counter[str]) -> int:
    by: dict[tuple[str, str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    for appt in rebuilt.appointments.values():
        state = appt.final
        if state.status not in LIVE:
            continue
        span = (state.starts_at, state.ends_at)
        by[("client", appt.clinic, appt.client)].append(span)
        if state.therapist:
            by[("therapist", appt.clinic, state.therapist)].append(span)
        if state.room:
            by[("room", appt.clinic, state.room)].append(span)
    total = 0
    for (what, _, _), spans in by.items():
        found = _overlapping_pairs(spans)
        detail[f"overlaps_{what}"] += found
        total += found
    return total


def rule_violations(rebuilt: Rebuilt, rules: dict[str, ClinicRules], detail: Counter[str]) -> int:
    doses: dict[str, list[Appointment]] = defaultdict(list)
    for appt in rebuilt.appointments.values():
        if appt.course_id and appt.final.kind == "medicine" and appt.final.status in LIVE:
            doses[appt.course_id].append(appt)
    found: Counter[str] = Counter()
    for course in rebuilt.courses.values():
        clinic = audit_rules.of(rules, course.clinic)
        policy, tz = clinic.policy, clinic.tz
        taken = sorted(doses.get(course.course_id, []), key=lambda a: a.final.starts_at)
        starts = [a.final.starts_at for a in taken]
        spacing = timedelta(hours=policy.min_hours_between_doses)
        found["spacing"] += sum(1 for a, b in itertools.pairwise(starts) if b - a < spacing)
        weeks = Counter(_week(s.astimezone(tz).date()) for s in starts)
        found["per_week"] += sum(max(n - policy.max_doses_per_week, 0) for n in weeks.values())
        found["too_many"] += max(len(taken) - policy.medicine_sessions, 0)
        first = _first_booked_dose(rebuilt, course.course_id, course.window_from)
        window_end = course.window_ends_on
        if first is not None:
            # A pause freezes the window: the days it lasted carry the window on.
            paused = sum(
                (resumed.astimezone(tz).date() - at.astimezone(tz).date()).days
                for at, resumed in course.pauses
            )
            days = policy.course_window_days - 1 + paused
            longest = first.astimezone(tz).date() + timedelta(days=days)
            found["window_too_long"] += course.window_ends_on > longest
            # The window opens at the first dose as it stands: a first dose re-planned
            # later carries the window with it (the scheduler says so on no topic).
            window_end = max(window_end, longest)
        found["outside_window"] += sum(
            1
            for a in taken
            if a.final.starts_at.astimezone(tz).date() > window_end
            and not a.moved_outside_window  # announced as such: the rule's own way out
        )
    for name, n in found.items():
        detail[f"rule_{name}"] += n
    return sum(found.values())


def _week(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _first_booked_dose(
    rebuilt: Rebuilt, course_id: str, since: datetime | None = None
) -> datetime | None:
    """When the course's window opened: its first dose as it stands (given, or still
    booked), for the window opens at the first dose; a first dose moved later before it
    was given opens it later. Doses first booked before `since` (a pause before the first
    dose restarts the window) do not count."""
    doses = [
        a
        for a in rebuilt.appointments.values()
        if a.course_id == course_id
        and a.history
        and a.history[0][2].kind == "medicine"
        and (since is None or a.history[0][0] >= since)
    ]
    live = [a.final.starts_at for a in doses if a.final.status in LIVE]
    return min(live or [a.history[0][2].starts_at for a in doses], default=None)


# --- boosters ---------------------------------------------------------------


def boosters_repeated(
    records: list[Record], rules: dict[str, ClinicRules], detail: Counter[str]
) -> int:
    """Announcements beyond the first per booster fact, and boosters off their time.

    Grouped by what the booster *is* (client, course, number), not by event id:
    a republished announcement carries the same derived id, a re-derived one a
    new id, and either way the client hears of the booster twice.
    """
    facts: dict[tuple[str, str, int], list[Record]] = defaultdict(list)
    for r in records:
        if r.topic == topics.BOOSTER_DUE.name:
            facts[(r.key, str(r.value["course_id"]), int(r.value["booster_number"]))].append(r)
    twice = sum(len(copies) - 1 for copies in facts.values())
    off_time = early = 0
    for copies in facts.values():
        clinic = audit_rules.of(rules, str(copies[0].value.get("clinic_id", "")))
        wanted = clinic.policy.booster_due_local_time
        due_times = [instant(c.value["due_at"]) for c in copies]
        off_time += any(due.astimezone(clinic.tz).time() != wanted for due in due_times)
        early += any(occurred(c) < due for c, due in zip(copies, due_times, strict=True))
    detail["boosters_announced_twice"] += twice
    detail["boosters_off_local_time"] += off_time
    detail["boosters_announced_early"] += early
    return twice + off_time + early


# --- lost -------------------------------------------------------------------------


# A fact and what must follow it for the same client (any one of the answers).
FOLLOWS = (
    (
        topics.CONSULTATION_REQUESTED.name,
        (topics.CONSULTATION_BOOKED.name, topics.CONSULTATION_BOOKING_FAILED.name),
    ),
    (
        topics.CLIENT_ENROLLED.name,
        (topics.COURSE_BOOKED.name, topics.COURSE_BOOKING_FAILED.name),
    ),
)
# Facts the notifier answers at once; an answer names the fact's id as its cause.
ANSWERED_AT_ONCE = frozenset(
    {
        topics.CONSULTATION_REQUESTED.name,
        topics.CONSULTATION_BOOKED.name,
        topics.COURSE_BOOKED.name,
        topics.CLINICAL_ALERT_RAISED.name,
        topics.CONSULTATION_CANCELLED.name,
    }
)
BOOSTER_GRACE = timedelta(days=2)


def lost(
    records: list[Record], expected: Expected, now: datetime | None, detail: Counter[str]
) -> int:
    by_topic: dict[str, set[str]] = defaultdict(set)
    for r in records:
        by_topic[r.topic].add(r.key)
    found: Counter[str] = Counter()
    for topic, accepted in expected.accepted.items():
        found["accepted_not_on_topic"] += max(accepted - len(by_topic[topic]), 0)
    completed = {
        str(r.value["appointment_id"]) for r in records if r.topic == topics.SESSION_COMPLETED.name
    }
    found["completion_not_on_topic"] += len(expected.completed - completed)
    for fact, answers in FOLLOWS:
        answered = set().union(*(by_topic[a] for a in answers))
        found["unanswered_" + fact.split(".")[1]] += len(by_topic[fact] - answered)
    opted_out = {
        r.key
        for r in records
        if r.topic == topics.CONTACT_PREFERENCES_CHANGED.name and r.value.get("opted_out")
    }
    notified = {
        str(r.value["cause_event_id"])
        for r in records
        if r.topic in (topics.NOTIFICATION_SENT.name, topics.NOTIFICATION_FAILED.name)
    }
    found["no_notification"] += sum(
        1
        for r in records
        if r.topic in ANSWERED_AT_ONCE and r.key not in opted_out and r.id not in notified
    )
    found["booster_never_announced"] += _boosters_never_announced(records, now)
    for name, n in found.items():
        detail[f"lost_{name}"] += n
    return sum(found.values())


def _boosters_never_announced(records: list[Record], now: datetime | None) -> int:
    """Courses whose first booster fell due (with two days' slack) and was never announced."""
    plans: dict[str, Record] = {}
    stopped, announced = set(), set()
    for r in sorted(records, key=occurred):
        course = str(r.value.get("course_id"))
        if r.topic == topics.BOOSTER_PLAN_SET.name:
            plans[course] = r
        elif r.topic == topics.BOOSTERS_STOPPED.name:
            stopped.add(course)
        elif r.topic == topics.BOOSTER_DUE.name:
            announced.add(course)
    if now is None:
        return 0
    return sum(
        1
        for course, plan in plans.items()
        if course not in stopped
        and course not in announced
        and plan.value.get("first_due_at")
        and instant(plan.value["first_due_at"]) < now - BOOSTER_GRACE
    )
