"""How to reach each client: the notifier's own projection of contact details and opt-outs.

Written with an event's plan, in its unit of work (plans.PlanStore.writes), from
the read its prefs came from (plans.PlanStore.contact); read again when a message
is sent. PHI: never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from uuid import UUID

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from services.notifier.keys import key
from services.notifier.prefs import ContactPrefs
from shared.events import Channel, Contact


class KnownContact(BaseModel):
    """The notifier's own projection of how to reach a client, from the events it consumed."""

    model_config = ConfigDict(frozen=True)

    contact: Contact | None = None
    opted_out: frozenset[Channel] = frozenset()

    @property
    def prefs(self) -> ContactPrefs:
        if self.contact is None:
            return ContactPrefs(opted_out=self.opted_out)
        return ContactPrefs.from_contact(self.contact, self.opted_out)


ContactChange = Callable[[KnownContact | None], KnownContact]


def contact_key(clinic_id: str, client_id: UUID) -> str:
    return key(clinic_id, "contact", str(client_id))


# The retries of a message without a contact give up within 15 minutes (outcomes.py).
AWAITING_CONTACT_S = 24 * 60 * 60


def awaiting_key(clinic_id: str, client_id: UUID) -> str:
    """The client's messages tried before their contact arrived (topics are not ordered
    with each other: a booking may be handled before the request that brings it): due
    again at once when it does, not at their next retry."""
    return key(clinic_id, "awaiting-contact", str(client_id))


class Contacts:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get_many(
        self, clients: Iterable[tuple[str, UUID]]
    ) -> dict[tuple[str, UUID], KnownContact | None]:
        """The contacts of `clients` (clinic id, client id), read in one round trip (a
        pipeline, not MGET: their keys are in their clinics' slots)."""
        wanted = sorted(set(clients))
        if not wanted:
            return {}
        async with self._redis.pipeline(transaction=False) as reads:
            for clinic_id, client_id in wanted:
                reads.get(contact_key(clinic_id, client_id))
            found = await reads.execute()
        return {
            client: KnownContact.model_validate_json(raw) if raw else None
            for client, raw in zip(wanted, found, strict=True)
        }
