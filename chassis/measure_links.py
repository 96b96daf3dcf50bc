"""Measure links: a signed, expiring token naming a client, their clinic and one measure.

The notifier mints one for each measure message (`/m/{token}` on the public base
URL); intake's form reads it back. Nothing else is in the URL: no name, no
contact, no score. Signing is itsdangerous's (HMAC-SHA256 here, with a salt
per purpose), not hand-rolled; the expiry is in the signed payload and checked
against the injected clock, so a scaled demo clock expires links as a clinic's
would. A token is used up by the submission, not by opening it (mail scanners
follow links): that single use is the reader's record, not the token's.

Rotation: the first secret signs, every secret given verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "kap.measure-link.v1"


@dataclass(frozen=True)
class MeasureLink:
    clinic_id: str
    client_id: UUID
    measure_id: UUID
    expires_at: datetime


class LinkInvalid(Exception):
    """Not a token this deployment signed (tampered, truncated, or another secret's)."""


class LinkExpired(Exception):
    """A genuine link past its expiry: the client is told how to get a new one."""

    def __init__(self, link: MeasureLink) -> None:
        super().__init__(f"measure link expired at {link.expires_at.isoformat()}")
        self.link = link


class MeasureLinks:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets or any(len(secret) < 16 for secret in secrets):
            raise ValueError("measure link secrets must be given, each at least 16 characters")
        self._serializer = URLSafeSerializer(
            list(reversed(secrets)),  # itsdangerous signs with the last, verifies with all
            salt=SALT,
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    def mint(self, link: MeasureLink) -> str:
        payload = [
            link.clinic_id,
            link.client_id.hex,
            link.measure_id.hex,
            int(link.expires_at.timestamp()),
        ]
        token = self._serializer.dumps(payload)
        return token if isinstance(token, str) else token.decode()

    def read(self, token: str, now: datetime) -> MeasureLink:
        """The link a token names; LinkInvalid or LinkExpired otherwise."""
        try:
            clinic_id, client_hex, measure_hex, expires = self._serializer.loads(token)
            link = MeasureLink(
                str(clinic_id),
                UUID(hex=client_hex),
                UUID(hex=measure_hex),
                datetime.fromtimestamp(int(expires), UTC),
            )
        except (BadSignature, ValueError, TypeError) as error:
            raise LinkInvalid("not a measure link of this deployment") from error
        if now >= link.expires_at:
            raise LinkExpired(link)
        return link
