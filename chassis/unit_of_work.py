"""The one write step: read under WATCH, decide, then one MULTI in one clinic's slot.

Batch-shaped: `run` takes the ids of a list of inputs (one client's events, or
whatever a batch of one clinic's slot holds) and the step decides for those not
handled yet (`Transaction.fresh`), so batch consumption changes how inputs
arrive, not this step or the handlers.

A service's step reads what its decision depends on with those keys watched
(`Transaction.watch`), decides in pure code, and hands back its writes and the
events they cause (`Decision`). One MULTI then holds, together:
- the handled mark of each input that caused it (an event id, or a request's
  key), checked absent under WATCH from before the step read anything: a field of
  the client's marks hash when the step is one client's (`marks_of`: a few dozen
  bytes a mark instead of a key's hundred and more; issue 18), else a key per input;
- the service's state writes;
- the outputs, in the clinic's outbox (chassis.outbox);
- for outputs on a `public.` topic, their client's sequence number
  (`<service>:{clinic}:public-seq:<client>`, read watched after the decision): each
  such output's envelope takes the next number, recorded with it, so a replay
  publishes the same numbers from the outbox and two steps never share one.
A concurrent change to any watched key makes EXEC fail and the step run again
from its reads (at most `CONFLICT_TRIES` times). Every key, watched or written,
must carry the `{clinic_id}` hash tag, so the transaction runs on Redis Cluster
(checked before EXEC: a key outside the slot is a programming error). A service's
own script (the scheduler's booking ledger) may be one of the writes: its keys are
declared, checked the same way, and what it checks was read under WATCH.
On a cluster the MULTI is tried once (no client retry: a retried EXEC loses its
WATCH) and counts only once a replica holds it (WAIT), so a primary lost right
after the EXEC loses no step whose input counts as handled.

Then the outputs are published, and only once the broker acknowledged them are
they taken out of the outbox. Crash points, and what follows each (each has a
SIGKILL test, tests/integration/chassis/test_write_crashes.py):
1. before the write: nothing was recorded; the input comes again (Kafka
   redelivers an uncommitted event, a client retries its request) and is
   handled as if the first time;
2. after the write, before the publish: the state and the outbox are recorded,
   and the clinic marked due to the relay (chassis.outbox `mark_due`); the relay
   (a loop on every replica, over the due index's buckets it owns) publishes what
   has waited longer than the grace (`RELAY_GRACE_MS`), and a redelivered input, finding
   its handled mark, relays its clinic's outbox at once, its own outputs among what
   waited that long (a younger output may be being published by its writer right
   now: a duplicate delivery handled concurrently must not publish it a second
   time). A mark names no outputs: it only says the input was handled;
3. after the publish, before the outbox is cleared: the relay publishes them
   again, with the same event ids; readers drop the duplicate by id.
Nothing is applied twice (the handled mark), nothing is lost (the outbox).

Due indexes (chassis.due_index) told of with `index_due` get a hint of each
MULTI that adds or moves a due item in one of their due sets: the earliest score
queued. On one Redis node the hint is in the MULTI; on a cluster the index is in
another slot, so it is written right after the commit, and a crash between the two
leaves the item to the index's sweep.

Round trips (issue 19): a step's WATCH goes with its reads, on the transaction's
own connection (`Transaction.watched_reads`), and on one node the hints go in the
MULTI: a step costs its reads, the EXEC and the publish, not a WATCH before each
read and a hint after. A step about one client (`marks_of`) on one node sends its
inputs' marks, and its client's last public number, in front of its own first read
(`Prelude`): its inputs not handled before (`Transaction.fresh`) are known once that
read is back. An input handled before is then one whose step ran, but what it decided
(or raised) is dropped, as if it had never run: the step only reads before its EXEC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import WatchError

from chassis.due_index import DueIndex
from chassis.due_work import DueWork
from chassis.events import EventPublisher
from chassis.metrics import ServiceMetrics
from chassis.outbox import DUE_BUCKETS, GRACE_MS, Outbox, Output
from chassis.redis_client import (
    ReadsAfterWatch,
    TornConnection,
    execute_replicated,
    fresh_slot_map,
    no_retry_transaction,
    torn_connection,
)
from chassis.workers import Worker
from shared.topics import produced_by, topic_for

log = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")

CONFLICT_TRIES = 20
RELAY_GRACE_MS = GRACE_MS
# How long a handled input is remembered: longer than any redelivery.
REMEMBER_S = 14 * 24 * 60 * 60
# A client's marks hash is searched for marks older than REMEMBER_S (each field holds
# when it was written) once it holds more fields than this; it expires as a whole
# REMEMBER_S after its last write.
TRIM_MARKS_OVER = 64
# On a cluster, how long a step waits for a replica to hold its write before the
# input is left to come again (chassis.redis_client.execute_replicated).
REPLICA_ACK_MS = 1000


class WriteConflict(RuntimeError):
    """The step's reads kept changing under it: the input is left to come again."""


class OutsideSlot(ValueError):
    """A key without the clinic's hash tag: the transaction could not run on a cluster."""


@dataclass(frozen=True)
class Decision(Generic[R]):
    """What a step decided: its writes (queued on the MULTI), the events they cause, and
    what the caller gets back."""

    write: Callable[[Pipeline], None]
    outputs: Sequence[Output] = ()
    result: R | None = None


@dataclass
class Transaction:
    """One attempt's reads, watched, in one clinic's slot."""

    redis: Redis
    pipeline: Pipeline
    clinic_id: str
    watched: list[str] = field(default_factory=list)
    # What the step's first watched read also carries, on one node (then None): its
    # inputs' handled marks and its client's public sequence number (`Prelude`).
    prelude: Prelude | None = None
    # Each public sequence read so far (key: last number), for `UnitOfWork._sequenced`.
    sequences: dict[str, int] = field(default_factory=dict)
    # Values a watched read also fetched, unwatched, for a later read of the same attempt
    # to take instead of a round trip (the scheduler's calendar); gone with the attempt.
    unwatched: dict[str, Any] = field(default_factory=dict)
    _fresh: list[str] | None = None

    @property
    def fresh(self) -> list[str]:
        """The inputs not handled before: known once the step's first watched read is
        back (the marks come with it), so a step reads before it looks."""
        if self._fresh is None:
            raise RuntimeError("Transaction.fresh before the step's first watched read")
        return self._fresh

    async def watch(self, *keys: str) -> None:
        """Make the write fail should any of `keys` change before it (read them after)."""
        if not keys:
            return  # Redis refuses an empty WATCH; nothing read, nothing to guard
        for key in keys:
            _in_slot(key, self.clinic_id)
        self.watched += keys
        await self.pipeline.watch(*keys)

    def reads(self) -> Pipeline:
        """A pipeline on another connection, for reading watched keys in one round trip."""
        return self.redis.pipeline(transaction=False)

    async def watched_reads(self, *keys: str) -> Pipeline:
        """A pipeline for reading, with `keys` watched first (as `watch`): on one node the
        WATCH goes with the reads, on the transaction's own connection, in one round trip
        (chassis.redis_client.ReadsAfterWatch); on a cluster, `watch` then `reads`. Read
        what the step decides on through it, never before its execute."""
        if isinstance(self.pipeline, ClusterPipeline):
            await self.watch(*keys)
            return self.reads()
        prelude, self.prelude = self.prelude, None
        if prelude is not None:
            keys = (*prelude.keys(), *keys)
        for key in keys:
            _in_slot(key, self.clinic_id)
        self.watched += keys
        reads = ReadsAfterWatch(self.pipeline, keys)
        if prelude is not None:
            reads.lead(prelude.queue(reads), lambda found: prelude.took(self, found))
        return reads

    async def gather(self, parts: Sequence[Callable[[Transaction], Awaitable[T]]]) -> list[T]:
        """Run `parts` (each one client's share of a step of several clients' inputs) side
        by side on this attempt, and what they read under WATCH sent together: on one node,
        the reads all of them make before waiting on any go in one round trip (the first
        with the marks), where one after another they took one each. Parts must read
        apart: a key watched by two raises SharedRead (one client's step each, then). On a
        cluster, one after another. The first error of a part is raised once all ended."""
        if len(parts) < 2:
            return [await part(self) for part in parts]
        reads = _GatheredReads(self, together=not isinstance(self.pipeline, ClusterPipeline))
        views = [
            _Part(self.redis, self.pipeline, self.clinic_id, gathered=reads, index=n)
            for n in range(len(parts))
        ]
        try:
            if not reads.together:
                return [await part(view) for part, view in zip(parts, views, strict=True)]
            done = await asyncio.gather(
                *(part(view) for part, view in zip(parts, views, strict=True)),
                return_exceptions=True,
            )
        finally:
            # Cancelled (a drain): no read may go on on the connection the attempt gives back.
            await reads.stop()
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return done  # type: ignore[return-value]


class SharedRead(RuntimeError):
    """Two clients' shares of one step read the same key: neither would see the other's
    write. The inputs go one step each."""


@dataclass
class _Part(Transaction):
    """One part's view of a gathered step's attempt: the keys it watches are its own
    (`_GatheredReads.claim`), and its watched reads wait for the others' and go with
    them (one node), or go as the whole step's (a cluster)."""

    gathered: _GatheredReads | None = None
    index: int = 0

    @property
    def fresh(self) -> list[str]:
        assert self.gathered is not None
        return self.gathered.whole.fresh

    def _claimed(self, keys: Sequence[str]) -> _GatheredReads:
        assert self.gathered is not None
        self.gathered.claim(self.index, keys)
        return self.gathered

    async def watch(self, *keys: str) -> None:
        gathered = self._claimed(keys)
        if gathered.together:
            await gathered.submit(keys, [])
        else:
            await gathered.whole.watch(*keys)

    async def watched_reads(self, *keys: str) -> Pipeline:
        gathered = self._claimed(keys)
        if gathered.together:
            return _PartReads(gathered, keys)
        return await gathered.whole.watched_reads(*keys)


class _PartReads(Pipeline):
    """A part's reads, recorded, and sent with the other parts' (`execute`)."""

    def __init__(self, gathered: _GatheredReads, keys: Sequence[str]) -> None:
        redis = gathered.whole.redis
        super().__init__(redis.connection_pool, redis.response_callbacks, False, None)
        self._gathered, self._keys = gathered, keys

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, self.command_stack = self.command_stack, []
        return await self._gathered.submit(self._keys, stack)


class _GatheredReads:
    """The parts' watched reads, sent as one `watched_reads` of the whole step once every
    part that could run has queued its own (the next turn of the event loop); on a
    cluster (not `together`), only which part watched which key."""

    def __init__(self, whole: Transaction, *, together: bool) -> None:
        self.whole = whole
        self.together = together
        self._queued: list[tuple[Sequence[str], list[Any], asyncio.Future[list[Any]]]] = []
        self._watched_by: dict[str, int] = {}
        self._sending = asyncio.Lock()  # one read at a time on the watched connection
        self._scheduled = False
        self._sends: set[asyncio.Task[None]] = set()

    def claim(self, index: int, keys: Sequence[str]) -> None:
        """`keys` are part `index`'s to watch, or SharedRead."""
        for key in keys:
            _in_slot(key, self.whole.clinic_id)
            if self._watched_by.setdefault(key, index) != index:
                raise SharedRead(f"two clients' shares of a step read {key!r}")

    async def stop(self) -> None:
        """Any read still being sent cancelled, and waited for."""
        for send in list(self._sends):
            send.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)

    def submit(self, keys: Sequence[str], stack: list[Any]) -> asyncio.Future[list[Any]]:
        """A part's reads (`stack`), with `keys` (claimed) watched first: to go with the
        others'."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not keys and not stack:
            future.set_result([])
            return future
        self._queued.append((keys, stack, future))
        if not self._scheduled:
            # After the parts already woken have run up to their own reads.
            self._scheduled = True
            loop.call_soon(self._start)
        return future

    def _start(self) -> None:
        self._scheduled = False
        send = asyncio.ensure_future(self._send())
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)

    async def _send(self) -> None:
        async with self._sending:
            batch, self._queued = self._queued, []
            if not batch:
                return
            try:
                keys = [key for watched, _, _ in batch for key in watched]
                async with await self.whole.watched_reads(*keys) as reads:
                    for _, stack, _ in batch:
                        reads.command_stack.extend(stack)
                    found = await reads.execute()
            except BaseException as error:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(error, Exception):
                    raise
                return
            at = 0
            for _, stack, future in batch:
                if not future.done():
                    future.set_result(found[at : at + len(stack)])
                at += len(stack)


@dataclass
class Prelude:
    """Reads a step's first watched read carries in front of its own, on one node (issue
    19): the handled marks of its inputs, and with `sequence_key` its client's public
    sequence number. One round trip a step where they took one each before it."""

    marks: Marks
    sequence_key: str | None

    def keys(self) -> list[str]:
        return [*self.marks.keys(), *([self.sequence_key] if self.sequence_key else [])]

    def queue(self, reads: Pipeline) -> int:
        """Queue the reads on `reads`; how many replies they take."""
        taken = self.marks.queue(reads)
        if self.sequence_key is not None:
            reads.get(self.sequence_key)
            taken += 1
        return taken

    def took(self, tx: Transaction, found: list[Any]) -> None:
        if self.sequence_key is not None:
            tx.sequences[self.sequence_key] = int(found.pop() or 0)
        tx._fresh = self.marks.fresh(found)


Step = Callable[[Transaction], Awaitable[Decision[R]]]
# Whose marks hash holds a step's inputs' handled marks: one client's, each input's
# client by its id, or none (a key per input).
Owners = str | Mapping[str, str] | None


@dataclass(frozen=True)
class Replayed:
    """The input was handled before: nothing written now (its outputs published again)."""


REPLAYED = Replayed()


class UnitOfWork:
    def __init__(
        self,
        redis: Redis,
        service: str,
        publisher: EventPublisher,
        relay_grace_ms: int = RELAY_GRACE_MS,
        due_buckets: int = DUE_BUCKETS,
        *,
        relayed: bool = True,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._service = service
        self.outbox = Outbox(redis, service, publisher, relay_grace_ms, due_buckets)
        # False: no relay will look (a rebuild, whose publisher drops what it is given),
        # so a write marks no outbox due: the target holds its clinics' keys only.
        self._relayed = relayed
        self._indexes: list[DueIndex] = []
        # A service that publishes on public topics numbers them per client (`_sequenced`):
        # its one-client steps read the client's last number with their marks (`Prelude`).
        self._numbers = any(topic.public for topic in produced_by(service))  # type: ignore[arg-type]

    def index_due(self, index: DueIndex) -> None:
        """Hint `index` after every commit that writes a due item into one of its sources."""
        self._indexes.append(index)

    # --- keys ------------------------------------------------------------------

    def handled_key(self, clinic_id: str, input_id: str) -> str:
        return handled_key(self._service, clinic_id, input_id)

    def marks_key(self, clinic_id: str, owner: str) -> str:
        return marks_key(self._service, clinic_id, owner)

    async def is_handled(self, clinic_id: str, input_id: str, marks_of: str | None) -> bool:
        """Whether the input's handled mark is there (in `marks_of`'s hash, or its own key)."""
        return bool(await self.handled([(clinic_id, input_id, marks_of)]))

    # --- the step ----------------------------------------------------------------

    async def run(
        self,
        clinic_id: str,
        input_ids: Sequence[str],
        step: Step[R],
        *,
        leave_to_relay: bool = False,
        marks_of: Owners = None,
    ) -> R | Replayed | None:
        """Run `step` for the inputs `input_ids` (none: an input that needs no handled
        mark, such as a timer's write made idempotent by the state it checks) in
        `clinic_id`'s slot; publish after. REPLAYED when every input was handled before
        (the clinic's outbox relayed: their outputs, if still there, go again).
        `marks_of`: the client the inputs are about, whose marks hash holds their handled
        marks, or each input's client by its id (a step of several clients' inputs:
        `Transaction.gather`); None: a key each.

        A failed publish raises (an event is then redelivered, and its replay publishes)
        unless `leave_to_relay`: an HTTP request whose write is recorded is answered, and
        the relay publishes its outputs once the broker is back."""
        try:
            return await self._run(clinic_id, input_ids, step, leave_to_relay, marks_of)
        except AttributeError as error:
            if torn_connection(error):  # Redis's fault, not the input's: it comes again
                raise TornConnection("a Redis connection was closed under the step") from error
            raise

    async def _run(
        self,
        clinic_id: str,
        input_ids: Sequence[str],
        step: Step[R],
        leave_to_relay: bool,
        marks_of: Owners,
    ) -> R | Replayed | None:
        marks = Marks.of(self, clinic_id, input_ids, marks_of)
        one_client = marks_of if isinstance(marks_of, str) else None
        numbered = (
            self.sequence_key(clinic_id, one_client) if one_client and self._numbers else None
        )
        for _ in range(CONFLICT_TRIES):
            await fresh_slot_map(self._redis)
            async with no_retry_transaction(self._redis) as tx:
                transaction = Transaction(self._redis, tx, clinic_id)
                if not input_ids:
                    transaction._fresh = []
                elif not marks.owned or isinstance(tx, ClusterPipeline):
                    # Not clients' inputs, or on a cluster: the marks are read, and
                    # replays known, before the step.
                    if await self._replayed(transaction, marks):
                        return REPLAYED
                else:  # the marks come with the step's first watched read
                    transaction.prelude = Prelude(marks, numbered)
                try:
                    decision = await step(transaction)
                except Exception:
                    # Inputs all handled before never reach their step when their marks
                    # are read first: what it made of them now does not count.
                    known = transaction.prelude is not None or transaction._fresh is not None
                    if input_ids and known and await self._replayed(transaction, marks):
                        return REPLAYED
                    raise
                if input_ids:
                    if await self._replayed(transaction, marks):
                        return REPLAYED
                    await marks.find_stale(transaction)
                decision, sequences = await self._sequenced(transaction, decision)
                tx.multi()  # type: ignore[no-untyped-call]
                decision.write(tx)
                for key, last in sequences.items():
                    tx.set(key, last)
                self.outbox.queue(tx, clinic_id, decision.outputs)
                marks.write(tx, transaction.fresh)
                _check_slot(tx, clinic_id)
                queued = _queued(tx)
                # In the MULTI on one node, else after the commit (another slot's keys).
                hints = [
                    (i, i.hint_within(tx, clinic_id, i.hints_of(clinic_id, queued)))
                    for i in self._indexes
                ]
                if decision.outputs and self._relayed:  # in the MULTI on one node, else after
                    hints.append((self.outbox.index, self.outbox.mark_due(tx, clinic_id)))
                if not input_ids and _nothing_queued(tx):
                    # A step of no input (a timer's, a delivery's) that found nothing to do:
                    # no EXEC to send. Its loop looks again; an input's step always writes
                    # at least its handled mark, so its EXEC is never skipped.
                    return decision.result
                try:
                    await execute_replicated(tx, REPLICA_ACK_MS)
                except WatchError:
                    if self._metrics is not None:
                        self._metrics.write_conflict()
                    continue
            await _hint(clinic_id, hints)
            try:
                await self.publish(clinic_id, decision.outputs)
            except Exception:
                if not leave_to_relay:
                    raise
                log.warning(
                    "%s: outputs recorded, not yet published; left to the relay", self._service
                )
            return decision.result
        raise WriteConflict(f"{self._service}: the step kept conflicting in clinic {clinic_id}")

    async def _replayed(self, transaction: Transaction, marks: Marks) -> bool:
        """Whether every input was handled before, their marks read now if the step's reads
        did not bring them. Once any was, the clinic's outbox is relayed: what it holds
        past the grace, these inputs' own outputs among them should their writer have
        died before publishing."""
        if transaction._fresh is None:
            transaction.prelude = None
            transaction._fresh = marks.fresh(await marks.read(transaction))
        if marks.any_handled and not marks.relayed:
            marks.relayed = True
            await self.outbox.relay_once([transaction.clinic_id])
        return not transaction.fresh

    def sequence_key(self, clinic_id: str, client: str) -> str:
        return f"{self._service}:{{{clinic_id}}}:public-seq:{client}"

    async def _sequenced(
        self, transaction: Transaction, decision: Decision[R]
    ) -> tuple[Decision[R], dict[str, int]]:
        """The decision with each public output numbered in its client's sequence (in
        output order), and each numbered client's last number, to write in the MULTI."""
        public = [o for o in decision.outputs if topic_for(o.event).public]
        if not public:
            return decision, {}
        keys = {
            o.envelope.subject: self.sequence_key(transaction.clinic_id, o.envelope.subject)
            for o in public
        }
        known = transaction.sequences
        unread = [key for key in keys.values() if key not in known]
        if unread:
            async with await transaction.watched_reads(*unread) as reads:  # no MGET
                for key in unread:
                    reads.get(key)
                found = await reads.execute()
            known.update((key, int(raw or 0)) for key, raw in zip(unread, found, strict=True))
        last = {subject: known[key] for subject, key in keys.items()}
        numbered: list[Output] = []
        for output in decision.outputs:
            if topic_for(output.event).public:
                subject = output.envelope.subject
                last[subject] += 1
                envelope = output.envelope.model_copy(update={"sequence": last[subject]})
                output = Output(output.event, envelope)
            numbered.append(output)
        written = {keys[subject]: n for subject, n in last.items()}
        return dataclasses.replace(decision, outputs=numbered), written

    async def handled(
        self, inputs: Collection[tuple[str, str, str | None]]
    ) -> set[tuple[str, str, str | None]]:
        """Which of these (clinic id, input id, the client whose marks hold it: `marks_of`)
        were handled: their effects are applied."""
        wanted = list(inputs)
        if not wanted:
            return set()
        # One round trip; the keys are in their clinics' own slots.
        async with self._redis.pipeline(transaction=False) as reads:
            for clinic_id, input_id, owner in wanted:
                reads.exists(self.handled_key(clinic_id, input_id))
                if owner is not None:
                    reads.hexists(self.marks_key(clinic_id, owner), input_id)
            found = iter(await reads.execute())
        handled = set()
        for item in wanted:
            there = [next(found) for _ in range(1 if item[2] is None else 2)]
            if any(there):
                handled.add(item)
        return handled

    # --- the outbox ---------------------------------------------------------------

    @property
    def relay_grace_ms(self) -> int:
        return self.outbox.grace_ms

    @relay_grace_ms.setter
    def relay_grace_ms(self, grace_ms: int) -> None:
        self.outbox.grace_ms = grace_ms

    async def publish(self, clinic_id: str, outputs: Sequence[Output]) -> None:
        """Publish `outputs` (acks=all), then take them out of the outbox."""
        await self.outbox.publish(clinic_id, outputs)

    async def relay_once(self, clinic_ids: Iterable[str], grace_ms: int | None = None) -> int:
        return await self.outbox.relay_once(clinic_ids, grace_ms)

    async def pending(self, clinic_id: str) -> int:
        return await self.outbox.pending(clinic_id)

    def relay(self, work: DueWork, stopping: asyncio.Event) -> Worker:
        return self.outbox.relay(work, stopping)


def handled_key(service: str, clinic_id: str, input_id: str) -> str:
    """An input's handled mark as a key of its own (an input of no one client's, or one
    written before the marks hashes: still read)."""
    return f"{service}:{{{clinic_id}}}:handled:{input_id}"


def marks_key(service: str, clinic_id: str, owner: str) -> str:
    """The handled marks of one client's inputs: a hash, a field per input."""
    return f"{service}:{{{clinic_id}}}:marks:{owner}"


@dataclass
class Marks:
    """Where a step's handled marks are read and written: per client (`owner`), a field of
    the client's hash each; inputs of no client (owner None), a key each."""

    work: UnitOfWork
    clinic_id: str
    groups: list[tuple[str | None, list[str]]]
    any_handled: bool = False
    relayed: bool = False  # the clinic's outbox, once an input was found handled
    sizes: dict[str, int] = field(default_factory=dict)  # each client's marks hash, as read
    stale: dict[str, list[str]] = field(default_factory=dict)  # fields past REMEMBER_S, to go

    @classmethod
    def of(
        cls, work: UnitOfWork, clinic_id: str, input_ids: Sequence[str], owners: Owners
    ) -> Marks:
        """`owners`: the client of every input (one client's id, or by input id), or None."""
        if owners is None or isinstance(owners, str):
            return cls(work, clinic_id, [(owners, list(input_ids))])
        groups: dict[str, list[str]] = {}
        for input_id in input_ids:
            groups.setdefault(owners[input_id], []).append(input_id)
        return cls(work, clinic_id, list(groups.items()))

    @property
    def owned(self) -> bool:
        """Every input's mark is in its client's hash."""
        return all(owner is not None for owner, _ in self.groups)

    def keys(self) -> list[str]:
        """The keys the marks are in, to watch before reading them."""
        keys = []
        for owner, input_ids in self.groups:
            if owner is not None:
                keys.append(self.work.marks_key(self.clinic_id, owner))
            # The keys of marks written before the hashes are read too, until they expire.
            keys += [self.work.handled_key(self.clinic_id, i) for i in input_ids]
        return keys

    def queue(self, reads: Pipeline) -> int:
        """Queue the reads of the marks (no MGET: a cluster pipeline refuses it); how many
        replies they take."""
        taken = 0
        for owner, input_ids in self.groups:
            if owner is not None:
                held = self.work.marks_key(self.clinic_id, owner)
                reads.hmget(held, input_ids)
                reads.hlen(held)
                taken += 2
            for input_id in input_ids:
                reads.exists(self.work.handled_key(self.clinic_id, input_id))
            taken += len(input_ids)
        return taken

    async def read(self, tx: Transaction) -> list[Any]:
        """The marks' replies, their keys watched first (a round trip of their own)."""
        async with await tx.watched_reads(*self.keys()) as reads:
            self.queue(reads)
            found: list[Any] = await reads.execute()
            return found

    def fresh(self, found: list[Any]) -> list[str]:
        """The inputs not handled before, from the replies to `queue`'s reads."""
        replies, fresh = iter(found), []
        for owner, input_ids in self.groups:
            in_hash: list[Any] = [None] * len(input_ids)
            if owner is not None:
                in_hash, self.sizes[owner] = next(replies), next(replies)
            for input_id, in_its_hash in zip(input_ids, in_hash, strict=True):
                in_its_key = next(replies)
                if in_its_hash is not None or in_its_key:
                    self.any_handled = True
                else:
                    fresh.append(input_id)
        return fresh

    async def find_stale(self, tx: Transaction) -> None:
        """Once a client's hash holds more than TRIM_MARKS_OVER marks, those older than
        REMEMBER_S, for `write` to take out (the hash is watched: read after the WATCH)."""
        self.stale = {}
        horizon = time.time() - REMEMBER_S
        for owner, _ in self.groups:
            if owner is None or self.sizes.get(owner, 0) <= TRIM_MARKS_OVER:
                continue
            every = await tx.redis.hgetall(self.work.marks_key(self.clinic_id, owner))
            self.stale[owner] = [_text(f) for f, at in every.items() if _written_at(at) < horizon]

    def write(self, tx: Pipeline, fresh: Sequence[str]) -> None:
        """Queue the marks of the `fresh` inputs on the MULTI."""
        wanted = set(fresh)
        for owner, input_ids in self.groups:
            now_fresh = [i for i in input_ids if i in wanted]
            if owner is None:
                for input_id in now_fresh:
                    tx.set(self.work.handled_key(self.clinic_id, input_id), "", ex=REMEMBER_S)
                continue
            held = self.work.marks_key(self.clinic_id, owner)
            if self.stale.get(owner):
                tx.hdel(held, *self.stale[owner])
            if now_fresh:
                # Each field holds when it was written, short enough (under Redis's
                # hash-max-listpack-value, 64) to keep the hash a compact listpack.
                tx.hset(held, mapping=dict.fromkeys(now_fresh, str(int(time.time()))))
                tx.expire(held, REMEMBER_S)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _written_at(raw: Any) -> float:
    stamp = _text(raw)
    return float(stamp) if stamp.isdigit() else 0.0


async def _hint(clinic_id: str, hints: Sequence[tuple[DueIndex, float | None]]) -> None:
    """The write is done whatever becomes of its hints: one lost is the sweep's."""
    for index, at in hints:
        if at is None:
            continue
        try:
            await index.hint(clinic_id, at)
        except Exception:
            log.warning("clinic %s: %s due hint lost; the sweep finds it", clinic_id, index.kind)


def _in_slot(key: str, clinic_id: str) -> None:
    if f"{{{clinic_id}}}" not in key:
        raise OutsideSlot(f"key {key!r} is outside clinic {clinic_id}'s slot")


def _check_slot(tx: Pipeline, clinic_id: str) -> None:
    """Every key the MULTI writes is in the clinic's slot: the first argument of each
    queued command, or a script's declared KEYS (MULTI itself has none)."""
    for args in _queued(tx):
        command = str(args[0]).upper()
        if command in ("EVALSHA", "EVAL"):
            names = args[3 : 3 + int(args[2])]
        elif len(args) > 1 and command != "MULTI":
            names = args[1:2]
        else:
            continue
        for name in names:
            _in_slot(name.decode() if isinstance(name, bytes) else str(name), clinic_id)


def _nothing_queued(tx: Pipeline) -> bool:
    return all(str(args[0]).upper() == "MULTI" for args in _queued(tx))


def _queued(tx: Pipeline) -> list[tuple[Any, ...]]:
    """The arguments of each command queued on the MULTI, on one node or a cluster
    (redis-py's cluster pipeline keeps its queue in its transaction strategy)."""
    if hasattr(tx, "command_stack"):
        return [args for args, _ in tx.command_stack]
    queue = getattr(getattr(tx, "_execution_strategy", None), "_command_queue", None)
    if queue is None:  # a redis-py that moved it: fail loudly rather than check nothing
        raise TypeError(f"cannot read the commands queued on {type(tx).__name__}")
    return [command.args for command in queue]
