"""`make cluster-demo`: the demo on three Kafka brokers and a six-node Redis Cluster, while
one broker is killed and one Redis primary fails over.

Starts the local quorum (`KAFKA_NODES=3 infra/kafka.sh`: replication 3, min in-sync 2)
and the local Redis Cluster (`REDIS_CLUSTER=1 infra/redis.sh`: 3 primaries, 3 replicas)
unless they already run, and stops what it started. The services run with
`REDIS_MODE=cluster` and `KAP_TOPIC_REPLICATION_FACTOR=3`. While the demo's clinics work:
- a broker is SIGKILLed (no clean shutdown) and started again after a while;
- a Redis primary is shut down without saving (a crash): its replica is promoted by the
  cluster's vote, and the old node comes back as a replica.
The auditor then checks the run from the topics, the mailbox and the SMS log alone, as in
`make demo`; the last line is `DEMO {json}` with the same counts plus `kafka_brokers`,
`redis_nodes`, `broker_kills` and `redis_failovers`. Exit 0 only if every failing count
is 0 and both faults happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chassis.clock import ScaledClock
from ops import demo, demo_clinics
from ops.stack import ROOT, Stack

KAFKA_BASE = 29092  # node N on KAFKA_BASE + 2(N-1), as infra/kafka.sh's cluster default
KAFKA_NODES = 3
REDIS_BASE = 17000  # nodes on REDIS_BASE..+5, as infra/redis-cluster.sh's default
REDIS_NODES = 6


def kafka_env() -> dict[str, str]:
    return {**os.environ, "KAFKA_NODES": str(KAFKA_NODES), "KAFKA_PORT": str(KAFKA_BASE)}


def redis_env() -> dict[str, str]:
    return {**os.environ, "REDIS_CLUSTER": "1", "REDIS_CLUSTER_BASE": str(REDIS_BASE)}


def script(name: str, action: str, env: dict[str, str], check: bool = True) -> bool:
    done = subprocess.run(  # noqa: S603 - the project's own scripts
        ["bash", str(ROOT / "infra" / name), action],  # noqa: S607 - bash from PATH
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"infra/{name} {action} failed: {done.stderr or done.stdout}")
    return done.returncode == 0


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(  # noqa: S603 - redis-cli from Debian's redis-tools
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout


@dataclass
class Faults:
    broker_kills: int = 0
    redis_failovers: int = 0


def kill_broker(node: int) -> None:
    """SIGKILL a broker (no clean shutdown, as a crashed host), by the script's pidfile."""
    pidfile = ROOT / ".infra" / "kafka-cluster" / f"node-{node}" / "kafka.pid"
    os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


def crash_a_redis_primary() -> tuple[int, int]:
    """SHUTDOWN NOSAVE one primary; (its port, the port of the replica that took over).
    Not the node REDIS_URL names: a client made while the crashed one is down (the
    audit's, when the run ends first) bootstraps from that one seed (production names
    several nodes behind one DNS name)."""
    lines = [line.split() for line in redis_cli(REDIS_BASE, "cluster", "nodes").splitlines()]
    primaries = {
        n[0]: n for n in lines if "master" in n[2] and "fail" not in n[2] and _port(n) != REDIS_BASE
    }
    replica = next(n for n in lines if "slave" in n[2] and n[3] in primaries)
    port = _port(primaries[replica[3]])
    redis_cli(port, "shutdown", "nosave")
    promoted = _port(replica)
    deadline = time.monotonic() + 30
    while redis_cli(promoted, "role").split()[:1] != ["master"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no replica took over from :{port}")
        time.sleep(0.2)
    return port, promoted


def _port(node: list[str]) -> int:
    return int(node[1].split("@")[0].rsplit(":", 1)[1])


async def inflict(faults: Faults, broker_at_s: float, redis_at_s: float, down_s: float) -> None:
    """One broker kill, then one Redis primary crash, at fixed times after the start."""
    started = time.monotonic()
    await asyncio.sleep(broker_at_s)
    victim = 2
    print(f"cluster-demo: SIGKILL Kafka node {victim}", flush=True)
    await asyncio.to_thread(kill_broker, victim)
    faults.broker_kills += 1
    await asyncio.sleep(down_s)
    await asyncio.to_thread(script, "kafka.sh", "up", kafka_env())
    print(f"cluster-demo: Kafka node {victim} back after {down_s:g} s", flush=True)
    await asyncio.sleep(max(0.0, redis_at_s - (time.monotonic() - started)))
    crashed, promoted = await asyncio.to_thread(crash_a_redis_primary)
    faults.redis_failovers += 1
    print(f"cluster-demo: Redis primary :{crashed} crashed; :{promoted} took over", flush=True)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(script, "redis.sh", "up", redis_env())
    print(f"cluster-demo: Redis :{crashed} back, as a replica", flush=True)


async def run(
    args: argparse.Namespace, stack: Stack, clock: ScaledClock, bootstrap: str, redis_url: str
) -> dict[str, Any]:
    faults = Faults()
    crowd = demo.people(args.people, args.seed, stack.workdir.name)
    fault_task = asyncio.create_task(
        inflict(faults, args.broker_at, args.redis_at, args.down_seconds)
        if args.faults
        else asyncio.sleep(0)
    )
    try:
        summary = await demo.drive(stack, clock, crowd, bootstrap, redis_url)
    finally:
        await fault_task  # a run shorter than the faults still gets both, before the audit
    return {
        **summary,
        "kafka_brokers": KAFKA_NODES,
        "redis_nodes": REDIS_NODES,
        "broker_kills": faults.broker_kills,
        "redis_failovers": faults.redis_failovers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    # Slower than make demo's 1 s: on 2 cores three broker JVMs take most of the CPU, and
    # every commit and publish waits for replicas (measured: 1.5 s a day left 80% of
    # reminders late and courses unfinished when the demo's 80 days ran out).
    parser.add_argument("--day-seconds", type=float, default=3.0, help="real seconds a day")
    parser.add_argument("--broker-at", type=float, default=45, help="s after start: kill")
    parser.add_argument("--redis-at", type=float, default=120, help="s after start: crash")
    parser.add_argument("--down-seconds", type=float, default=15)
    parser.add_argument(
        "--no-faults", dest="faults", action="store_false", help="the clusters alone (a baseline)"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / ".infra" / "cluster-demo")
    args = parser.parse_args(argv)
    started = [
        (name, env)
        for name, env in (("kafka.sh", kafka_env()), ("redis.sh", redis_env()))
        if not script(name, "status", env, check=False)
    ]
    try:
        for name, env in started:
            print(f"cluster-demo: starting infra/{name} ({env.get('KAFKA_NODES', '')})", flush=True)
            script(name, "up", env)
        return demo_on_clusters(args)
    finally:
        for name, env in started:
            script(name, "down", env, check=False)


def demo_on_clusters(args: argparse.Namespace) -> int:
    bootstrap = ",".join(f"127.0.0.1:{KAFKA_BASE + 2 * n}" for n in range(KAFKA_NODES))
    redis_url = f"redis://127.0.0.1:{REDIS_BASE}/0"
    # The runner's own clients (reset, audit) read REDIS_MODE too; the services inherit it.
    os.environ["REDIS_MODE"] = "cluster"
    run_dir = args.workdir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    clinics = demo_clinics.write(run_dir / "clinics.json", saturday_desk=demo_clinics.SATURDAY_DESK)
    asyncio.run(demo_clinics.reset(redis_url))
    anchor, scale = datetime.now(UTC), 86400 / args.day_seconds
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "REDIS_MODE": "cluster",
        "KAP_TOPIC_REPLICATION_FACTOR": str(KAFKA_NODES),
        "KAP_CLINICS_FILE": str(clinics),
        "KAP_CLOCK_SCALE": str(scale),
        "KAP_CLOCK_ORIGIN": demo.ORIGIN.isoformat(),
        "KAP_CLOCK_ANCHOR": anchor.isoformat(),
        # What a writer recorded but could not publish while a broker was away goes
        # out after this: the production 30 s would be weeks of the demo's clinic time.
        "KAP_RELAY_GRACE_MS": "2000",
    }
    clock = ScaledClock(origin=demo.ORIGIN, anchor=anchor, scale=scale)
    print(
        f"cluster-demo: {args.people} people on Kafka {bootstrap} and Redis Cluster"
        f" :{REDIS_BASE}-{REDIS_BASE + REDIS_NODES - 1}; logs in {run_dir}/logs",
        flush=True,
    )
    stack = Stack(workdir=run_dir, env=env)
    with stack.running():
        summary = asyncio.run(run(args, stack, clock, bootstrap, redis_url))
    faulted = summary["broker_kills"] and summary["redis_failovers"]
    ok = demo.adds_up(summary) and (faulted or not args.faults)
    summary.pop("refusals", None)
    print("DEMO " + json.dumps(summary, sort_keys=True), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
