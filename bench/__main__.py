"""`make bench`: the system against the raw client, interleaved, on this machine's Kafka and Redis.

    python -m bench [--pairs 6] [--events 1500] [--clinics 12] [--quick]
    python -m bench --case thousand-clinics [--due-clinics 1000] [--due-pending 100000]
    python -m bench --case redis-per-client [--crowd 10] [--ports 19800]
    python -m bench --case lean [--baseline-messages 50000]

1. Baseline and system alternate (A B A B ...), the first pair a warm-up that
   is dropped; `system_vs_raw` is the median of the pairs' ratios.
2. Latency: the same mix sent open-loop at half the system's measured rate, until at
   least `--latency-requests` requests went (one- and two-hop paths, bench.system).
3. Scaling: the system again with two replicas of each service.
4. Scheduler figures (planning, a booking race, 100,000 booster timers), taken first.
5. Redis per client (bench.redis_clients): a small crowd through whole courses to their
   first booster on a scaled clock, at clinics of this run only; then Redis's bytes and
   keys over the run's clients.
6. Baselines (bench.raw, bench.lean), taken after the scheduler figures: a raw
   consumer and the lean reference pipeline, each over a backlog produced first.
7. A thousand clinics (bench.thousand_clinics): booster and delivery lag with 100,000
   pending timers and mails, 1 and 2 replicas, and Redis commands per round; taken last.
Results go to bench/results/ (JSON and a PNG chart); the last line printed is
`BENCH {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    lean,
    profiles,
    raw,
    redis_clients,
    report,
    scheduler_figures,
    system,
    thousand_clinics,
    workload,
)
from chassis.clock import ScaledClock
from ops import demo_clinics
from ops.stack import ROOT, Stack

# A Monday afternoon in Europe, morning in New York: every clinic's send window is open.
ORIGIN = datetime(2027, 3, 1, 15, 0, tzinfo=UTC)
RESULTS = ROOT / "bench" / "results"


def stack_env(bootstrap: str, redis_url: str, clinics: Path, anchor: datetime) -> dict[str, str]:
    """The services' environment: this machine's Kafka and Redis, the bench clinics and clock."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "KAP_CLINICS_FILE": str(clinics),
        "KAP_CLOCK_ORIGIN": ORIGIN.isoformat(),
        "KAP_CLOCK_ANCHOR": anchor.isoformat(),
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run = uuid.uuid4().hex[:6]
        self.workdir = ROOT / ".bench" / self.run
        self.clinic_ids = list(workload.clinics(self.run, args.clinics))
        self.anchor = datetime.now(UTC)
        self.clock = ScaledClock(origin=ORIGIN, anchor=self.anchor, scale=1.0)
        self.seed = 0

    def mix(self, events: int | None = None) -> list[workload.Message]:
        self.seed += 1
        now = self.clock.now()
        count = events or self.args.events
        return workload.lifecycle_mix(self.clinic_ids, count, now, self.seed)

    def latency_mix(self, rate: float) -> list[workload.Message]:
        """The open loop's load: `--latency-seconds` at `rate`, or more, until it holds
        `--latency-requests` consultation requests (the two-hop samples' sources)."""
        count = int(rate * self.args.latency_seconds)
        mix = self.mix(max(count, 3 * self.args.latency_requests))  # ~1.8 events a journey
        return mix[: max(count, workload.through_requests(mix, self.args.latency_requests))]

    async def fresh_clinics(self) -> None:
        """Each run books into empty calendars (services keep no state in memory)."""
        await demo_clinics.reset(self.args.redis, self.clinic_ids)

    def stack(self, replicas: int) -> Stack:
        clinics = demo_clinics.write(
            self.workdir / "clinics.json",
            workload.clinics(self.run, self.args.clinics),
            therapists=20,
            rooms=8,
        )
        env = stack_env(self.args.bootstrap, self.args.redis, clinics, self.anchor)
        return Stack(self.workdir / f"replicas-{replicas}", env, replicas=replicas)

    async def pairs(self, probe: system.Probe, stack: Stack) -> dict[str, Any]:
        kafka = raw.producer(self.args.bootstrap)
        await kafka.start()
        pairs: list[dict[str, Any]] = []
        try:
            for n in range(self.args.pairs):
                messages = self.mix()
                await self.fresh_clinics()
                baseline = await raw.run(self.args.bootstrap, messages)
                with contextlib.ExitStack() as profiling:
                    if self.args.profile and n == 1:  # the first measured pair
                        recording = profiles.recording(stack, self.args.out, self.args.profile)
                        for svg in profiling.enter_context(recording):
                            log(f"flame graph: {svg}")
                    measured = await system.drain(probe, stack, kafka, messages)
                ratio = measured["consumptions_per_s"] / baseline["events_per_s"]
                pair = {"warm_up": n == 0, "raw": baseline, "system": measured, "ratio": ratio}
                pairs.append(pair)
                log(
                    f"pair {n}{' (warm-up)' if n == 0 else ''}: raw "
                    f"{baseline['events_per_s']:.0f}/s, system {measured['consumptions_per_s']:.0f}"
                    f" consumptions/s, {measured['requests_per_s']:.1f} requests/s"
                    f" ({measured['events']} consumptions, {measured['mails']} mails),"
                    f" {measured['cpu_s_per_1k']:.2f} CPU s per 1,000 (services and Redis)"
                )
            # Half the measured maximum: the drains' median rate of inputs handled.
            maximum = median(p["system"]["inputs_per_s"] for p in pairs[1:])
            rate = 0.5 * maximum
            await self.fresh_clinics()
            latency = await system.open_loop(probe, kafka, self.latency_mix(rate), rate)
            latency["load_fraction"] = rate / maximum
            one, two = latency["one_hop"], latency["two_hop"]
            log(
                f"latency at {rate:.0f} inputs/s ({latency['requests']} requests): one hop p50 "
                f"{one['p50_ms']:.1f} ms, p99 {one['p99_ms']:.1f} ms; two hops p50 "
                f"{two['p50_ms']:.1f} ms, p99 {two['p99_ms']:.1f} ms ({two['samples']} samples)"
            )
        finally:
            await kafka.stop()
        return {"pairs": pairs, "latency": latency}

    async def replicas(self, probe: system.Probe, stack: Stack) -> list[dict[str, Any]]:
        kafka = raw.producer(self.args.bootstrap)
        await kafka.start()
        runs = []
        try:
            for n in range(self.args.scaling_runs + 1):
                await self.fresh_clinics()
                measured = await system.drain(probe, stack, kafka, self.mix())
                runs.append({"warm_up": n == 0, **measured})
                log(
                    f"{stack.replicas} replicas, run {n}: "
                    f"{measured['consumptions_per_s']:.0f} consumptions/s"
                )
        finally:
            await kafka.stop()
        return runs

    async def system_phase(self, replicas: int) -> tuple[Stack, dict[str, Any]]:
        stack = self.stack(replicas)
        with stack.running():
            probe = system.Probe(self.args.bootstrap, self.args.redis)
            await probe.start()
            try:
                if replicas == 1:
                    return stack, await self.pairs(probe, stack)
                return stack, {"runs": await self.replicas(probe, stack)}
            finally:
                await probe.stop()

    async def main(self) -> dict[str, Any]:
        await raw.ensure_topic(self.args.bootstrap)
        started = time.monotonic()
        # First: the boosters it announces wait for the notifier's group, and the
        # system's stack catches up on them before it is measured (Stack.start),
        # so no backlog is left for whoever uses the broker next.
        log("scheduler figures...")
        figures = await scheduler_figures.measure(
            self.args.redis, self.args.bootstrap, quick=self.args.quick
        )
        log("baselines: raw consumer and lean pipeline...")
        baselines = await lean_case(self.args, self.workdir / "lean")
        _, one = await self.system_phase(1)
        _, two = await self.system_phase(2)
        await self.fresh_clinics()
        log("redis per client...")
        footprint = await redis_per_client_case(self.args, self.workdir / "redis-per-client")
        log("a thousand clinics...")
        due = await thousand_clinics_case(self.args, self.workdir / "thousand-clinics")
        return report.summarise(
            one,
            two,
            figures,
            due,
            footprint,
            baselines,
            self.args,
            seconds=time.monotonic() - started,
        )


async def thousand_clinics_case(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = thousand_clinics.Sizes(
        clinics=args.due_clinics,
        pending=args.due_pending,
        due=args.due_items,
        window_s=args.due_window_s,
    )
    redis_url = thousand_clinics.in_db(args.redis, args.due_redis_db)
    ports = list(range(args.ports, args.ports + 8)) if args.ports else None
    case = thousand_clinics.Case(
        redis_url, args.bootstrap, due_env(args.bootstrap), workdir, sizes, ports
    )
    return await case.measure()


async def lean_case(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The raw consumer, then the lean pipeline, each over the same intake mix produced first."""
    clinic_ids = list(workload.clinics(f"lean-{uuid.uuid4().hex[:6]}", args.clinics))
    mix = workload.lifecycle_mix(clinic_ids, args.baseline_messages, datetime.now(UTC), 1)
    messages = mix[: args.baseline_messages]  # journeys end past the count by a few
    consumer = await raw.sustained(args.bootstrap, messages)
    log(f"raw: {consumer['messages_per_s']:.0f} messages/s over {consumer['messages']}")
    pipeline = await lean.measure(args.bootstrap, args.redis, messages)
    log(
        f"lean: {pipeline['consumptions_per_s']:.0f} consumptions/s, "
        f"{pipeline['cpu_s_per_1k']:.3f} CPU s per 1,000 (pipeline and Redis)"
    )
    return {"raw": consumer, "lean": pipeline}


async def redis_per_client_case(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ports = list(range(args.ports, args.ports + 11)) if args.ports else None
    return await redis_clients.measure(
        args.bootstrap, args.redis, workdir, crowd=args.crowd, ports=ports
    )


def due_env(bootstrap: str) -> thousand_clinics.Env:
    def env(clinics: Path, redis_url: str, anchor: datetime) -> dict[str, str]:
        return stack_env(bootstrap, redis_url, clinics, anchor)

    return env


def median(values: Any) -> float:
    return float(statistics.median(list(values)))


def log(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pairs", type=int, default=6, help="baseline/system pairs (1st dropped)")
    parser.add_argument("--events", type=int, default=1500, help="intake events per run")
    parser.add_argument("--clinics", type=int, default=12)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument(
        "--latency-requests",
        type=int,
        default=2400,
        help="at least this many requests open-loop (longer than --latency-seconds if need be)",
    )
    parser.add_argument("--scaling-runs", type=int, default=3, help="runs with 2 replicas")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--case",
        choices=("all", "thousand-clinics", "redis-per-client", "lean"),
        default="all",
        help="run one case alone",
    )
    parser.add_argument(
        "--baseline-messages", type=int, default=50_000, help="raw and lean baselines"
    )
    parser.add_argument("--crowd", type=int, default=10, help="people (redis per client)")
    parser.add_argument(
        "--profile",
        default="",
        metavar="LABEL",
        help="py-spy flame graphs of each service over the first measured pair, "
        "to OUT/flame-<service>-LABEL.svg (bench.profiles)",
    )
    due = parser.add_argument_group("thousand clinics (bench.thousand_clinics)")
    due.add_argument("--due-clinics", type=int, default=1000)
    due.add_argument("--due-pending", type=int, default=100_000, help="boosters + mails")
    due.add_argument("--due-items", type=int, default=300, help="of each, due in the window")
    due.add_argument("--due-window-s", type=float, default=20.0)
    due.add_argument("--due-redis-db", type=int, default=13, help="emptied before and after")
    parser.add_argument(
        "--ports", type=int, default=0, help="first of 8 (11: redis-per-client) ports; 0: any"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.events, args.latency_seconds, args.scaling_runs = 2, 200, 3.0, 1
        args.latency_requests = 0
        args.due_clinics, args.due_pending, args.due_items = 50, 2000, 50
        args.due_window_s = 3.0
        args.crowd = 4
        args.baseline_messages = 2000
    if args.case != "all":
        # A case alone: its own figures, results file and headline.
        measure, headline_of = {
            "redis-per-client": (redis_per_client_case, report.redis_headline),
            "thousand-clinics": (thousand_clinics_case, report.thousand_clinics_headline),
            "lean": (lean_case, report.lean_headline),
        }[args.case]
        workdir = ROOT / ".bench" / uuid.uuid4().hex[:6] / args.case
        figures = asyncio.run(measure(args, workdir))
        headline = headline_of(figures)
        report.write_case(args.case, figures, headline, args.out)
        print("BENCH " + json.dumps(headline), flush=True)
        return 0
    summary = asyncio.run(Bench(args).main())
    report.write(summary, args.out)
    print("BENCH " + json.dumps(summary["headline"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
