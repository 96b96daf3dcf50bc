"""Who acted: a short-lived signed token naming a staff member, their role and clinic.

The console signs one for each call it makes for a signed-in staff member
(`X-Staff-Token`, beside the clinic's `X-API-Key`); the services verify it, refuse
a role its route does not allow (a front desk recording a dose: 403), and name the
actor on the events the request causes (the envelope's `ce_actor`: the staff id
and role, no name or contact). A call with the clinic's key alone is an
integration acting for the clinic (the demo, a practice system): no role to check.

Signing is itsdangerous's (HMAC-SHA256, a salt of its own), not hand-rolled; the
token lasts TOKEN_S of real time (its stamp is the signer's clock). Rotation: the
first secret signs, every secret given verifies.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

SALT = "kap.staff-token.v1"
TOKEN_S = 120  # a token's life: one call, with room for a slow one
SKEW_S = 5  # clocks of the console and the services may differ by this much


class Role(StrEnum):
    FRONT_DESK = "front_desk"
    CLINICIAN = "clinician"
    CLINIC_ADMIN = "clinic_admin"


CLINICAL = frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN})


@dataclass(frozen=True)
class Actor:
    staff_id: str  # pseudonymous: what events carry, never a name or an address
    role: Role
    clinic_id: str

    @property
    def named(self) -> str:
        """As the envelope's `ce_actor` names them."""
        return f"staff:{self.staff_id}/{self.role.value}"


class TokenInvalid(Exception):
    """Not a token of this deployment, or expired."""


class _Backdated(TimestampSigner):
    """Stamps a token SKEW_S early: a verifier whose clock is a little behind the
    signer's would otherwise find it from the future (a negative age is expired)."""

    def get_timestamp(self) -> int:
        return int(time.time()) - SKEW_S


class StaffTokens:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one staff token secret")
        self._issuer = URLSafeTimedSerializer(secrets[0], salt=SALT, signer=_Backdated)
        self._signers = [URLSafeTimedSerializer(s, salt=SALT) for s in secrets]

    def issue(self, actor: Actor) -> str:
        payload = {"s": actor.staff_id, "r": actor.role.value, "c": actor.clinic_id}
        return str(self._issuer.dumps(payload))

    def verify(self, token: str, max_age_s: int = TOKEN_S + SKEW_S) -> Actor:
        for signer in self._signers:
            try:
                payload = signer.loads(token, max_age=max_age_s)
            except SignatureExpired as expired:
                raise TokenInvalid("the staff token expired") from expired
            except BadSignature:
                continue
            try:
                return Actor(str(payload["s"]), Role(payload["r"]), str(payload["c"]))
            except (KeyError, TypeError, ValueError) as malformed:
                raise TokenInvalid("not a staff token") from malformed
        raise TokenInvalid("not a staff token of this deployment")


# The staff member a request acts for, while it is handled (chassis.events reads it).
acting: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("acting", default=None)
