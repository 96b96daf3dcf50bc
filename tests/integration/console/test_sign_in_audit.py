"""A sign-in is granted only once its audit record is written, on real Redis: with the
audit sink failing, the right password starts no session (issue 21: an audit event for
each sign-in)."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from chassis.replay import DroppingPublisher
from chassis.staff_tokens import Role
from chassis.unit_of_work import UnitOfWork
from services.console.staff import AuditUnavailable, Policy, Staff
from services.console.store import ConsoleStore
from shared.events import StaffSignIn

pytestmark = pytest.mark.integration


async def test_no_session_starts_when_the_sign_in_cannot_be_audited(
    redis_client: Redis,
) -> None:
    written: list[StaffSignIn] = []
    kafka_away = True

    async def audit(record: StaffSignIn) -> None:
        if kafka_away:
            raise ConnectionError("kafka away")
        written.append(record)

    work = UnitOfWork(redis_client, "console", DroppingPublisher("console"), relayed=False)
    store = ConsoleStore(redis_client)
    staff = Staff(store, work, Policy(3600, 5, 900), audit)
    email = f"audit-{uuid.uuid4().hex[:8]}@clinic.example"
    await staff.add(email, "Audit Test", Role.CLINICIAN, ("lisbon",), "right-password-1")

    with pytest.raises(AuditUnavailable):
        await staff.sign_in(email, "right-password-1")
    sessions = [key async for key in redis_client.scan_iter(store.session_key("*"))]
    held = [await redis_client.get(key) or "" for key in sessions]
    assert all(email not in value for value in held)

    kafka_away = False
    session, _ = await staff.sign_in(email, "right-password-1")
    assert await store.session(session.id) is not None
    assert [r.outcome for r in written] == ["signed_in"]
    assert written[0].clinic_id == "lisbon"
    assert written[0].role == "clinician"
    assert email not in written[0].model_dump_json()
