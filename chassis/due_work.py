"""Which clinics a timer round looks at: the due ones of this replica's buckets, and a sweep.

A round asks the due index (chassis.due_index) for the clinics of the buckets this
replica owns (chassis.buckets) with something due by now: a read per owned bucket
and nothing for a clinic with nothing due. Each clinic looked at is settled after
(its score is its next due time again, or it leaves the index).

The sweep repairs what hints cannot carry: a hint lost to a crash between a commit
and its hint, a lease whose holder died (its member is in no due set until claimed
again), due sets written before the index existed. Every `sweep_s` each replica
goes once over the clinics of its buckets, spread over the period (a few a round,
not a burst), firing and settling each as if found due.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from chassis.buckets import BucketOwners
from chassis.due_index import DueIndex, NextDue
from chassis.metrics import ServiceMetrics

# Clinics found due per bucket per round, at most: the rest are still due next round.
PER_BUCKET = 200


@dataclass
class DueWork:
    index: DueIndex
    owners: BucketOwners
    clinic_ids: Callable[[], Iterable[str]]  # every clinic, for the sweep
    next_due: NextDue  # the clinic's own earliest due time, for settling
    sweep_s: float
    metrics: ServiceMetrics | None = None  # counts the rounds
    _sweep: list[str] = field(default_factory=list)
    _swept: int = 0
    _sweep_started = -math.inf  # monotonic

    async def clinics(self, now: float) -> list[str]:
        """The clinics to look at this round: due by `now` (service clock, epoch s) in this
        replica's buckets, then the sweep's share of the round."""
        due, swept = await self.found(now)
        return due + swept

    async def found(self, now: float) -> tuple[list[str], list[str]]:
        """This round's clinics apart: those found due by `now`, and the sweep's share (not
        due by the index), for a loop that treats a swept clinic more cheaply."""
        if self.metrics is not None:
            self.metrics.due_round(self.index.kind)
        mine = await self.owners.mine()
        due = await self.index.due(mine, now, PER_BUCKET)
        seen = set(due)
        return due, [c for c in self._sweep_share(mine) if c not in seen]

    async def earliest(self) -> float | None:
        """The earliest due time (service clock, epoch s) in the buckets this replica held
        at its last round; None: nothing due there."""
        return await self.index.earliest(self.owners.owned)

    async def settle(self, clinic_id: str) -> None:
        await self.index.settle(clinic_id, self.next_due)

    async def forget(self, clinic_id: str) -> None:
        """A clinic with nothing to fire here (retired, or no calendar): out of the index."""
        await self.index.redis.zrem(self.index.key(self.index.bucket(clinic_id)), clinic_id)

    def _sweep_share(self, mine: set[int]) -> list[str]:
        elapsed = time.monotonic() - self._sweep_started
        if self._swept >= len(self._sweep) and elapsed >= self.sweep_s:
            self._sweep = [c for c in self.clinic_ids() if self.index.bucket(c) in mine]
            self._sweep_started, self._swept, elapsed = time.monotonic(), 0, 0.0
        # Done in the first nine tenths of the period: a slow round does not push it past.
        target = math.ceil(len(self._sweep) * min(1.0, elapsed / (0.9 * self.sweep_s)))
        share = self._sweep[self._swept : max(target, self._swept + 1)]
        self._swept += len(share)
        return share
