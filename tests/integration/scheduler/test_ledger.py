"""No double booking, enforced by Redis itself: racing writers, exactly one winner."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from services.scheduler.ledger import BookingLedger, Claim

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


async def test_undoing_a_change_lets_go_only_of_the_holds_it_added(
    redis_client: Redis, unique: str
) -> None:
    ledger, clinic = BookingLedger(redis_client), f"undo-{unique}"
    booked = medicine_claims("r", "t")
    assert await ledger.reserve(clinic, booked) is None
    moves = ledger.moves(clinic)
    later = medicine_claims("r", "t", START + timedelta(days=2))

    assert await moves.hold([*booked, *later]) is None  # held already, and new
    await moves.undo()

    room = await redis_client.zrange(f"sched:{{{clinic}}}:booked:room:r", 0, -1)
    assert room == [booked[1].member]


async def test_a_change_may_take_the_slot_it_gives_up_which_goes_only_once_saved(
    redis_client: Redis, unique: str
) -> None:
    ledger, clinic = BookingLedger(redis_client), f"swap-{unique}"
    cancelled = medicine_claims("r", "t")
    assert await ledger.reserve(clinic, cancelled) is None
    moves = ledger.moves(clinic)
    moves.release_after_save(cancelled)
    replacement = medicine_claims("r", "t")  # another appointment, the same hours

    assert await moves.hold(replacement) is None
    room = f"sched:{{{clinic}}}:booked:room:r"
    assert await redis_client.zcard(room) == 2  # both, until the change is saved
    await moves.settle()
    assert await redis_client.zrange(room, 0, -1) == [replacement[1].member]
    # Anyone else is still refused the slot.
    assert await ledger.reserve(clinic, medicine_claims("r", "t")) is not None
