"""The consultation waitlist over real Kafka and Redis (issue 16, rule 20): a client no
consultation fits for is waitlisted with the earliest date; a cancelled consultation's
slot is offered to the first in line, who accepts it by the link; an offer not accepted
in time goes to the next; a consultation no-show is rebooked once, then waitlisted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.scheduler.domain.waitlist import OfferGone
from services.scheduler.ledger import Claim
from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import World, world

pytestmark = pytest.mark.integration

# Wednesdays 10:00-10:30 Lisbon (UTC+1 in June); the world's clock is Monday 7 June 2027.
WEDNESDAYS = [datetime(2027, 6, 9, 9, tzinfo=UTC) + timedelta(weeks=n) for n in range(4)]
WANTED = (ev.PreferredTime.model_validate({"weekday": 2, "start": "10:00", "end": "10:30"}),)
CONTACT = ev.Contact(name="Test Client", email="client@example.org")


async def block(w: World, starts: list[datetime], therapists: list[str]) -> None:
    """Someone else holds these therapists in these half hours."""
    claims = [
        Claim("therapist", t, uuid.uuid4(), s, s + timedelta(minutes=30))
        for s in starts
        for t in therapists
    ]
    assert await w.scheduler.store.ledger.reserve(w.clinic, claims) is None


async def request(w: World) -> uuid.UUID:
    client = uuid.uuid4()
    event = ev.ConsultationRequested(
        clinic_id=w.clinic,
        client_id=client,
        occurred_at=w.clock.now(),
        contact=CONTACT,
        preferred_times=WANTED,
    )
    await w.scheduler.on_consultation_requested(event, w.publisher.envelope_for(event))
    return client


async def waiting(w: World) -> list[str]:
    return list(await w.redis.zrange(f"sched:{{{w.clinic}}}:waitlist", 0, -1))


async def one(bootstrap: str, topic: topics.Topic, client: uuid.UUID) -> dict[str, object]:
    [message] = await topic_messages(bootstrap, topic.name, key=str(client))
    value: dict[str, object] = message["value"]
    return value


async def booked_then_two_waiting(w: World) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A takes the only free Wednesday slot within four weeks; B, then C, wait."""
    await block(w, WEDNESDAYS[:1], ["t-2", "t-3", "t-4"])
    await block(w, WEDNESDAYS[1:], ["t-1", "t-2", "t-3", "t-4"])
    a = await request(w)
    b = await request(w)
    c = await request(w)
    booked = await w.load(a)
    assert booked.consultation is not None
    assert booked.consultation.starts_at == WEDNESDAYS[0]
    assert await waiting(w) == [str(b), str(c)]
    return a, b, c


async def test_a_consultation_that_cannot_be_booked_is_waitlisted_with_its_earliest_date(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        await block(w, WEDNESDAYS, ["t-1", "t-2", "t-3", "t-4"])
        client = await request(w)
        assert await waiting(w) == [str(client)]
        assert (await w.load(client)).consultation is None
        failed = await one(kafka_bootstrap, topics.CONSULTATION_BOOKING_FAILED, client)
        waitlisted = await one(kafka_bootstrap, topics.CONSULTATION_WAITLISTED, client)
    fifth_wednesday = "2027-07-07T09:00:00Z"
    assert failed["earliest_available_at"] == fifth_wednesday
    assert waitlisted["earliest_available_at"] == fifth_wednesday
    assert waitlisted["position"] == 1


async def test_a_freed_slot_is_offered_to_the_first_in_line_and_accepting_books_it(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        a, b, c = await booked_then_two_waiting(w)
        freed = (await w.load(a)).consultation
        assert freed is not None
        await w.scheduler.cancel_consultation(w.clinic, freed.appointment_id)
        cancelled = await one(kafka_bootstrap, topics.CONSULTATION_CANCELLED, a)
        assert cancelled["appointment_id"] == str(freed.appointment_id)  # no more reminders
        offered = await one(kafka_bootstrap, topics.CONSULTATION_SLOT_OFFERED, b)
        url = str(offered["accept_url"])
        token = url.split("/v1/offers/")[1].removesuffix("/accept")

        outcome, schedule = await w.scheduler.accept_offer(token)
        assert outcome == "accepted"
        assert schedule.consultation is not None
        assert schedule.consultation.starts_at == freed.starts_at
        members = {m for ms in (await w.ledger()).values() for m in ms}
        assert any(m.endswith(str(schedule.consultation.appointment_id)) for m in members)
        assert not any(m.endswith(str(freed.appointment_id)) for m in members)  # released
        assert await waiting(w) == [str(c)]
        with pytest.raises(OfferGone, match="accepted already"):  # single use
            await w.scheduler.accept_offer(token)
        accepted = await one(kafka_bootstrap, topics.CONSULTATION_OFFER_ACCEPTED, b)
        booked = await topic_messages(kafka_bootstrap, topics.CONSULTATION_BOOKED.name, key=str(b))
    assert accepted["appointment"] == offered["appointment"]
    assert len(booked) == 1


async def test_an_offer_not_accepted_in_time_goes_to_the_next_in_line(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        a, b, c = await booked_then_two_waiting(w)
        freed = (await w.load(a)).consultation
        assert freed is not None
        await w.scheduler.cancel_consultation(w.clinic, freed.appointment_id)
        first = await one(kafka_bootstrap, topics.CONSULTATION_SLOT_OFFERED, b)
        assert await w.scheduler.fire_expired_offers(w.clinic) == (0, False)  # not yet

        w.clock.advance(timedelta(hours=24, minutes=1))
        assert await w.scheduler.fire_expired_offers(w.clinic) == (1, False)
        lapsed = await one(kafka_bootstrap, topics.CONSULTATION_OFFER_LAPSED, b)
        second = await one(kafka_bootstrap, topics.CONSULTATION_SLOT_OFFERED, c)
        late = str(first["accept_url"]).split("/v1/offers/")[1].removesuffix("/accept")
        with pytest.raises(OfferGone, match="expired"):
            await w.scheduler.accept_offer(late)
        token = str(second["accept_url"]).split("/v1/offers/")[1].removesuffix("/accept")
        outcome, schedule = await w.scheduler.accept_offer(token)
        assert outcome == "accepted"
        assert await waiting(w) == [str(b)]  # B keeps their place for the next slot
    assert lapsed["lapsed_as"] == "expired"
    assert schedule.consultation is not None
    assert schedule.consultation.starts_at == freed.starts_at


async def no_show(w: World, client: uuid.UUID) -> None:
    """The consultation's end passes and intake says the client did not come."""
    booked = (await w.load(client)).consultation
    assert booked is not None
    w.clock.advance(booked.ends_at - w.clock.now() + timedelta(minutes=5))
    held = ev.ConsultationHeld(
        clinic_id=w.clinic, client_id=client, occurred_at=w.clock.now(), outcome="no_show"
    )
    await w.scheduler.on_consultation_held(held, w.publisher.envelope_for(held))


async def test_a_consultation_no_show_is_rebooked_once_then_the_client_waits(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        client = await request(w)
        first = (await w.load(client)).consultation
        assert first is not None
        assert first.starts_at == WEDNESDAYS[0]

        await no_show(w, client)  # rebooked: the policy's one rebooking (the default)
        again = await w.load(client)
        assert again.consultation is not None
        assert again.consultation.starts_at == WEDNESDAYS[1]  # the client's next time
        assert again.consultation_rebooks == 1
        assert await waiting(w) == []
        members = {m for ms in (await w.ledger()).values() for m in ms}
        assert any(m.endswith(str(again.consultation.appointment_id)) for m in members)

        await no_show(w, client)  # the rebooking used up: the client waits
        assert await waiting(w) == [str(client)]
        assert (await w.load(client)).consultation_status == ev.AppointmentStatus.NOSHOW
        key = str(client)
        booked = await topic_messages(
            kafka_bootstrap, topics.CONSULTATION_BOOKED.name, key=key, expect=3, wait_s=2
        )
        waitlisted = await one(kafka_bootstrap, topics.CONSULTATION_WAITLISTED, client)
        statuses = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_APPOINTMENT_STATUS.name, key=key, expect=4
        )
    assert [b["value"]["appointment"]["starts_at"] for b in booked] == [
        "2027-06-09T09:00:00Z",
        "2027-06-16T09:00:00Z",
    ]
    assert waitlisted["position"] == 1
    assert [(s["value"]["appointment_id"], s["value"]["status"]) for s in statuses] == [
        (str(first.appointment_id), "booked"),
        (str(first.appointment_id), "noshow"),
        (str(again.consultation.appointment_id), "booked"),
        (str(again.consultation.appointment_id), "noshow"),
    ]


async def test_a_client_whose_consultation_was_cancelled_who_asks_again_is_booked_again(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """The cancellation notice says to ask for another time: asking again books one."""
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        client = await request(w)
        first = (await w.load(client)).consultation
        assert first is not None
        await w.scheduler.cancel_consultation(w.clinic, first.appointment_id)
        again = ev.ConsultationRequested(
            clinic_id=w.clinic,
            client_id=client,
            occurred_at=w.clock.now(),
            contact=CONTACT,
            preferred_times=WANTED,
            repeat_request=True,
        )
        await w.scheduler.on_consultation_requested(again, w.publisher.envelope_for(again))
        # A redelivery of the same request books nothing more.
        await w.scheduler.on_consultation_requested(again, w.publisher.envelope_for(again))
        booked = await topic_messages(
            kafka_bootstrap, topics.CONSULTATION_BOOKED.name, key=str(client), expect=2
        )
        second = (await w.load(client)).consultation
    assert len(booked) == 2
    assert second is not None
    assert second.appointment_id != first.appointment_id
    assert booked[1]["value"]["appointment"]["appointment_id"] == str(second.appointment_id)
