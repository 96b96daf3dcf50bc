"""The Kafka broker every service uses, and topics applied from `shared.topics`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware

from chassis.config import ServiceSettings
from chassis.dead_letters import DeadLetterPolicy, dead_letter_middleware
from chassis.metrics import ServiceMetrics
from shared.topics import ALL, Topic

log = logging.getLogger(__name__)


def make_broker(
    settings: ServiceSettings,
    service: str,
    request_timeout_ms: int = 40_000,
    metrics: ServiceMetrics | None = None,
) -> KafkaBroker:
    """A broker that waits for every in-sync replica and never duplicates on retry.

    `request_timeout_ms` also bounds how long a publish waits for an absent
    broker before failing (its batch is then dropped, not sent later).
    """
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        request_timeout_ms=request_timeout_ms,
        client_id=f"kap-{service}",
        acks="all",
        enable_idempotence=True,
        allow_auto_create_topics=False,
        # Commit only after the handler's effect is done; an error rewinds the
        # partition (see chassis.dead_letters for what is retried or dead-lettered).
        ack_policy=AckPolicy.NACK_ON_ERROR,
        logger=logging.getLogger(f"kap.{service}.kafka"),
    )
    broker.add_middleware(dead_letter_middleware(service, DeadLetterPolicy(), broker, metrics))
    if metrics is not None:
        broker.add_middleware(
            KafkaPrometheusMiddleware(registry=metrics.registry, app_name=f"kap-{service}")
        )
    return broker


def group_id(service: str) -> str:
    """One consumer group per service: replicas share its partitions."""
    return f"kap-{service}"


def _new_topics(topics: Sequence[Topic], replication_factor: int) -> list[NewTopic]:
    min_isr = str(min(2, replication_factor))
    wanted = []
    for topic in topics:
        config = {**topic.kafka_config(), "min.insync.replicas": min_isr}
        wanted += [
            NewTopic(
                name,
                num_partitions=topic.partitions,
                replication_factor=replication_factor,
                topic_configs=config,
            )
            for name in (topic.name, topic.dead_letters)
        ]
    return wanted


async def apply_topics(
    bootstrap_servers: str,
    replication_factor: int = 1,
    topics: Sequence[Topic] = ALL,
) -> list[str]:
    """Create every missing topic (and its dead-letter topic); return the names created.

    Idempotent, and safe when several replicas start at once: a topic another
    process created first counts as present.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in _new_topics(topics, replication_factor) if t.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(missing)
        created = []
        for name, code, *message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"could not create topic {name}: error {code} {message}")
        if created:
            log.info("created %d topics", len(created))
        return created
    finally:
        await admin.close()


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[None]])


def subscribe(broker: KafkaBroker, service: str, topic: Topic) -> Callable[[Handler], Handler]:
    """Subscribe `service`'s consumer group to `topic`, from the start for a new group.

    Use as a decorator on a handler; commits follow the broker's ack policy
    (after the handler, see make_broker).
    """
    subscriber = broker.subscriber(
        topic.name,
        group_id=group_id(service),
        auto_offset_reset="earliest",
        # Each subscription is one member of the service's group; a short
        # heartbeat lets a joining member's rebalance finish in about a second.
        heartbeat_interval_ms=500,
        title=f"{topic.name}:{service}",
        description=f"{service} reacts: {topic.description}",
    )

    def register(handler: Handler) -> Handler:
        subscriber(handler)
        return handler

    return register
