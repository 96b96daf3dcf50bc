"""Model-based test: one client's schedule driven through the pure lifecycle (issue 14).

A Hypothesis state machine books a course, then completes, misses, cancels (in
time or late) and moves sessions (back to an earlier time too), changes and
stops the booster plan, lets time pass so booster timers fire, and replays or
redelivers what it did. Ids are derived as the scheduler derives them
(services.scheduler.domain.ids; operations.py does the same around each change),
timers kept as its Redis due set keeps them (one member per booster number, its
score updated on every save, a claimed member removed), against a small
reference model of what must hold after every step:
- an event id names one fact: the same id again is only ever a replay of the
  same change from the same state;
- a replay reproduces the ids it produced the first time;
- no booster is announced before its due time, nor twice for one (course, number);
- an announced booster is owed its booking, its timer due again: booked once (or
  failed) by a later round while boosters run, never after they were stopped;
- the client is never in two appointments at once;
- boosters stopped stay stopped until the care team sets a plan again.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from services.scheduler.domain import booster_booking, booster_lifecycle, lifecycle
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain.booster_sessions import place_booster
from services.scheduler.domain.planner import is_late_cancellation, plan_course
from services.scheduler.domain.plans import (
    Bookings,
    CoursePlan,
    DropSession,
    MoveSession,
    PlanFailure,
)
from services.scheduler.domain.replan import replan_after_reschedule
from services.scheduler.domain.schedule import ClientSchedule, Refused
from shared import events as ev
from shared.events import AppointmentStatus as Status
from tests.unit.scheduler.builders import clinic, therapist

# Completion without a check-in (the policy switched off): the model walks completions,
# drops and boosters; check-in's own paths are tested in test_checkin.py.
CALENDAR = clinic(
    therapists=[therapist("ana"), therapist("bea")],
    rooms=2,
    policy={"checkin": {"completion_requires_checkin": False}},
)
START = datetime(2027, 6, 7, 7, tzinfo=UTC)  # a Monday
CLIENT = uuid.UUID("7d1f0c2a-5b9e-4c3d-8e2f-1a6b4c9d0e11")
COURSE = uuid.UUID("3c2b1a09-8f7e-4d6c-9b5a-0e1f2d3c4b5a")

Change = tuple[ClientSchedule, list[ev.Event]]
Decide = Callable[[ClientSchedule, datetime], Change]


@dataclass(frozen=True)
class Done:
    """A change as the scheduler made it: enough to make it again, and what it published."""

    before: ClientSchedule
    action: str
    decide: Decide
    now: datetime
    ids: tuple[str, ...]


def replanned_after(change: MoveSession | DropSession) -> Callable[[Change, datetime], Change]:
    """The course re-planned around `change`, as operations.drop and reschedule do."""

    def replan(dropped: Change, now: datetime) -> Change:
        schedule, events = dropped
        assert schedule.course is not None
        plan = replan_after_reschedule(CALENDAR, Bookings(), schedule.course.plan, change, now)
        if isinstance(plan, PlanFailure):
            if isinstance(change, MoveSession):
                raise Refused(plan.reason)
            return schedule, events  # dropped; the course is short of a session
        schedule, more = lifecycle.replanned(schedule, plan, now)
        return schedule, events + more

    return replan


class ClientLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.schedule = ClientSchedule(clinic_id="lisbon", client_id=CLIENT, correlation_id="m")
        self.facts: dict[str, tuple[str, str, str]] = {}  # event id -> the fact it names
        self.announced: dict[tuple[uuid.UUID, int], datetime] = {}
        self.timers: dict[int, datetime] = {}  # the due set: booster number -> due instant
        self.stopped = False
        self.unbookable: set[tuple[uuid.UUID, int]] = set()  # not booked when stopped
        self.last: Done | None = None
        self.last_booster: tuple[ClientSchedule, int, datetime, tuple[str, ...]] | None = None
        self.earlier_starts: dict[uuid.UUID, list[datetime]] = {}

    # --- how the scheduler publishes and saves ---------------------------------

    def published(self, cause: str, events: list[ev.Event], fact: tuple[str, str]) -> list[str]:
        ids = domain_ids.event_ids(cause, events)
        for index, (event_id, event) in enumerate(zip(ids, events, strict=True)):
            named = (*fact, domain_ids.role(event, index))
            assert self.facts.setdefault(event_id, named) == named, "one id, two facts"
        return ids

    def saved(self, schedule: ClientSchedule) -> None:
        self.schedule = schedule
        course = schedule.course
        if course and course.next_booster and course.next_booster_due_at:
            self.timers[course.next_booster] = course.next_booster_due_at  # ZADD: score updated

    def change(self, action: str, decide: Decide) -> None:
        """An HTTP change: decided on the saved schedule, published, saved as the next version."""
        before = self.schedule
        fact = (before.model_dump_json(), action)
        try:
            after, events = decide(before, self.now)
        except Refused as refused:
            cause = domain_ids.change_cause(before, f"{action}/refused")
            ids = self.published(cause, list(refused.events), (fact[0], f"{action}/refused"))
            self.last = Done(before, action, decide, self.now, tuple(ids))
            return
        ids = self.published(domain_ids.change_cause(before, action), events, fact)
        self.saved(domain_ids.saved(after, before))
        self.last = Done(before, action, decide, self.now, tuple(ids))
        if any(isinstance(e, ev.BoostersStopped) for e in events):
            self.stopped = True
            course = before.course
            assert course is not None
            booked = {(course.plan.course_id, b.number) for b in course.booster_sessions}
            self.unbookable |= set(self.announced) - booked  # even once a plan is set again

    def advance_to(self, instant: datetime) -> None:
        """Time passes; the booster timer claims what fell due and fires it, as one batch
        (an announced booster's member is due again at once: a later round books it)."""
        self.now = max(self.now, instant)
        claimed = sorted(n for n, due in self.timers.items() if due <= self.now)
        for number in claimed:
            del self.timers[number]
        if claimed:
            self.fire(claimed)

    def fire(self, claimed: list[int]) -> None:
        before = schedule = self.schedule
        owed: list[int] = []
        for number in claimed:
            course = schedule.course
            assert course is not None
            due_at, prior = course.next_booster_due_at, schedule
            schedule, events = booster_lifecycle.booster_fired(schedule, number, CALENDAR, self.now)
            if events:
                assert due_at is not None
                assert due_at <= self.now, "a booster announced before its due time"
                assert not self.stopped, "a stopped booster plan announced a booster"
                key = (course.plan.course_id, number)
                assert key not in self.announced, "a booster announced twice"
                self.announced[key] = due_at
                cause = domain_ids.booster_cause(course.plan.course_id, number, due_at)
                ids = self.published(cause, events, ("booster", cause))
                self.last_booster = (prior, number, self.now, tuple(ids))
                if booster_booking.may_book(schedule.course):
                    schedule = booster_booking.owe_booking(schedule, number, due_at)
                    owed.append(number)
            elif (to_book := booster_booking.booking_owed(course, number)) is not None:
                if booster_booking.may_book(course):
                    schedule = self.book(schedule, number, to_book.due_at)
                else:
                    schedule = booster_booking.booking_settled(schedule, number)
        # Saved whether or not anything fired: the next booster's timer is set again.
        self.saved(domain_ids.saved(schedule, before) if schedule is not before else schedule)
        for number in owed:  # the lease due again now (LeaseQueue.retry_at)
            self.timers[number] = self.now

    def book(self, schedule: ClientSchedule, number: int, due_at: datetime) -> ClientSchedule:
        course = schedule.course
        assert course is not None
        assert (course.plan.course_id, number) in self.announced, "booked, never announced"
        assert not self.stopped, "a stopped booster plan booked a booster"
        key = (course.plan.course_id, number)
        assert key not in self.unbookable, "a booster owed when stopped, booked after"
        placed = place_booster(
            CALENDAR, Bookings(), course.plan.course_id, number, due_at, self.now, "ana"
        )
        if isinstance(placed, PlanFailure):
            schedule, events = booster_booking.booster_booking_failed(
                schedule, number, due_at, placed, self.now
            )
        else:
            schedule, events = booster_booking.booster_booked(
                schedule, number, due_at, placed, self.now
            )
        cause = domain_ids.booster_booking_cause(course.plan.course_id, number, due_at)
        self.published(cause, events, ("booster booking", cause))
        return schedule

    def booked(self) -> list[ev.Appointment]:
        course = self.schedule.course
        assert course is not None
        return [
            a
            for a in course.plan.appointments
            if course.status_of(a.appointment_id) == Status.BOOKED
        ]

    # --- the steps ---------------------------------------------------------------

    @initialize()
    def book_course(self) -> None:
        plan = plan_course(CALENDAR, Bookings(), COURSE, self.now + timedelta(hours=1))
        assert isinstance(plan, CoursePlan)
        before = self.schedule
        after, events = lifecycle.course_booked(before, plan, self.now)
        # Caused by the enrolment event: ids from its id and each output's role.
        self.published("enrolment-event-id", events, ("enrolment", "enrolment-event-id"))
        self.saved(domain_ids.saved(after, before))

    @precondition(lambda self: bool(self.booked()))
    @rule(data=st.data(), ride=st.booleans(), item9=st.integers(0, 3))
    def complete(self, data: st.DataObject, ride: bool, item9: int) -> None:
        session = data.draw(st.sampled_from(self.booked()))
        self.advance_to(session.ends_at)
        self.complete_at(session, ride=ride, item9=item9)

    def complete_at(self, session: ev.Appointment, *, ride: bool, item9: int) -> None:
        def decide(schedule: ClientSchedule, now: datetime) -> Change:
            return lifecycle.complete_session(
                schedule,
                session.appointment_id,
                ride_home_confirmed=ride,
                phq9_total=9,
                phq9_item9=item9,
                calendar=CALENDAR,
                now=now,
            )

        answers = f"ride-{ride}/phq9-9-{item9}"
        self.change(f"{session.appointment_id}/completed/{answers}", decide)

    @precondition(lambda self: bool(self.booked()))
    @rule()
    def hold_the_rest(self) -> None:
        """Every session still booked is held in turn: the way to boosters."""
        for session in sorted(self.booked(), key=lambda a: a.starts_at):
            self.advance_to(session.ends_at)
            self.complete_at(session, ride=True, item9=0)

    @precondition(lambda self: bool(self.booked()))
    @rule(data=st.data(), missed=st.booleans())
    def drop(self, data: st.DataObject, missed: bool) -> None:
        session = data.draw(st.sampled_from(self.booked()))
        if missed:
            self.advance_to(session.ends_at)
        replan = replanned_after(DropSession(appointment_id=session.appointment_id))

        def decide(schedule: ClientSchedule, now: datetime) -> Change:
            late = not missed and is_late_cancellation(session.starts_at, now, CALENDAR.policy)
            dropped = lifecycle.session_dropped(
                schedule, session.appointment_id, missed=missed, late=late, now=now
            )
            return replan(dropped, now)

        action = "missed" if missed else "cancelled"
        self.change(f"{session.appointment_id}/{action}", decide)

    @precondition(lambda self: any(a.starts_at > self.now for a in self.booked()))
    @rule(data=st.data())
    def reschedule(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from([a for a in self.booked() if a.starts_at > self.now]))
        earlier = self.earlier_starts.get(session.appointment_id, [])
        shifts = [timedelta(days=d) for d in (-2, -1, 1, 2)] + [timedelta(hours=h) for h in (-1, 1)]
        target = data.draw(st.sampled_from([session.starts_at + s for s in shifts] + earlier))
        move = MoveSession(appointment_id=session.appointment_id, new_starts_at=target)
        replan = replanned_after(move)

        def decide(schedule: ClientSchedule, now: datetime) -> Change:
            return replan((schedule, []), now)

        moved_from = session.starts_at
        self.change(f"{session.appointment_id}/moved-{target.isoformat()}", decide)
        course = self.schedule.course
        assert course is not None
        if course.appointment(session.appointment_id).starts_at != moved_from:
            self.earlier_starts.setdefault(session.appointment_id, []).append(moved_from)

    @rule(interval=st.integers(1, 30), count=st.integers(0, 4), monthly=st.booleans())
    def set_booster_plan(self, interval: int, count: int, monthly: bool) -> None:
        plan = ev.BoosterPlan(interval_days=interval, count=count, then_monthly=monthly)
        self.change(
            f"boosters-{plan.model_dump_json()}",
            lambda s, now: booster_lifecycle.set_booster_plan(s, plan, CALENDAR, now),
        )
        course = self.schedule.course
        if course is not None and course.booster_plan == plan and not course.boosters_stopped:
            self.stopped = False

    @rule()
    def stop_boosters(self) -> None:
        self.change(
            "boosters-stopped",
            lambda s, now: booster_lifecycle.stop_boosters(s, "stopped_by_care_team", now),
        )

    @rule()
    def a_timer_round(self) -> None:
        """The timer's next round, no time passing: what its last round made due again."""
        self.advance_to(self.now)

    @rule(days=st.integers(1, 45))
    def time_passes(self, days: int) -> None:
        self.advance_to(self.now + timedelta(days=days))

    @precondition(lambda self: self.last is not None)
    @rule()
    def replay_the_last_change(self) -> None:
        """A retried request (it failed before its save): same state, same ids."""
        done = self.last
        assert done is not None
        try:
            _, events = done.decide(done.before, done.now)
            cause = domain_ids.change_cause(done.before, done.action)
        except Refused as refused:
            events = list(refused.events)
            cause = domain_ids.change_cause(done.before, f"{done.action}/refused")
        assert tuple(domain_ids.event_ids(cause, events)) == done.ids

    @precondition(lambda self: self.last_booster is not None)
    @rule()
    def redeliver_the_last_booster(self) -> None:
        """A timer fired again: from before its save, the same ids; after it, nothing."""
        assert self.last_booster is not None
        prior, number, at, ids = self.last_booster
        _, events = booster_lifecycle.booster_fired(prior, number, CALENDAR, at)
        course = prior.course
        assert course is not None
        assert course.next_booster_due_at is not None
        cause = domain_ids.booster_cause(course.plan.course_id, number, course.next_booster_due_at)
        assert tuple(domain_ids.event_ids(cause, events)) == ids
        assert booster_lifecycle.booster_fired(self.schedule, number, CALENDAR, self.now)[1] == []

    # --- what must hold after every step ---------------------------------------------

    @invariant()
    def the_client_is_in_one_appointment_at_a_time(self) -> None:
        course = self.schedule.course
        if course is None:
            return
        held = sorted(
            (a.starts_at, a.ends_at)
            for a in course.plan.appointments
            if course.status_of(a.appointment_id) in (Status.BOOKED, Status.FULFILLED)
        )
        for (_, ends), (starts, _) in itertools.pairwise(held):
            assert ends <= starts, "two appointments of the client overlap"

    @invariant()
    def stopped_boosters_stay_stopped(self) -> None:
        course = self.schedule.course
        if self.stopped and course is not None:
            assert course.boosters_stopped
            assert course.next_booster is None

    @invariant()
    def a_booking_owed_has_its_timer(self) -> None:
        course = self.schedule.course
        if course is not None:
            for owed in course.boosters_to_book:
                assert owed.number in self.timers, "a booking owed, with no timer to book it"

    @invariant()
    def a_booster_is_booked_once_and_only_once_announced(self) -> None:
        course = self.schedule.course
        if course is not None:
            numbers = [b.number for b in course.booster_sessions]
            assert len(numbers) == len(set(numbers)), "a booster booked twice"
            assert {(course.plan.course_id, n) for n in numbers} <= set(self.announced)

    @invariant()
    def the_pending_booster_comes_after_every_one_announced(self) -> None:
        course = self.schedule.course
        if course is not None and course.next_booster is not None:
            numbers = [n for (c, n) in self.announced if c == course.plan.course_id]
            assert course.next_booster > max(numbers, default=0)


# About a second and a half on one core: a fixed budget, so make test stays fast. No
# example database: nothing is written into the checkout, and a failure prints its steps.
ClientLifecycle.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_client_lifecycle = ClientLifecycle.TestCase
