"""Clinics as records on a compacted topic: checked whole before they are written, and
read back whole by every service.

Writing (`write_clinic`): an entry is checked with what the services check when they
use it (the common fields here; each service's section by that service's own check,
handed in by the caller, since chassis imports no service) and refused naming the
field (`ClinicRefused`); only then is it written, acks=all, first as its audit copy
(`clinics.changes.v1`, kept for years) and then to the registry (compacted on the
clinic id). The two writes are not one transaction: a failure between them leaves an
audit record of a change the registry never took (same `record_id`), never a change
without its audit record; the writer is told it failed, and its retry writes both.

Reading (`ClinicRegistryView`): each service reads the whole registry from the start
with every partition assigned (no consumer group: every replica needs every clinic)
and keeps the last record per clinic. That is configuration held in process memory,
which the services otherwise never keep between messages: it is a read-only cache,
rebuilt from the topic by every process at start, never a source of truth, so losing
it loses nothing. Until it has read up to the end offsets it found at start, the
service is not ready, and lookups raise `ConfigurationError` (messages wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from chassis.clinics import Clinic, ClinicDirectory, ConfigurationError
from chassis.metrics import ServiceMetrics
from shared.events import ClinicConfigured
from shared.topics import CLINIC_CHANGES, CLINIC_REGISTRY

log = logging.getLogger(__name__)

SectionCheck = Callable[[Clinic], None]
"""A service's check of its own section of a clinic: raises ValidationError or ValueError
(a ClinicRefused to name the field itself)."""

Send = Callable[[str, bytes, bytes], Awaitable[None]]
"""Writes (topic, key, value) and returns once every in-sync replica has it (acks=all)."""


class ClinicRefused(ValueError):
    """A clinic configuration that would not load: nothing was written."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        where = "; ".join(f"{'.'.join(map(str, loc)) or '<entry>'}: {msg}" for loc, msg in problems)
        super().__init__(f"clinic refused: {where}")

    @property
    def field(self) -> str:
        """The first field refused, dotted (e.g. `scheduler.policy.course_window_days`)."""
        return ".".join(map(str, self.problems[0][0]))

    @classmethod
    def of(cls, error: ValidationError, *prefix: str | int) -> ClinicRefused:
        return cls([((*prefix, *e["loc"]), e["msg"]) for e in error.errors()[:10]])


def checked_clinic(entry: Mapping[str, Any], checks: Mapping[str, SectionCheck]) -> Clinic:
    """The clinic of `entry` if every service would use it; ClinicRefused otherwise."""
    try:
        clinic = Clinic.model_validate(entry)
    except ValidationError as error:
        raise ClinicRefused.of(error) from error
    for name, check in checks.items():
        # `Clinic.section` reads a section that is not an object as empty, so a typo
        # there would silently give a clinic the defaults: refused here instead.
        if name in entry and not isinstance(entry[name], dict):
            raise ClinicRefused([((name,), "must be an object")])
        try:
            check(clinic)
        except ClinicRefused:
            raise
        except ValidationError as error:
            raise ClinicRefused.of(error, name) from error
        except ValueError as error:
            raise ClinicRefused([((name,), str(error))]) from error
    return clinic


async def write_clinic(
    send: Send,
    entry: Mapping[str, Any],
    checks: Mapping[str, SectionCheck],
    changed_by: str,
    *,
    registry: str = CLINIC_REGISTRY.name,
    retired: bool = False,
    now: datetime | None = None,
) -> ClinicConfigured:
    """Check `entry` and write it to the registry (its audit copy first); or refuse it.

    A retirement (`retired`) is written without checks: it only needs the clinic id.
    """
    if retired:
        clinic_id = str(entry.get("id", ""))
        config: dict[str, Any] = {"id": clinic_id}
    else:
        clinic_id = checked_clinic(entry, checks).id
        config = dict(entry)
    record = ClinicConfigured(
        record_id=uuid.uuid4(),
        clinic_id=clinic_id,
        config=config,
        retired=retired,
        changed_by=changed_by,
        changed_at=now or datetime.now(UTC),
    )
    value, key = record.model_dump_json().encode(), clinic_id.encode()
    await send(CLINIC_CHANGES.name, key, value)
    await send(registry, key, value)
    log.info("clinic %s %s by %s", clinic_id, "retired" if retired else "configured", changed_by)
    return record


@contextlib.asynccontextmanager
async def registry_producer(
    bootstrap: str, security: Mapping[str, Any] | None = None
) -> AsyncIterator[Send]:
    """A producer for operator tools (kapctl): idempotent, acks=all."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **(security or {})
    )
    await producer.start()

    async def send(topic: str, key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, value, key=key)

    try:
        yield send
    finally:
        await producer.stop()


def latest_records(records: list[Any]) -> dict[str, ClinicConfigured]:
    """The last readable record per clinic id, in offset order (what compaction keeps)."""
    latest: dict[str, ClinicConfigured] = {}
    for record in records:
        if record.value is None:  # a tombstone (not written here, but honoured)
            latest.pop(record.key.decode(), None)
            continue
        try:
            found = ClinicConfigured.model_validate_json(record.value)
        except ValidationError:
            log.error("clinic registry record at offset %s is unreadable; skipped", record.offset)
            continue
        latest[found.clinic_id] = found
    return latest


async def read_registry(
    bootstrap: str, registry: str = CLINIC_REGISTRY.name, security: Mapping[str, Any] | None = None
) -> dict[str, ClinicConfigured]:
    """The registry as a fresh reader rebuilds it now: the last record per clinic."""
    view = ClinicRegistryView(bootstrap, registry, security=security, wait_for_topic=False)
    task = asyncio.create_task(view.run(asyncio.Event()))
    try:
        caught_up = asyncio.create_task(view.wait_caught_up(60))
        await asyncio.wait([task, caught_up], return_when=asyncio.FIRST_COMPLETED)
        if not caught_up.done():
            caught_up.cancel()
            task.result()  # the reader failed: its error, not a minute's wait
        await caught_up
        return dict(view.records)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class ClinicRegistryView(ClinicDirectory):
    """The clinic catalogue built from the registry topic.

    A `ClinicDirectory` (what every service is handed) whose clinics come from the
    topic instead of a file. A record that does not load as a clinic (written by
    something that skipped the checks) is a configuration error: logged, counted,
    and the clinic's last good record keeps serving.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = CLINIC_REGISTRY.name,
        *,
        security: Mapping[str, Any] | None = None,
        metrics: ServiceMetrics | None = None,
        wait_for_topic: bool = True,
    ) -> None:
        super().__init__(Path(f"kafka:{topic}"), metrics=metrics)
        # A service waits for its registry topic (created at its start); a one-off
        # reader (kapctl) is told at once that it is missing.
        self._wait_for_topic = wait_for_topic
        self._bootstrap, self._topic = bootstrap, topic
        self._security = dict(security or {})  # chassis.kafka.client_options(settings)
        self._by_id: dict[str, Clinic] = {}
        self.records: dict[str, ClinicConfigured] = {}
        self._caught_up = asyncio.Event()

    @property
    def caught_up(self) -> bool:
        """Everything on the topic when this process started has been read."""
        return self._caught_up.is_set()

    async def wait_caught_up(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._caught_up.wait(), timeout_s)

    def _refresh(self) -> None:
        if not self.caught_up:
            raise ConfigurationError(f"clinic registry {self._topic} not read up to its end yet")
        self._clinics = self._by_id

    def all(self) -> list[Clinic]:
        # Background loops walk every clinic; before the registry is read they find
        # none (and so no work) rather than fail and back off for up to 30 s.
        return list(self._by_id.values()) if self.caught_up else []

    async def run(self, stopping: asyncio.Event) -> None:
        """Read the registry from its start and follow it (a supervised background loop)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, **self._security
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer, stopping)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            # Every restart of the loop reads from the start again: the view is rebuilt,
            # never patched, so it cannot keep a record the topic no longer has.
            ends = await consumer.end_offsets(partitions)
            fresh: dict[str, ClinicConfigured] = {}
            while not stopping.is_set():
                batches = await consumer.getmany(*partitions, timeout_ms=500)
                for records in batches.values():
                    for clinic_id, record in latest_records(records).items():
                        fresh[clinic_id] = record
                        self._apply(record)
                if not self.caught_up:
                    positions = [await consumer.position(tp) for tp in partitions]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                        self.records = fresh
                        self._caught_up.set()
                        log.info("clinic registry %s read: %d clinic(s)", self._topic, len(fresh))
                else:
                    self.records = fresh
        finally:
            await consumer.stop()

    async def _partitions(
        self, consumer: AIOKafkaConsumer, stopping: asyncio.Event
    ) -> list[TopicPartition]:
        while not stopping.is_set():
            await consumer._client.force_metadata_update()
            found = consumer.partitions_for_topic(self._topic)
            if found:
                return [TopicPartition(self._topic, p) for p in sorted(found)]
            if not self._wait_for_topic:
                raise LookupError(f"no topic {self._topic} (kapctl topics apply creates it)")
            await asyncio.sleep(0.5)  # created by apply_topics at start; not yet visible
        return []

    def _apply(self, record: ClinicConfigured) -> None:
        if record.retired:
            self._by_id.pop(record.clinic_id, None)
            return
        try:
            clinic = Clinic.model_validate(record.config)
        except ValidationError as error:
            if self._metrics is not None:
                self._metrics.configuration_error("clinics")
            kept = "its last good record keeps serving" if record.clinic_id in self._by_id else ""
            log.error(
                "clinic registry record %s for %s is unusable (%d error(s)); %s",
                record.record_id,
                record.clinic_id,
                error.error_count(),
                kept or "the clinic is unknown",
            )
            return
        # Copy on write: a lookup in progress keeps the catalogue it started with.
        self._by_id = {**self._by_id, clinic.id: clinic}
