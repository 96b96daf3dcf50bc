"""The webhook service's subscriber: every public topic, each event accepted for delivery.

One consumer in the `kap-webhooks` group over the `public.` topics only (the
partner feed's catalogue: nothing internal is ever read here, so nothing internal
can be sent). Each event is checked to name one clinic (envelope and payload
agree) and handed to `Webhooks.accept`, whose write step holds it in its client's
order and queues it for the partners it is for.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from chassis.batches import Handler
from chassis.config import ServiceSettings
from chassis.dead_letters import one_clinic
from chassis.kafka import GroupMembership, subscribe
from chassis.metrics import ServiceMetrics
from services.webhooks.service import Webhooks
from shared.envelope import Envelope
from shared.events import Event
from shared.topics import ALL, Service, Topic

SERVICE: Service = "webhooks"
PUBLIC_TOPICS: tuple[Topic, ...] = tuple(t for t in ALL if t.public)


def register(
    broker: KafkaBroker,
    webhooks: Webhooks,
    settings: ServiceSettings,
    metrics: ServiceMetrics | None = None,
) -> GroupMembership:
    return subscribe(
        broker,
        SERVICE,
        reactions(webhooks),
        "webhooks: each public event queued for the partners subscribed to it",
        settings,
        metrics,
    )


def reactions(webhooks: Webhooks) -> list[tuple[Topic, Handler]]:
    async def on_public_event(event: Event, envelope: Envelope) -> None:
        one_clinic(event, envelope)
        await webhooks.accept(event, envelope)

    return [(topic, on_public_event) for topic in PUBLIC_TOPICS]
