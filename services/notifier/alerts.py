"""Urgent alerts someone owns: recorded when planned, acknowledged over the API, or escalated.

A clinical alert goes to staff at once and plans its escalation to the clinic's
on-call contact (domain.Plan.clinical_alert); the alert is recorded with that
escalation's id in the same write step. A member of staff acknowledging it
(one write step: the alert and the escalation message watched) records who and
when, cancels the escalation if it is still planned, and publishes
`ClinicalAlertAcknowledged`; a second acknowledgement changes nothing. The
hand-over asks `acknowledged` just before sending an escalation, so an alert
acknowledged after the escalation was claimed is still not escalated.

    notifier:{c}:alert:{alert id}   hash: client, raised_at, escalation id,
                                    acknowledged_by, acknowledged_at
    notifier:{c}:alerts             zset: alert ids by when they were raised

The alert id is the id (ce_id) of the ClinicalAlertRaised event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.events import EventPublisher
from chassis.outbox import Output
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.notifier.keys import RETAIN_S, key, text
from services.notifier.plans import cancel_message
from shared import events as ev
from shared.envelope import derived_event_id


@dataclass(frozen=True)
class Alert:
    alert_id: str
    client_id: UUID
    raised_at: datetime
    escalation_id: str
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None


class Alerts:
    def __init__(self, redis: Redis, unit_of_work: UnitOfWork, publisher: EventPublisher) -> None:
        self._redis = redis
        self._unit_of_work = unit_of_work
        self._publisher = publisher

    def record(
        self, p: Pipeline, alert: ev.ClinicalAlertRaised, alert_id: str, escalation_id: str
    ) -> None:
        """Queue the alert's record on its planning step's MULTI."""
        fields = {
            "client_id": str(alert.client_id),
            "raised_at": alert.occurred_at.isoformat(),
            "escalation_id": escalation_id,
        }
        record = key(alert.clinic_id, "alert", alert_id)
        p.hset(record, mapping=fields)  # type: ignore[arg-type]
        p.expire(record, RETAIN_S)
        alerts = key(alert.clinic_id, "alerts")
        p.zadd(alerts, {alert_id: alert.occurred_at.timestamp()})
        # The index would grow forever: entries past their records' retention go (the
        # records expire on Redis's clock, this on the service clock: a listing skips an
        # entry whose record is gone either way).
        p.zremrangebyscore(alerts, "-inf", f"({alert.occurred_at.timestamp() - RETAIN_S}")

    async def acknowledge(
        self, clinic_id: str, alert_id: str, by: str, now: datetime
    ) -> Alert | None:
        """Record who owns the alert and call its escalation off; None: no such alert."""

        async def step(tx: Transaction) -> Decision[Alert | None]:
            record = key(clinic_id, "alert", alert_id)
            await tx.watch(record)
            found = _alert(alert_id, await self._redis.hgetall(record))
            if found is None or found.acknowledged_by is not None:
                return Decision(lambda p: None, result=found)  # unknown, or owned already
            escalation = key(clinic_id, "msg", found.escalation_id)
            await tx.watch(escalation)
            state = await self._redis.hget(escalation, "state")
            event = ev.ClinicalAlertAcknowledged(
                clinic_id=clinic_id,
                client_id=found.client_id,
                occurred_at=now,
                alert_id=alert_id,
                acknowledged_by=by,
            )
            # One fact per alert: its acknowledgement (a second one is not a new fact).
            envelope = self._publisher.envelope_for(
                event, event_id=derived_event_id(alert_id, "acknowledged")
            )

            def write(p: Pipeline) -> None:
                p.hset(record, mapping={"acknowledged_by": by, "acknowledged_at": now.isoformat()})
                if state is not None and text(state) == "planned":
                    cancel_message(p, clinic_id, found.escalation_id)

            owned = Alert(**{**found.__dict__, "acknowledged_by": by, "acknowledged_at": now})
            return Decision(write, [Output(event, envelope)], owned)

        result = await self._unit_of_work.run(clinic_id, [], step, leave_to_relay=True)
        return result if isinstance(result, Alert) else None

    async def acknowledged(self, clinic_id: str, alert_id: str) -> bool:
        return bool(await self._redis.hexists(key(clinic_id, "alert", alert_id), "acknowledged_by"))

    async def listed(self, clinic_id: str, *, open_only: bool) -> list[Alert]:
        """The clinic's alerts, oldest first (only those nobody acknowledged yet if
        `open_only`)."""
        ids = [text(i) for i in await self._redis.zrange(key(clinic_id, "alerts"), 0, -1)]
        found = []
        for alert_id in ids:
            alert = _alert(alert_id, await self._redis.hgetall(key(clinic_id, "alert", alert_id)))
            if alert is not None and not (open_only and alert.acknowledged_by is not None):
                found.append(alert)
        return found


def _alert(alert_id: str, raw: dict[bytes | str, bytes | str]) -> Alert | None:
    fields = {text(k): text(v) for k, v in raw.items()}
    if "raised_at" not in fields:
        return None
    acknowledged_at = fields.get("acknowledged_at")
    return Alert(
        alert_id=alert_id,
        client_id=UUID(fields["client_id"]),
        raised_at=datetime.fromisoformat(fields["raised_at"]),
        escalation_id=fields["escalation_id"],
        acknowledged_by=fields.get("acknowledged_by"),
        acknowledged_at=datetime.fromisoformat(acknowledged_at) if acknowledged_at else None,
    )
