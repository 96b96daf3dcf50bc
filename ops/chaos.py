"""`make chaos`: the lifecycle under load while processes die and the broker and Redis restart.

Two replicas of each service (the webhook service's among them, delivering to a
partner's receiver subscribed to two clinics) run the demo's journeys; meanwhile service
processes are SIGKILLed at random moments (and started again), Kafka is
restarted once and Redis once (AOF on). Then the system drains and the auditor
(ops/audit.py) checks the outcome from the topics, the mailbox and the SMS log
alone. The last line printed is `CHAOS {json}`; the exit code is 0 only if the
auditor found nothing (mail resends are reported apart) and no booster was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from chassis.clock import ScaledClock
from chassis.config import ServiceSettings
from chassis.redis_client import connect_redis
from ops import audit, demo, demo_clinics, demo_webhooks
from ops.stack import ROOT, SERVICES, Process, Stack
from shared import topics


@dataclass
class Faults:
    kills: int = 0
    broker_restarts: int = 0
    redis_restarts: int = 0


def restart_infra(script: str) -> None:
    for action in ("down", "up"):
        subprocess.run(  # noqa: S603 - the project's own scripts, bash from PATH
            ["bash", str(ROOT / "infra" / script), action],  # noqa: S607 - bash from PATH
            check=True,
            capture_output=True,
            timeout=180,
        )


async def kill_and_restart(stack: Stack, rng: random.Random) -> str:
    victims = [p for p in stack.processes if p.name.split("-")[0] in stack.services]
    victim = rng.choice(victims)
    victim.signal(signal.SIGKILL)
    if victim.popen is not None:
        await asyncio.to_thread(victim.popen.wait, 10)
    await asyncio.sleep(rng.uniform(0.5, 2.0))
    reborn = Process(victim.name, victim.argv, victim.env, victim.log_path, victim.http_port)
    stack.processes[stack.processes.index(victim)] = reborn
    reborn.start()
    await asyncio.to_thread(reborn.wait_ready, 120)
    return victim.name


async def inflict(
    stack: Stack,
    faults: Faults,
    rng: random.Random,
    duration_s: float,
    min_kills: int,
    infra: bool,
    done: asyncio.Event,
) -> None:
    started = time.monotonic()
    broker_at, redis_at = duration_s * 0.3, duration_s * 0.6
    while time.monotonic() - started < duration_s or faults.kills < min_kills:
        elapsed = time.monotonic() - started
        if infra and not faults.broker_restarts and elapsed > broker_at:
            print("chaos: restarting Kafka", flush=True)
            await asyncio.to_thread(restart_infra, "kafka.sh")
            faults.broker_restarts += 1
        elif infra and not faults.redis_restarts and elapsed > redis_at:
            print("chaos: restarting Redis", flush=True)
            await asyncio.to_thread(restart_infra, "redis.sh")
            faults.redis_restarts += 1
        else:
            name = await kill_and_restart(stack, rng)
            faults.kills += 1
            print(f"chaos: SIGKILLed {name} (kill {faults.kills}), started it again", flush=True)
        await asyncio.sleep(rng.uniform(2.0, 6.0))
        if done.is_set() and faults.kills >= min_kills and (not infra or faults.redis_restarts):
            return


def boosters_missed(journal: audit.Journal, now: datetime) -> int:
    """Courses whose first booster fell due two days ago or more and was never announced."""
    announced = {(r.key, r.value["course_id"]) for r in journal.of(topics.BOOSTER_DUE.name)}
    missed = 0
    for record in journal.of(topics.BOOSTER_PLAN_SET.name):
        first = record.value.get("first_due_at")
        if first and datetime.fromisoformat(first) < now - timedelta(days=2):
            missed += (record.key, record.value["course_id"]) not in announced
    return missed


async def leases_let_go(redis: Redis, wait_s: float = 90.0) -> None:
    """Until no delivery is leased (at most `wait_s`): a notifier killed between a mail's
    hand-over and its sent fact leaves the message leased until the lease runs out (60 s),
    then another replica sends it again and records it. Only when to stop waiting comes
    from Redis; what is counted still comes from the topics and the mailbox."""
    deadline = time.monotonic() + wait_s
    keys = [f"notifier:{{{clinic}}}:leased" for clinic in demo_clinics.CLINICS]
    while time.monotonic() < deadline:
        if not sum([await redis.zcard(key) for key in keys]):
            return
        await asyncio.sleep(1.0)


async def run(args: argparse.Namespace, stack: Stack, clock: ScaledClock) -> dict[str, Any]:
    # A partner subscribed to two clinics over the webhook replicas being killed too.
    clinics = sorted(demo_clinics.CLINICS)[:2]
    partner = await demo_webhooks.subscribe(
        stack.url("webhooks"), clinics, args.kafka, stack.workdir
    )
    try:
        return await _run(args, stack, clock, partner)
    finally:
        partner.stop()


async def _run(
    args: argparse.Namespace, stack: Stack, clock: ScaledClock, partner: demo_webhooks.Partner
) -> dict[str, Any]:
    rng = random.Random(args.seed)  # noqa: S311 - reproducible chaos, not secrets
    tally = demo.Tally()
    staff = demo.Staff(stack.replica_urls(), clock, tally)
    crowd = demo.people(args.people, args.seed, stack.workdir.name)
    faults, done = Faults(), asyncio.Event()
    until = clock.now() + timedelta(days=80)

    async def load() -> None:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(staff.journey(p, until) for p in crowd)), args.timeout
            )
        finally:
            done.set()

    await asyncio.gather(
        load(), inflict(stack, faults, rng, args.duration, args.min_kills, not args.no_infra, done)
    )
    await staff.http.aclose()
    await demo.settle(args.kafka, tally, quiet_s=5, wait_s=60)
    redis = connect_redis(args.redis, ServiceSettings().redis_mode)
    try:
        await leases_let_go(redis)
        journal = await audit.read_journal(args.kafka, tally.clients)
        double = await audit.double_bookings(redis, demo_clinics.CLINICS)
    finally:
        await redis.aclose()
    findings = demo.audit_of(stack, tally, journal)
    summary = demo.report(stack, tally, journal, double, 0.0, findings)
    return {
        "kills": faults.kills,
        "broker_restarts": faults.broker_restarts,
        "redis_restarts": faults.redis_restarts,
        "requests_accepted": tally.accepted,
        "clients": summary["clients"],
        "courses_completed": summary["courses_completed"],
        "boosters_due": summary["boosters_due"],
        "notifications_sent": summary["notifications_sent"],
        **audit.summary_of(findings),
        "ledger_double_bookings_second_opinion": double,
        "boosters_missed": boosters_missed(journal, clock.now()),
        **await demo_webhooks.counts(partner, args.kafka),
    }


def passed(result: dict[str, Any], min_kills: int) -> bool:
    zero = (
        *audit.FAILING,
        "ledger_double_bookings_second_opinion",
        "boosters_missed",
        *demo.WEBHOOK_FAILING,
    )
    return (
        result["kills"] >= min_kills
        and result["webhooks_delivered"] > 0
        and all(result[name] == 0 for name in zero)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=24)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--duration", type=float, default=120, help="seconds of faults")
    parser.add_argument("--min-kills", type=int, default=10)
    parser.add_argument("--no-infra", action="store_true", help="kill services only")
    parser.add_argument("--day-seconds", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=420)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".infra" / "chaos")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    workdir = args.workdir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    asyncio.run(demo_clinics.reset(args.redis))
    anchor, scale = datetime.now(UTC), 86400 / args.day_seconds
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": args.kafka,
        "REDIS_URL": args.redis,
        "KAP_CLINICS_FILE": str(demo_clinics.write(workdir / "clinics.json")),
        "KAP_CLOCK_SCALE": str(scale),
        "KAP_CLOCK_ORIGIN": demo.ORIGIN.isoformat(),
        "KAP_CLOCK_ANCHOR": anchor.isoformat(),
        # What a SIGKILLed writer recorded but did not publish goes out after this: at two
        # real seconds a clinic day, the production 30 s would be two weeks of clinic time.
        "KAP_RELAY_GRACE_MS": "2000",
        "KAP_ADMIN_API_KEY_SHA256": hashlib.sha256(demo_webhooks.ADMIN_KEY.encode()).hexdigest(),
        "KAP_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    }
    clock = ScaledClock(origin=demo.ORIGIN, anchor=anchor, scale=scale)
    stack = Stack(workdir=workdir, env=env, replicas=2, services=(*SERVICES, "webhooks"))
    print(
        f"chaos: 2 replicas per service, {args.people} people; logs in {workdir}/logs", flush=True
    )
    with stack.running():
        result = asyncio.run(run(args, stack, clock))
    print("CHAOS " + json.dumps(result, sort_keys=True), flush=True)
    return 0 if passed(result, args.min_kills) else 1


if __name__ == "__main__":
    sys.exit(main())
