"""Background loops outlive their errors (issue 14, fault 6).

The booster timer read the clinic list outside its `try`: one Redis error there
ended the loop for good while /readyz stayed green. It now reads the due clinics
(chassis.due_work) inside it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from chassis.clock import SystemClock
from chassis.workers import Supervisor
from services.scheduler.timers import booster_timer


class _Clinic:
    id = "lisbon"

    def section(self, name: str) -> dict[str, Any]:
        return {"opening_hours": {}}


class _Clinics:
    def get(self, clinic_id: str) -> _Clinic | None:
        return _Clinic() if clinic_id == _Clinic.id else None


class _FlakyDueWork:
    """The due clinics fail to read once, as Redis would; then one clinic is due."""

    def __init__(self, failures: int = 1) -> None:
        self.calls = 0
        self.failures = failures
        self.owners = self

    async def clinics(self, now: float) -> list[str]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RedisConnectionError("redis went away")
        return [_Clinic.id]

    async def settle(self, clinic_id: str) -> None:
        return None

    async def forget(self, clinic_id: str) -> None:
        return None

    async def release(self) -> None:
        return None


class _Scheduler:
    def __init__(self) -> None:
        self.clinics = _Clinics()
        self.clock = SystemClock()
        self.rounds = 0

    async def has_calendar(self, clinic_id: str) -> bool:
        return True

    async def fire_due_boosters(self, clinic_id: str) -> tuple[int, bool]:
        self.rounds += 1
        return 0, False


async def test_the_booster_timer_survives_an_error_reading_the_clinics() -> None:
    scheduler = _Scheduler()
    work = _FlakyDueWork()
    loop = asyncio.create_task(booster_timer(scheduler, work, 0.01, asyncio.Event())())  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if scheduler.rounds >= 2 or loop.done():
                break
            await asyncio.sleep(0.01)
        assert not loop.done(), "the timer loop ended on the first error"
        assert scheduler.rounds >= 2
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_failed_loop_is_restarted_and_reported_down_meanwhile() -> None:
    runs: list[int] = []
    release, failed = asyncio.Event(), asyncio.Event()

    async def delivery() -> None:
        runs.append(1)
        if len(runs) == 1:
            failed.set()
            raise RuntimeError("boom")
        await release.wait()

    supervisor = Supervisor(first_backoff_s=0.3)
    supervisor.start([delivery])
    try:
        await asyncio.wait_for(failed.wait(), 5)
        assert supervisor.down == ["delivery"], "down while waiting to restart"
        for _ in range(300):
            if len(runs) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(runs) == 2
        assert supervisor.down == []
        assert supervisor.restarts == {"delivery": 1}
    finally:
        await supervisor.stop(timeout_s=1.0)


async def test_stopping_lets_a_booster_round_finish_instead_of_cutting_it_mid_batch() -> None:
    """A drain (SIGTERM before an upgrade) must not leave a batch published but unsaved."""

    class _SlowScheduler(_Scheduler):
        def __init__(self) -> None:
            super().__init__()
            self.started = asyncio.Event()
            self.finished = 0

        async def fire_due_boosters(self, clinic_id: str) -> tuple[int, bool]:
            self.started.set()
            await asyncio.sleep(0.2)  # publishing the batch; its save comes after
            self.finished += 1
            return 1, False

    scheduler = _SlowScheduler()
    supervisor = Supervisor()
    work = _FlakyDueWork(failures=0)
    supervisor.start([booster_timer(scheduler, work, 0.01, supervisor.stopping)])  # type: ignore[arg-type]
    await asyncio.wait_for(scheduler.started.wait(), 5)
    await supervisor.stop(timeout_s=5.0)
    assert scheduler.finished == 1, "the round in progress was cut short"
