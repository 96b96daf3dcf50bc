"""What the webhook service decides, without I/O: who may receive an event, in which
order, when to try again, and which addresses a delivery may connect to.

Order: the scheduler numbers each client's public events 1, 2, 3... across the
public topics (`clientsequence`). The topics are read side by side, so a client's
event 5 may be read before its event 4; an event is *released* to the partners
only once every lower number of its client was, or after `gap_wait` (an event
lost for good, or numbered before this service first read the client). Each
partner then gets a client's events in number order, one at a time: the next
waits for the previous one's 2xx (or its dead letter).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl

from shared.topics import ALL

# The event types a partner may subscribe to: the public catalogue, nothing else.
PUBLIC_TYPES: tuple[str, ...] = tuple(t.name for t in ALL if t.public)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Secret(BaseModel):
    """A signing secret (`whsec_` + base64), valid until `until` (None: no end)."""

    model_config = ConfigDict(frozen=True)

    value: str
    until: AwareDatetime | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.until is None or now < self.until


class Partner(BaseModel):
    """A partner and its one subscription: where, which event types, which clinics."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str = Field(min_length=1, max_length=200)
    url: HttpUrl
    event_types: tuple[str, ...]
    clinics: tuple[str, ...]
    secrets: tuple[Secret, ...]
    api_key_sha256: str
    disabled: str | None = Field(default=None, description="Why deliveries stopped (410 Gone)")
    created_at: AwareDatetime

    def receives(self, event_type: str, clinic_id: str) -> bool:
        """Whether an event of this type (a public topic's name) and clinic is for it."""
        return (
            self.disabled is None and event_type in self.event_types and clinic_id in self.clinics
        )

    def signing_secrets(self, now: datetime) -> list[str]:
        """Every secret valid now: each signs, so a rotation breaks no receiver."""
        return [s.value for s in self.secrets if s.valid_at(now)]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, for up to `give_up_after`."""

    first: timedelta = timedelta(seconds=5)
    longest: timedelta = timedelta(hours=1)
    give_up_after: timedelta = timedelta(hours=24)

    def delay(self, failures: int, rng: random.Random | None = None) -> timedelta:
        """How long after its `failures`-th failure an event is tried again: uniform in
        [first, min(longest, first * 2^(failures-1))] (jitter keeps a recovering partner
        from being hit by every queued retry at once)."""
        ceiling = min(self.longest, self.first * 2 ** max(failures - 1, 0))
        spread = (ceiling - self.first).total_seconds()
        return self.first + timedelta(seconds=(rng or random).uniform(0, max(spread, 0.0)))

    def gives_up(self, first_failed: datetime, now: datetime) -> bool:
        return now - first_failed >= self.give_up_after


def releasable(released: int, held: Iterable[int]) -> list[int]:
    """The held sequence numbers that follow `released` without a gap, in order."""
    out: list[int] = []
    waiting = set(held)
    next_number = released + 1
    while next_number in waiting:
        out.append(next_number)
        next_number += 1
    return out


def past_gap(held: Iterable[int]) -> list[int]:
    """After a gap waited long enough: the held numbers from the lowest on, up to the
    next gap (which waits a full period of its own: its number may still come)."""
    numbers = list(held)
    return releasable(min(numbers) - 1, numbers) if numbers else []


class AddressRefused(ValueError):
    """A target that resolves to an address a webhook may not reach."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """`KAP_WEBHOOK_ALLOW_NETWORKS`: comma-separated CIDRs ("127.0.0.0/8,::1/128")."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def check_address(address: Address, allowed: Sequence[Network]) -> None:
    """Refuse private, loopback, link-local, multicast, reserved and unspecified
    addresses (a webhook must not reach into the clinic group's own network, cloud
    metadata at 169.254.169.254 among it) unless an allowed network holds them."""
    if any(address in network for network in allowed):
        return
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            check_address(address.ipv4_mapped, allowed)
            return
        # An IPv4 address inside an IPv6 one (NAT64, 6to4, Teredo, IPv4-compatible) may
        # reach the IPv4 network behind a translator: refused whatever it embeds.
        if any(address in network for network in _EMBEDDING):
            raise AddressRefused(f"{address} embeds an IPv4 address")
    if not address.is_global or address.is_multicast:
        raise AddressRefused(f"{address} is not a public address")


_EMBEDDING = tuple(
    ipaddress.IPv6Network(n)
    for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "::/96")
)
