"""Background loops (booster timers, message delivery) that outlive their errors.

A loop that raises, or returns, is logged and started again after a backoff
that doubles up to a ceiling; while it is down the service is not ready
(`/readyz` answers 503), so an operator and the orchestrator see it instead of
a green service that silently stopped firing boosters or sending messages.

Stopping is a drain first: `stopping` is set, and a loop that watches it ends
after the round in progress (a booster batch between its publish and its save,
a message between the SMTP server's acceptance and its sent mark), so a
graceful stop before an upgrade leaves no effect half-recorded; only a loop
still running after half the stop timeout is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Worker = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Supervisor:
    first_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _down: set[str] = field(default_factory=set)
    restarts: dict[str, int] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    cut_short: list[str] = field(default_factory=list)  # loops cancelled at the last stop

    def start(self, workers: list[Worker]) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(worker), name=worker.__name__) for worker in workers
        ]

    async def stop(self, timeout_s: float) -> None:
        self.stopping.set()
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=timeout_s / 2)
            self.cut_short = sorted(task.get_name() for task in running)
            for task in running:
                task.cancel()
            if running:
                # Bounded: a loop that swallows its cancellation must not hold up exit.
                await asyncio.wait(running, timeout=timeout_s / 2)
        self._tasks = []

    @property
    def down(self) -> list[str]:
        """The loops waiting to be restarted (empty when all run)."""
        return sorted(self._down)

    async def _supervise(self, worker: Worker) -> None:
        name = worker.__name__
        backoff = self.first_backoff_s
        while True:
            try:
                await worker()
                current = asyncio.current_task()
                if self.stopping.is_set() or (current is not None and current.cancelling()):
                    return  # the loop saw it is being stopped, and ended
                log.error("background loop %s returned; restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.stopping.is_set():
                    return
                log.exception("background loop %s failed; restarting it", name)
            self._down.add(name)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            self._down.discard(name)
