"""Prometheus metrics: FastStream's per-message metrics plus the business counters.

One registry per service instance (not the process-global one), so several
instances can live in one test process. Business facts are counted where they
become facts: when their event is published, labelled by clinic and topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]


@dataclass
class ServiceMetrics:
    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.events_published = Counter(
            "kap_events_published",
            "Events published, by topic and clinic (consultations requested, courses booked, "
            "sessions completed, boosters due, notifications sent and failed...).",
            ["service", "topic", "clinic", "channel"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "kap_dead_letters",
            "Messages sent to a dead-letter topic, by original topic and error type.",
            ["service", "topic", "error"],
            registry=self.registry,
        )
        self.booking_conflicts = Counter(
            "kap_booking_conflicts",
            "Bookings that lost a race for a slot and were planned again.",
            ["service", "clinic"],
            registry=self.registry,
        )
        self.write_conflicts = Counter(
            "kap_write_conflicts",
            "Write steps whose watched reads changed before their EXEC, so the step ran again "
            "(chassis.unit_of_work); a steady rise means inputs of one client racing.",
            ["service"],
            registry=self.registry,
        )
        self.pending_timers = Gauge(
            "kap_pending_timers",
            "Timers waiting to fire (boosters, notifications), by clinic.",
            ["service", "kind", "clinic"],
            registry=self.registry,
        )

        # Rounds of each due-work loop (timers, delivery): what the bench divides Redis's
        # command count by to give the commands a round costs.
        self.due_rounds = Counter(
            "kap_due_rounds",
            "Rounds of a due-work loop (a look at this replica's due buckets), by kind.",
            ["service", "kind"],
            registry=self.registry,
        )
        self.configuration_errors = Counter(
            "kap_configuration_errors",
            "Configuration that could not be used (the last good version kept serving), by source.",
            ["service", "source"],
            registry=self.registry,
        )

        self.webhook_attempts = Counter(
            "kap_webhook_attempts",
            "Webhook POSTs, by partner and outcome (delivered: a 2xx; failed: anything else).",
            ["service", "partner", "outcome"],
            registry=self.registry,
        )

    def webhook_attempt(self, partner: str, outcome: str) -> None:
        self.webhook_attempts.labels(self.service, partner, outcome).inc()

    def published(self, topic: str, clinic: str, channel: str = "") -> None:
        self.events_published.labels(self.service, topic, clinic, channel).inc()

    def dead_lettered(self, topic: str, error: str) -> None:
        self.dead_letters.labels(self.service, topic, error).inc()

    def conflict(self, clinic: str) -> None:
        self.booking_conflicts.labels(self.service, clinic).inc()

    def write_conflict(self) -> None:
        self.write_conflicts.labels(self.service).inc()

    def configuration_error(self, source: str) -> None:
        self.configuration_errors.labels(self.service, source).inc()

    def due_round(self, kind: str) -> None:
        self.due_rounds.labels(self.service, kind).inc()

    def pending(self, kind: str, clinic: str, count: int) -> None:
        self.pending_timers.labels(self.service, kind, clinic).set(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
