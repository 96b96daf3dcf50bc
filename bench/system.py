"""The system under load: the three services as processes, measured from outside.

What counts is read where it is true: events consumed are the services'
committed offsets (a service commits only after the event's effect is done),
mails are `NotificationSent` events (published after the SMTP server accepted
the mail), CPU is the service processes' own user+system time, and dead
letters are checked to stay at zero (a fast run that dead-letters is no run).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.raw import send_all
from bench.workload import Message
from ops.operations import SERVICE_GROUPS, group_lags
from ops.reading import read_to_end
from ops.stack import Stack
from shared import topics
from shared.envelope import HEADER_CLINIC, HEADER_CORRELATION

SENT = topics.NOTIFICATION_SENT.name
DEAD_LETTERS = tuple(t.dead_letters for t in topics.ALL)
QUIET_S = 1.0  # nothing moved for this long, and no lag: the run is over
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of the processes `pids` (from /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def service_pids(stack: Stack) -> list[int]:
    return [
        p.popen.pid
        for p in stack.processes
        if p.http_port is not None and p.popen is not None and p.alive
    ]


@dataclass
class Probe:
    """Offsets of the services' groups and of the topics that show effects."""

    bootstrap: str
    admin: AIOKafkaAdminClient = field(init=False)
    consumer: AIOKafkaConsumer = field(init=False)

    async def start(self) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await asyncio.gather(self.admin.start(), self.consumer.start())

    async def stop(self) -> None:
        await asyncio.gather(self.admin.close(), self.consumer.stop())

    async def ends(self, names: Iterable[str]) -> dict[TopicPartition, int]:
        partitions = [
            TopicPartition(name, p)
            for name in names
            for p in self.consumer.partitions_for_topic(name) or ()
        ]
        return dict(await self.consumer.end_offsets(partitions)) if partitions else {}

    async def lag_and_consumed(self) -> tuple[int, int]:
        """Events not yet handled by a service, and all events the services handled."""
        lags = await group_lags(self.admin, self.consumer, SERVICE_GROUPS)
        return sum(lag.behind for lag in lags), sum(lag.committed for lag in lags)

    async def total(self, names: Iterable[str]) -> int:
        return sum((await self.ends(names)).values())

    async def refresh(self) -> None:
        await self.consumer._client.force_metadata_update()


async def drain(
    probe: Probe, stack: Stack, kafka: AIOKafkaProducer, messages: Sequence[Message]
) -> dict[str, Any]:
    """Send `messages` at once and measure until every service has handled all that follows."""
    await probe.refresh()
    _, consumed_before = await probe.lag_and_consumed()
    sent_before, dead_before = await probe.total([SENT]), await probe.ends(DEAD_LETTERS)
    pids = service_pids(stack)
    cpu_before = cpu_seconds(pids)
    started = time.time()
    await send_all(kafka, messages)
    state: tuple[int, int, int] | None = None
    changed_at, cpu_at_change = started, cpu_before
    while True:
        lag, consumed = await probe.lag_and_consumed()
        now = (lag, consumed, await probe.total([SENT]))
        if now != state:
            state, changed_at, cpu_at_change = now, time.time(), cpu_seconds(pids)
        elif lag == 0 and time.time() - changed_at >= QUIET_S:
            break
        if time.time() - started > 600:
            raise RuntimeError("the system did not drain in 10 minutes")
        await asyncio.sleep(0.05)
    seconds = changed_at - started
    events = state[1] - consumed_before
    # Only this run's clinics: a shared broker may hold others' backlog (tests, demos).
    clinics = {m.clinic_id for m in messages}
    dead = [
        r
        for r in await read_to_end(probe.bootstrap, DEAD_LETTERS, since=dead_before)
        if dict(r.headers).get(HEADER_CLINIC, b"").decode() in clinics
    ]
    if dead:
        raise RuntimeError(f"{len(dead)} events were dead-lettered: see kapctl dlq list")
    return {
        "inputs": len(messages),
        "events": events,
        "mails": state[2] - sent_before,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "inputs_per_s": len(messages) / seconds,
        "cpu_s_per_1k": (cpu_at_change - cpu_before) / events * 1000,
    }


async def open_loop(
    probe: Probe,
    kafka: AIOKafkaProducer,
    messages: Sequence[Message],
    rate_per_s: float,
) -> dict[str, Any]:
    """Send at a fixed rate whatever happens; latency from the planned send time to the mail.

    The latency of a consultation request is the time until its confirmation
    mail was accepted (the first `NotificationSent` of its journey). Measured
    from when the generator was due to send, so a stalled system is not
    excused by a stalled generator (no coordinated omission).
    """
    await probe.refresh()
    start_offsets = await probe.ends([SENT])
    due_at: dict[str, float] = {}
    started = time.time() + 0.2
    pending = []
    for n, msg in enumerate(messages):
        planned = started + n / rate_per_s
        await asyncio.sleep(max(planned - time.time(), 0))
        if msg.topic == topics.CONSULTATION_REQUESTED.name:
            due_at[msg.correlation_id] = planned
        pending.append(await kafka.send(msg.topic, msg.value, key=msg.key, headers=msg.headers))
    await asyncio.gather(*pending)
    sent_for = await mails_by_journey(probe, start_offsets, set(due_at), time.time() + 60)
    latencies = sorted((sent_for[c] - due_at[c]) * 1000 for c in due_at if c in sent_for)
    if len(latencies) < len(due_at):
        raise RuntimeError(f"{len(due_at) - len(latencies)} requests got no confirmation mail")
    return {
        "rate_per_s": rate_per_s,
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
    }


async def mails_by_journey(
    probe: Probe, since: dict[TopicPartition, int], journeys: set[str], deadline: float
) -> dict[str, float]:
    """When each journey's first mail was sent (the outcome event's timestamp), until all are."""
    first: dict[str, float] = {}
    offsets = dict(since)
    while time.time() < deadline and not journeys <= first.keys():
        for record in await read_to_end(probe.bootstrap, [SENT], since=offsets):
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            journey = dict(record.headers).get(HEADER_CORRELATION, b"").decode()
            if journey in journeys:
                first[journey] = min(first.get(journey, float("inf")), record.timestamp / 1000)
        await asyncio.sleep(0.2)
    return first


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    rank = max(int(len(ordered) * share + 0.999999) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]
