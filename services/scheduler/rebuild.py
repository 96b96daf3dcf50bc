"""The scheduler's Redis rebuilt from the topics (`kapctl rebuild scheduler`, ops/rebuild.py).

Kafka is the record, Redis a projection of it (issue 18). The scheduler's state (each
client's schedule, the booking ledger, the waitlist, booster and measure timers, the
measures answered, each event's handled mark) is what its reactions, the clinic's
requests and its timers decided. A rebuild runs those same steps again, in the order
they were taken, through the one write step (changes.ScheduleChanges, so the unit of
work), with a publisher that drops what they cause and remembers its ids (chassis.replay):
- the order: the topics come merged by record time, and the outbox relay records the
  outputs of several steps in one round, within the same milliseconds, merged then by
  topic name (a course's measure falling due, fired just after a session's completion,
  came before the completion's facts about one clean-clone run in three: the replay
  fired the timer first, the schedule's version moved, and no later request was found
  again). So an own fact not made yet is held (RELAY_ROUND of record time) and held
  facts are taken in the order they were decided (`occurred_at`, the step's instant);
  everything recorded before a consumed event was decided before it was handled, so
  that event first releases what is held;
- a consumed event goes to its reaction (as handlers.py hands it), on a clock reading
  the record's Kafka time (when it was handled, less the consumer's lag);
- one of its own facts whose id a replayed step has made already is accounted for:
  every output is named by its cause (domain.ids), so a step decided on the same
  schedule makes the same ids;
- any other own fact names the request or timer that made it: the request's action is
  found among those its payload allows by rebuilding the fact's id from the schedule
  as it stands (domain.ids.change_cause; or a version or three away, when a timer's
  step met it in the other order: the request then runs on the version its fact
  names, which only names facts), then that request runs again on a clock at
  the fact's `occurred_at` (the step's own instant); a timer's fact (BoosterDue,
  MeasureDue, ConsultationOfferLapsed) fires the clinic's timers at its instant;
- a fact made again but decided otherwise is counted (`diverged`): a reaction decides
  anew, and two clients' events handled at once live (other partitions) may meet here
  in another order (record time) and take one slot the other way round; likewise a
  consumed event handled live after a step whose facts were recorded later still than
  the event (within the consumer's lag) meets that step here before it;
- a fact no step made again yet (a later output of a step whose first fact comes
  after it in the merged order) waits; one still unmade at the end is counted.

Not rebuilt (counted per reason in the summary's `not_rebuilt`):
- `not_replayed:<topic>`: an own fact that no replayed step made: one from a door
  whose input is not on the topics, i.e. an offer accepted through its link (the
  token is not on the topics) and what it caused;
- `refused:<topic>` / `diverged:<topic>`: a step run again that refused, or made
  other ids (the clinic's calendar changed since, so a decision differs);
- a clinic calendar set through the API (PUT .../calendar) is not on the topics: the
  rebuild plans with the clinics' configuration as the service reads it;
- a client's availability (set_availability) publishes nothing, so it is not rebuilt;
- leases in flight; TTLs count from the rebuild.

Each client's public numbering (`clientsequence`, chassis.unit_of_work) goes on after
the highest number on the topics, whatever the steps replayed here numbered.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.clinics import ClinicDirectory
from chassis.dead_letters import one_clinic
from chassis.metrics import ServiceMetrics
from chassis.replay import DroppingPublisher, ReplayClock
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.scheduler.domain import ids
from services.scheduler.domain.schedule import ClientSchedule, Missing, Refused
from services.scheduler.scheduler import Scheduler
from services.scheduler.store import SchedulerStore, pack
from shared import events as ev
from shared import topics
from shared.envelope import Envelope, derived_event_id
from shared.topics import Service, Topic

SERVICE: Service = "scheduler"

# A request's outputs are few; their positions are searched up to this.
MAX_OUTPUTS = 32
SHORT_NOTICE = ("", "/short-notice")
# How far apart, in record time, the facts of steps taken one after the other may be
# recorded out of order: one relay round (milliseconds), with a wide margin.
RELAY_ROUND = timedelta(seconds=5)
# How many versions apart the replay's schedule and the live one may be when a request
# is run again: steps of other doors (timers) met in another order.
VERSION_DRIFT = 3

Apply = Callable[[ev.Event, Envelope], Awaitable[None]]
# A request run again: the candidate actions (as domain.ids names them) and how to run one.
Candidates = Iterable[tuple[str, Callable[[], Awaitable[object]]]]


@dataclass(frozen=True)
class _Held:
    """An own fact not made yet, held until the facts recorded around it are in."""

    decided_at: datetime  # the step's instant: held facts are taken in this order
    arrival: int
    recorded_at: datetime
    topic: Topic
    event: ev.Event
    envelope: Envelope


class SchedulerReplay:
    """Applies the scheduler's topics, in order, to the Redis `redis`."""

    def __init__(self, redis: Redis, clinics: ClinicDirectory) -> None:
        self.clock = ReplayClock()
        self._publisher = DroppingPublisher(SERVICE)
        self._store = SchedulerStore(redis)
        self._work = UnitOfWork(redis, SERVICE, self._publisher, relayed=False)
        # Each client's highest public number on the topics: the rebuilt counter goes on
        # from there, whatever the replayed steps numbered (some are not made again).
        self._numbered: dict[tuple[str, str], int] = {}
        self.scheduler = Scheduler(
            store=self._store,
            clinics=clinics,
            unit_of_work=self._work,
            publisher=self._publisher,
            clock=self.clock,
            metrics=ServiceMetrics(SERVICE),
        )
        s = self.scheduler
        consumed: list[tuple[Topic, Callable[[ev.Event, Envelope], Awaitable[None]]]] = [
            (topics.CONSULTATION_REQUESTED, s.on_consultation_requested),  # type: ignore[list-item]
            (topics.CONSULTATION_HELD, s.on_consultation_held),  # type: ignore[list-item]
            (topics.CLIENT_ENROLLED, s.on_client_enrolled),  # type: ignore[list-item]
            (topics.MEASURE_ANSWERED, s.on_measure_answered),  # type: ignore[list-item]
        ]
        self._consumed = dict((t.name, react) for t, react in consumed)
        self._requests: dict[str, Callable[[ev.Event], Candidates]] = {
            topics.SESSION_RESCHEDULED.name: self._rescheduled,
            topics.SESSION_COMPLETED.name: self._completed,
            topics.SESSION_MISSED.name: self._dropped,
            topics.SESSION_CANCELLED.name: self._dropped,
            topics.SESSION_CHECKED_IN.name: self._checked_in,
            topics.SESSION_RECORDED.name: self._recorded,
            topics.COURSE_PAUSED.name: self._paused,
            topics.COURSE_RESUMED.name: self._resumed,
            topics.COURSE_ENDED.name: self._ended,
            topics.BOOSTER_PLAN_SET.name: self._boosters,
            topics.BOOSTERS_STOPPED.name: self._boosters,
            topics.BOOSTER_DECLINED.name: self._declined,
            topics.CONSULTATION_CANCELLED.name: self._consultation_cancelled,
        }
        self._timers: dict[str, Callable[[str], Awaitable[object]]] = {
            topics.BOOSTER_DUE.name: s.fire_due_boosters,
            # A booster's booking is a step of its own, after its announcement's.
            topics.BOOSTER_SESSION_BOOKED.name: s.fire_due_boosters,
            topics.BOOSTER_BOOKING_FAILED.name: s.fire_due_boosters,
            topics.MEASURE_DUE.name: s.fire_due_measures,
            topics.CONSULTATION_OFFER_LAPSED.name: s.fire_expired_offers,
        }
        self.topics = [t for t, _ in consumed] + list(topics.produced_by(SERVICE))
        self._waiting: dict[str, str] = {}  # own facts no replayed step made yet: id -> topic
        self._held: list[_Held] = []  # own facts not made yet, in arrival order
        self._arrivals = itertools.count()
        self._gaps: Counter[str] = Counter()

    @property
    def gaps(self) -> Counter[str]:
        waiting = Counter(
            f"not_replayed:{topic}"
            for event_id, topic in self._waiting.items()
            if event_id not in self._publisher.dropped
        )
        return self._gaps + waiting

    async def apply(self, topic: Topic, event: ev.Event, envelope: Envelope, at: datetime) -> None:
        react = self._consumed.get(topic.name)
        if react is not None:
            one_clinic(event, envelope)  # refused live too: one id for the lock and the mark
            await self._release()  # recorded before this event, so decided before it
            self.clock.at = at
            await react(event, envelope)
            return
        if envelope.source != self._publisher.source:
            return  # intake's alert, on a topic both publish: intake's to rebuild
        if envelope.sequence is not None:
            client = (envelope.clinic_id, envelope.subject)
            self._numbered[client] = max(self._numbered.get(client, 0), envelope.sequence)
        if not self._made_already(topic, event, envelope):
            decided_at = event.occurred_at.astimezone(UTC)
            self._held.append(_Held(decided_at, next(self._arrivals), at, topic, event, envelope))
            await self._release(recorded_before=at - RELAY_ROUND)

    async def finish(self) -> None:
        """Take what is still held: the topics are read to their end; then each client's
        public numbering goes on after the highest number on the topics."""
        await self._release()
        for (clinic_id, client), highest in self._numbered.items():
            key = self._work.sequence_key(clinic_id, client)

            async def step(
                tx: Transaction, key: str = key, highest: int = highest
            ) -> Decision[None]:
                await tx.watch(key)
                made = int(await tx.redis.get(key) or 0)

                def write(p: Pipeline) -> None:
                    p.set(key, max(made, highest))

                return Decision(write=write)

            await self._work.run(clinic_id, [], step)

    async def _release(self, recorded_before: datetime | None = None) -> None:
        """Take the held facts (all, or those recorded before `recorded_before`) in the
        order their steps were decided."""
        if recorded_before is not None and (
            not self._held or self._held[0].recorded_at >= recorded_before
        ):
            return
        taken: list[_Held] = []
        kept: list[_Held] = []
        for held in self._held:
            due = recorded_before is None or held.recorded_at < recorded_before
            (taken if due else kept).append(held)
        self._held = kept
        for held in sorted(taken, key=lambda h: (h.decided_at, h.arrival)):
            if not self._made_already(held.topic, held.event, held.envelope):
                await self._remake(held.topic, held.event, held.envelope)

    def _made_already(self, topic: Topic, event: ev.Event, envelope: Envelope) -> bool:
        """Whether a replayed step made this fact (a `diverged` one counted)."""
        made = self._publisher.dropped.get(envelope.id)
        if made is None:
            return False
        if _decided(made) != _decided(event):
            # Re-decided otherwise: two clients' events handled at once, live, met
            # in another order here (record time), and competed for one slot.
            self._gaps[f"diverged:{topic.name}"] += 1
        return True

    async def _remake(self, topic: Topic, event: ev.Event, envelope: Envelope) -> None:
        """Run again the timer or request that made this fact, at the fact's instant."""
        self.clock.at = event.occurred_at.astimezone(UTC)
        if topic.name in self._timers:
            await self._timers[topic.name](event.clinic_id)
        elif topic.name in self._requests:
            await self._request(topic, event, envelope)
        if envelope.id not in self._publisher.dropped:
            self._waiting[envelope.id] = topic.name  # perhaps a later step's output

    async def _request(self, topic: Topic, event: ev.Event, envelope: Envelope) -> None:
        """Run again the request whose action names this fact's id, if one does."""
        schedule = await self._store.load(event.clinic_id, event.client_id)
        if schedule is None:
            return
        for action, run in self._requests[topic.name](event):
            decided_on = _version_named(schedule, action, event, envelope.id)
            if decided_on is None:
                continue
            if decided_on != schedule.version:
                # Decided live on another version of this schedule: a timer's step and
                # this request met in the other order (a timer retried after a write
                # conflict keeps its round's instant, so `occurred_at` can put it first).
                # The version only names facts; the request runs on the one it named.
                renamed = schedule.model_copy(update={"version": decided_on})
                key = self._store.schedule_key(event.clinic_id, event.client_id)
                await self._store.redis.set(key, pack(renamed))
            try:
                await run()
            except (Refused, Missing, LookupError):
                self._gaps[f"refused:{topic.name}"] += 1
                return
            if envelope.id not in self._publisher.dropped:
                self._gaps[f"diverged:{topic.name}"] += 1
            return

    # --- the requests a fact may come from, as (action, run) --------------------------

    def _rescheduled(self, event: ev.Event) -> Candidates:
        assert isinstance(event, ev.SessionRescheduled)
        appointment = event.appointment
        clinic = self.scheduler.clinics.get(event.clinic_id)
        zones = [appointment.starts_at, appointment.starts_at.astimezone(UTC)]
        if clinic is not None:
            zones.append(appointment.starts_at.astimezone(clinic.zone))
        for starts_at, short in itertools.product(dict.fromkeys(zones), SHORT_NOTICE):
            action = f"{appointment.appointment_id}/moved-{starts_at.isoformat()}{short}"
            yield (
                action,
                _call(
                    self.scheduler.reschedule,
                    event.clinic_id,
                    appointment.appointment_id,
                    starts_at,
                    allow_short_notice=bool(short),
                ),
            )

    def _completed(self, event: ev.Event) -> Candidates:
        assert isinstance(event, ev.SessionCompleted)
        # The PHQ-9 item 9 answer is not on the fact: the action names it, so try each.
        for item9 in (None, 0, 1, 2, 3):
            answers = f"ride-{event.ride_home_confirmed}/phq9-{event.phq9_total}-{item9}"
            yield (
                f"{event.appointment_id}/completed/{answers}",
                _call(
                    self.scheduler.complete,
                    event.clinic_id,
                    event.appointment_id,
                    ride_home_confirmed=event.ride_home_confirmed,
                    phq9_total=event.phq9_total,
                    phq9_item9=item9,
                ),
            )

    def _dropped(self, event: ev.Event) -> Candidates:
        assert isinstance(event, ev.SessionMissed | ev.SessionCancelled)
        missed = isinstance(event, ev.SessionMissed)
        for short in SHORT_NOTICE:
            action = f"{event.appointment_id}/{'missed' if missed else 'cancelled'}{short}"
            yield (
                action,
                _call(
                    self.scheduler.drop,
                    event.clinic_id,
                    event.appointment_id,
                    missed=missed,
                    allow_short_notice=bool(short),
                ),
            )

    def _checked_in(self, event: ev.Event) -> Candidates:
        assert isinstance(event, ev.SessionCheckedIn)
        action = f"{event.appointment_id}/checked-in/{event.answers.model_dump_json()}"
        yield (
            action,
            _call(self.scheduler.check_in, event.clinic_id, event.appointment_id, event.answers),
        )

    def _recorded(self, event: ev.Event) -> Candidates:
        assert isinstance(event, ev.SessionRecorded)
        digest = _digest(event.record.model_dump_json())
        yield (
            f"{event.appointment_id}/recorded/{digest}",
            _call(self.scheduler.record, event.clinic_id, event.appointment_id, event.record),
        )

    def _paused(self, event: ev.Event) -> Candidates:
        yield "course-paused", _call(self.scheduler.pause, event.clinic_id, event.client_id)

    def _resumed(self, event: ev.Event) -> Candidates:
        yield "course-resumed", _call(self.scheduler.resume, event.clinic_id, event.client_id)

    def _ended(self, event: ev.Event) -> Candidates:
        assert isinstance(event, ev.CourseEnded)
        yield (
            f"course-{event.reason.value}",
            _call(self.scheduler.end, event.clinic_id, event.client_id, event.reason),
        )

    def _boosters(self, event: ev.Event) -> Candidates:
        plan = event.plan if isinstance(event, ev.BoosterPlanSet) else None
        action = f"boosters-{plan.model_dump_json() if plan else 'stopped'}"
        yield action, _call(self.scheduler.set_boosters, event.clinic_id, event.client_id, plan)

    def _declined(self, event: ev.Event) -> Candidates:
        assert isinstance(event, ev.BoosterDeclined)
        for appointment_id in event.appointment_ids:
            yield (
                f"{appointment_id}/declined-{event.declined_by}",
                _call(
                    self.scheduler.decline_booster,
                    event.clinic_id,
                    appointment_id,
                    event.declined_by,
                ),
            )

    def _consultation_cancelled(self, event: ev.Event) -> Candidates:
        assert isinstance(event, ev.ConsultationCancelled)
        yield (
            f"{event.appointment_id}/cancelled",
            _call(self.scheduler.cancel_consultation, event.clinic_id, event.appointment_id),
        )


def _call(
    step: Callable[..., Awaitable[object]], *args: object, **kwargs: object
) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        return await step(*args, **kwargs)

    return run


def _version_named(
    schedule: ClientSchedule, action: str, event: ev.Event, event_id: str
) -> int | None:
    """The schedule version, within VERSION_DRIFT of the one stored, on which `action`
    makes the fact `event_id` (the current version first); None: on none of them."""
    current = schedule.version
    versions = range(max(0, current - VERSION_DRIFT), current + VERSION_DRIFT + 1)
    for version in sorted(versions, key=lambda v: abs(v - current)):
        cause = ids.change_cause(schedule.model_copy(update={"version": version}), action)
        if any(derived_event_id(cause, ids.role(event, i)) == event_id for i in range(MAX_OUTPUTS)):
            return version
    return None


def _decided(event: ev.Event) -> dict[str, object]:
    """What a step decided, beside when: a reaction runs here at the record's Kafka time."""
    return event.model_dump(mode="json", exclude={"occurred_at"})


def _digest(text: str) -> str:
    """The request's own digest of a session record (requests.Requests.record)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
