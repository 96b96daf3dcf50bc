"""A service's Redis rebuilt from the topics: `kapctl rebuild SERVICE --redis URL`.

Kafka is the record, Redis a projection (issue 18). A rebuild reads, in Kafka order
(ops.reading.in_kafka_order: each partition's order exactly, so each client's, since
events are keyed by client id), the topics that make the service's state: those it
consumes and those it produces (its own facts), and hands each record to the service's
replay (services/<service>/rebuild.py), which applies it through the service's own
code into the target Redis, publishing nothing and sending nothing.

The target must hold nothing of what is rebuilt (the whole database, or the clinic's
keys with `clinic`): a rebuild over live state would mix two histories. The service
is stopped meanwhile (or runs on another Redis): a rebuild is a replay, not a replica.
A record the service could not have applied (unreadable, or refused: the live service
dead-lettered it) is counted and left, as the live service left it.

Covered: the notifier, intake and the scheduler (COVERED), each with its own settings
as the service reads them. What the topics do not hold is listed in each replay's
docstring and counted in the summary (`not_rebuilt`, per reason), never left silent.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError
from redis.asyncio import Redis

from chassis.clinic_registry import ClinicRegistryView
from chassis.clinics import ClinicDirectory
from chassis.config import ServiceSettings
from chassis.dead_letters import Rejected
from chassis.kafka import client_options
from chassis.redis_client import connect_redis
from ops.reading import in_kafka_order
from services.intake.config import Settings as IntakeSettings
from services.intake.rebuild import IntakeReplay
from services.notifier.config import Settings as NotifierSettings
from services.notifier.rebuild import NotifierReplay
from services.scheduler.config import Settings as SchedulerSettings
from services.scheduler.rebuild import SchedulerReplay
from shared import events as ev
from shared.envelope import HEADER_CLINIC, Envelope, EnvelopeError
from shared.topics import BY_NAME, Topic


class Replay(Protocol):
    """What a service rebuilds from: its topics, and how one record is applied."""

    @property
    def topics(self) -> Sequence[Topic]: ...

    @property
    def gaps(self) -> Counter[str]:
        """What the replay could not restore (not on the topics), per reason."""
        ...

    async def apply(
        self, topic: Topic, event: ev.Event, envelope: Envelope, at: datetime
    ) -> None: ...

    async def finish(self) -> None:
        """Apply what the replay held back: every record has been handed to `apply`."""
        ...


class TargetNotEmpty(RuntimeError):
    """The target Redis already holds what a rebuild would write."""


@dataclass
class Counts:
    read: Counter[str] = field(default_factory=Counter)  # records per topic
    applied: int = 0
    other_clinics: int = 0  # skipped: `clinic` named another one
    unreadable: int = 0  # bad envelope or event: dead-lettered by the live service too
    refused: int = 0  # the service refused it (chassis.dead_letters.Rejected)
    keys_written: int = 0
    not_rebuilt: dict[str, int] = field(default_factory=dict)  # the replay's gaps

    def summary(self) -> dict[str, Any]:
        return {
            "read": dict(sorted(self.read.items())),
            "read_total": sum(self.read.values()),
            "applied": self.applied,
            "other_clinics": self.other_clinics,
            "unreadable": self.unreadable,
            "refused": self.refused,
            "keys_written": self.keys_written,
            "not_rebuilt": dict(sorted(self.not_rebuilt.items())),
        }


async def rebuild(
    replay: Replay,
    bootstrap: str,
    target: Redis,
    *,
    clinic: str | None = None,
    force: bool = False,
    follow: bool = False,
    security: Mapping[str, Any] | None = None,
) -> Counts:
    """Replay `replay`'s topics into `target`; what was read and written."""
    before = await _keys(target, clinic)
    if before and not force:
        scope = f"clinic {clinic}'s keys" if clinic else "keys"
        raise TargetNotEmpty(f"the target Redis holds {before} {scope}; --force to write anyway")
    names = [topic.name for topic in replay.topics]
    ordered = in_kafka_order(bootstrap, names, follow=follow, security=security, required=True)
    counts = await replay_records(replay, ordered, clinic=clinic)
    counts.keys_written = await _keys(target, clinic) - before
    return counts


async def replay_records(
    replay: Replay, records: AsyncIterable[Any], *, clinic: str | None = None
) -> Counts:
    """Hand `records` (Kafka records, in the order read) to `replay`; what was read."""
    counts = Counts()
    async for record in records:
        counts.read[record.topic] += 1
        headers = dict(record.headers or ())
        if clinic is not None and headers.get(HEADER_CLINIC, b"").decode() != clinic:
            counts.other_clinics += 1
            continue
        topic = BY_NAME[record.topic]
        try:
            envelope = Envelope.from_headers(record.headers or ())
            if envelope.type != f"kap.{topic.name}":
                raise EnvelopeError(f"{envelope.type} on {topic.name}")
            event = topic.event.model_validate(json.loads(record.value or b""))
        except (EnvelopeError, ValidationError, ValueError):
            counts.unreadable += 1
            continue
        try:
            await replay.apply(topic, event, envelope, _kafka_time(record))
        except Rejected:
            counts.refused += 1
            continue
        counts.applied += 1
    await replay.finish()
    counts.not_rebuilt = dict(replay.gaps)
    return counts


def _kafka_time(record: Any) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


async def _keys(redis: Redis, clinic: str | None) -> int:
    """How many keys the target holds: all of them, or the clinic's (its hash tag)."""
    if clinic is None:
        return int(await redis.dbsize())
    return len([k async for k in redis.scan_iter(match=f"*{{{clinic}}}*", count=1000)])


# --- the services ---------------------------------------------------------------

COVERED = ("notifier", "intake", "scheduler")


def _settings(service: str) -> ServiceSettings:
    """The service's own settings class: its Kafka, clinics and Redis mode as it reads them."""
    kinds: dict[str, type[ServiceSettings]] = {
        "notifier": NotifierSettings,
        "intake": IntakeSettings,
        "scheduler": SchedulerSettings,
    }
    return kinds[service]()


def _replay(
    service: str, redis: Redis, clinics: ClinicDirectory, settings: ServiceSettings
) -> Replay:
    if service == "intake":
        return IntakeReplay(redis)  # its facts alone: no clinic configuration is read
    if service == "scheduler":
        return SchedulerReplay(redis, clinics)
    assert isinstance(settings, NotifierSettings)
    return NotifierReplay(redis, clinics, settings)


async def rebuild_service(
    service: str,
    redis_url: str,
    *,
    clinic: str | None = None,
    force: bool = False,
    follow: bool = False,
) -> Counts:
    """Rebuild `service`'s Redis at `redis_url` with the service's own settings (its
    Kafka, clinics and Redis mode, from the environment as the service reads them)."""
    if service not in COVERED:
        raise NotImplementedError(f"no rebuild for {service} yet (covered: {', '.join(COVERED)})")
    settings = _settings(service)
    redis = connect_redis(redis_url, settings.redis_mode)
    stopping = asyncio.Event()
    clinics, reading = await _clinics(settings, stopping)
    try:
        return await rebuild(
            _replay(service, redis, clinics, settings),
            settings.kafka_bootstrap_servers,
            redis,
            clinic=clinic,
            force=force,
            follow=follow,
            security=client_options(settings),
        )
    finally:
        stopping.set()
        if reading is not None:
            await reading
        await redis.aclose()


async def _clinics(
    settings: ServiceSettings, stopping: asyncio.Event
) -> tuple[ClinicDirectory, asyncio.Task[None] | None]:
    """The clinics as the service would see them: the file, or the registry read to its end."""
    if settings.clinics_source != "topic":
        return ClinicDirectory(settings.clinics_file), None
    view = ClinicRegistryView(
        settings.kafka_bootstrap_servers,
        settings.clinics_topic,
        security=client_options(settings),
        wait_for_topic=False,
    )
    reading = asyncio.create_task(view.run(stopping))
    await view.wait_caught_up(60)
    return view, reading
