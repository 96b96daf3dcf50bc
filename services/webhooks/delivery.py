"""The sending loop: claim due senders, POST each partner's next event, record the outcome.

A sender (`send|<partner>|<client>`, a member of the clinic's lease queue) delivers
its partner's queue for one client, head first: one event at a time, so a client's
next event waits for the previous one's 2xx. Each claimed sender runs as a task of
its own, at most `per_partner` at once per partner (the rest are handed back for a
second), so one slow or failing partner holds its own senders only: never the loop,
never another partner's.

A delivery, checked still true when it goes: the lease still held (another replica
has not taken the sender over), the partner still subscribed to the event's type
and clinic. The target's name is resolved at each connection and every address
checked (chassis of the SSRF rule: `domain.check_address`), and the connection goes
to the checked address (Host and TLS server name kept): a name that resolved to a
public address when the partner was saved and to 10.0.0.1 now is refused now.

The outcome, written fenced through the unit of work: a 2xx takes the head off
(next one due now); `410 Gone` disables the partner (what was queued is kept, for
when it is enabled again; events meanwhile are not queued for it: a replay of the
window sends them); anything else, a connection error or no answer within
`timeout` is a failure: tried again after the policy's backoff, and once the first
failure is `give_up_after` old, the event goes to the partner's dead letters and
the next is due. Timings are real time (the partner's availability, and the
`webhook-timestamp` a receiver checks against its own clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import random
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from chassis.clock import Clock
from chassis.due_work import DueWork
from chassis.leases import Lease
from chassis.metrics import ServiceMetrics
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.webhooks import domain
from services.webhooks.domain import AddressRefused, Network, Partner, RetryPolicy
from services.webhooks.service import Webhooks, _topic_of
from services.webhooks.store import Head, WebhookStore

log = logging.getLogger(__name__)

LEASE_MS = 30_000  # longer than a delivery's timeout and its write
CLAIM_LIMIT = 50  # senders per clinic per round
BUSY_RETRY = timedelta(seconds=1)  # a sender over its partner's limit: again in a second
TRIM_EVERY = 0.01  # the share of deliveries that trim their partner's log after


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    status: int | None  # the HTTP status; None: no answer
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else (self.error or "no answer")


async def resolve(host: str, port: int) -> list[domain.Address]:
    """Every address `host` resolves to now."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def checked_address(url: str, allowed: Sequence[Network]) -> domain.Address:
    """The address to connect to for `url`: every address it resolves to must pass
    (one bad answer among good ones is a rebinding attempt), the first is used."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise AddressRefused(f"{url} has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolve(parts.hostname, port)
    except OSError as error:
        raise AddressRefused(f"{parts.hostname} does not resolve ({error})") from error
    if not addresses:
        raise AddressRefused(f"{parts.hostname} does not resolve")
    for address in addresses:
        domain.check_address(address, allowed)
    return addresses[0]


class Sender:
    """Signs and POSTs one event to a partner, connecting to a checked address.

    One HTTP client per target host name: connections are pooled by address, and one
    opened (its TLS certificate checked) for one name must never carry another name's
    requests (two partners behind one load balancer's address)."""

    def __init__(self, allowed: Sequence[Network], timeout: timedelta) -> None:
        self._allowed = tuple(allowed)
        self._timeout_s = timeout.total_seconds()
        self._clients: dict[str, httpx.AsyncClient] = {}

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def _client(self, hostname: str) -> httpx.AsyncClient:
        client = self._clients.get(hostname)
        if client is None:
            client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
            self._clients[hostname] = client
        return client

    async def post(self, partner: Partner, body: str, event_id: str, now: datetime) -> Attempt:
        url = str(partner.url)
        parts = urlsplit(url)
        try:
            # The whole exchange, the name's resolution included (a partner's name server
            # that never answers is that partner's failure, within its timeout).
            async with asyncio.timeout(self._timeout_s):
                try:
                    address = await checked_address(url, self._allowed)
                except AddressRefused as refused:
                    return Attempt(None, f"refused: {refused}")
                host = f"[{address}]" if address.version == 6 else str(address)
                netloc = f"{host}:{parts.port}" if parts.port else host
                headers = {
                    "content-type": "application/cloudevents+json",
                    "host": parts.netloc.rsplit("@", 1)[-1],
                    "user-agent": "kap-webhooks/1",
                    **signed_headers(partner, event_id, body, now),
                }
                tls = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
                response = await self._client(parts.hostname or "").post(
                    parts._replace(netloc=netloc).geturl(),
                    content=body.encode(),
                    headers=headers,
                    extensions=tls,
                )
        except (httpx.HTTPError, TimeoutError, OSError) as error:
            return Attempt(None, type(error).__name__)
        return Attempt(response.status_code)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def signed_headers(partner: Partner, event_id: str, body: str, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers: every valid secret signs (`v1,<sig> v1,<sig>`)."""
    stamp = now.astimezone(UTC)
    signatures = [
        Webhook(secret).sign(event_id, stamp, body) for secret in partner.signing_secrets(now)
    ]
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


class Delivery:
    def __init__(
        self,
        webhooks: Webhooks,
        store: WebhookStore,
        unit_of_work: UnitOfWork,
        sender: Sender,
        due: DueWork,
        clock: Clock,
        *,
        policy: RetryPolicy,
        per_partner: int,
        poll: timedelta,
        stopping: asyncio.Event,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._webhooks = webhooks
        self._store = store
        self._work = unit_of_work
        self._sender = sender
        self._due = due
        self._clock = clock
        self._policy = policy
        self._per_partner = per_partner
        self._poll_s = poll.total_seconds()
        self._stopping = stopping
        self._metrics = metrics
        self._busy: Counter[str] = Counter()  # senders in flight per partner (this process)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                await self.round()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._poll_s)
        finally:
            # In-flight sends finish (bounded by the timeout); their leases guard the rest.
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self._sender.timeout_s + 5)
            with contextlib.suppress(Exception):
                await self._due.owners.release()

    async def round(self) -> int:
        """Claim what is due in this replica's clinics and start each; how many started."""
        now = self._clock.now()
        started = 0
        for clinic_id in await self._due.clinics(now.timestamp()):
            leases = await self._store.leases.claim(clinic_id, now, LEASE_MS, CLAIM_LIMIT)
            await self._due.settle(clinic_id)
            for lease in leases:
                started += self._start(lease)
        return started

    def _start(self, lease: Lease) -> int:
        kind, *rest = lease.member.split("|")
        if kind == "gap":
            task = asyncio.create_task(
                self._guarded(self._webhooks.end_gap(lease.clinic_id, rest[0], lease))
            )
        elif kind == "send" and len(rest) == 2:
            partner_id = rest[0]
            if self._busy[partner_id] >= self._per_partner:
                task = asyncio.create_task(self._guarded(self._later(lease)))
            else:
                self._busy[partner_id] += 1
                task = asyncio.create_task(self._guarded(self._send(lease, partner_id, rest[1])))
                task.add_done_callback(functools.partial(self._idle, partner_id))
        else:
            log.warning("lease queue member %r is not a webhook sender; dropped", lease.member)
            task = asyncio.create_task(self._guarded(self._store.leases.let_go(lease)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 1

    def _idle(self, partner_id: str, _: asyncio.Task[None]) -> None:
        self._busy[partner_id] -= 1
        if self._busy[partner_id] <= 0:
            del self._busy[partner_id]

    async def _guarded(self, work: Any) -> None:
        try:
            await work
        except Exception as error:  # the lease runs out and the sender is claimed again
            log.warning(
                "webhook sender failed (%s); retried when its lease ends", type(error).__name__
            )

    async def _later(self, lease: Lease) -> None:
        at = self._clock.now() + BUSY_RETRY
        await self._write(lease, lambda p: self._store.leases.retry_at(p, lease, at))

    async def _send(self, lease: Lease, partner_id: str, client: str) -> None:
        clinic_id = lease.clinic_id
        partner = await self._store.partner(partner_id)
        head = await self._store.head(clinic_id, partner_id, client)
        now = self._clock.now()
        if partner is None or head is None:
            await self._finish(lease, partner_id, client, deleted=partner is None)
            return
        if partner.disabled is not None:
            await self._write(lease, lambda p: self._store.leases.done(p, lease))
            return
        event = head.event
        if not partner.receives(_topic_of(event), clinic_id):
            # Unsubscribed since it was queued: not sent, and the log says so.
            await self._write(
                lease, lambda p: self._outcome(p, lease, partner, client, head, "skipped", now)
            )
            return
        if not await self._store.leases.still_held(lease):
            return  # another replica holds the sender now
        attempt = await self._sender.post(partner, head.body, event["id"], self._clock.now())
        now = self._clock.now()
        if self._metrics is not None:
            self._metrics.webhook_attempt(
                partner.id, "delivered" if attempt.delivered else "failed"
            )
        if attempt.delivered:
            await self._write(
                lease,
                lambda p: self._outcome(p, lease, partner, client, head, "delivered", now, attempt),
            )
            if random.random() < TRIM_EVERY:  # noqa: S311 - spreading work, not a secret
                await self._webhooks.trim_log(clinic_id, partner.id)
        elif attempt.gone:
            log.warning("partner %s answered 410 Gone: its deliveries are disabled", partner.id)
            await self._webhooks.disable(partner.id, f"410 Gone at {now.isoformat()}")
            await self._write(lease, lambda p: self._gone(p, lease, partner, head, now))
        else:
            first = head.first_failed_ms or int(now.timestamp() * 1000)
            first_at = datetime.fromtimestamp(first / 1000, UTC)
            if self._policy.gives_up(first_at, now):
                await self._write(
                    lease, lambda p: self._dead(p, lease, partner, client, head, attempt, now)
                )
            else:
                at = now + self._policy.delay(head.failures + 1)
                await self._write(
                    lease,
                    lambda p: self._retry(p, lease, partner, client, head, attempt, first, at, now),
                )

    # --- the outcomes, queued on the fenced write -----------------------------------------

    async def _finish(self, lease: Lease, partner_id: str, client: str, *, deleted: bool) -> None:
        """Nothing queued, or the partner deleted (what it had queued goes too): the sender
        is done, and a new event makes it due again. The queue is watched: an event queued
        meanwhile keeps it (the sender due at once), never deleted unsent."""
        clinic_id = lease.clinic_id

        async def step(tx: Transaction) -> Decision[None]:
            await tx.watch(self._store.queue_key(clinic_id, partner_id, client))
            if not await self._store.leases.fence(tx, lease):
                return Decision(write=lambda p: None)
            if not deleted and await self._store.head(clinic_id, partner_id, client) is not None:
                at = self._clock.now()
                return Decision(write=lambda p: self._store.leases.retry_at(p, lease, at))

            def write(p: Any) -> None:
                self._store.leases.done(p, lease)
                self._store.emptied(p, clinic_id, partner_id, client)

            return Decision(write=write)

        async with self._store.leases.handed_back_on_failure([lease]):
            await self._work.run(clinic_id, [], step)

    def _outcome(
        self,
        p: Any,
        lease: Lease,
        partner: Partner,
        client: str,
        head: Head,
        status: str,
        now: datetime,
        attempt: Attempt | None = None,
    ) -> None:
        clinic_id = lease.clinic_id
        self._store.delivered(p, clinic_id, partner.id, client, head)
        detail: dict[str, Any] = {"attempts": head.failures + 1}
        if attempt is not None:
            detail["response"] = attempt.status
        self._store.log(p, clinic_id, partner.id, head.event, status, now, **detail)
        self._store.leases.retry_at(p, lease, now)  # the next one, if any, at once

    def _gone(self, p: Any, lease: Lease, partner: Partner, head: Head, now: datetime) -> None:
        self._store.log(p, lease.clinic_id, partner.id, head.event, "gone", now, response=410)
        self._store.leases.done(p, lease)

    def _dead(
        self,
        p: Any,
        lease: Lease,
        partner: Partner,
        client: str,
        head: Head,
        attempt: Attempt,
        now: datetime,
    ) -> None:
        clinic_id = lease.clinic_id
        reason = f"no 2xx for {self._policy.give_up_after}: last {attempt.describe()}"
        self._store.dead_lettered(p, clinic_id, partner.id, client, head, reason, now)
        self._store.log(
            p,
            clinic_id,
            partner.id,
            head.event,
            "dead_lettered",
            now,
            attempts=head.failures + 1,
            response=attempt.status,
            reason=reason,
        )
        self._store.leases.retry_at(p, lease, now)

    def _retry(
        self,
        p: Any,
        lease: Lease,
        partner: Partner,
        client: str,
        head: Head,
        attempt: Attempt,
        first_ms: int,
        at: datetime,
        now: datetime,
    ) -> None:
        clinic_id = lease.clinic_id
        self._store.failed(p, clinic_id, partner.id, client, head, first_ms)
        self._store.log(
            p,
            clinic_id,
            partner.id,
            head.event,
            "retrying",
            now,
            attempts=head.failures + 1,
            response=attempt.status,
            error=attempt.error,
            next_at=at.isoformat(),
        )
        self._store.leases.retry_at(p, lease, at)

    async def _write(self, lease: Lease, write: Any) -> None:
        async def step(tx: Transaction) -> Decision[None]:
            if not await self._store.leases.fence(tx, lease):
                return Decision(write=lambda p: None)  # taken over: the new holder writes
            return Decision(write=write)

        async with self._store.leases.handed_back_on_failure([lease]):
            await self._work.run(lease.clinic_id, [], step)
