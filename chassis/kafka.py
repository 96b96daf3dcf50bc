"""The Kafka broker every service uses, and topics applied from `shared.topics`."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import time
import types
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from chassis.batches import BatchHandler, Handler, Progress, Together
from chassis.config import ServiceSettings
from chassis.metrics import ServiceMetrics
from chassis.tracing import telemetry_middleware
from shared.topics import ALL, DAY_MS, RECORD_TOPICS, RecordTopic, Topic

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord

log = logging.getLogger(__name__)


# Distinct keys whose hash a producer remembers: a client's key (its id, 36 bytes) and
# its hash, about 200 bytes each with the cache's own, so about 3 MB at most.
KEYS_REMEMBERED = 16_384


@functools.lru_cache(maxsize=KEYS_REMEMBERED)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


class KeyPartitioner:
    """aiokafka's default partitioning (the Java client's murmur2 of the key, so a client's
    records land where any other producer puts them), each key hashed once: the hash is
    pure Python, a quarter of a publish's CPU (issue 19), and a client's events come
    under the same key again and again (a booster's announcement and its stage, a
    course's bookings). A record without a key goes where the default sends it."""

    def __init__(self) -> None:
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        return all_partitions[_key_hash(key) % len(all_partitions)]


def make_broker(
    settings: ServiceSettings,
    service: str,
    request_timeout_ms: int = 40_000,
    metrics: ServiceMetrics | None = None,
) -> KafkaBroker:
    """A broker that waits for every in-sync replica and never duplicates on retry.

    `request_timeout_ms` also bounds how long a publish through
    `chassis.events.EventPublisher` waits, metadata and connection included;
    a publish that fails drops its producer (see `chassis.producers.abort_producer`), so the
    refused events are never sent later.
    """
    broker = KafkaBroker(
        # A list: FastStream wraps a string in one, and aiokafka splits commas only in a
        # string, so "a:9092,b:9092" would reach it as one unresolvable host.
        settings.kafka_bootstrap_list(),
        security=kafka_security(settings),
        request_timeout_ms=request_timeout_ms,
        client_id=f"kap-{service}",
        acks="all",
        enable_idempotence=True,
        partitioner=KeyPartitioner(),
        allow_auto_create_topics=False,
        # Commit only after the handler's effect is done: the batch consumer commits
        # what it handled itself (chassis.batches), the partitions that moved only.
        ack_policy=AckPolicy.MANUAL,
        logger=logging.getLogger(f"kap.{service}.kafka"),
        # FastStream's "Received"/"Processed" line per message is DEBUG: two log
        # lines per event cost more than some handlers (make bench), and the
        # facts are in our own lines (published, sent, dead-lettered) and metrics.
        log_level=logging.DEBUG,
    )
    if metrics is not None:
        broker.add_middleware(
            KafkaPrometheusMiddleware(registry=metrics.registry, app_name=f"kap-{service}")
        )
    broker.add_middleware(telemetry_middleware(service, settings.otel_exporter))
    return broker


_SASL = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}


def kafka_security(settings: ServiceSettings) -> BaseSecurity | None:
    """The settings' TLS and SASL login as FastStream's security object (None: plaintext).

    The one place settings become a connection: the broker takes this, and every plain
    aiokafka client (admin, lag readers, kapctl) takes `client_options`, derived from it.
    """
    protocol = settings.kafka_protocol()
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        # check_hostname stays on; no CA file means the system's CAs.
        context = create_ssl_context(
            cafile=settings.kafka_ssl_ca_file,
            certfile=settings.kafka_ssl_cert_file,
            keyfile=settings.kafka_ssl_key_file,
        )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        # The settings' validator guarantees both when the protocol is SASL_*.
        assert settings.kafka_sasl_username
        assert settings.kafka_sasl_password
        login = _SASL[settings.kafka_sasl_mechanism]
        return login(
            settings.kafka_sasl_username,
            settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=context is not None,
        )
    return BaseSecurity(ssl_context=context) if context is not None else None


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """A plain aiokafka client's security options, exactly those the broker's clients get
    (FastStream's own translation of `kafka_security`); empty for plaintext."""
    return parse_security(kafka_security(settings))


def group_id(service: str) -> str:
    """One consumer group per service: replicas share its partitions."""
    return f"kap-{service}"


def configured_topics(settings: ServiceSettings, topics: Sequence[Topic] = ALL) -> list[Topic]:
    """The topics as this deployment creates them: partitions and record retention
    from the settings (shared.topics holds the contract, not the sizing)."""
    sized = []
    for topic in topics:
        partitions = settings.topic_partitions_by_topic.get(topic.name, settings.topic_partitions)
        config = dict(topic.config)
        if not topic.public and "retention.ms" not in config:
            config["retention.ms"] = str(settings.record_retention_days * DAY_MS)
        sized.append(dataclasses.replace(topic, partitions=partitions, config=config))
    return sized


# How long an idle consumer's getmany waits for records: it returns as soon as some
# arrive, so a longer wait costs no latency, and an idle consumer wakes ten times a
# second, not a hundred. FastStream's batch subscriber pauses as long again after an
# empty getmany, blind (a record arriving then waited for it: at 20 ms the two-hop p50
# rose by 18 ms in make bench, so it was 5 ms): `_fetch_without_pause` drops the pause.
BATCH_WAIT_MS = 100

# How long a start waits for topics just created to show in the brokers' metadata.
TOPICS_APPEAR_S = 15.0


class TopicLayoutError(RuntimeError):
    """A topic is missing or has another partition count than configured: the service
    would break per-client order or fail every publish, so it does not start."""


async def check_topics(
    bootstrap_servers: str,
    topics: Sequence[Topic],
    security: Mapping[str, Any] | None = None,
    records: Sequence[RecordTopic] = RECORD_TOPICS,
    wait_s: float = TOPICS_APPEAR_S,
) -> None:
    """Every topic (and dead-letter topic) exists with its configured partitions.

    A missing topic is looked for again for up to `wait_s`: topics created a moment ago
    (by this process, or a replica starting beside it) reach the answering broker's
    metadata a little later. A clean clone's first service start once found all 90
    missing right after creating them."""
    wanted = {t.name: t.num_partitions for t in _new_topics(topics, 1)}
    wanted |= {t.name: t.num_partitions for t in _new_record_topics(records, 1)}
    deadline = time.monotonic() + wait_s
    while True:
        found = await _partition_counts(bootstrap_servers, wanted, security)
        missing = sorted(set(wanted) - set(found))
        if not missing or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    if missing:
        raise TopicLayoutError(
            f"{len(missing)} topic(s) missing, e.g. {missing[0]}: create them"
            " (`kapctl topics apply`, or your own tooling where KAP_CREATE_TOPICS=false)"
        )
    differ = sorted(n for n in wanted if found[n] != wanted[n])
    if differ:
        name = differ[0]
        raise TopicLayoutError(
            f"{len(differ)} topic(s) have another partition count than configured, e.g."
            f" {name}: {found[name]} on Kafka, {wanted[name]} configured. A topic's"
            " partitions never change in place (per-client order): a re-partition is a new"
            " topic version (docs/production.md, Re-partitioning)"
        )


async def _partition_counts(
    bootstrap_servers: str, wanted: Mapping[str, int], security: Mapping[str, Any] | None
) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(security or {}))
    await admin.start()
    try:
        # Listed first: a metadata request naming a missing topic may create it on a
        # broker that allows auto-creation.
        present = sorted(set(await admin.list_topics()) & set(wanted))
        described = await admin.describe_topics(present) if present else []
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


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


def _new_record_topics(topics: Sequence[RecordTopic], replication_factor: int) -> list[NewTopic]:
    min_isr = str(min(2, replication_factor))
    return [
        NewTopic(
            topic.name,
            num_partitions=topic.partitions,
            replication_factor=replication_factor,
            topic_configs={**topic.kafka_config(), "min.insync.replicas": min_isr},
        )
        for topic in topics
    ]


async def apply_topics(
    bootstrap_servers: str,
    replication_factor: int = 1,
    topics: Sequence[Topic] = ALL,
    security: Mapping[str, Any] | None = None,
    records: Sequence[RecordTopic] = RECORD_TOPICS,
) -> list[str]:
    """Create every missing topic (and its dead-letter topic), and the configuration
    record topics (compacted where their spec says); return the names created.

    Idempotent, and safe when several replicas start at once: a topic another
    process created first counts as present. `security`: `client_options(settings)`.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(security or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = _new_topics(topics, replication_factor)
        wanted += _new_record_topics(records, replication_factor)
        missing = [t for t in wanted if t.name not in existing]
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


class GroupMembership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whether the consumer has joined its group since it started, and what a
    rebalance does to the batch in hand.

    Readiness asks this, not the current assignment: the assignment is empty for the
    whole of every rebalance (a replica joining or leaving, a deploy), and a replica
    beyond the partition count holds none at all, yet each is healthy and serving.

    Partitions leaving: what the batch handled of them is committed (the rebalance
    waits for this), and the batch stops handling them (chassis.batches)."""

    def __init__(self) -> None:
        self.joined = False
        self.progress = Progress()
        self.commit: Callable[[Sequence[TopicPartition]], Awaitable[None]] | None = None

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        if self.commit is not None and revoked:
            await self.commit(list(revoked))
        self.progress.revoked.update(revoked)
        for tp in revoked:  # handled after the commit: the new owner does it again
            self.progress.handled.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.progress.revoked.difference_update(assigned)
        self.joined = True


def subscribe(
    broker: KafkaBroker,
    service: str,
    handlers: Sequence[tuple[Topic, Handler]],
    description: str,
    settings: ServiceSettings,
    metrics: ServiceMetrics | None = None,
    together: Together | None = None,
) -> GroupMembership:
    """One consumer in `service`'s group for all its topics, consuming in batches
    (chassis.batches), each record handed to its topic's typed handler, or with
    `together`, the records of its topics several at a time to its handler.

    One consumer per topic would make each replica a dozen group members, every
    join a rebalance of all the others (measured: 23 s before a notifier with
    fifteen consumed anything, against 0.05 s with one). A new group starts
    from the earliest offsets. Timeouts, static membership and the batch size come
    from the settings (KAP_CONSUMER_*).
    """
    membership = GroupMembership()
    batches = BatchHandler(
        service,
        handlers,
        broker,
        membership.progress,
        metrics,
        concurrency=settings.consumer_concurrency,
        together=together,
    )
    subscriber = broker.subscriber(
        *(topic.name for topic, _ in handlers),
        group_id=group_id(service),
        group_instance_id=settings.consumer_group_instance_id,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        max_poll_interval_ms=settings.consumer_max_poll_interval_ms,
        batch=True,
        max_records=settings.consumer_max_records,
        batch_timeout_ms=BATCH_WAIT_MS,
        ack_policy=AckPolicy.MANUAL,  # the batch commits what it handled (chassis.batches)
        listener=membership,
        title=service,
        description=description,
        # One subscriber's schema would offer every event on every topic; the
        # topics' own schemas (declared by their producers) stay the contract.
        include_in_schema=False,
    )

    async def consume(message: KafkaMessage) -> None:
        await batches.handle(message.raw_message, message.consumer)

    async def commit(partitions: Sequence[TopicPartition]) -> None:
        await batches.commit(subscriber.consumer, partitions)

    membership.commit = commit
    # Decoded per record by its topic's handler (chassis.batches), so one bad record
    # is that record's dead letter, not an error that drops the whole batch.
    subscriber(consume, decoder=_undecoded)
    subscriber.get_msg = types.MethodType(_fetch_without_pause, subscriber)  # type: ignore[method-assign]
    return membership


async def _fetch_without_pause(
    subscriber: Any, consumer: AIOKafkaConsumer
) -> tuple[ConsumerRecord[bytes, bytes], ...]:
    """FastStream 0.7's BatchSubscriber.get_msg without its sleep after an empty getmany:
    getmany itself waits (BATCH_WAIT_MS) and returns as soon as records arrive; the
    loop calling this goes straight back to it."""
    batches = await consumer.getmany(
        timeout_ms=subscriber.batch_timeout_ms, max_records=subscriber.max_records
    )
    return tuple(itertools.chain.from_iterable(batches.values()))


async def _undecoded(message: Any) -> None:
    return None
