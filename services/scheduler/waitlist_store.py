"""The clinic's consultation waitlist and slot offers in Redis, all in the clinic's slot.

    sched:{clinic}:waitlist                 zset: client id -> when they joined (epoch s)
    sched:{clinic}:offer:{offer id}         an Offer (JSON)
    sched:{clinic}:offer-token:{digest}     offer id, by the SHA-256 of its link's token
    sched:{clinic}:offers:due|inflight|tokens   the offers' expiry timers (chassis.leases)

Reads are made after the caller's step watched the keys (`Transaction.watch`);
writes are queued on the step's MULTI. The token itself is never stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.leases import LeaseQueue
from services.scheduler.domain.waitlist import Offer
from services.scheduler.ledger import text

# An offer is kept this long after it expires, so a late click answers "expired".
OFFER_KEPT = timedelta(days=30)


def key(clinic_id: str, *parts: str) -> str:
    return ":".join(("sched", f"{{{clinic_id}}}", *parts))  # as store.key


class OfferQueue(LeaseQueue):
    def due_key(self, clinic_id: str) -> str:
        return key(clinic_id, "offers", "due")

    def leased_key(self, clinic_id: str) -> str:
        return key(clinic_id, "offers", "inflight")

    def tokens_key(self, clinic_id: str) -> str:
        return key(clinic_id, "offers", "tokens")


def new_token(clinic_id: str) -> tuple[str, str]:
    """A single-use link token naming its clinic (whose slot holds the offer), and the
    digest it is stored under."""
    token = f"{clinic_id}.{secrets.token_urlsafe(24)}"
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def clinic_of(token: str) -> str:
    return token.rpartition(".")[0]


class WaitlistStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.expiries = OfferQueue(redis, "offers")

    # --- keys --------------------------------------------------------------------

    def waitlist_key(self, clinic_id: str) -> str:
        return key(clinic_id, "waitlist")

    def offer_key(self, clinic_id: str, offer_id: UUID) -> str:
        return key(clinic_id, "offer", str(offer_id))

    def token_key(self, clinic_id: str, token_digest: str) -> str:
        return key(clinic_id, "offer-token", token_digest)

    # --- reads ---------------------------------------------------------------------

    async def waiting(self, clinic_id: str) -> list[tuple[UUID, datetime]]:
        """The waitlist in order of joining, with when each joined."""
        rows: Any = await self.redis.zrange(self.waitlist_key(clinic_id), 0, -1, withscores=True)
        return [(UUID(text(m)), datetime.fromtimestamp(float(s), UTC)) for m, s in rows]

    async def offer(self, clinic_id: str, offer_id: UUID) -> Offer | None:
        raw = await self.redis.get(self.offer_key(clinic_id, offer_id))
        return Offer.model_validate_json(raw) if raw else None

    async def offer_id_for(self, clinic_id: str, token_digest: str) -> UUID | None:
        raw = await self.redis.get(self.token_key(clinic_id, token_digest))
        return UUID(text(raw)) if raw else None

    # --- queued onto a write step's MULTI ---------------------------------------------

    def join(self, p: Pipeline, clinic_id: str, client_id: UUID, at: datetime) -> None:
        """On the list from `at`, unless already on it (the place is kept)."""
        p.zadd(self.waitlist_key(clinic_id), {str(client_id): at.timestamp()}, nx=True)

    def leave(self, p: Pipeline, clinic_id: str, client_id: UUID) -> None:
        p.zrem(self.waitlist_key(clinic_id), str(client_id))

    def save_offer(self, p: Pipeline, offer: Offer, now: datetime) -> None:
        """The offer, its token's index and its expiry timer (armed while it is open)."""
        kept = max(int((offer.expires_at + OFFER_KEPT - now).total_seconds()), 60)
        p.set(self.offer_key(offer.clinic_id, offer.offer_id), offer.model_dump_json(), ex=kept)
        token = self.token_key(offer.clinic_id, offer.token_digest)
        p.set(token, str(offer.offer_id), ex=kept)
        member = str(offer.offer_id)
        if offer.status == "open":
            self.expiries.schedule(p, offer.clinic_id, member, offer.expires_at)
        else:
            self.expiries.cancel(p, offer.clinic_id, member)
