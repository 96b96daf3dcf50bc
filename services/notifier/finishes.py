"""How deliveries ended, written through the unit of work: per clinic, one step for
whatever finished while the previous one ran.

A finished delivery (queue.Finish) is written by a step of the service's unit of work
(chassis.unit_of_work) in its clinic's slot: its lease fenced (LeaseQueue.fence_all,
the clinic's tokens watched from before the read), its message's state read watched
(planning may have cancelled it meanwhile), then one MULTI with the message's state,
the lease done or due again, and the outcome event in the outbox; published after,
and what a dead replica left is published by the unit of work's relay. A replica
whose lease was taken over writes nothing: the new holder sends and records.

Deliveries that end together (a night of reminders falls due at the send window's
opening) are written together: every claim and every finish changes the clinic's
tokens, which every step watches, so one step per delivery would have concurrent
steps failing each other's EXEC over and over.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from redis.asyncio.client import Pipeline

from chassis.outbox import Output
from chassis.unit_of_work import Decision, Transaction, UnitOfWork, WriteConflict
from services.notifier import tidy
from services.notifier.contacts import (
    AWAITING_CONTACT_S,
    KnownContact,
    awaiting_key,
    contact_key,
)
from services.notifier.queue import DeliveryQueue, Finish

log = logging.getLogger(__name__)

MAX_BATCH = 100
# A step that kept conflicting (the unit of work's CONFLICT_TRIES) is run again this
# often before its deliveries are left to their leases: their sends went out already.
RUNS = 5

Waiting = tuple[Finish, "asyncio.Future[bool]"]


class Finishes:
    def __init__(self, queue: DeliveryQueue, unit_of_work: UnitOfWork) -> None:
        self._queue = queue
        self._unit_of_work = unit_of_work
        self._waiting: dict[str, list[Waiting]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}

    async def record(self, finish: Finish) -> bool:
        """Write `finish` with whatever else of its clinic finished meanwhile; whether it
        was written as it says (False: its lease was lost and nothing written, or its
        message was cancelled or gone meanwhile and only the lease let go)."""
        clinic = finish.lease.clinic_id
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(clinic, []).append((finish, written))
        if clinic not in self._writers:
            self._writers[clinic] = asyncio.create_task(self._write(clinic))
        return await written

    async def _write(self, clinic: str) -> None:
        batch: list[Waiting] = []
        try:
            while waiting := self._waiting.get(clinic):
                batch, self._waiting[clinic] = waiting[:MAX_BATCH], waiting[MAX_BATCH:]
                try:
                    results = await self._run(clinic, [finish for finish, _ in batch])
                except Exception as error:
                    for _, written in batch:
                        if not written.done():
                            written.set_exception(error)
                else:
                    for (_, written), result in zip(batch, results, strict=True):
                        if not written.done():
                            written.set_result(result)
                    await self._tidy_after(clinic, batch, results)
                batch = []
        finally:
            # No await since the loop's last look: nothing was added meanwhile.
            self._writers.pop(clinic, None)
            for _, written in batch + self._waiting.pop(clinic, []):
                written.cancel()

    async def _tidy_after(self, clinic: str, batch: list[Waiting], results: list[bool]) -> None:
        """Tidy again the tidied clients whose deliveries ended for good (tidy.after_finish):
        one step per client, after the finishes were written. A step that fails is only
        logged: what it would take goes at the client's next tidy, or with its TTL."""
        ended: dict[UUID, datetime] = {}
        for (finish, _), written in zip(batch, results, strict=True):
            if written and finish.client_id is not None and finish.ended_at is not None:
                ended[finish.client_id] = max(
                    finish.ended_at, ended.get(finish.client_id, finish.ended_at)
                )
        try:
            ended = await self._tidied_only(clinic, ended)
        except Exception:
            log.warning("clinic %s: tidying after deliveries left for later", clinic)
            return
        for client_id, at in ended.items():
            step = functools.partial(self._tidy_step, clinic, client_id, at)
            try:
                await self._unit_of_work.run(clinic, [], step)
            except Exception:
                log.warning(
                    "clinic %s: tidying after a delivery failed; left for later",
                    clinic,
                    exc_info=True,
                )

    async def _tidied_only(self, clinic: str, ended: dict[UUID, datetime]) -> dict[UUID, datetime]:
        """Of these clients, those ever tidied (a marker), read once for all of them: most
        never were, and each would cost a step finding so. Read after the finishes were
        written, so a tidy not seen here comes after them, and takes what they ended."""
        if not ended:
            return ended
        async with self._queue.redis.pipeline(transaction=False) as reads:
            for client_id in ended:
                reads.exists(tidy.marker_key(clinic, client_id))
            markers = await reads.execute()
        return {c: at for (c, at), there in zip(ended.items(), markers, strict=True) if there}

    @staticmethod
    async def _tidy_step(
        clinic: str, client_id: UUID, at: datetime, tx: Transaction
    ) -> Decision[int]:
        tidying = await tidy.after_finish(tx, clinic, client_id, at)

        def write(p: Pipeline) -> None:
            if tidying is not None:
                tidying.write(p, clinic, client_id)

        return Decision(write, [], 0 if tidying is None else len(tidying.messages))

    async def _run(self, clinic: str, finishes: list[Finish]) -> list[bool]:
        step = functools.partial(self._step, finishes)
        for run in range(1, RUNS + 1):
            try:
                result = await self._unit_of_work.run(clinic, [], step, leave_to_relay=True)
            except WriteConflict:
                if run == RUNS:
                    raise
                log.warning(
                    "clinic %s: %d finished deliveries met changes; again", clinic, len(finishes)
                )
                continue
            assert isinstance(result, list)
            return result
        raise AssertionError("unreachable")

    async def _step(self, finishes: list[Finish], tx: Transaction) -> Decision[list[bool]]:
        leases = [finish.lease for finish in finishes]
        fenced = await self._queue.leases.fence_all(tx, leases)
        states = await self._queue.states(tx, leases)
        finishes = await self._contact_arrived(tx, finishes)
        writes: list[Finish] = []
        outputs: list[Output] = []
        results: list[bool] = []
        for finish, held, state in zip(finishes, fenced, states, strict=True):
            if not held:
                results.append(False)
            # What was sent is recorded sent even if cancelled meanwhile: it went.
            elif state == "sending" or (finish.state == "sent" and state is not None):
                writes.append(finish)
                outputs += finish.outputs
                results.append(True)
            else:
                writes.append(replace(finish, state="gone", fields={}, outputs=()))
                results.append(finish.state == "gone")

        def write(p: Pipeline) -> None:
            self._queue.write_all(p, writes)
            for finish in writes:
                if finish.awaits_contact is not None and finish.state == "planned":
                    waiting = awaiting_key(finish.lease.clinic_id, finish.awaits_contact[0])
                    p.sadd(waiting, finish.lease.member)
                    p.expire(waiting, AWAITING_CONTACT_S)

        return Decision(write, outputs, results)

    @staticmethod
    async def _contact_arrived(tx: Transaction, finishes: list[Finish]) -> list[Finish]:
        """The retries for want of a contact whose contact arrived meanwhile, due at once
        (the contacts watched: one arriving before the write fails it, and it runs again;
        one arriving after finds the retry listed as awaiting it: plans.PlanStore.writes)."""
        waiting = {
            i: contact_key(f.lease.clinic_id, f.awaits_contact[0])
            for i, f in enumerate(finishes)
            if f.awaits_contact is not None
        }
        if not waiting:
            return finishes
        async with await tx.watched_reads(*waiting.values()) as reads:
            for contact in waiting.values():
                reads.get(contact)
            found = await reads.execute()
        arrived = {
            i
            for i, raw in zip(waiting, found, strict=True)
            if raw and KnownContact.model_validate_json(raw).contact is not None
        }
        return [
            replace(f, at=f.awaits_contact[1], awaits_contact=None)
            if i in arrived and f.awaits_contact is not None
            else f
            for i, f in enumerate(finishes)
        ]
