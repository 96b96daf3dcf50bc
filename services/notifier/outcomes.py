"""How a claimed message ended: recorded under its lease, said on Kafka by the unit of work.

Each outcome (sent, failed, skipped, planned again for a retry, or held for the
schedule view) is written under the lease that claimed the message, fenced, in one
unit-of-work step with the outcome event in the outbox (finishes.Finishes), so a
redelivered event, a second replica or a restart never sends it again, and no
outcome event is lost: the unit of work publishes it after the write, its relay
whatever a dead replica left. The one gap left is a crash between the channel
accepting a message and the outcome being written: the lease then runs out and the
message goes again, with the same Message-ID (or SMS Idempotency-Key), so the
duplicate can be recognised downstream. Outcome event ids derive from the
notification id, so a republished one is a duplicate readers drop. A time-bound
message no longer true when due is "skipped": a permanent NotificationFailed with a
reason "stale: ...", and the kap_notifications_skipped counter.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Literal

from prometheus_client import Counter

from chassis.clock import Clock
from chassis.events import EventPublisher
from chassis.metrics import ServiceMetrics
from chassis.outbox import Output
from services.notifier.channels import SendError, TransientSendError
from services.notifier.finishes import Finishes
from services.notifier.keys import finished_fields
from services.notifier.model import MessageKind, PlannedMessage
from services.notifier.queue import Claim, Finish
from shared import events as ev
from shared.envelope import Envelope, derived_event_id

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
FIRST_RETRY = timedelta(minutes=1)  # then 2, 4, 8 minutes, on the service clock


class UnknownClient(TransientSendError):
    """No contact details yet: the request may still be on its way on another topic."""


class Outcomes:
    def __init__(
        self,
        finishes: Finishes,
        publisher: EventPublisher,
        clock: Clock,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._finishes = finishes
        self._publisher = publisher  # for the outcome events' envelopes
        self._clock = clock
        self._metrics = metrics
        self._skipped = (
            Counter(
                "kap_notifications_skipped",
                "Time-bound messages not sent because they were no longer true when due "
                "(moved, cancelled, or the session had started), by clinic and kind.",
                ["service", "clinic", "kind"],
                registry=metrics.registry,
            )
            if metrics is not None
            else None
        )

    async def send_failed(self, claim: Claim, error: SendError) -> None:
        """Preparing or handing over failed: for good (permanent), or retried later until
        MAX_ATTEMPTS."""
        if isinstance(error, TransientSendError):
            await self.retry_or_give_up(claim, error)
        else:
            await self.fail(claim, claim.message, error.reason, permanent=True)

    async def retry_or_give_up(self, claim: Claim, error: TransientSendError) -> None:
        if claim.attempts >= MAX_ATTEMPTS:
            reason = f"gave up after {claim.attempts} attempts: {error.reason}"
            permanent = isinstance(error, UnknownClient)
            await self.fail(claim, claim.message, reason, permanent=permanent)
            return
        now = self._clock.now()
        at = now + FIRST_RETRY * 2 ** (claim.attempts - 1)
        waits = (claim.message.client_id, now) if isinstance(error, UnknownClient) else None
        retry = Finish(
            claim.lease, "planned", {"last_error": error.reason}, at=at, awaits_contact=waits
        )
        if await self._finishes.record(retry):
            log.warning(
                "notification %s: attempt %d failed (%s); retrying",
                claim.message.notification_id,
                claim.attempts,
                error.reason,
                extra=claim_ids(claim),
            )

    async def sent(self, claim: Claim, message: PlannedMessage, at: datetime) -> None:
        event = ev.NotificationSent(
            clinic_id=message.clinic_id,
            client_id=message.client_id,
            occurred_at=at,
            notification_id=message.notification_id,
            message_kind=message.kind,
            channel=message.channel,
            cause_event_id=message.cause_event_id,
            appointment_id=message.appointment_id,
            refers_to=message.refers_to,
        )
        details = {"sent_as": str(message.notification_id), "sent_channel": message.channel}
        outputs = [Output(event, self._envelope(event, claim))]
        if message.kind == MessageKind.CLINICAL_ALERT_ESCALATION:
            outputs.append(self._escalated(message, at))
        await self._record(claim, "sent", details, *outputs)

    def _escalated(self, message: PlannedMessage, at: datetime) -> Output:
        """The escalation is a fact of its own: the alert went to the on-call contact."""
        alert_id = message.cause_event_id  # the alert's event id (domain.clinical_alert)
        raised_at = datetime.fromisoformat(str(message.context["raised_at_utc"]))
        event = ev.ClinicalAlertEscalated(
            clinic_id=message.clinic_id,
            client_id=message.client_id,
            occurred_at=at,
            alert_id=alert_id,
            unacknowledged_minutes=max(int((at - raised_at).total_seconds() // 60), 0),
        )
        envelope = self._publisher.envelope_for(
            event, event_id=derived_event_id(alert_id, "escalated")
        )
        return Output(event, envelope.model_copy(update={"causation_id": alert_id}))

    async def fail(
        self,
        claim: Claim,
        message: PlannedMessage,
        reason: str,
        *,
        permanent: bool,
        state: Literal["failed", "skipped"] = "failed",
    ) -> bool:
        event = ev.NotificationFailed(
            clinic_id=message.clinic_id,
            client_id=message.client_id,
            occurred_at=self._clock.now(),
            notification_id=message.notification_id,
            message_kind=message.kind,
            channel=message.channel,
            cause_event_id=message.cause_event_id,
            reason=reason,
            permanent=permanent,
            appointment_id=message.appointment_id,
            refers_to=message.refers_to,
        )
        details = {"reason": reason, "permanent": str(permanent).lower()}
        return await self._record(
            claim, state, details, Output(event, self._envelope(event, claim))
        )

    async def skip(self, claim: Claim, message: PlannedMessage, reason: str) -> None:
        """No longer true: never sent, and said so on the failed topic (permanent, "stale: ")."""
        recorded = await self.fail(claim, message, reason, permanent=True, state="skipped")
        if recorded and self._skipped is not None and self._metrics is not None:
            self._skipped.labels(self._metrics.service, message.clinic_id, message.kind).inc()

    async def hold(self, claim: Claim) -> bool:
        """Planned again, in the held set at its own time, the attempt not counted.

        For a time-bound message while the notifier's view of the schedule lags:
        out of the due set, so the next claims reach what is due behind it.
        """
        fields = {"attempts": str(claim.attempts - 1)}
        return await self._finishes.record(
            Finish(claim.lease, "held", fields, at=claim.message.send_at)
        )

    def _envelope(
        self, event: ev.NotificationSent | ev.NotificationFailed, claim: Claim
    ) -> Envelope:
        outcome = "sent" if isinstance(event, ev.NotificationSent) else "failed"
        envelope = self._publisher.envelope_for(
            event,
            event_id=derived_event_id(str(claim.message.notification_id), f"notifier/{outcome}"),
            correlation_id=claim.correlation_id,
        )
        return envelope.model_copy(update={"causation_id": claim.message.cause_event_id})

    async def _record(
        self,
        claim: Claim,
        state: Literal["sent", "failed", "skipped"],
        details: dict[str, str],
        *outputs: Output,
    ) -> bool:
        # Kept short, without its template variables: Kafka has what was sent.
        kept = finished_fields(claim.message.model_dump_json(), claim.attempts, details)
        ended = Finish(
            claim.lease,
            state,
            kept,
            outputs,
            client_id=claim.message.client_id,
            ended_at=self._clock.now(),
        )
        if not await self._finishes.record(ended):
            log.warning(
                "notification %s: lease lost (or the message cancelled) before its outcome "
                "was recorded",
                claim.message.notification_id,
                extra=claim_ids(claim),
            )
            return False
        log.debug(  # the outcome topics record every send: no INFO line per message
            "notification %s %s (%s)",
            claim.message.notification_id,
            state,
            details.get("reason") or details.get("sent_channel"),
            extra=claim_ids(claim),
        )
        return True


def claim_ids(claim: Claim) -> dict[str, str]:
    """What a log line about `claim` says it is about (ids only)."""
    message = claim.message
    return {
        "clinic_id": message.clinic_id,
        "client_id": str(message.client_id),
        "causation_id": message.cause_event_id,
        "correlation_id": claim.correlation_id,
    }
