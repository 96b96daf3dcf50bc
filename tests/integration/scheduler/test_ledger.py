"""No double booking, enforced by Redis itself: racing writers, exactly one winner."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from chassis.unit_of_work import Decision, Step, Transaction, UnitOfWork
from services.scheduler.ledger import Booking, BookingLedger, Claim

pytestmark = pytest.mark.integration
START = datetime(2026, 4, 7, 9, tzinfo=UTC)


def medicine_claims(clinic_room: str, therapist: str, start: datetime = START) -> list[Claim]:
    appointment, client = uuid.uuid4(), str(uuid.uuid4())
    end = start + timedelta(minutes=180)
    return [
        Claim("therapist", therapist, appointment, start, end),
        Claim("room", clinic_room, appointment, start, end),
        Claim("client", client, appointment, start, end),
    ]


async def test_fifty_concurrent_bookings_of_one_slot_produce_exactly_one(
    redis_url: str, unique: str
) -> None:
    clinic = f"race-{unique}"
    # Separate connections, as separate scheduler replicas would have.
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(50)]
    ledgers = [BookingLedger(client) for client in clients]
    try:
        results = await asyncio.gather(
            *(ledger.reserve(clinic, medicine_claims("recliner-1", "t-ana")) for ledger in ledgers)
        )
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    winners = [result for result in results if result is None]
    assert len(winners) == 1
    check = Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await check.zcard(f"sched:{{{clinic}}}:booked:therapist:t-ana") == 1
        assert await check.zcard(f"sched:{{{clinic}}}:booked:room:recliner-1") == 1
    finally:
        await check.aclose()


async def test_a_course_is_held_whole_or_not_at_all(redis_client: Redis, unique: str) -> None:
    ledger, clinic = BookingLedger(redis_client), f"whole-{unique}"
    assert await ledger.reserve(clinic, medicine_claims("recliner-1", "t-ana")) is None
    # A two-session hold whose second session hits the taken room.
    course = medicine_claims("recliner-2", "t-bea", START - timedelta(days=2))
    course += medicine_claims("recliner-1", "t-bea", START + timedelta(hours=1))
    conflict = await ledger.reserve(clinic, course)
    assert conflict is not None
    assert conflict.claim.resource == "room"
    assert await redis_client.zcard(f"sched:{{{clinic}}}:booked:room:recliner-2") == 0
    assert await redis_client.zcard(f"sched:{{{clinic}}}:booked:therapist:t-bea") == 0


async def test_rebooking_the_same_appointment_is_a_no_op(redis_client: Redis, unique: str) -> None:
    ledger, clinic = BookingLedger(redis_client), f"again-{unique}"
    claims = medicine_claims("recliner-1", "t-ana")
    assert await ledger.reserve(clinic, claims) is None
    assert await ledger.reserve(clinic, claims) is None
    assert await redis_client.zcard(f"sched:{{{clinic}}}:booked:room:recliner-1") == 1


async def test_back_to_back_appointments_do_not_overlap(redis_client: Redis, unique: str) -> None:
    ledger, clinic = BookingLedger(redis_client), f"adjacent-{unique}"
    assert await ledger.reserve(clinic, medicine_claims("r", "t", START)) is None
    assert (
        await ledger.reserve(clinic, medicine_claims("r", "t", START + timedelta(hours=3))) is None
    )
    room, therapist = await ledger.booked(
        clinic, [("room", "r"), ("therapist", "t")], START, START + timedelta(hours=6)
    )
    assert [b.starts_at for b in room] == [START, START + timedelta(hours=3)]
    assert [b.starts_at for b in therapist] == [START, START + timedelta(hours=3)]


async def test_a_released_slot_can_be_booked_again(redis_client: Redis, unique: str) -> None:
    ledger, clinic = BookingLedger(redis_client), f"release-{unique}"
    first = medicine_claims("r", "t")
    assert await ledger.reserve(clinic, first) is None
    await ledger.release(clinic, first)
    assert await ledger.reserve(clinic, medicine_claims("r", "t")) is None


def _step(
    ledger: BookingLedger,
    clinic: str,
    claims: list[Claim],
    giving_up: list[Claim] = (),  # type: ignore[assignment]
    won: list[bool] | None = None,
) -> Step[None]:
    """A write step booking `claims` in place of `giving_up`, as a schedule change does."""

    async def step(tx: Transaction) -> Decision[None]:
        booking = ledger.booking(tx, clinic)
        booking.release(giving_up)
        held = await booking.hold(claims) is None
        if won is not None:
            won.append(held)
        return Decision(booking.write if held else lambda p: None)

    return step


async def test_fifty_concurrent_write_steps_for_one_slot_book_it_once(
    redis_url: str, unique: str
) -> None:
    clinic = f"steps-{unique}"
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(50)]
    try:
        outcomes: list[list[bool]] = [[] for _ in clients]
        await asyncio.gather(
            *(
                UnitOfWork(c, "tests", None).run(  # type: ignore[arg-type]
                    clinic,
                    [],
                    _step(BookingLedger(c), clinic, medicine_claims("recliner-1", "t-ana"), [], o),
                )
                for c, o in zip(clients, outcomes, strict=True)
            )
        )
        # The last decision of each step is what it wrote: exactly one held the slot.
        assert sum(o[-1] for o in outcomes) == 1
        room = await clients[0].zrange(f"sched:{{{clinic}}}:booked:room:recliner-1", 0, -1)
        assert len(room) == 1  # counted in Redis, not from the steps' own answers
    finally:
        for c in clients:
            await c.aclose()


async def test_a_change_may_take_the_slot_it_gives_up_in_the_same_write(
    redis_client: Redis, unique: str
) -> None:
    ledger, clinic = BookingLedger(redis_client), f"swap-{unique}"
    cancelled = medicine_claims("r", "t")
    assert await ledger.reserve(clinic, cancelled) is None
    replacement = medicine_claims("r", "t")  # another appointment, the same hours
    uow = UnitOfWork(redis_client, "tests", None)  # type: ignore[arg-type]

    await uow.run(clinic, [], _step(ledger, clinic, replacement, cancelled))

    room = f"sched:{{{clinic}}}:booked:room:r"
    assert await redis_client.zrange(room, 0, -1) == [replacement[1].member]
    # Anyone else is still refused the slot.
    assert await ledger.reserve(clinic, medicine_claims("r", "t")) is not None


async def test_a_booking_made_between_the_check_and_the_write_makes_the_step_decide_again(
    redis_client: Redis, unique: str
) -> None:
    ledger, clinic = BookingLedger(redis_client), f"between-{unique}"
    uow = UnitOfWork(redis_client, "tests", None)  # type: ignore[arg-type]
    decisions: list[bool] = []
    inner = _step(ledger, clinic, medicine_claims("r", "t"), [], decisions)

    async def racing(tx: Transaction) -> Decision[None]:
        decision = await inner(tx)
        if len(decisions) == 1:  # another replica books the slot after the check
            assert await ledger.reserve(clinic, medicine_claims("r", "t")) is None
        return decision

    await uow.run(clinic, [], racing)

    assert decisions == [True, False]  # held, then found taken on the second decision
    assert await redis_client.zcard(f"sched:{{{clinic}}}:booked:room:r") == 1


async def test_slots_ended_a_month_ago_leave_a_resources_set_at_its_next_booking(
    redis_client: Redis, unique: str
) -> None:
    ledger, clinic = BookingLedger(redis_client), f"trim-{unique}"
    old = medicine_claims("recliner-1", "t-ana")
    recent = medicine_claims("recliner-1", "t-ana", START + timedelta(days=20))
    for claims in (old, recent):
        assert await ledger.reserve(clinic, claims) is None
    later = medicine_claims("recliner-1", "t-ana", START + timedelta(days=60))

    def step(tx: Transaction) -> Awaitable[Decision[None]]:
        booking = ledger.booking(tx, clinic)
        booking.now = START + timedelta(days=45)  # the first slot ended 45 days before
        return _hold(booking, later)

    await UnitOfWork(redis_client, "tests", None).run(clinic, [], step)  # type: ignore[arg-type]

    therapist = await redis_client.zrange(f"sched:{{{clinic}}}:booked:therapist:t-ana", 0, -1)
    assert [m.rsplit("|", 1)[1] for m in therapist] == [
        str(recent[0].appointment_id),
        str(later[0].appointment_id),
    ]
    # The old client's set is trimmed when that client books again, not before.
    assert await redis_client.zcard(f"sched:{{{clinic}}}:booked:client:{old[2].resource_id}") == 1


async def _hold(booking: Booking, claims: list[Claim]) -> Decision[None]:
    assert await booking.hold(claims) is None
    return Decision(booking.write)
