"""The benchmark's results: one JSON document, a PNG chart, and the headline figures."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TARGETS = {
    "system_vs_raw": (">=", 0.5),
    "cpu_s_per_1k": ("<=", 1.0),  # issue 19: services and Redis, from 7.97
    "p50_ms_2hop": ("<=", 20.0),
    "p99_ms_2hop": ("<=", 50.0),
    "samples_2hop": (">=", 2000.0),
    "replica_scaling": (">=", 1.4),
    "replica_efficiency": (">=", 0.9),  # issue 19: no CPU lost to coordination
    "plan_p99_ms": ("<=", 20.0),
    "timer_lag_p99_ms": ("<=", 250.0),  # issue 19: 1,000 boosters at once (issue 9: 1,000 ms)
    "lag_p99_ms_1000_clinics": ("<=", 1000.0),
    "redis_bytes_per_client": ("<=", 20480.0),  # issue 18: at most 20 KB after a course
    "raw_messages": (">=", 50000.0),  # issue 19: a sustained baseline, not a start-up
    "vs_lean_pipeline": (">=", 0.5),
}


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarise(
    one: dict[str, Any],
    two: dict[str, Any],
    figures: dict[str, Any],
    due: dict[str, Any],
    footprint: dict[str, Any],
    baselines: dict[str, Any],
    args: argparse.Namespace,
    seconds: float,
) -> dict[str, Any]:
    measured = [p["system"] for p in one["pairs"] if not p["warm_up"]]
    scaled = [r for r in two["runs"] if not r["warm_up"]]
    one_replica = _median([m["consumptions_per_s"] for m in measured])
    two_replicas = _median([r["consumptions_per_s"] for r in scaled])
    latency = one["latency"]
    headline = {
        # Consultation requests completed end to end (their outcome mail sent) per second.
        "requests_per_s": round(_median([m["requests_per_s"] for m in measured]), 2),
        # Committed offsets of all the services' groups per second.
        "consumptions_per_s": round(one_replica, 1),
        "system_vs_raw": round(_median([p["ratio"] for p in one["pairs"][1:]]), 4),
        # Services and Redis CPU seconds per 1,000 consumptions (Kafka and sinks apart).
        "cpu_s_per_1k": round(_median([m["cpu_s_per_1k"] for m in measured]), 3),
        "p50_ms_1hop": round(latency["one_hop"]["p50_ms"], 1),
        "p99_ms_1hop": round(latency["one_hop"]["p99_ms"], 1),
        "p50_ms_2hop": round(latency["two_hop"]["p50_ms"], 1),
        "p99_ms_2hop": round(latency["two_hop"]["p99_ms"], 1),
        "samples_2hop": latency["two_hop"]["samples"],
        # The open loop's rate over the drains' median rate (the measured maximum).
        "load_fraction": round(latency["load_fraction"], 3),
        "replica_scaling": round(two_replicas / one_replica, 3),
        # Consumptions per CPU-second (services and Redis) with 2 replicas over with 1:
        # on 2 cores throughput cannot double, but no CPU should go to coordination.
        "replica_efficiency": round(
            _median([m["cpu_s_per_1k"] for m in measured])
            / _median([r["cpu_s_per_1k"] for r in scaled]),
            3,
        ),
        "plan_p99_ms": round(figures["plan"]["p99_ms"], 1),
        # The worse of boosters falling due spread out and all at one instant.
        "timer_lag_p99_ms": round(
            max(figures["timers"]["lag_p99_ms"], figures["timers_burst"]["lag_p99_ms"]), 1
        ),
        **thousand_clinics_headline(due),
        **redis_headline(footprint),
        **lean_headline(baselines),
        # The services' consumptions per second against the lean pipeline's (bench.lean).
        "vs_lean_pipeline": round(one_replica / baselines["lean"]["consumptions_per_s"], 4),
    }
    return {
        "headline": headline,
        "targets": {
            name: {"target": f"{op} {bound:g}", "met": _met(headline[name], op, bound)}
            for name, (op, bound) in TARGETS.items()
        },
        "throughput": {
            "raw_events_per_s": _median([p["raw"]["events_per_s"] for p in one["pairs"][1:]]),
            "system_consumptions_per_s": one_replica,
            "system_2_replicas_consumptions_per_s": two_replicas,
            "system_consumptions_per_s_by_service": {
                service: _median([m["consumptions_per_s_by_service"][service] for m in measured])
                for service in measured[0]["consumptions_per_s_by_service"]
            },
            "raw_cpu_s_per_1k": _median([p["raw"]["cpu_s_per_1k"] for p in one["pairs"][1:]]),
            # The old figure: the service processes alone, Redis left out.
            "cpu_s_per_1k_services_only": _median(
                [m["cpu_s_per_1k_services_only"] for m in measured]
            ),
            # Listed apart (not in cpu_s_per_1k), per 1,000 consumptions; None: not found.
            "cpu_s_per_1k_apart": {
                part: _per_1k_apart(measured, part) for part in ("kafka", "smtp", "sms")
            },
        },
        "pairs": one["pairs"],
        "latency": one["latency"],
        "two_replicas": two["runs"],
        "scheduler": figures,
        "thousand_clinics": due,
        "redis_per_client": footprint,
        "baselines": baselines,
        "settings": {
            "pairs": args.pairs,
            "events_per_run": args.events,
            "clinics": args.clinics,
            "latency_seconds": args.latency_seconds,
            "latency_requests": args.latency_requests,
            "quick": args.quick,
            "crowd": args.crowd,
            "baseline_messages": args.baseline_messages,
        },
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "seconds": round(seconds, 1),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _per_1k_apart(measured: list[dict[str, Any]], part: str) -> float | None:
    values = [m["cpu_s"].get(part) for m in measured]
    if any(v is None for v in values):
        return None
    return _median([v / m["events"] * 1000 for v, m in zip(values, measured, strict=True)])


def thousand_clinics_headline(due: dict[str, Any]) -> dict[str, float]:
    """The worse p99 of booster and delivery lag, with 1 and with 2 replicas; and the
    Redis commands per due-work round in the measured window, the worse replica count."""
    return {
        "lag_p99_ms_1000_clinics": round(due["lag_p99_ms"], 1),
        "redis_commands_per_tick": round(due["redis_commands_per_tick"], 1),
    }


def redis_headline(footprint: dict[str, Any]) -> dict[str, float]:
    """Redis bytes and keys per client once a crowd's courses ended (bench.redis_clients)."""
    return {
        "redis_bytes_per_client": float(footprint["redis_bytes_per_client"]),
        "redis_keys_per_client": float(footprint["redis_keys_per_client"]),
        "redis_bytes_per_client_30d": float(footprint["redis_bytes_per_client_30d"]),
    }


def lean_headline(baselines: dict[str, Any]) -> dict[str, float]:
    """The raw consumer over its backlog, and the lean pipeline (CPU: its process and Redis)."""
    return {
        "raw_messages": baselines["raw"]["messages"],
        "raw_per_s": round(baselines["raw"]["messages_per_s"], 1),
        "lean_consumptions_per_s": round(baselines["lean"]["consumptions_per_s"], 1),
        "lean_cpu_s_per_1k": round(baselines["lean"]["cpu_s_per_1k"], 4),
    }


def write_case(name: str, figures: dict[str, Any], headline: dict[str, float], out: Path) -> Path:
    """One case run alone: its figures beside the full runs', `<name>-<time>.json` and
    `<name>-latest.json`."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    document = {
        "headline": headline,
        "targets": {
            n: {"target": f"{TARGETS[n][0]} {TARGETS[n][1]:g}", "met": _met(v, *TARGETS[n])}
            for n, v in headline.items()
            if n in TARGETS
        },
        name.replace("-", "_"): figures,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "at": at,
    }
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2)
    path = out / f"{name}-{at.replace(':', '').replace('+0000', 'Z')}.json"
    path.write_text(text)
    (out / f"{name}-latest.json").write_text(text)
    return path


def _met(value: float, op: str, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def write(summary: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = summary["at"].replace(":", "").replace("+0000", "Z")
    path = out / f"bench-{stamp}.json"
    text = json.dumps(summary, indent=2)
    path.write_text(text)
    (out / "latest.json").write_text(text)
    chart(summary, out / "latest.png")
    return path


def chart(summary: dict[str, Any], path: Path) -> None:
    """Throughput per pair (baseline and system), and the headline against the targets."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    pairs = [p for p in summary["pairs"] if not p["warm_up"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = range(1, len(pairs) + 1)
    left.plot(xs, [p["raw"]["events_per_s"] for p in pairs], "o-", label="raw aiokafka")
    left.plot(
        xs, [p["system"]["consumptions_per_s"] for p in pairs], "s-", label="system, 1 replica"
    )
    two = summary["throughput"]["system_2_replicas_consumptions_per_s"]
    left.axhline(two, linestyle="--", color="grey", label="system, 2 replicas (median)")
    left.set_xticks(list(xs))
    left.set_xlabel("pair (interleaved, warm-up dropped)")
    left.set_ylabel("events consumed per second (all services)")
    left.set_yscale("log")
    left.legend()
    left.set_title("Throughput")
    head, targets = summary["headline"], summary["targets"]
    names = list(TARGETS)
    ratios = [_against_target(head[n], *TARGETS[n]) for n in names]
    colours = ["tab:green" if targets[n]["met"] else "tab:red" for n in names]
    right.barh(names, ratios, color=colours)
    right.axvline(1.0, color="black", linewidth=1)
    for y, name in enumerate(names):
        right.text(0.02, y, f"{head[name]:g} ({targets[name]['target']})", va="center")
    right.set_xlabel("share of target reached (1 = met)")
    right.set_title("Headline against targets")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _against_target(value: float, op: str, bound: float) -> float:
    """1.0 or more when met: value/bound for a floor, bound/value for a ceiling."""
    if op == ">=":
        return value / bound
    return bound / value if value else float("inf")
