"""Staff accounts and sessions: each change a step through the one write path.

Sign-in: every attempt counts (before its password is checked, so attempts at
once cannot slip past the limit); an account with `lockout_failures` attempts
within `lockout_s` is refused without its password being checked; a right one
starts a session (a random id, kept in Redis with its CSRF token and the
clinic being worked at) and clears the failures. Unknown and wrong answers look the
same to the caller (and take as long: a hash is checked either way).

Each attempt and each sign-out is audited (shared.topics.STAFF_SIGN_INS) before it is
answered: a sign-in whose record cannot be written is not granted (Kafka away: the
caller is told to retry), so no session starts unaudited.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from chassis.staff_tokens import Role
from chassis.unit_of_work import Decision, Transaction, UnitOfWork, WriteConflict
from services.console.domain import StaffMember, hash_password, password_matches, staff_id_of
from services.console.store import SLOT, ConsoleStore, Session
from shared.events import StaffSignIn

Audit = Callable[[StaffSignIn], Awaitable[None]]  # awaited until the record is written
AUDIT_WAIT_S = 10.0

_NOBODY = hash_password(secrets.token_urlsafe(16))  # checked when the account is unknown


class SignInRefused(Exception):
    """Unknown account or wrong password (the same to the caller)."""


class AuditUnavailable(Exception):
    """The sign-in's audit record could not be written: nothing is granted."""


class Locked(Exception):
    """Too many failed sign-ins: the account waits out its lock-out."""


@dataclass(frozen=True)
class Policy:
    session_ttl_s: int
    lockout_failures: int
    lockout_s: int


class Staff:
    def __init__(
        self,
        store: ConsoleStore,
        unit_of_work: UnitOfWork,
        policy: Policy,
        audit: Audit,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self._work = unit_of_work
        self._policy = policy
        self._audit = audit
        self._now = now

    async def _audited(
        self,
        email: str,
        outcome: str,
        member: StaffMember | None = None,
        clinic_id: str | None = None,
    ) -> None:
        record = StaffSignIn(
            record_id=uuid.uuid4(),  # an attempt is a fact of its own, not derived
            staff_id=uuid.UUID(staff_id_of(email)),
            outcome=outcome,
            clinic_id=clinic_id,
            role=member.role.value if member else None,
            at=self._now(),
        )
        try:
            async with asyncio.timeout(AUDIT_WAIT_S):
                await self._audit(record)
        except Exception as error:  # Kafka away or slow: said, not a 500
            raise AuditUnavailable(type(error).__name__) from error

    async def add(
        self,
        email: str,
        name: str,
        role: Role,
        clinics: Sequence[str],
        password: str,
        *,
        group_admin: bool = False,
    ) -> StaffMember:
        """Add or replace an account (an operator's seeding, `make console`)."""
        member = StaffMember(
            email=email,
            name=name,
            role=role,
            clinics=tuple(clinics),
            group_admin=group_admin,
            password_hash=hash_password(password),
        )
        await self._write(lambda p: self.store.save_member(p, member))
        return member

    async def sign_in(self, email: str, password: str) -> tuple[Session, StaffMember]:
        """Each attempt is counted before its password is checked (under WATCH: attempts
        at once are taken one by one), so a burst gets no more tries than the limit;
        a right password clears the count. The hash is checked off the event loop."""
        limit, window = self._policy.lockout_failures, self._policy.lockout_s

        async def attempt(tx: Transaction) -> Decision[bool]:
            await tx.watch(self.store.failures_key(email))
            tried = await self.store.failures(email)
            if tried >= limit:
                return Decision(write=lambda p: None, result=False)
            return Decision(write=lambda p: self.store.failed(p, email, window), result=True)

        try:
            allowed = await self._work.run(SLOT, [], attempt)
        except WriteConflict:  # a burst of attempts on one account: refused, as locked
            await self._audited(email, "locked")
            raise Locked(email) from None
        member = await self.store.member(email)
        if not allowed:
            await self._audited(email, "locked", member)
            raise Locked(email)
        known = member.password_hash if member else _NOBODY
        if member is None or not await asyncio.to_thread(password_matches, known, password):
            await self._audited(email, "refused", member)
            raise SignInRefused(email)
        session = Session(
            id=secrets.token_urlsafe(32),
            email=member.email,
            csrf=secrets.token_urlsafe(32),
            clinic_id=member.clinics[0],
        )
        await self._audited(email, "signed_in", member, session.clinic_id)
        await self._write(lambda p: self.store.signed_in(p, session, self._policy.session_ttl_s))
        return session, member

    async def current(self, session_id: str) -> tuple[Session, StaffMember] | None:
        session = await self.store.session(session_id)
        if session is None:
            return None
        member = await self.store.member(session.email)
        return (session, member) if member is not None else None

    async def switch(self, session: Session, clinic_id: str) -> Session:
        switched = Session(session.id, session.email, session.csrf, clinic_id)
        await self._write(
            lambda p: self.store.save_session(p, switched, self._policy.session_ttl_s)
        )
        return switched

    async def sign_out(self, session: Session, member: StaffMember) -> None:
        """The session ends first: a sign-out is never held back by its audit record."""
        await self._write(lambda p: self.store.end_session(p, session.id))
        await self._audited(member.email, "signed_out", member, session.clinic_id)

    async def _write(self, write: object) -> None:
        async def step(tx: Transaction) -> Decision[None]:
            return Decision(write=write)  # type: ignore[arg-type]

        await self._work.run(SLOT, [], step)
