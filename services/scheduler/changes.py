"""One client's schedule changed through the one write step, whichever door asked.

The scheduler's doors (reactions to events, requests from the clinic, booster
timers) each decide a change in pure code; this module runs that decision in
`chassis.unit_of_work`: the schedule is read with its key watched, the booking
ledger is checked the same way (ledger.Booking), and the save, the ledger's
moves, the outputs and the inputs' handled marks are one MULTI in the clinic's
slot, published after. The course's measures follow whatever changed it
(domain.measures.replanned), their timers saved with the schedule. No lock: a
concurrent change to anything the decision read makes the step decide again from
what is there now.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import ValidationError
from redis.asyncio.client import Pipeline

from chassis.clinics import ClinicDirectory, PerVersion
from chassis.clock import Clock
from chassis.dead_letters import Rejected, describe
from chassis.events import EventPublisher
from chassis.metrics import ServiceMetrics
from chassis.outbox import Output
from chassis.unit_of_work import Decision, Replayed, Transaction, UnitOfWork
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain import measures
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.feasibility import why_no_course_fits
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import Booking, Claim
from services.scheduler.store import SchedulerStore
from shared import events as ev

BOOKING_ATTEMPTS = 5  # another writer may take a slot between planning and holding it
CONSULTATION_HORIZON_DAYS = 28
COURSE_HORIZON_DAYS = 120

R = TypeVar("R")


class UnknownClinic(Rejected):
    pass


class CalendarMissing(Rejected):
    """Nothing can be booked for a clinic whose calendar is absent or invalid."""


@dataclass(frozen=True)
class Changed(Generic[R]):
    """What a decision on one schedule comes to: the schedule after it (None: nothing
    to save), the events it causes, and what the caller gets back."""

    schedule: ClientSchedule | None
    outputs: Sequence[Output] = ()
    result: R | None = None


# Decides on the schedule as read (None: no schedule yet) at `now`, for the inputs
# not handled before; what it books goes through the Booking.
Decide = Callable[[ClientSchedule | None, Sequence[str], datetime, Booking], Awaitable[Changed[R]]]


@dataclass
class ScheduleChanges:
    store: SchedulerStore
    clinics: ClinicDirectory
    unit_of_work: UnitOfWork
    publisher: EventPublisher
    clock: Clock
    metrics: ServiceMetrics

    # --- calendars --------------------------------------------------------

    async def calendar(self, clinic_id: str, tx: Transaction | None = None) -> ClinicCalendar:
        """The clinic's calendar; inside a change (`tx`: its step's transaction, or its
        Booking's), the one its schedule's read fetched."""
        clinic = self.clinics.get(clinic_id)
        if clinic is None:
            raise UnknownClinic(f"unknown clinic {clinic_id!r}")
        override = await self.store.calendar_override(clinic_id, tx)
        section = override or _section_json(clinic)
        if section == "{}":
            raise CalendarMissing(f"clinic {clinic_id!r} has no scheduler calendar configured")
        try:
            calendar = _parsed_calendar(clinic.id, clinic.timezone, section)
        except ValidationError as bad:
            raise CalendarMissing(f"clinic {clinic_id!r} calendar: {describe(bad)}") from bad
        if override is None:  # a saved calendar was checked when it was saved
            year = self.clock.now().year
            impossible = _why_no_course_fits(clinic.id, clinic.timezone, section, year)
            if impossible is not None:
                raise CalendarMissing(
                    f"clinic {clinic_id!r} calendar: no full course can ever be planned: "
                    f"{impossible}"
                )
        return calendar

    async def has_calendar(self, clinic_id: str) -> bool:
        return await self.store.has_calendar_override(clinic_id)

    # --- the write step ---------------------------------------------------

    async def change(
        self,
        clinic_id: str,
        client_id: UUID,
        input_ids: Sequence[str],
        decide: Decide[R],
        *,
        leave_to_relay: bool = False,
    ) -> R | Replayed | None:
        """Decide on the client's schedule and record it, in one write step."""

        async def step(tx: Transaction) -> Decision[R]:
            before = await self.store.load_watched(tx, clinic_id, client_id)
            booking = self.store.ledger.booking(tx, clinic_id)
            now = self.clock.now()
            booking.now = now
            changed = await decide(before, tx.fresh, now, booking)
            after = changed.schedule
            if after is not None and after.course is not None:
                calendar = await self.calendar(clinic_id, tx)
                after = measures.replanned(after, calendar.policy.measures, calendar.tz, now)
            if after is not None and before is not None:
                after = domain_ids.saved(after, before)
            elif after is not None:
                after = after.model_copy(update={"version": 1})

            def write(p: Pipeline) -> None:
                if after is not None:  # the ledger follows the saved schedule, or nothing
                    self.store.save(p, after, before=before, now=now)
                    booking.write(p)

            return Decision(write, changed.outputs, changed.result)

        return await self.unit_of_work.run(
            clinic_id, input_ids, step, leave_to_relay=leave_to_relay, marks_of=str(client_id)
        )

    async def reserved(
        self, booking: Booking, claims: list[Claim], replacing: Sequence[Claim] = ()
    ) -> bool:
        if await booking.hold(claims, replacing) is None:
            return True
        self.metrics.conflict(booking.clinic_id)
        return False

    def derived(
        self, schedule: ClientSchedule, events: Sequence[ev.Event], cause: str
    ) -> list[Output]:
        """Events with ids derived from `cause` (see domain.ids): one fact, one id."""
        return [
            Output(
                event,
                self.publisher.envelope_for(
                    event, event_id=event_id, correlation_id=schedule.correlation_id
                ),
            )
            for event, event_id in zip(events, domain_ids.event_ids(cause, events), strict=True)
        ]


# Each clinic version's scheduler section as canonical JSON: the key of the calendar
# caches below (it was serialised on every event).
_section_json = PerVersion(lambda clinic: json.dumps(clinic.section("scheduler"), sort_keys=True))


@functools.lru_cache(maxsize=256)
def _why_no_course_fits(clinic_id: str, timezone: str, section_json: str, year: int) -> str | None:
    """Checked once a year per calendar from the clinics file: a year of first doses is
    searched from 1 January, so the answer stands for that year whatever the day."""
    calendar = _parsed_calendar(clinic_id, timezone, section_json)
    return why_no_course_fits(calendar, date(year, 1, 1))


@functools.lru_cache(maxsize=256)
def _parsed_calendar(clinic_id: str, timezone: str, section_json: str) -> ClinicCalendar:
    """A calendar from its JSON: memoised by content, so it is validated once, not per event.

    A pure function of its arguments (the cache holds no state of any client), and
    a changed calendar is new JSON, hence parsed afresh.
    """
    section = json.loads(section_json)
    return ClinicCalendar.model_validate({**section, "clinic_id": clinic_id, "timezone": timezone})
