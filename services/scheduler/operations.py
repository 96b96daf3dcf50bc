"""What the scheduler does, whichever door the request came in by (events or HTTP).

Each operation locks the client, reads their schedule and the clinic calendar,
asks the pure domain what changes, holds resources in the booking ledger, then
records and publishes. Event-driven operations commit first and publish after,
with the effect log making a redelivery republish the same outputs; HTTP and
timer operations publish first (deterministic ids) and commit after, so a
failure answers 503 or fires again with nothing half-done.

What keeps that true (issue 14):
- ids name one fact (domain.ids): an HTTP change by the schedule version it was
  decided on, so a retry repeats its ids and a later identical change does not;
- the handled check of an event happens under the client's lock, and the schedule
  (and handled record) are WATCHed from the load to the commit, so neither a
  duplicate delivery nor a holder whose lock expired mid-publish can overwrite a
  newer state: its commit fails instead;
- ledger slots a change gives up are let go only after its save, and the holds it
  added are undone when it fails before the save (ledger.Moves).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid5

from pydantic import ValidationError
from redis.exceptions import WatchError

from chassis.clinics import ClinicDirectory
from chassis.clock import Clock
from chassis.dead_letters import Rejected, describe
from chassis.effects import EffectLog, Output
from chassis.events import EventPublisher
from chassis.metrics import ServiceMetrics
from services.scheduler import lifecycle
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.course import course_steps
from services.scheduler.domain.plans import DropSession, MoveSession, PlanFailure, Replan
from services.scheduler.domain.replan import replan_after_reschedule
from services.scheduler.ledger import Claim, Moves, claims_for
from services.scheduler.lifecycle import ClientSchedule, Refused
from services.scheduler.planner import find_consultation_slot, is_late_cancellation, plan_course
from services.scheduler.store import ChangedMeanwhile, SchedulerStore
from shared import events as ev
from shared.envelope import EVENT_ID_NAMESPACE, Envelope

# Racing replicas may take a slot between planning and holding it; plan again.

log = logging.getLogger(__name__)

BOOKING_ATTEMPTS = 5
CONSULTATION_HORIZON_DAYS = 28
COURSE_HORIZON_DAYS = 120
BOOSTER_BATCH = 50  # boosters claimed, and fired together, per round
BOOSTER_LOCK_WAIT_S = 0.5  # a busy client's booster waits for its lease, not the batch


Change = tuple[ClientSchedule, list[ev.Event]]
# A change decides on the schedule as loaded, at `now`; what it holds in the booking
# ledger goes through `Moves`, so a failure before the save undoes it.
Decide = Callable[[ClientSchedule, datetime, Moves], Awaitable[Change]]
AnyChange = Callable[[ClientSchedule, datetime, Moves], Change | Awaitable[Change]]


class UnknownClinic(Rejected):
    pass


class CalendarMissing(Rejected):
    """Nothing can be booked for a clinic whose calendar is absent or invalid."""


@dataclass
class Scheduler:
    store: SchedulerStore
    clinics: ClinicDirectory
    publisher: EventPublisher
    effects: EffectLog
    clock: Clock
    metrics: ServiceMetrics

    # --- calendars --------------------------------------------------------

    async def calendar(self, clinic_id: str) -> ClinicCalendar:
        clinic = self.clinics.get(clinic_id)
        if clinic is None:
            raise UnknownClinic(f"unknown clinic {clinic_id!r}")
        override = await self.store.calendar_override(clinic_id)
        section = override or json.dumps(clinic.section("scheduler"), sort_keys=True)
        if section == "{}":
            raise CalendarMissing(f"clinic {clinic_id!r} has no scheduler calendar configured")
        try:
            return _parsed_calendar(clinic.id, clinic.timezone, section)
        except ValidationError as bad:
            raise CalendarMissing(f"clinic {clinic_id!r} calendar: {describe(bad)}") from bad

    async def has_calendar(self, clinic_id: str) -> bool:
        return await self.store.has_calendar_override(clinic_id)

    # --- reacting to events -------------------------------------------------

    async def on_consultation_requested(
        self, event: ev.ConsultationRequested, cause: Envelope
    ) -> None:
        async def decide(
            schedule: ClientSchedule, now: datetime, moves: Moves
        ) -> tuple[ClientSchedule, list[ev.Event]]:
            if schedule.consultation is not None:
                return schedule, []  # the same person asking again: already booked
            calendar = await self.calendar(event.clinic_id)
            schedule = schedule.model_copy(update={"preferred_times": event.preferred_times})
            requested = lifecycle.stage(schedule, ev.ClientStage.CONSULTATION_REQUESTED, now)
            appointment_id = uuid5(EVENT_ID_NAMESPACE, f"{cause.id}/consultation")
            for _ in range(BOOKING_ATTEMPTS):
                bookings = await self.store.bookings(
                    calendar, event.client_id, now, CONSULTATION_HORIZON_DAYS, [appointment_id]
                )
                slot = find_consultation_slot(
                    calendar, bookings, event.preferred_times, now, CONSULTATION_HORIZON_DAYS
                )
                if slot is None:
                    failed = ev.ConsultationBookingFailed(
                        clinic_id=event.clinic_id,
                        client_id=event.client_id,
                        occurred_at=now,
                        reason="no therapist is free in the preferred times in the next 4 weeks",
                    )
                    return schedule, [requested, failed]
                appointment = ev.Appointment(
                    appointment_id=appointment_id,
                    kind=ev.AppointmentKind.CONSULTATION,
                    starts_at=slot.starts_at,
                    ends_at=slot.ends_at,
                    therapist_id=slot.therapist_id,
                )
                claims = claims_for(event.client_id, [appointment])
                if await self._reserved(moves, claims):
                    booked = schedule.model_copy(
                        update={
                            "consultation": appointment,
                            "consultation_status": ev.AppointmentStatus.BOOKED,
                        }
                    )
                    return booked, [
                        requested,
                        ev.ConsultationBooked(
                            clinic_id=event.clinic_id,
                            client_id=event.client_id,
                            occurred_at=now,
                            appointment=appointment,
                        ),
                        lifecycle.stage(schedule, ev.ClientStage.CONSULTATION_BOOKED, now),
                        lifecycle.status_changed(
                            schedule, appointment, ev.AppointmentStatus.BOOKED, now
                        ),
                    ]
            raise RuntimeError("consultation slot kept being taken; will retry")

        await self._react(event, cause, decide)

    async def on_consultation_held(self, event: ev.ConsultationHeld, cause: Envelope) -> None:
        async def decide(
            schedule: ClientSchedule, now: datetime, moves: Moves
        ) -> tuple[ClientSchedule, list[ev.Event]]:
            appointment = schedule.consultation
            if appointment is None:
                raise Rejected("a consultation was held that was never booked here")
            if schedule.consultation_status != ev.AppointmentStatus.BOOKED:
                return schedule, []
            status = (
                ev.AppointmentStatus.NOSHOW
                if event.outcome == "no_show"
                else ev.AppointmentStatus.FULFILLED
            )
            updated = schedule.model_copy(update={"consultation_status": status})
            return updated, [lifecycle.status_changed(schedule, appointment, status, now)]

        await self._react(event, cause, decide)

    async def on_client_enrolled(self, event: ev.ClientEnrolled, cause: Envelope) -> None:
        async def decide(
            schedule: ClientSchedule, now: datetime, moves: Moves
        ) -> tuple[ClientSchedule, list[ev.Event]]:
            enrolled = lifecycle.stage(schedule, ev.ClientStage.ENROLLED, now)
            if schedule.course is not None:
                return schedule, [enrolled]
            calendar = await self.calendar(event.clinic_id)
            course_id = uuid5(EVENT_ID_NAMESPACE, f"{cause.id}/course")
            preferred = schedule.consultation.therapist_id if schedule.consultation else None
            not_before = now + timedelta(hours=1)
            # Ids an earlier, interrupted attempt at this very course may hold already.
            own = [uuid5(course_id, step.name) for step in course_steps(calendar.policy)]
            for _ in range(BOOKING_ATTEMPTS):
                bookings = await self.store.bookings(
                    calendar, event.client_id, now, COURSE_HORIZON_DAYS + 42, own
                )
                plan = plan_course(calendar, bookings, course_id, not_before, preferred)
                if isinstance(plan, PlanFailure):
                    return schedule, [
                        enrolled,
                        ev.CourseBookingFailed(
                            clinic_id=event.clinic_id,
                            client_id=event.client_id,
                            occurred_at=now,
                            reason=plan.reason,
                            earliest_fit_on=plan.earliest_fit_on,
                        ),
                    ]
                claims = claims_for(event.client_id, plan.appointments)
                if await self._reserved(moves, claims):
                    updated, events = lifecycle.course_booked(schedule, plan, now)
                    return updated, [enrolled, *events]
            raise RuntimeError("course slots kept being taken; will retry")

        await self._react(event, cause, decide)

    async def _reserved(
        self, moves: Moves, claims: list[Claim], replacing: Sequence[Claim] = ()
    ) -> bool:
        if await moves.hold(claims, replacing) is None:
            return True
        self.metrics.conflict(moves.clinic_id)
        return False

    async def _react(self, event: ev.Event, cause: Envelope, decide: Decide) -> None:
        """Handle `cause` once: checked, decided and recorded under the client's lock.

        The handled record and the schedule are watched from before the check to
        the commit: should the lock expire and a duplicate delivery get in, one of
        the two commits fails (and is retried, to find the other's record) rather
        than both publishing.
        """
        clinic_id, client_id = event.clinic_id, event.client_id
        moves = self.store.ledger.moves(clinic_id)
        async with self.store.locked(clinic_id, client_id), self.store.transaction() as tx:
            await self.effects.watch(tx, cause)
            await self.store.watch_schedules(tx, clinic_id, [client_id])
            if await self.effects.replayed(cause):
                return
            schedule = await self.store.load(clinic_id, client_id) or ClientSchedule(
                clinic_id=clinic_id, client_id=client_id, correlation_id=cause.correlation_id
            )
            try:
                updated, events = await decide(schedule, self.clock.now(), moves)
                updated = domain_ids.saved(updated, schedule)
                outputs = [
                    Output(
                        e, self.publisher.envelope_for(e, cause=cause, role=domain_ids.role(e, i))
                    )
                    for i, e in enumerate(events)
                ]
                tx.multi()  # type: ignore[no-untyped-call]
                self.store.save(tx, updated)
                self.effects.record(tx, cause, outputs)
                try:
                    await tx.execute()
                except WatchError as raced:
                    raise ChangedMeanwhile("handled or changed concurrently; retried") from raced
            except BaseException:
                await moves.undo()
                raise
            await moves.settle()
        await self.effects.publish(cause, outputs)

    # --- requests from the clinic -------------------------------------------

    async def complete(
        self,
        clinic_id: str,
        appointment_id: UUID,
        *,
        ride_home_confirmed: bool,
        phq9_total: int | None,
        phq9_item9: int | None,
    ) -> ClientSchedule:
        calendar = await self.calendar(clinic_id)

        def change(schedule: ClientSchedule, now: datetime, _: Moves) -> Change:
            return lifecycle.complete_session(
                schedule,
                appointment_id,
                ride_home_confirmed=ride_home_confirmed,
                phq9_total=phq9_total,
                phq9_item9=phq9_item9,
                calendar=calendar,
                now=now,
            )

        # The answers are part of the action: the same form sent again is a retry,
        # different answers are another fact (and another alert, if any).
        answers = f"ride-{ride_home_confirmed}/phq9-{phq9_total}-{phq9_item9}"
        return await self._request(clinic_id, appointment_id, f"completed/{answers}", change)

    async def drop(
        self, clinic_id: str, appointment_id: UUID, *, missed: bool
    ) -> tuple[ClientSchedule, str | None]:
        """A no-show or cancellation; the course is re-planned inside its window if it can be."""
        calendar = await self.calendar(clinic_id)
        note: list[str] = []

        async def change(schedule: ClientSchedule, now: datetime, moves: Moves) -> Change:
            course = schedule.course
            if course is None:
                raise Refused("the client has no course")
            start = course.appointment(appointment_id).starts_at
            late = not missed and is_late_cancellation(start, now, calendar.policy)
            updated, events = lifecycle.session_dropped(
                schedule, appointment_id, missed=missed, late=late, now=now
            )
            # Let go only once the drop is saved: until then the schedule books it.
            moves.release_after_save(
                claims_for(schedule.client_id, [course.appointment(appointment_id)])
            )
            replan = await self._replan(
                calendar, updated, DropSession(appointment_id=appointment_id), now, moves
            )
            if isinstance(replan, PlanFailure):
                note.append(replan.reason)
                return updated, events
            updated, more = lifecycle.replanned(updated, replan, now)
            return updated, events + more

        action = "missed" if missed else "cancelled"
        schedule = await self._request(clinic_id, appointment_id, action, change)
        return schedule, note[0] if note else None

    async def reschedule(
        self, clinic_id: str, appointment_id: UUID, new_starts_at: datetime
    ) -> ClientSchedule:
        calendar = await self.calendar(clinic_id)

        async def change(schedule: ClientSchedule, now: datetime, moves: Moves) -> Change:
            move = MoveSession(appointment_id=appointment_id, new_starts_at=new_starts_at)
            replan = await self._replan(calendar, schedule, move, now, moves)
            if isinstance(replan, PlanFailure):
                raise Refused(replan.reason)
            return lifecycle.replanned(schedule, replan, now)

        return await self._request(
            clinic_id, appointment_id, f"moved-{new_starts_at.isoformat()}", change
        )

    async def _replan(
        self,
        calendar: ClinicCalendar,
        schedule: ClientSchedule,
        change: MoveSession | DropSession,
        now: datetime,
        moves: Moves,
    ) -> Replan | PlanFailure:
        """The course after `change`, its new slots held (the old ones go after the save)."""
        course = schedule.course
        if course is None:
            raise Refused("the client has no course")
        for _ in range(BOOKING_ATTEMPTS):
            own = [a.appointment_id for a in course.plan.appointments]
            bookings = await self.store.bookings(
                calendar, schedule.client_id, now, COURSE_HORIZON_DAYS, own
            )
            replan = replan_after_reschedule(calendar, bookings, course.plan, change, now)
            if isinstance(replan, PlanFailure):
                return replan
            before = {a.appointment_id: a for a in course.plan.appointments}
            changed = claims_for(schedule.client_id, [*replan.rescheduled, *replan.added])
            old = [before[a.appointment_id] for a in replan.rescheduled]
            # The old times stay held until the save; a conflict holds nothing (the
            # script is all or nothing), so there is nothing to put back: plan again.
            if await self._reserved(moves, changed, claims_for(schedule.client_id, old)):
                return replan
        raise Refused("the calendar keeps changing; retry")

    async def set_boosters(
        self, clinic_id: str, client_id: UUID, plan: ev.BoosterPlan | None
    ) -> ClientSchedule:
        calendar = await self.calendar(clinic_id)

        def change(schedule: ClientSchedule, now: datetime, _: Moves) -> Change:
            if plan is None:
                return lifecycle.stop_boosters(schedule, "stopped_by_care_team", now)
            return lifecycle.set_booster_plan(schedule, plan, calendar, now)

        action = f"boosters-{plan.model_dump_json() if plan else 'stopped'}"
        return await self._for_client(clinic_id, client_id, action, change)

    async def _request(
        self, clinic_id: str, appointment_id: UUID, action: str, change: AnyChange
    ) -> ClientSchedule:
        client_id = await self.store.client_of(clinic_id, appointment_id)
        if client_id is None:
            raise LookupError("not found")
        return await self._for_client(clinic_id, client_id, f"{appointment_id}/{action}", change)

    async def _for_client(
        self, clinic_id: str, client_id: UUID, action: str, change: AnyChange
    ) -> ClientSchedule:
        moves = self.store.ledger.moves(clinic_id)
        async with self.store.locked(clinic_id, client_id), self.store.transaction() as tx:
            # Watched from the load to the save: should the lock expire meanwhile (a
            # publish slower than its life) and another change get in, this save
            # fails instead of writing back the schedule it loaded.
            await self.store.watch_schedules(tx, clinic_id, [client_id])
            schedule = await self.store.load(clinic_id, client_id)
            if schedule is None:
                raise LookupError("not found")
            try:
                try:
                    result = change(schedule, self.clock.now(), moves)
                    updated, events = result if isinstance(result, tuple) else await result
                except Refused as refused:
                    await self._publish_standing(schedule, refused, action)
                    raise
                updated = domain_ids.saved(updated, schedule)
                cause = domain_ids.change_cause(schedule, action)
                await self.publisher.publish_all(self._derived(updated, events, cause))
                tx.multi()  # type: ignore[no-untyped-call]
                self.store.save(tx, updated)
                try:
                    await tx.execute()
                except WatchError as raced:
                    log.warning("a change met a newer one after its lock expired; not saved")
                    raise ChangedMeanwhile("the client was changed meanwhile; retry") from raced
            except BaseException:
                await moves.undo()  # the ledger goes back to what the saved schedule books
                raise
            await moves.settle()
        return updated

    async def _publish_standing(
        self, schedule: ClientSchedule, refused: Refused, action: str
    ) -> None:
        """Publish what a refused request brought that stands (an alert); nothing is saved.

        Named apart from the request's own outputs: a retry of the refusal repeats
        its ids, and the alert of a completion accepted later is a new fact.
        """
        if refused.events:
            cause = domain_ids.change_cause(schedule, f"{action}/refused")
            await self.publisher.publish_all(self._derived(schedule, refused.events, cause))

    def _derived(
        self, schedule: ClientSchedule, events: Sequence[ev.Event], cause: str
    ) -> list[tuple[ev.Event, Envelope]]:
        """Events with ids derived from `cause` (see domain.ids): one fact, one id."""
        return [
            (
                event,
                self.publisher.envelope_for(
                    event, event_id=event_id, correlation_id=schedule.correlation_id
                ),
            )
            for event, event_id in zip(events, domain_ids.event_ids(cause, events), strict=True)
        ]

    # --- boosters -------------------------------------------------------------

    async def fire_due_boosters(self, clinic_id: str) -> tuple[int, bool]:
        """Announce the boosters due by now; (how many, whether more may be due already).

        A claimed batch is handled together: its clients' locks are taken
        concurrently and their schedules read in one round trip, then every
        announcement is published (acks awaited together), every schedule saved
        in one transaction, and the locks let go. All of a clinic's boosters fall
        due at 09:00; one at a time, 1,000 due at once waited over 3 s (make bench).
        """
        now = self.clock.now()
        lease = now + timedelta(seconds=self.clock_seconds(30))
        calendar = await self.calendar(clinic_id)  # before claiming: a bad calendar claims nothing
        due = await self.store.claim_due_boosters(clinic_id, now, lease, limit=BOOSTER_BATCH)
        by_client: dict[UUID, list[int]] = {}
        for client_id, number in sorted(due, key=lambda d: d[1]):
            by_client.setdefault(client_id, []).append(number)
        # A client busy elsewhere (the API, a replica) keeps its claim until its
        # lease ends rather than hold up the others' boosters.
        async with (
            self.store.locked_many(clinic_id, list(by_client), wait_s=BOOSTER_LOCK_WAIT_S) as held,
            self.store.transaction() as tx,
        ):
            # Watched too: should a lock expire (a stalled publish), a change made
            # meanwhile aborts this write instead of being overwritten; the claims
            # then stay in flight and the retry republishes the same event ids.
            await self.store.watch_schedules(tx, clinic_id, held)
            batch = []
            for schedule in await self.store.load_many(clinic_id, held):
                if schedule is None or schedule.course is None:
                    continue  # left in flight: taken over when its lease ends
                outputs = []
                course_id = schedule.course.plan.course_id
                numbers = by_client[schedule.client_id]
                before = schedule
                for number in numbers:  # several only if the scheduler was away that long
                    due_at = schedule.course.next_booster_due_at if schedule.course else None
                    schedule, events = lifecycle.booster_fired(schedule, number, calendar, now)
                    if events and due_at is not None:
                        cause = domain_ids.booster_cause(course_id, number, due_at)
                        outputs += self._derived(schedule, events, cause)
                if outputs:
                    schedule = domain_ids.saved(schedule, before)
                batch.append(_Fired(schedule.client_id, numbers, schedule, outputs))
            await self.publisher.publish_all([item for f in batch for item in f.outputs])
            tx.multi()  # type: ignore[no-untyped-call]
            for f in batch:
                for number in f.numbers:
                    self.store.booster_done(tx, clinic_id, f.client_id, number)
                self.store.save(tx, f.schedule, same_appointments=True)
            try:
                await tx.execute()
            except WatchError:
                log.warning("a booster batch met a concurrent change; retried after its lease")
                batch = []
        self.metrics.pending("booster", clinic_id, await self.store.pending_boosters(clinic_id))
        return sum(bool(f.outputs) for f in batch), len(due) == BOOSTER_BATCH

    def clock_seconds(self, real_seconds: float) -> float:
        """`real_seconds` of wall time in this clock's time (leases count in real time)."""
        one = self.clock.real_seconds(timedelta(seconds=1)) or 1.0
        return real_seconds / one


@dataclass(frozen=True)
class _Fired:
    """A booster announced: the client's schedule after it, and the events to publish."""

    client_id: UUID
    numbers: list[int]
    schedule: ClientSchedule
    outputs: list[tuple[ev.Event, Envelope]]


@functools.lru_cache(maxsize=256)
def _parsed_calendar(clinic_id: str, timezone: str, section_json: str) -> ClinicCalendar:
    """A calendar from its JSON: memoised by content, so it is validated once, not per event.

    A pure function of its arguments (the cache holds no state of any client), and
    a changed calendar is new JSON, hence parsed afresh.
    """
    section = json.loads(section_json)
    return ClinicCalendar.model_validate({**section, "clinic_id": clinic_id, "timezone": timezone})
