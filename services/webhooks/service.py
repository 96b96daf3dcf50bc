"""The webhook service's use cases: each a step through the one write path.

- `accept`: a public event read from its topic is held until every lower number of
  its client was released, then released to the partners it is for (queued per
  partner and client, its sender due now). Handled once (its id's mark, with the
  writes); a redelivered event changes nothing.
- `end_gap`: a gap that waited `gap_wait` releases what it held.
- partners: saved, changed, rotated and deleted in their own slot; a new or
  re-enabled partner's senders are made due.
- `replay`: events read again from the topics (ops.replay's reader) queued for one
  partner, with their own ids: a receiver drops what it had by `webhook-id`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets as token_source
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio.client import Pipeline

from chassis.clock import Clock
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.webhooks import domain
from services.webhooks.domain import Partner, Secret
from services.webhooks.store import (
    CLIENT_KEPT_S,
    PARTNERS_SLOT,
    WebhookStore,
    gap_member,
    sequence_of,
)
from shared.envelope import Envelope, structured
from shared.events import Event

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret


class NotFound(Exception):
    """No such partner."""


@dataclass(frozen=True)
class Created:
    partner: Partner
    secret: str
    api_key: str


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_source.token_bytes(32)).decode()


def digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class Webhooks:
    def __init__(
        self, store: WebhookStore, unit_of_work: UnitOfWork, clock: Clock, gap_wait: timedelta
    ) -> None:
        self.store = store
        self._work = unit_of_work
        self._clock = clock
        self.gap_wait = gap_wait

    # --- events in ------------------------------------------------------------------

    async def accept(self, event: Event, envelope: Envelope) -> None:
        clinic_id, client = envelope.clinic_id, envelope.subject
        body = json.dumps(structured(envelope, event.model_dump(mode="json")))
        partners = await self._partners_for(clinic_id)
        now = self._clock.now()

        async def step(tx: Transaction) -> Decision[None]:
            key = self.store.client_key(clinic_id, client)
            await tx.watch(key)
            released, held, gap_since = await self.store.client_order(clinic_id, client)
            number = envelope.sequence
            if number is None or number <= released:
                # From before the numbering, or late: its gap was waited out and skipped
                # (a repeat of a released event would have found its handled mark). Sent
                # now, out of order, rather than never.
                return Decision(
                    write=lambda p: self._release(p, clinic_id, client, [body], partners, now)
                )
            held = {**held, number: body}
            going = domain.releasable(released, held)
            return Decision(
                write=lambda p: self._settle(
                    p, clinic_id, client, held, going, gap_since, partners, now, number
                )
            )

        await self._work.run(clinic_id, [envelope.id], step, marks_of=client)

    def _settle(
        self,
        p: Pipeline,
        clinic_id: str,
        client: str,
        held: dict[int, str],
        going: Sequence[int],
        gap_since: int | None,
        partners: Sequence[Partner],
        now: datetime,
        newest: int,
    ) -> None:
        key = self.store.client_key(clinic_id, client)
        if going:
            p.hset(key, "released", going[-1])
            stale = [f"held:{n}" for n in going if n != newest]
            if stale:
                p.hdel(key, *stale)
            self._release(p, clinic_id, client, [held[n] for n in going], partners, now)
        waiting = set(held) - set(going)
        if newest in waiting:
            p.hset(key, f"held:{newest}", held[newest])
        if waiting and (gap_since is None or going):
            # A new gap (or the old one closed and another opened): its own wait.
            p.hset(key, "gap_since", int(now.timestamp() * 1000))
            at = now + self.gap_wait
            p.zadd(self.store.leases.due_key(clinic_id), {gap_member(client): at.timestamp()})
        elif not waiting and gap_since is not None:
            p.hdel(key, "gap_since")
        p.expire(key, CLIENT_KEPT_S)

    def _release(
        self,
        p: Pipeline,
        clinic_id: str,
        client: str,
        bodies: Sequence[str],
        partners: Sequence[Partner],
        now: datetime,
    ) -> None:
        """Queue each event for the partners it is for (its own type, the clinic)."""
        for body in bodies:
            event = json.loads(body)
            for partner in partners:
                if partner.receives(_topic_of(event), clinic_id):
                    self.store.enqueue(
                        p, clinic_id, partner.id, client, body, sequence_of(event), now
                    )

    async def end_gap(self, clinic_id: str, client: str, lease: Any) -> None:
        """A client's gap timer: once the gap has waited `gap_wait` (since it opened: a gap
        closed and another opened meanwhile waits afresh), the numbers after it go from
        the lowest held on, without a gap; what stays held behind another gap waits its
        own full period. Not yet: the timer is set for when it will have waited."""
        now = self._clock.now()

        async def step(tx: Transaction) -> Decision[None]:
            key = self.store.client_key(clinic_id, client)
            await tx.watch(key)
            held_lease = await self.store.leases.fence(tx, lease)
            _, held, gap_since = await self.store.client_order(clinic_id, client)
            if not held_lease:
                return Decision(write=lambda p: None)
            if not held:
                return Decision(write=lambda p: self.store.leases.done(p, lease))
            opened = _at_ms(gap_since) if gap_since is not None else now
            if opened + self.gap_wait > now:
                at = opened + self.gap_wait
                return Decision(write=lambda p: self.store.leases.retry_at(p, lease, at))
            partners = await self._partners_for(clinic_id)
            going = domain.past_gap(held)
            waiting = set(held) - set(going)

            def write(p: Pipeline) -> None:
                p.hset(key, "released", going[-1])
                p.hdel(key, *(f"held:{n}" for n in going))
                self._release(p, clinic_id, client, [held[n] for n in going], partners, now)
                if waiting:  # behind another gap: its own full wait, from now
                    p.hset(key, "gap_since", int(now.timestamp() * 1000))
                    self.store.leases.retry_at(p, lease, now + self.gap_wait)
                else:
                    p.hdel(key, "gap_since")
                    self.store.leases.done(p, lease)

            return Decision(write=write)

        await self._work.run(clinic_id, [], step)

    async def _partners_for(self, clinic_id: str) -> list[Partner]:
        return [
            p for p in await self.store.partners() if p.disabled is None and clinic_id in p.clinics
        ]

    # --- partners ---------------------------------------------------------------------

    async def create(
        self, name: str, url: str, event_types: Sequence[str], clinics: Sequence[str]
    ) -> Created:
        secret, api_key = new_secret(), "whk_" + token_source.token_urlsafe(24)
        partner = Partner(
            id=str(uuid.uuid4()),
            name=name,
            url=url,
            event_types=tuple(event_types),
            clinics=tuple(clinics),
            secrets=(Secret(value=secret),),
            api_key_sha256=digest(api_key),
            created_at=self._clock.now(),
        )
        await self._save(partner, new=True)
        return Created(partner, secret, api_key)

    async def get(self, partner_id: str) -> Partner:
        partner = await self.store.partner(partner_id)
        if partner is None:
            raise NotFound(partner_id)
        return partner

    async def update(self, partner_id: str, **changes: Any) -> Partner:
        enabling = changes.pop("enabled", None)
        if enabling is True:
            changes["disabled"] = None
        elif enabling is False:
            changes["disabled"] = "disabled by an operator"

        def change(partner: Partner) -> Partner:
            changed = partner.model_copy(update=changes)
            return Partner.model_validate(changed.model_dump())  # the changes validated too

        before, after = await self._change(partner_id, change)
        if before.disabled is not None and after.disabled is None:
            await self._wake(after)
        return after

    async def rotate(self, partner_id: str, keep_old_for: timedelta) -> tuple[str, datetime]:
        """A new secret; the ones valid now stay valid for `keep_old_for` at most (all
        sign meanwhile). The new secret, and when the last old one stops signing."""
        now = self._clock.now()
        until = now + keep_old_for
        secret = new_secret()

        def change(partner: Partner) -> Partner:
            kept = tuple(
                s.model_copy(update={"until": min(s.until or until, until)})
                for s in partner.secrets
                if s.valid_at(now)
            )
            return partner.model_copy(update={"secrets": (Secret(value=secret), *kept)})

        _, after = await self._change(partner_id, change)
        old = [s.until for s in after.secrets[1:] if s.until is not None]
        return secret, max(old, default=now)

    async def delete(self, partner_id: str) -> None:
        """The partner, then what was queued for it in each of its clinics."""
        partner = await self.get(partner_id)

        async def step(tx: Transaction) -> Decision[None]:
            await tx.watch(self.store.partner_key(partner_id))
            current = await self.store.partner(partner_id)
            if current is None:
                raise NotFound(partner_id)
            return Decision(write=lambda p: self.store.delete_partner(p, current))

        await self._work.run(PARTNERS_SLOT, [], step)
        for clinic_id in partner.clinics:
            clients = await self.store.waiting(clinic_id, partner_id)

            async def empty(
                tx: Transaction, clinic_id: str = clinic_id, clients: list[str] = clients
            ) -> Decision[None]:
                def write(p: Pipeline) -> None:
                    for client in clients:
                        self.store.emptied(p, clinic_id, partner_id, client)

                return Decision(write=write)

            await self._work.run(clinic_id, [], empty)

    async def disable(self, partner_id: str, reason: str) -> None:
        """Deliveries stop (a 410); nothing if the partner was deleted meanwhile."""
        with contextlib.suppress(NotFound):
            await self._change(partner_id, lambda p: p.model_copy(update={"disabled": reason}))

    async def _change(
        self, partner_id: str, change: Callable[[Partner], Partner]
    ) -> tuple[Partner, Partner]:
        """Read the partner under WATCH and write `change(partner)`: a concurrent change
        (a rotation, a delete, a 410) makes the step read again, never lost."""

        async def step(tx: Transaction) -> Decision[tuple[Partner, Partner]]:
            await tx.watch(self.store.partner_key(partner_id))
            current = await self.store.partner(partner_id)
            if current is None:
                raise NotFound(partner_id)
            after = change(current)
            return Decision(
                write=lambda p: self.store.save_partner(p, after), result=(current, after)
            )

        result = await self._work.run(PARTNERS_SLOT, [], step)
        assert isinstance(result, tuple)
        return result

    async def _save(self, partner: Partner, *, new: bool = False) -> None:
        async def step(tx: Transaction) -> Decision[None]:
            return Decision(write=lambda p: self.store.save_partner(p, partner, new=new))

        await self._work.run(PARTNERS_SLOT, [], step)

    async def _wake(self, partner: Partner) -> None:
        """A re-enabled partner's queued clients: their senders due now."""
        now = self._clock.now()
        for clinic_id in partner.clinics:
            clients = await self.store.waiting(clinic_id, partner.id)
            if not clients:
                continue

            async def step(
                tx: Transaction, clinic_id: str = clinic_id, clients: list[str] = clients
            ) -> Decision[None]:
                def write(p: Pipeline) -> None:
                    due = {f"send|{partner.id}|{c}": now.timestamp() for c in clients}
                    p.zadd(self.store.leases.due_key(clinic_id), due)

                return Decision(write=write)

            await self._work.run(clinic_id, [], step)

    async def trim_log(self, clinic_id: str, partner_id: str) -> None:
        """Keep the newest LOG_ENTRIES statuses of the partner's log in this clinic."""

        async def step(tx: Transaction) -> Decision[None]:
            await tx.watch(self.store.log_order_key(clinic_id, partner_id))
            old = await self.store.beyond_log(clinic_id, partner_id)
            return Decision(write=lambda p: self.store.trim_log(p, clinic_id, partner_id, old))

        await self._work.run(clinic_id, [], step)

    # --- replay -----------------------------------------------------------------------

    async def requeue(
        self, partner: Partner, clinic_id: str, items: Sequence[tuple[Envelope, dict[str, Any]]]
    ) -> int:
        """Queue events read again from the topics for `partner` (one clinic's)."""
        now = self._clock.now()
        bodies = [(env.subject, json.dumps(structured(env, data))) for env, data in items]

        async def step(tx: Transaction) -> Decision[None]:
            def write(p: Pipeline) -> None:
                for client, body in bodies:
                    sequence = sequence_of(json.loads(body))
                    self.store.enqueue(p, clinic_id, partner.id, client, body, sequence, now)

            return Decision(write=write)

        await self._work.run(clinic_id, [], step)
        return len(bodies)


def _at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _topic_of(event: dict[str, Any]) -> str:
    """The public topic an event came from: its CloudEvents type without the `kap.`."""
    return str(event["type"]).removeprefix("kap.")
