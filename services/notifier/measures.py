"""Measure requests (issue 17): the link each carries, and whether one is still worth sending.

The link, `{KAP_PUBLIC_BASE_URL}/m/{token}`, names the client, their clinic and the
measure (chassis.measure_links) and nothing else. It is minted as the message is
prepared for its hand-over, never planned, so no token is kept in Redis or shown
by the API; it expires `ttl` after the message's send instant (its planned
instant, or now if later, on the injected clock). A message prepared again
before its send instant mints the same token: the signature is deterministic.

A request is no longer true once its measure closed (a pre-dose measure closes as
its session starts) or was answered meanwhile (staff may enter the answers at the
desk). The notifier hears answers on intake.measure.answered.v1 and keeps only
that the measure was answered (`notifier:{c}:measures-answered:{client}`, a field
per measure), never the answers; both are checked before the message is prepared and again just
before its hand-over. A pre-dose request is not checked against its session: a
cancelled or moved session's request still closes at the start it was sent for.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.measure_links import MeasureLink, MeasureLinks
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.notifier.context import clinic_time
from services.notifier.keys import RETAIN_S, key
from services.notifier.model import MessageKind, PlannedMessage
from shared import events as ev
from shared.envelope import Envelope


def answered_key(clinic_id: str, client_id: UUID | str) -> str:
    """The client's answered measures (a hash: measure id -> "1"): one small hash per
    client, where a key per measure cost 168 bytes (issue 18). The client's own: an
    answer naming another client's id withdraws nothing."""
    return key(clinic_id, "measures-answered", str(client_id))


def legacy_answered_key(clinic_id: str, client_id: UUID | str, measure_id: UUID | str) -> str:
    """Where an answer was remembered before, one key per measure: still read."""
    return key(clinic_id, "measure-answered", f"{client_id}/{measure_id}")


class MeasureRequests:
    def __init__(
        self, redis: Redis, links: MeasureLinks, public_base_url: str, ttl: timedelta
    ) -> None:
        self._redis = redis
        self._links = links
        self._base = public_base_url.rstrip("/")
        self._ttl = ttl

    async def on_answered(
        self, event: ev.MeasureAnswered, envelope: Envelope, unit_of_work: UnitOfWork
    ) -> None:
        """Remember that the measure was answered (not what): its request goes no more."""
        measure_id = event.measure_id
        if measure_id is None:
            return  # answers outside the schedule: no request to withdraw

        def write(p: Pipeline) -> None:
            answered = answered_key(event.clinic_id, event.client_id)
            p.hset(answered, str(measure_id), "1")
            p.expire(answered, RETAIN_S)  # from the latest answer

        async def step(tx: Transaction) -> Decision[None]:
            return Decision(write)

        await unit_of_work.run(event.clinic_id, [envelope.id], step, marks_of=str(event.client_id))

    async def staleness(self, message: PlannedMessage, now: datetime) -> str | None:
        """Why a measure request is no longer true at `now` (None: send it)."""
        if message.kind != MessageKind.MEASURE_REQUEST:
            return None
        if now >= closes_at(message):
            return "stale: the measure closed"
        measure_id = str(message.context["measure_id"])
        answered = answered_key(message.clinic_id, message.client_id)
        legacy = legacy_answered_key(message.clinic_id, message.client_id, measure_id)
        async with self._redis.pipeline(transaction=False) as reads:
            reads.hexists(answered, measure_id)
            reads.exists(legacy)
            found = await reads.execute()
        if any(found):
            return "stale: the measure was answered"
        return None

    def linked(self, message: PlannedMessage, now: datetime, tz: ZoneInfo) -> PlannedMessage:
        """`message` with its link (`measure_url`) and when the link expires, to render."""
        expires_at = max(message.send_at, now) + self._ttl
        link = MeasureLink(
            clinic_id=message.clinic_id,
            client_id=message.client_id,
            measure_id=UUID(str(message.context["measure_id"])),
            expires_at=expires_at,
        )
        context = {
            **message.context,
            "measure_url": f"{self._base}/m/{self._links.mint(link)}",
            "link_expires_at": clinic_time(expires_at, tz),
        }
        return message.model_copy(update={"context": context})


def closes_at(message: PlannedMessage) -> datetime:
    return datetime.fromisoformat(str(message.context["closes_at_utc"]))
