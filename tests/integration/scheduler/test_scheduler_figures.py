"""`make bench`'s scheduler figures, at smoke size: their outcomes, never their timings."""

from __future__ import annotations

import pytest

from bench.scheduler_figures import measure

pytestmark = pytest.mark.integration


async def test_the_scheduler_figures_hold_their_outcomes(
    redis_url: str, kafka_bootstrap: str
) -> None:
    figures = await measure(redis_url, kafka_bootstrap, quick=True)

    plan, race, bookings, timers = (
        figures[part] for part in ("plan", "booking_race", "bookings", "timers")
    )
    assert plan["planned"] == plan["cases"] > 0
    assert plan["load"] == 0.45
    assert 0 < plan["p50_ms"] <= plan["p99_ms"]
    assert (race["contenders"], race["winners"]) == (100, 1)
    assert race["bookings_per_s"] > 0
    assert bookings["bookings_per_s"] > 0
    # Every due booster announced exactly once (measure raises otherwise), spread or all at once.
    assert timers["fired"] == figures["timers_burst"]["fired"] == 50
    assert timers["pending"] > timers["fired"]
    assert timers["lag_p50_ms"] <= timers["lag_p99_ms"]
    assert timers["redis_memory_bytes"] > 0
