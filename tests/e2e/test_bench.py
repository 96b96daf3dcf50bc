"""`make bench` at smoke size: every part runs and reports, and its counts hold (never timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main as bench

pytestmark = pytest.mark.integration

HEADLINE = (
    "requests_per_s",
    "consumptions_per_s",
    "system_vs_raw",
    "cpu_s_per_1k",
    "p50_ms_1hop",
    "p99_ms_1hop",
    "p50_ms_2hop",
    "p99_ms_2hop",
    "samples_2hop",
    "load_fraction",
    "replica_scaling",
    "replica_efficiency",
    "plan_p99_ms",
    "timer_lag_p99_ms",
    "lag_p99_ms_1000_clinics",
    "redis_commands_per_tick",
    "redis_bytes_per_client",
    "redis_keys_per_client",
    "redis_bytes_per_client_30d",
    "raw_messages",
    "raw_per_s",
    "lean_consumptions_per_s",
    "lean_cpu_s_per_1k",
    "vs_lean_pipeline",
)


def test_a_quick_bench_measures_every_part_and_writes_its_results(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--quick", "--bootstrap", kafka_bootstrap, "--redis", redis_url, "--out", str(tmp_path)]

    assert bench(args) == 0

    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("BENCH ")
    headline = json.loads(last.removeprefix("BENCH "))
    assert set(headline) == set(HEADLINE)
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["headline"] == headline
    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")
    for pair in results["pairs"]:
        # The baseline consumed all it was sent; the system handled each event and its
        # consequences (more consumed than sent) and mailed (a run with dead letters fails).
        assert pair["raw"]["events"] == pair["system"]["inputs"]
        assert pair["system"]["events"] > pair["system"]["inputs"] > 0
        assert pair["system"]["mails"] > 0
        # Every request of the drain reached its outcome mail, and Redis's CPU counted.
        assert pair["system"]["requests_completed"] == pair["system"]["requests"] > 0
        assert pair["system"]["cpu_s_per_1k"] > pair["system"]["cpu_s_per_1k_services_only"]
    # Every consultation request sent open-loop got its acknowledgement and its outcome
    # mail (or the run failed); the booked ones are the two-hop samples.
    latency = results["latency"]
    assert latency["one_hop"]["samples"] == latency["requests"] > 0
    assert 0 < latency["two_hop"]["samples"] == latency["requests"] - latency["not_booked"]
    assert all(run["events"] > run["inputs"] for run in results["two_replicas"])
    assert results["scheduler"]["booking_race"]["winners"] == 1
    due = results["thousand_clinics"]  # every due booster and mail went once, or it failed
    assert due["replicas_2"]["booster_lag"]["count"] == due["due_per_phase"]["boosters"]
    baselines = results["baselines"]  # each consumed all it was given, the lean once each
    assert baselines["raw"]["messages"] == baselines["lean"]["consumed"] == 2000
    assert baselines["lean"]["outputs"] == baselines["lean"]["marks"] == 2000
    footprint = results["redis_per_client"]  # this run's clients only, all through a course
    assert footprint["clients"] == footprint["clients_in_redis"] > 0
    assert footprint["courses_completed"] > 0
