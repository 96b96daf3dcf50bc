"""Requests racing for one person or one client, on real Kafka and Redis: the write
that loses its WATCH reruns on the winner's state, so nothing is decided twice."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from redis.asyncio import Redis

from shared import topics
from tests.helpers import auth, topic_messages

pytestmark = pytest.mark.integration

URL = "/v1/clinics/lisbon/consultation-requests"
RACERS = 5


def _digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


async def test_a_new_person_asking_several_times_at_once_becomes_one_client(
    intake: httpx.AsyncClient, kafka_bootstrap: str, redis_client: Redis, unique: str
) -> None:
    email = f"racing.{unique}@example.org"
    answers = await asyncio.gather(
        *(
            intake.post(URL, json={"name": "Ada", "email": email}, headers=auth("lisbon"))
            for _ in range(RACERS)
        )
    )
    assert [a.status_code for a in answers] == [202] * RACERS, [a.text for a in answers]
    clients = {a.json()["client_id"] for a in answers}
    assert len(clients) == 1
    [client] = clients
    assert sorted(a.json()["repeat_request"] for a in answers) == [False] + [True] * (RACERS - 1)
    assert await redis_client.get(f"intake:{{lisbon}}:contact:{_digest(email)}") == client
    history = await redis_client.lrange(f"intake:{{lisbon}}:client:{client}:history", 0, -1)
    assert len(history) == RACERS

    published = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_REQUESTED.name, key=client, expect=RACERS
    )
    assert sorted(m["value"]["repeat_request"] for m in published) == sorted(
        a.json()["repeat_request"] for a in answers
    )


async def test_one_key_sent_several_times_at_once_is_decided_and_published_once(
    intake: httpx.AsyncClient, kafka_bootstrap: str, redis_client: Redis, unique: str
) -> None:
    headers = {**auth("lisbon"), "Idempotency-Key": f"race-{unique}"}
    body = {"name": "Ada", "email": f"keyed.{unique}@example.org"}
    answers = await asyncio.gather(
        *(intake.post(URL, json=body, headers=headers) for _ in range(RACERS))
    )
    assert [a.status_code for a in answers] == [202] * RACERS, [a.text for a in answers]
    assert all(a.json() == answers[0].json() for a in answers)
    assert answers[0].json()["repeat_request"] is False
    client = answers[0].json()["client_id"]

    published = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_REQUESTED.name, key=client, wait_s=3, expect=2
    )
    assert len(published) == 1
    history = await redis_client.lrange(f"intake:{{lisbon}}:client:{client}:history", 0, -1)
    assert len(history) == 1


async def test_two_steps_racing_on_one_client_are_applied_one_after_the_other(
    intake: httpx.AsyncClient, kafka_bootstrap: str, unique: str
) -> None:
    created = await intake.post(
        URL, json={"name": "Ada", "email": f"steps.{unique}@example.org"}, headers=auth("lisbon")
    )
    client = created.json()["client_id"]
    outcome = f"/v1/clinics/lisbon/clients/{client}/consultation-outcome"
    answers = await asyncio.gather(
        *(
            intake.post(outcome, json={"outcome": "proceed_to_screening"}, headers=auth("lisbon"))
            for _ in range(RACERS)
        )
    )
    # The first decides; every other reruns on its result and is refused by the domain.
    assert sorted(a.status_code for a in answers) == [202] + [409] * (RACERS - 1)
    held = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_HELD.name, key=client, wait_s=3, expect=2
    )
    assert len(held) == 1
