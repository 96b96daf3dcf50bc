"""The notifier's Redis rebuilt from the topics (`kapctl rebuild notifier`, ops/rebuild.py).

Kafka is the record, Redis a projection of it (issue 18). The notifier's state is what
its consumed events planned (contacts and opt-outs, messages, slots, appointment facts,
alerts, measures answered, each event's handled mark) and how each delivery ended,
which only its own facts say (NotificationSent/Failed, ClinicalAlertAcknowledged).
A rebuild replays both in Kafka order:
- consumed events through the service's own handlers (handlers.reactions) and so its
  one write path, on a clock reading each record's Kafka time (when the event was
  handled, less the consumer's lag), with a publisher that drops what they cause:
  it is on the topics already;
- its own facts through `_finished` and `_acknowledged` below, which write what the
  original finishing or acknowledging step wrote.
No channel exists here: nothing is sent.

Not rebuilt (not on the topics, or work in flight the running service remakes):
- a finished message's attempts: 1, unless its failure names how many ("gave up
  after N attempts"); a retry in progress (transient failure, `last_error`) is
  planned again at its first time, so the rebuilt service tries it at once;
- a message planned for "now" has the instant its cause was handled as its send_at,
  which no topic records: the rebuild uses the cause's Kafka time (earlier by the lag);
- leases, fencing tokens, held sets, due-index hints, the outbox (empty: published)
  and its due marks;
- TTLs count from the rebuild, not from the original writes (chassis/retention.py).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.batches import Handler
from chassis.clinics import ClinicDirectory
from chassis.replay import DroppingPublisher, ReplayClock
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.notifier import handlers
from services.notifier.alerts import Alerts
from services.notifier.config import Settings
from services.notifier.keys import FINISHED_KEPT_S, finished_fields, key, text
from services.notifier.measures import MeasureRequests
from services.notifier.plans import PlanStore
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from shared.topics import Topic

SERVICE = handlers.SERVICE
_GAVE_UP = re.compile(r"gave up after (\d+) attempts")


Apply = Callable[[ev.Event, Envelope], Awaitable[None]]


class NotifierReplay:
    """Applies the notifier's topics, in order, to the Redis `redis`."""

    def __init__(self, redis: Redis, clinics: ClinicDirectory, settings: Settings) -> None:
        self.clock = ReplayClock()
        self.gaps: Counter[str] = Counter()  # what it cannot restore is fixed: the docstring
        self._redis = redis
        self._unit_of_work = UnitOfWork(redis, SERVICE, DroppingPublisher(SERVICE), relayed=False)
        self._alerts = Alerts(redis, self._unit_of_work, DroppingPublisher(SERVICE))
        deps = handlers.Deps(
            plans=PlanStore(redis),
            unit_of_work=self._unit_of_work,
            clinics=clinics,
            clock=self.clock,
            alerts=self._alerts,
            measures=MeasureRequests(
                redis,
                settings.measure_links(),
                settings.public_base_url,
                timedelta(hours=settings.measure_link_ttl_hours),
            ),
        )
        consumed: list[tuple[Topic, Handler]] = handlers.reactions(deps)
        own: list[tuple[Topic, Apply]] = [
            (topics.NOTIFICATION_SENT, self._finished),
            (topics.NOTIFICATION_FAILED, self._finished),
            (topics.CLINICAL_ALERT_ACKNOWLEDGED, self._acknowledged),
            # Its escalation message's NotificationSent is what the notifier keeps of it.
            (topics.CLINICAL_ALERT_ESCALATED, _nothing),
        ]
        self._apply: dict[str, Apply] = {t.name: a for t, a in [*consumed, *own]}
        self.topics = [t for t, _ in [*consumed, *own]]
        missing = {t.name for t in topics.produced_by(SERVICE)} - set(self._apply)
        assert not missing, f"a notifier fact the rebuild does not apply: {missing}"

    async def finish(self) -> None:
        """Nothing is held back: each record is applied as it comes."""

    async def apply(self, topic: Topic, event: ev.Event, envelope: Envelope, at: datetime) -> None:
        self.clock.at = at
        await self._apply[topic.name](event, envelope)

    async def _finished(self, event: ev.Event, envelope: Envelope) -> None:
        """How a delivery ended, as the finishing step wrote it (queue.DeliveryQueue.write):
        the message kept short, out of the due and held sets."""
        assert isinstance(event, ev.NotificationSent | ev.NotificationFailed)
        clinic, notification_id = event.clinic_id, str(event.notification_id)
        message = key(clinic, "msg", notification_id)
        if isinstance(event, ev.NotificationSent):
            state, attempts = "sent", 1
            details = {"sent_as": notification_id, "sent_channel": event.channel}
        else:
            state = "skipped" if event.reason.startswith("stale:") else "failed"
            gave_up = _GAVE_UP.search(event.reason)
            attempts = int(gave_up.group(1)) if gave_up else 1
            details = {"reason": event.reason, "permanent": str(event.permanent).lower()}

        async def step(tx: Transaction) -> Decision[None]:
            await tx.watch(message)
            plan = await self._redis.hget(message, "plan")
            if plan is None:
                # Its plan is not here: a repeated fact (the message is finished already)
                # or a cause the rebuild did not apply (refused, or before the topics' start).
                return Decision(lambda p: None)
            fields = finished_fields(text(plan), attempts, details)

            def write(p: Pipeline) -> None:
                p.delete(message)
                p.hset(message, mapping={"state": state, **fields})  # type: ignore[dict-item]
                p.expire(message, FINISHED_KEPT_S)
                p.zrem(key(clinic, "due"), notification_id)
                p.zrem(key(clinic, "held"), notification_id)

            return Decision(write)

        await self._unit_of_work.run(clinic, [], step)

    async def _acknowledged(self, event: ev.Event, envelope: Envelope) -> None:
        """The acknowledgement, through the API's own step (its event dropped)."""
        assert isinstance(event, ev.ClinicalAlertAcknowledged)
        await self._alerts.acknowledge(
            event.clinic_id, event.alert_id, event.acknowledged_by, event.occurred_at
        )


async def _nothing(event: ev.Event, envelope: Envelope) -> None:
    return None
