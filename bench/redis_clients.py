"""Redis bytes and keys per client, over the clinics' keys (issue 18's measure).

    python -m bench --case redis-per-client [--crowd 10] [--ports 19800]
    python -m bench.redis_clients --redis redis://127.0.0.1:6379/0 --clinic lisbon ...

The bench case (`measure`) runs the whole system on a scaled clock and drives a small
crowd through the demo's journeys (ops.demo: requests, screening, a course with its
pauses, withdrawals, missed doses and a returning client, measure links answered, the
first booster) at the demo's clinics under ids of this run only (`lisbon-<run>`, ...):
every key with their hash tags is then this run's, none left by an earlier run or
caught up on at start from events of the demo's own clinics. Once the notifier is
quiet (the demo's `settle`), the footprint is divided by the run's clients.

Every key of a clinic carries its `{clinic_id}` hash tag, so one SCAN pattern finds all
of them, whichever service wrote them; each key's bytes are Redis's own `MEMORY USAGE`
(key, value and overhead). Per client is the clinics' whole footprint (clinic-wide keys
such as calendars and booking sets included) over the clients they hold: those with a
scheduler schedule or an intake record. Taken after the clients' courses ended, it is
what Redis keeps per client beyond what the services still act on. Families (ids
replaced by `<id>`) show where the bytes are.

Two figures, both right after the courses ended: `redis_bytes_per_client` counts every
key; `redis_bytes_per_client_30d` only the keys still there 30 days on without any
further step (no TTL, or a TTL beyond `LATER`): what a client costs once the short-lived
records (handled marks, finished messages, idempotency answers) expired, the size a
clinic group's Redis grows by with clients long past their course. The bench runs on a
scaled clock, but Redis counts TTLs in real seconds, so a key's TTL here is still close
to the whole of what it was given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from chassis.clock import ScaledClock
from ops import demo, demo_clinics
from ops.stack import Stack

LATER = timedelta(days=30)  # the `_30d` figure: keys whose TTL outlasts this
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32,}")
_CLIENT = re.compile(r"^(?:sched|intake):\{[^}]+\}:client:([0-9a-f-]{36})$")


def family(key: str) -> str:
    return _ID.sub("<id>", re.sub(r"\{[^}]+\}", "{c}", key))


async def footprint(
    redis: Redis, clinic_ids: Iterable[str], clients_count: int | None = None
) -> dict[str, Any]:
    """Bytes and keys per client of `clinic_ids`, and the biggest key families; per
    client over `clients_count` when given (a run that knows its clients), else over the
    clients the keys show."""
    clients: set[str] = set()
    total_bytes, total_keys, kept_bytes, kept_keys = 0, 0, 0, 0
    families: Counter[str] = Counter()
    family_keys: Counter[str] = Counter()
    later_ms = LATER.total_seconds() * 1000
    for clinic_id in clinic_ids:
        async for raw in redis.scan_iter(match=f"*{{{clinic_id}}}*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            size = int(await redis.memory_usage(key) or 0)
            ttl_ms = int(await redis.pttl(key))
            total_bytes, total_keys = total_bytes + size, total_keys + 1
            if ttl_ms == -1 or ttl_ms > later_ms:  # -1: no TTL (-2: gone meanwhile)
                kept_bytes, kept_keys = kept_bytes + size, kept_keys + 1
            families[family(key)] += size
            family_keys[family(key)] += 1
            found = _CLIENT.match(key)
            if found:
                clients.add(f"{clinic_id}/{found.group(1)}")
    per = max(clients_count if clients_count is not None else len(clients), 1)
    return {
        "clients": per,
        "clients_in_redis": len(clients),
        "redis_bytes": total_bytes,
        "redis_keys": total_keys,
        "redis_bytes_per_client": round(total_bytes / per),
        "redis_keys_per_client": round(total_keys / per, 1),
        "redis_bytes_per_client_30d": round(kept_bytes / per),
        "redis_keys_per_client_30d": round(kept_keys / per, 1),
        "families": {
            name: {"bytes": size, "keys": family_keys[name]}
            for name, size in families.most_common(16)
        },
    }


async def measure(
    bootstrap: str,
    redis_url: str,
    workdir: Path,
    *,
    crowd: int = 10,
    day_seconds: float = 0.5,
    seed: int = 11,
    ports: list[int] | None = None,
) -> dict[str, Any]:
    """A crowd of `crowd` people through whole courses on this run's clinics (a clinic
    day every `day_seconds`), then Redis per client; `ports`: 11 for the stack, if set."""
    run = uuid.uuid4().hex[:6]
    clinics = demo_clinics.for_run(run)
    anchor = datetime.now(UTC)
    scale = 86400 / day_seconds
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "KAP_CLINICS_FILE": str(demo_clinics.write(workdir / "clinics.json", clinics)),
        "KAP_CLOCK_SCALE": str(scale),
        "KAP_CLOCK_ORIGIN": demo.ORIGIN.isoformat(),
        "KAP_CLOCK_ANCHOR": anchor.isoformat(),
    }
    clock = ScaledClock(origin=demo.ORIGIN, anchor=anchor, scale=scale)
    fixed: dict[str, Any] = {}
    if ports:
        fixed = {"smtp_port": ports[0], "sms_port": ports[1], "public_port": ports[2]}
        fixed["ports"] = list(ports[3:])
    stack = Stack(workdir=workdir, env=env, **fixed)
    people = demo.people(crowd, seed, run, clinics)
    started = time.monotonic()
    with stack.running():
        tally = await journeys(stack, clock, people)
        await demo.settle(bootstrap, tally)
        redis = Redis.from_url(redis_url)
        try:
            figures = await footprint(redis, clinics, len(tally.clients))
        finally:
            await redis.aclose()
    await demo_clinics.reset(redis_url, clinics)  # measured: the run's keys go
    completed = sum(n["completed"] for n in tally.progress.values())
    boosters = sum(n["booster"] for n in tally.progress.values())
    return {
        **figures,
        "run": run,
        "clinics": list(clinics),
        "courses_completed": completed,
        "boosters_reached": boosters,
        "day_seconds": day_seconds,
        "seconds": round(time.monotonic() - started, 1),
    }


async def journeys(stack: Stack, clock: ScaledClock, crowd: list[demo.Person]) -> demo.Tally:
    """The demo's journeys for `crowd`, each to its first booster, with the clients
    answering the measure links their mail and texts bring (as in `make demo`)."""
    tally = demo.Tally()
    staff = demo.Staff(stack.replica_urls(), clock, tally)
    stop = asyncio.Event()
    answers = asyncio.create_task(demo.answering(stack, crowd, staff).loop(stop))
    try:
        until = clock.now() + timedelta(days=80)
        await asyncio.wait_for(
            asyncio.gather(*(staff.journey(p, until) for p in crowd)), timeout=240
        )
    finally:
        stop.set()
        await answers
        await staff.http.aclose()
    return tally


async def _main(url: str, clinic_ids: list[str]) -> dict[str, Any]:
    redis = Redis.from_url(url)
    try:
        return await footprint(redis, clinic_ids)
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--clinic", action="append", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_main(args.redis, args.clinic)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
