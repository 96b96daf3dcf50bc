"""The Operations page (group admins): each consumer group's lag, the dead letters with
their reasons and a replay, and whether every service is ready.

Kafka is read through ops.operations, as `kapctl lag` and `kapctl dlq` read it, with the
console's own Kafka login. Every Kafka call is bounded: a Kafka that does not answer is
said on the page, not a page that hangs or a 500. A dead letter's payload is never shown
(it can hold PHI); nor is its key (the client's id), which the page does not need.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from chassis.dead_letters import HEADER_DEAD_AT
from ops.operations import (
    OPERATED_GROUPS,
    REPLAY_GROUP,
    DeadLetter,
    Lag,
    consumer_lag,
    dead_letters,
    dlq_topics,
    replay_dead_letters,
)
from services.console.pages import HEADERS, Kit, Signed
from shared.envelope import HEADER_CLINIC
from shared.topics import DLQ_SUFFIX

log = logging.getLogger(__name__)

KAFKA_WAIT_S = 20.0  # reading every dead-letter topic to its end takes a few seconds
REPLAY_WAIT_S = 60.0
READY_WAIT_S = 3.0
SHOWN_PER_TOPIC = 50
REASON_CHARS = 300
# What a dead letter shows of `DeadLetter.summary()`: named, so a field added to it later
# (the key is one already) stays off the page until someone decides it holds no PHI.
SHOWN = ("dlq", "from", "service", "attempts", "error", "dead_at")
KAFKA_DOWN = (TimeoutError, KafkaError, OSError)
T = TypeVar("T")


@dataclass(frozen=True)
class Kafka:
    bootstrap: str
    security: Mapping[str, Any]  # chassis.kafka.client_options: the services' own login


def routes(
    kit: Kit,
    kafka: Kafka,
    service_urls: Mapping[str, str],
    own_readiness: Callable[[], Awaitable[dict[str, bool]]],
) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    async def group_admin(request: Request) -> Signed | Response:
        who = await kit.signed(request)
        if who is None:
            return kit.to_sign_in()
        if not who.member.group_admin:
            return kit.refused(who, who.session.clinic_id, 403, "Only a group admin sees this.")
        return who

    async def operations_page(
        who: Signed,
        status: int = 200,
        problems: dict[str, str] | None = None,
        chosen: str = "",
        replayed: tuple[int, str] | None = None,
    ) -> HTMLResponse:
        # The replay group's offsets too: they tell a letter replayed from one waiting.
        groups = (*OPERATED_GROUPS, REPLAY_GROUP)
        lags, letters, ready = await asyncio.gather(
            bounded(consumer_lag(kafka.bootstrap, groups, security=kafka.security)),
            bounded(dead_letters(kafka.bootstrap, security=kafka.security)),
            readiness(service_urls, own_readiness),
        )
        return kit.page(
            "operations.html",
            status,
            **kit.frame(
                who,
                who.session.clinic_id,
                lag=None if lags is None else lag_by_group(lags),
                letters=None if letters is None or lags is None else by_topic(letters, lags),
                ready=ready,
                dlq_topics=dlq_topics(),
                problems=problems or {},
                chosen=chosen,
                replayed=replayed,
            ),
        )

    @router.get("/operations")
    async def operations(request: Request, replayed: str = "", topic: str = "") -> Response:
        who = await group_admin(request)
        if isinstance(who, Response):
            return who
        done = (int(replayed), topic) if replayed.isdigit() and topic in dlq_topics() else None
        return await operations_page(who, replayed=done)

    @router.post("/operations/dead-letters/replay")
    async def replay(request: Request) -> Response:
        who = await kit.signed(request)
        if who is None:
            return kit.to_sign_in()
        form = await request.form()
        if not kit.csrf_ok(form, who):
            return kit.refused(who, who.session.clinic_id, 403, "The form expired: open it again.")
        if not who.member.group_admin:
            return kit.refused(who, who.session.clinic_id, 403, "Only a group admin may replay.")
        topic = str(form.get("topic", "")).strip()
        if topic not in dlq_topics():
            problems = {"topic": f"{topic or 'nothing'} is not a dead-letter topic"}
            return await operations_page(who, 422, problems, chosen=topic)
        # Replays what the replay group has not sent yet; one cut short by the timeout
        # may send some again next time (services drop a repeated event by its id).
        original = topic.removesuffix(DLQ_SUFFIX)
        sent = await bounded(
            replay_dead_letters(kafka.bootstrap, original, (), security=kafka.security),
            REPLAY_WAIT_S,
        )
        if sent is None:
            problems = {"topic": "Kafka not answering: the replay did not finish; try again"}
            return await operations_page(who, 503, problems, chosen=topic)
        log.info("console: a group admin replayed %d dead letter(s) of %s", sent, topic)
        return RedirectResponse(
            f"/operations?replayed={sent}&topic={topic}", status_code=303, headers=HEADERS
        )

    return router


async def bounded(call: Awaitable[T], wait_s: float = KAFKA_WAIT_S) -> T | None:
    """The call's answer, or None when Kafka does not answer within `wait_s`."""
    try:
        return await asyncio.wait_for(call, wait_s)
    except KAFKA_DOWN as away:
        log.warning("console: Kafka not answering (%s)", type(away).__name__)
        return None


def lag_by_group(lags: list[Lag]) -> dict[str, dict[str, Any]]:
    """Each operated group's lag per topic (summed over partitions) and in all; a group
    that never committed (not started yet) has no topics."""
    groups: dict[str, dict[str, int]] = {group: defaultdict(int) for group in OPERATED_GROUPS}
    for lag in lags:
        if lag.group in groups:
            groups[lag.group][lag.topic] += lag.behind
    return {
        group: {"topics": dict(sorted(topics.items())), "total": sum(topics.values())}
        for group, topics in groups.items()
    }


def by_topic(letters: list[DeadLetter], lags: list[Lag]) -> dict[str, dict[str, Any]]:
    """Each dead-letter topic's count and its last SHOWN_PER_TOPIC letters, newest first,
    each marked replayed or not (by the replay group's committed offset)."""
    sent = {(lag.topic, lag.partition): lag.committed for lag in lags if lag.group == REPLAY_GROUP}
    grouped: dict[str, list[DeadLetter]] = defaultdict(list)
    for letter in letters:
        grouped[letter.dlq_topic].append(letter)
    found = {}
    for topic, kept in sorted(grouped.items()):
        # Read partition by partition; their time (UTC, ISO) orders them across partitions.
        kept.sort(key=lambda k: (k.headers.get(HEADER_DEAD_AT, ""), k.partition, k.offset))
        newest = kept[::-1][:SHOWN_PER_TOPIC]
        rows = [shown(k, k.offset < sent.get((topic, k.partition), 0)) for k in newest]
        found[topic] = {"count": len(kept), "shown": rows}
    return found


def shown(letter: DeadLetter, replayed: bool) -> dict[str, Any]:
    summary = letter.summary()
    row = {name: summary.get(name) or "—" for name in SHOWN}
    row["error"] = str(row["error"])[:REASON_CHARS]
    row["clinic_id"] = letter.headers.get(HEADER_CLINIC) or "—"
    row["replayed"] = replayed
    return row


async def readiness(
    urls: Mapping[str, str], own: Callable[[], Awaitable[dict[str, bool]]]
) -> dict[str, str]:
    """Each service's `/readyz` answer as words ("ready", "not ready (503)"), and the
    console's own, asked of its runtime (a request to itself would cross the network)."""
    async with httpx.AsyncClient(timeout=READY_WAIT_S) as client:
        answers = await asyncio.gather(*(probe(client, url) for url in urls.values()))
    checks = await own()
    failing = [name for name, ok in checks.items() if not ok]
    console = f"not ready ({', '.join(failing)})" if failing else "ready"
    return {**dict(zip(urls, answers, strict=True)), "console": console}


async def probe(client: httpx.AsyncClient, url: str) -> str:
    try:
        answer = await client.get(f"{url.rstrip('/')}/readyz")
    except httpx.HTTPError as away:
        return f"not ready ({type(away).__name__})"
    return "ready" if answer.status_code == 200 else f"not ready ({answer.status_code})"
