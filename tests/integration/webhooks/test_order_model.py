"""A client's order, model-based (Hypothesis stateful) on real Redis: events arrive in any
order, some twice, gaps are waited out; the partner's queue must match a small model.

The model: each number is queued once; a number goes once every lower one went, or
when the gap before it was waited out (then the held numbers from the lowest up to
the next gap go; that gap waits a full period of its own); a number arriving after
its gap was skipped goes at once (late, never lost); a repeat changes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from redis.asyncio import Redis

from chassis.clock import FrozenClock
from chassis.replay import DroppingPublisher
from chassis.unit_of_work import UnitOfWork
from services.webhooks.domain import PUBLIC_TYPES, Partner, Secret
from services.webhooks.service import Webhooks, new_secret
from services.webhooks.store import WebhookStore, gap_member
from shared import events as ev
from shared.envelope import Envelope

pytestmark = pytest.mark.integration

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
TOP = 8  # numbers 1..TOP per client


def test_a_clients_order_matches_the_model(redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    try:

        class Order(RuleBasedStateMachine):
            def __init__(self) -> None:
                super().__init__()
                self.redis = Redis.from_url(redis_url)
                self.store = WebhookStore(self.redis)
                work = UnitOfWork(self.redis, "webhooks", DroppingPublisher("webhooks"))
                self.clock = FrozenClock(NOW)
                self.webhooks = Webhooks(self.store, work, self.clock, timedelta(minutes=5))
                self.clinic = f"om-{uuid.uuid4().hex[:8]}"
                self.client = uuid.uuid4()
                self.partner = Partner(
                    id=f"p-{uuid.uuid4().hex[:8]}",
                    name="model",
                    url="https://partner.example/hooks",  # type: ignore[arg-type]
                    event_types=PUBLIC_TYPES,
                    clinics=(self.clinic,),
                    secrets=(Secret(value=new_secret()),),
                    api_key_sha256=uuid.uuid4().hex * 2,
                    created_at=NOW,
                )
                loop.run_until_complete(self.webhooks._save(self.partner, new=True))
                self.ids = {n: str(uuid.uuid4()) for n in range(1, TOP + 1)}
                # The model.
                self.released = 0
                self.held: set[int] = set()
                self.queued: list[int] = []  # in the order they were queued

            def teardown(self) -> None:
                async def clean() -> None:
                    async with self.redis.pipeline(transaction=True) as p:
                        self.store.delete_partner(p, self.partner)
                        await p.execute()
                    await self.redis.aclose()

                loop.run_until_complete(clean())

            def publish(self, number: int) -> None:
                event = ev.ClientStageReached(
                    clinic_id=self.clinic,
                    client_id=self.client,
                    occurred_at=NOW,
                    stage=ev.ClientStage.ENROLLED,
                )
                envelope = Envelope(
                    id=self.ids[number],
                    source="/kap/scheduler",
                    type="kap.public.client.stage-reached.v1",
                    time=NOW,
                    subject=str(self.client),
                    clinic_id=self.clinic,
                    correlation_id=self.ids[number],
                    sequence=number,
                )
                loop.run_until_complete(self.webhooks.accept(event, envelope))

            @rule(number=st.integers(1, TOP))
            def arrives(self, number: int) -> None:
                first_time = number not in self.queued and number not in self.held
                self.publish(number)
                if not first_time:
                    return  # a repeat (same id): its handled mark says so
                if number <= self.released:
                    self.queued.append(number)  # late, after its gap was skipped
                    return
                self.held.add(number)
                while self.released + 1 in self.held:
                    self.released += 1
                    self.held.remove(self.released)
                    self.queued.append(self.released)

            @precondition(lambda self: bool(self.held))
            @rule()
            def gap_waited_out(self) -> None:
                async def fire() -> None:
                    self.clock.advance(timedelta(minutes=6))
                    leases = await self.store.leases.claim(
                        self.clinic, self.clock.now(), 30_000, 50
                    )
                    gaps = [x for x in leases if x.member == gap_member(str(self.client))]
                    assert gaps, "the gap timer was not due"
                    for lease in leases:
                        if lease in gaps:
                            await self.webhooks.end_gap(self.clinic, str(self.client), lease)
                        else:  # senders: back to due, untouched (no delivery here)
                            await self.store.leases.let_go(lease)

                loop.run_until_complete(fire())
                # From the lowest held number up to the next gap, which waits afresh.
                number = min(self.held)
                while number in self.held:
                    self.held.remove(number)
                    self.queued.append(number)
                    self.released = number
                    number += 1

            @invariant()
            def the_queue_is_the_models(self) -> None:
                key = self.store.queue_key(self.clinic, self.partner.id, str(self.client))
                rows = loop.run_until_complete(self.redis.zrange(key, 0, -1, withscores=True))
                assert sorted(int(score) for _, score in rows) == sorted(self.queued)
                assert len(rows) == len(set(self.queued)) == len(self.queued)

        Order.TestCase.settings = settings(
            max_examples=40,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        Order.TestCase().runTest()
    finally:
        loop.close()
