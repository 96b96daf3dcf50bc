"""Intake's Redis rebuilt from the topics (`kapctl rebuild intake`, ops/rebuild.py).

Kafka is the record, Redis a projection of it (issue 18). Intake consumes no topic:
its state is what its HTTP steps stored, and each step published what it decided
(service.py). A rebuild replays those facts, in Kafka order, through the same domain
rules (domain.request_consultation, domain.hold_consultation) where a fact holds their
inputs, and writes what the step wrote through the store's one write
(IntakeStore.write) in the unit of work: the client's record, its history (each
entry at the fact's `occurred_at`, the step's instant), the contact index, the
clinic's client directory (search), and a measure's answered mark (its link stays
used up). A copy of a fact on a topic (the outbox relay may publish one twice, with
the same id) is applied once.

Not on the topics, so not rebuilt (counted per fact in the summary's `not_rebuilt`):
- the screening's details (blood pressure, each answer, notes): ScreeningCompleted
  holds the verdict and the contraindications found, which is what the API shows;
- the enrolment's PHQ-9 and GAD-7 item answers: ClientEnrolled holds the totals and
  band (kept as the record's `baseline`, what the API shows), not the items;
- the answers kept for a retried `Idempotency-Key` (the key is not on the topics, and
  the answers last a day): a retry of a request made before the rebuild is a new
  request to the rebuilt service (a step on a known client is refused or repeated as
  the domain says; a consultation request finds the person by contact);
- rate-limit counters (they last minutes), and a fact of a client whose request is
  older than the topics' retention (`no_record`): there is no record to apply it to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.replay import DroppingPublisher
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.intake import domain
from services.intake.service import NO_MARK
from services.intake.store import HistoryEntry, IntakeStore, MeasureMark, StoredResponse
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from shared.topics import Service, Topic

SERVICE: Service = "intake"
# What a step's answer to a retried key would hold: no key, so nothing is stored.
_NO_ANSWER = StoredResponse("", 0, {})

Change = Callable[[domain.ClientRecord | None, ev.Event, Envelope], domain.ClientRecord | None]


class IntakeReplay:
    """Applies intake's facts, in order, to the Redis `redis`."""

    def __init__(self, redis: Redis) -> None:
        self._store = IntakeStore(redis)
        self._unit_of_work = UnitOfWork(redis, SERVICE, DroppingPublisher(SERVICE), relayed=False)
        self._seen: set[str] = set()
        self.gaps: Counter[str] = Counter()
        steps: list[tuple[Topic, str, Change]] = [
            (topics.CONSULTATION_REQUESTED, "consultation_requested", _requested),
            (topics.CONSULTATION_HELD, "consultation_held", _held),
            (topics.SCREENING_COMPLETED, "screened", self._screened),
            (topics.CLIENT_ENROLLED, "enrolled", self._enrolled),
            (topics.CONTACT_PREFERENCES_CHANGED, "preferences", _touched),
            (topics.MEASURE_ANSWERED, "measure_answered", _unchanged),
        ]
        self._apply: dict[str, Callable[[ev.Event, Envelope], Awaitable[None]]] = {
            topic.name: self._step(name, change) for topic, name, change in steps
        }
        # Its alerts stored nothing (service._alert): the notifier and staff act on them.
        self._apply[topics.CLINICAL_ALERT_RAISED.name] = _nothing
        self.topics = list(topics.produced_by(SERVICE))
        missing = {t.name for t in self.topics} - set(self._apply)
        assert not missing, f"an intake fact the rebuild does not apply: {missing}"

    async def finish(self) -> None:
        """Nothing is held back: each record is applied as it comes."""

    async def apply(self, topic: Topic, event: ev.Event, envelope: Envelope, at: datetime) -> None:
        if envelope.id in self._seen:
            return  # a second copy of a fact already applied
        self._seen.add(envelope.id)
        await self._apply[topic.name](event, envelope)

    def _step(self, name: str, change: Change) -> Callable[[ev.Event, Envelope], Awaitable[None]]:
        async def apply(event: ev.Event, envelope: Envelope) -> None:
            clinic, client = event.clinic_id, event.client_id

            async def step(tx: Transaction) -> Decision[None]:
                before = await self._store.load(clinic, client, tx)
                record = change(before, event, envelope)
                if record is None:
                    self.gaps["no_record"] += 1
                    return Decision(lambda p: None)
                entries = [HistoryEntry(event.occurred_at, name, record.status.value)]

                def write(p: Pipeline) -> None:
                    self._store.write(p, record, entries, None, _NO_ANSWER, previous=before)
                    if isinstance(event, ev.MeasureAnswered) and event.measure_id:
                        mark = MeasureMark(event.occurred_at, event.source)
                        self._store.mark_measure_answered(p, clinic, client, event.measure_id, mark)

                return Decision(write)

            await self._unit_of_work.run(clinic, NO_MARK, step)

        return apply

    def _screened(
        self, record: domain.ClientRecord | None, event: ev.Event, _: Envelope
    ) -> domain.ClientRecord | None:
        assert isinstance(event, ev.ScreeningCompleted)
        if record is None:
            return None
        self.gaps["screening_details"] += 1
        status = domain.IntakeStatus
        verdict = status.SCREENED_ELIGIBLE if event.eligible else status.SCREENED_INELIGIBLE
        return record.model_copy(
            update={
                "status": verdict,
                "screening": None,
                "contraindications": event.contraindications,
                "updated_at": event.occurred_at,
            }
        )

    def _enrolled(
        self, record: domain.ClientRecord | None, event: ev.Event, _: Envelope
    ) -> domain.ClientRecord | None:
        assert isinstance(event, ev.ClientEnrolled)
        if record is None:
            return None
        self.gaps["enrolment_item_scores"] += 1
        baseline = domain.Baseline(
            phq9_total=event.phq9_total, phq9_band=event.phq9_band, gad7_total=event.gad7_total
        )
        return record.model_copy(
            update={
                "status": domain.IntakeStatus.ENROLLED,
                "scores": None,
                "baseline": baseline,
                "consent_recorded_at": event.consent_recorded_at,
                "updated_at": event.occurred_at,
            }
        )


def _requested(
    record: domain.ClientRecord | None, event: ev.Event, envelope: Envelope
) -> domain.ClientRecord:
    """The request's own rule: a new record, or the person's record with the new contact.
    The correlation id is the journey's, which every intake envelope carries."""
    assert isinstance(event, ev.ConsultationRequested)
    made, _ = domain.request_consultation(
        clinic_id=event.clinic_id,
        client_id=event.client_id,
        correlation_id=envelope.correlation_id,
        contact=event.contact,
        preferred_times=event.preferred_times,
        existing=record,
        now=event.occurred_at,
    )
    return made


def _held(
    record: domain.ClientRecord | None, event: ev.Event, _: Envelope
) -> domain.ClientRecord | None:
    assert isinstance(event, ev.ConsultationHeld)
    if record is None:
        return None
    return domain.hold_consultation(record, event.outcome, event.occurred_at)[0]


def _touched(
    record: domain.ClientRecord | None, event: ev.Event, _: Envelope
) -> domain.ClientRecord | None:
    """Preferences are the notifier's to keep; intake's record notes the change's time."""
    return record.model_copy(update={"updated_at": event.occurred_at}) if record else None


def _unchanged(
    record: domain.ClientRecord | None, event: ev.Event, _: Envelope
) -> domain.ClientRecord | None:
    return record


async def _nothing(event: ev.Event, envelope: Envelope) -> None:
    return None
