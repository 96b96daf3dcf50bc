"""The system under load: the three services as processes, measured from outside.

What counts is read where it is true:
- consumptions are the services' committed offsets, per consumer group (a
  service commits only after the event's effect is done). The scheduler and
  the notifier consume; intake only publishes (it has no consumer group), so
  it has no consumptions of its own.
- a client request is a `ConsultationRequested` input of the workload, and it
  is completed end to end when the `NotificationSent` telling the client its
  outcome is on its topic (published after the SMTP server accepted the mail),
  with the request's correlation id: `consultation_booked` (the two-hop path:
  request -> `ConsultationBooked` -> confirmation mail), or
  `consultation_waitlisted` / `consultation_slot_unavailable` when no slot fitted.
  The acknowledgement mail (`consultation_request_received`) is the one-hop path.
- CPU is user+system time: of the service processes (/proc) and of the Redis
  server (INFO cpu, the whole server: work moved into Lua scripts counts, and so
  does anyone else using that Redis meanwhile). Kafka's JVM (found by the
  bootstrap port's listening socket, when it is a process this user can see)
  and the SMTP and SMS sinks are listed apart, not in `cpu_s_per_1k`.
- dead letters are checked to stay at zero (a fast run that dead-letters is no run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from bench.lean import redis_cpu
from bench.raw import send_all
from bench.workload import Message
from ops.operations import SERVICE_GROUPS, group_lags
from ops.reading import read_to_end
from ops.stack import Stack
from shared import topics
from shared.envelope import HEADER_CLINIC, HEADER_CORRELATION

SENT = topics.NOTIFICATION_SENT.name
REQUESTED = topics.CONSULTATION_REQUESTED.name
DEAD_LETTERS = tuple(t.dead_letters for t in topics.ALL)
QUIET_S = 1.0  # nothing moved for this long, and no lag: the run is over
TICKS = os.sysconf("SC_CLK_TCK")
ACKNOWLEDGED = "consultation_request_received"  # the one-hop path's mail
BOOKED = "consultation_booked"  # the two-hop path's mail
# The mail that ends a request's journey: its outcome, booked or not.
OUTCOMES = frozenset({BOOKED, "consultation_waitlisted", "consultation_slot_unavailable"})
SINKS = ("smtp", "sms")


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


def sink_pids(stack: Stack) -> dict[str, int]:
    return {
        p.name: p.popen.pid
        for p in stack.processes
        if p.name in SINKS and p.popen is not None and p.alive
    }


def listening_pid(port: int) -> int | None:
    """The process listening on TCP `port` on this machine, if this user may see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(f"socket:[{cols[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")) if inodes else ():
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
    return None


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far, by part."""

    services: float
    redis: float
    sinks: dict[str, float]
    kafka: float | None

    def minus(self, before: Cpu) -> dict[str, Any]:
        return {
            "services": self.services - before.services,
            "redis": self.redis - before.redis,
            **{name: s - before.sinks.get(name, 0.0) for name, s in self.sinks.items()},
            "kafka": None
            if self.kafka is None or before.kafka is None
            else self.kafka - before.kafka,
        }


@dataclass
class Probe:
    """Offsets of the services' groups and of the topics that show effects; CPU meters."""

    bootstrap: str
    redis_url: str
    admin: AIOKafkaAdminClient = field(init=False)
    consumer: AIOKafkaConsumer = field(init=False)
    redis: Redis = field(init=False)
    kafka_pid: int | None = field(init=False, default=None)

    async def start(self) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        self.redis = Redis.from_url(self.redis_url)
        await asyncio.gather(self.admin.start(), self.consumer.start())
        host, _, port = self.bootstrap.split(",")[0].rpartition(":")
        if host in ("127.0.0.1", "localhost", "::1") and port.isdigit():
            self.kafka_pid = listening_pid(int(port))

    async def stop(self) -> None:
        await asyncio.gather(self.admin.close(), self.consumer.stop(), self.redis.aclose())

    async def cpu(self, stack: Stack) -> Cpu:
        kafka = None
        if self.kafka_pid is not None:
            with contextlib.suppress(OSError):
                kafka = cpu_seconds([self.kafka_pid])
        return Cpu(
            services=cpu_seconds(service_pids(stack)),
            redis=await redis_cpu(self.redis),
            sinks={name: cpu_seconds([pid]) for name, pid in sink_pids(stack).items()},
            kafka=kafka,
        )

    async def ends(self, names: Iterable[str]) -> dict[TopicPartition, int]:
        partitions = [
            TopicPartition(name, p)
            for name in names
            for p in self.consumer.partitions_for_topic(name) or ()
        ]
        return dict(await self.consumer.end_offsets(partitions)) if partitions else {}

    async def lag_and_consumed(self) -> tuple[int, dict[str, int]]:
        """Events not yet handled by a service, and the events each service handled."""
        lags = await group_lags(self.admin, self.consumer, SERVICE_GROUPS)
        consumed = dict.fromkeys(SERVICE_GROUPS, 0)
        for lag in lags:
            consumed[lag.group] += max(lag.committed, 0)
        return sum(lag.behind for lag in lags), consumed

    async def total(self, names: Iterable[str]) -> int:
        return sum((await self.ends(names)).values())

    async def refresh(self) -> None:
        await self.consumer._client.force_metadata_update()


def service_name(group: str) -> str:
    return group.removeprefix("kap-")


async def drain(
    probe: Probe, stack: Stack, kafka: AIOKafkaProducer, messages: Sequence[Message]
) -> dict[str, Any]:
    """Send `messages` at once and measure until every service has handled all that follows.

    The window runs from the first send to the last change seen (offsets
    committed, mails sent) before a quiet second with no lag. Requests
    completed are counted over the whole drain, so `requests_per_s` is
    completed requests over that window (the other events of the mix share it).
    """
    await probe.refresh()
    _, consumed_before = await probe.lag_and_consumed()
    sent_before, dead_before = await probe.ends([SENT]), await probe.ends(DEAD_LETTERS)
    cpu_before = await probe.cpu(stack)
    started = time.time()
    await send_all(kafka, messages)
    state: tuple[int, dict[str, int], int] | None = None
    changed_at, cpu_at_change = started, cpu_before
    while True:
        lag, consumed = await probe.lag_and_consumed()
        now = (lag, consumed, await probe.total([SENT]))
        if now != state:
            state, changed_at, cpu_at_change = now, time.time(), await probe.cpu(stack)
        elif lag == 0 and time.time() - changed_at >= QUIET_S:
            break
        if time.time() - started > 600:
            raise RuntimeError("the system did not drain in 10 minutes")
        await asyncio.sleep(0.05)
    seconds = changed_at - started
    by_service = {service_name(g): n - consumed_before[g] for g, n in state[1].items()}
    consumptions = sum(by_service.values())
    # Only this run's clinics: a shared broker may hold others' backlog (tests, demos).
    clinics = {m.clinic_id for m in messages}
    dead = [
        r
        for r in await read_to_end(probe.bootstrap, DEAD_LETTERS, since=dead_before)
        if dict(r.headers).get(HEADER_CLINIC, b"").decode() in clinics
    ]
    if dead:
        raise RuntimeError(f"{len(dead)} events were dead-lettered: see kapctl dlq list")
    requests = {m.correlation_id for m in messages if m.topic == REQUESTED}
    mails = await read_to_end(probe.bootstrap, [SENT], since=sent_before)
    completed = {c for c, kind, _ in map(mail_of, mails) if c in requests and kind in OUTCOMES}
    cpu = cpu_at_change.minus(cpu_before)
    return {
        "inputs": len(messages),
        "requests": len(requests),
        "requests_completed": len(completed),
        "events": consumptions,  # consumptions, all services
        "consumptions": by_service,
        "mails": state[2] - sum(sent_before.values()),
        "seconds": seconds,
        "inputs_per_s": len(messages) / seconds,
        "requests_per_s": len(completed) / seconds,
        "consumptions_per_s": consumptions / seconds,
        "consumptions_per_s_by_service": {s: n / seconds for s, n in by_service.items()},
        # The services and Redis, per 1,000 consumptions of all services.
        "cpu_s_per_1k": (cpu["services"] + cpu["redis"]) / consumptions * 1000,
        "cpu_s_per_1k_services_only": cpu["services"] / consumptions * 1000,
        # Listed apart, not in cpu_s_per_1k: Kafka (None: its process was not found) and
        # the sinks standing in for the SMTP server and the SMS provider.
        "cpu_s": cpu,
        "kafka_pid_found": probe.kafka_pid is not None,
    }


def mail_of(record: Any) -> tuple[str, str, float]:
    """A `NotificationSent` record's journey (correlation id), message kind and time (s)."""
    journey = dict(record.headers).get(HEADER_CORRELATION, b"").decode()
    kind = json.loads(record.value or b"{}").get("message_kind", "")
    return journey, kind, record.timestamp / 1000


async def open_loop(
    probe: Probe,
    kafka: AIOKafkaProducer,
    messages: Sequence[Message],
    rate_per_s: float,
) -> dict[str, Any]:
    """Send at a fixed rate whatever happens; latency from the planned send time to the mails.

    Each consultation request's clock starts at the instant the schedule meant
    to send it, not when it was sent, so a stalled system is not excused by a
    stalled generator (no coordinated omission). It stops at the Kafka timestamp
    of the request's `NotificationSent` (published once the SMTP server took the
    mail): the acknowledgement (`consultation_request_received`, one hop: planned
    straight from the request) and the confirmation (`consultation_booked`, two
    hops: request -> `ConsultationBooked` -> mail). Requests the scheduler could
    not book (waitlisted, no slot) have no two-hop sample; each request must get
    its acknowledgement and an outcome mail, or the run fails.
    """
    await probe.refresh()
    start_offsets = await probe.ends([SENT])
    due_at: dict[str, float] = {}
    started = time.time() + 0.2
    pending = []
    for n, msg in enumerate(messages):
        planned = started + n / rate_per_s
        await asyncio.sleep(max(planned - time.time(), 0))
        if msg.topic == REQUESTED:
            due_at[msg.correlation_id] = planned
        pending.append(await kafka.send(msg.topic, msg.value, key=msg.key, headers=msg.headers))
    await asyncio.gather(*pending)
    sent_at = time.time()
    mails = await mails_by_journey(probe, start_offsets, set(due_at), time.time() + 60)
    acked = mails.get(ACKNOWLEDGED, {})
    ended = {c for kind in OUTCOMES for c in mails.get(kind, {})}
    if len(acked) < len(due_at) or len(ended) < len(due_at):
        raise RuntimeError(
            f"of {len(due_at)} requests, {len(due_at) - len(acked)} got no acknowledgement "
            f"and {len(due_at) - len(ended)} no outcome mail"
        )
    one_hop = sorted((acked[c] - due_at[c]) * 1000 for c in due_at)
    booked = mails.get(BOOKED, {})
    two_hop = sorted((booked[c] - due_at[c]) * 1000 for c in due_at if c in booked)
    return {
        "rate_per_s": rate_per_s,
        "inputs": len(messages),
        "requests": len(due_at),
        "send_seconds": sent_at - started,
        "one_hop": summary(one_hop),
        "two_hop": summary(two_hop),
        "not_booked": len(due_at) - len(two_hop),
    }


def summary(latencies: Sequence[float]) -> dict[str, float]:
    return {
        "samples": len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
    }


async def mails_by_journey(
    probe: Probe, since: dict[TopicPartition, int], journeys: set[str], deadline: float
) -> dict[str, dict[str, float]]:
    """When each journey's first mail of each kind was sent (the outcome event's timestamp),
    until every journey has its acknowledgement and its outcome."""
    first: dict[str, dict[str, float]] = {}
    offsets = dict(since)

    def done() -> bool:
        ended = {c for kind in OUTCOMES for c in first.get(kind, {})}
        return journeys <= first.get(ACKNOWLEDGED, {}).keys() and journeys <= ended

    while time.time() < deadline and not done():
        for record in await read_to_end(probe.bootstrap, [SENT], since=offsets):
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            journey, kind, at = mail_of(record)
            if journey in journeys:
                of_kind = first.setdefault(kind, {})
                of_kind[journey] = min(of_kind.get(journey, float("inf")), at)
        await asyncio.sleep(0.2)
    return first


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    rank = max(int(len(ordered) * share + 0.999999) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]
