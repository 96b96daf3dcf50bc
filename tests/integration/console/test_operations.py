"""The console's Operations page on real Kafka and Redis, through the app itself (its
lifespan run, over ASGI): a group admin sees a consumer group's lag, a dead letter's
reason (never its payload) and each service's readiness, and replays a dead-letter
topic back to its own; a clinician is refused, and so is a form without its CSRF token
or naming no dead-letter topic.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from fastapi import FastAPI

from ops import console as console_ops
from ops.operations import OPERATED_GROUPS, replay_dead_letters
from ops.stack import free_port
from services.console import operations
from services.console.config import Settings
from services.console.main import create_app
from shared import topics
from tests.helpers import topic_messages, write_clinics

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
CLINIC = "lisbon"
ADMIN = console_ops.SignIn(f"group-admin-{RUN}@kap.example", "clinic_admin", (CLINIC,), True)
CLINICIAN = console_ops.SignIn(f"clinician-{RUN}@{CLINIC}.example", "clinician", (CLINIC,))
# A topic of the test's own, one partition: nobody else's records change its lag.
LAG_TOPIC = "console-operations-lag-test"
LAG_GROUP = f"console-operations-{RUN}"
LISTED = topics.CONSULTATION_OFFER_LAPSED  # its dead letter is listed
REPLAYED = topics.BOOSTER_DECLINED  # its dead letter is replayed
REASON = "invalid payload: appointment_id: Field required"


@pytest.fixture(scope="module")
async def app(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FastAPI]:
    workdir: Path = tmp_path_factory.mktemp("operations")
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings.model_validate(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "REDIS_URL": redis_url,
            "KAP_CLINICS_FILE": str(write_clinics(workdir / "clinics.json")),
            "KAP_HTTP_PORT": "0",
            "KAP_CONSOLE_INTAKE_URL": nowhere,
            "KAP_CONSOLE_SCHEDULER_URL": nowhere,
            "KAP_CONSOLE_NOTIFIER_URL": nowhere,
            "KAP_CONSOLE_WEBHOOKS_URL": nowhere,
            "KAP_CONSOLE_SESSION_SECRET": console_ops.SESSION_SECRET,
            "KAP_CONSOLE_SECURE_COOKIES": "false",  # plain http between test and app
        }
    )
    console = create_app(settings)
    async with console.router.lifespan_context(console):
        await console_ops.seed(redis_url, [ADMIN, CLINICIAN])
        yield console


@pytest.fixture(autouse=True)
def operated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page shows the operated groups: the test's own joins them, rather than moving
    a real service group's offsets on a Kafka that other tests share."""
    monkeypatch.setattr(operations, "OPERATED_GROUPS", (*OPERATED_GROUPS, LAG_GROUP))


@contextlib.asynccontextmanager
async def signed_in(app: FastAPI, account: console_ops.SignIn) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of its own (its own cookies), signed in as `account`."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as browser:
        form = await browser.get("/signin")
        answer = await browser.post(
            "/signin",
            data={"email": account.email, "password": console_ops.PASSWORD, "csrf": csrf_of(form)},
        )
        assert answer.status_code == 303, answer.text
        yield browser


def csrf_of(response: httpx.Response) -> str:
    """The CSRF token of the (first) form on a page."""
    return response.text.split('name="csrf" value="')[1].split('"')[0]


async def dead_letter(bootstrap: str, topic: topics.Topic, key: str, payload: bytes) -> None:
    """A dead letter as chassis.dead_letters writes one: the original's headers and value,
    with the reason and where it came from."""
    headers = {
        "ce_id": f"poison-{key}",
        "ce_clinicid": CLINIC,
        "kap_dlq_error": REASON,
        "kap_dlq_error_type": "ValidationError",
        "kap_dlq_service": "scheduler",
        "kap_dlq_attempts": "1",
        "kap_dlq_topic": topic.name,
        "kap_dlq_partition": "2",
        "kap_dlq_offset": "42",
        "kap_dlq_dead_at": datetime.now(UTC).isoformat(),
    }
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic.dead_letters,
            payload,
            key=key.encode(),
            headers=[(k, v.encode()) for k, v in headers.items()],
        )
    finally:
        await producer.stop()


def payload_naming(person: str) -> bytes:
    return json.dumps({"client_name": person, "clinic_id": CLINIC}).encode()


async def behind_by_three(bootstrap: str) -> None:
    """LAG_GROUP's offset committed on LAG_TOPIC, then three records written after it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(LAG_TOPIC, 1, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    partition = TopicPartition(LAG_TOPIC, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=LAG_GROUP, enable_auto_commit=False
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        for _ in range(3):
            await producer.send_and_wait(LAG_TOPIC, b"{}", partition=0)
        await consumer.commit({partition: end})
    finally:
        await producer.stop()
        await consumer.stop()


async def test_a_group_admin_sees_the_lag_dead_letters_with_their_reason_and_readiness(
    app: FastAPI, kafka_bootstrap: str
) -> None:
    person = f"Zebedee Quaxley-{RUN}"
    await dead_letter(kafka_bootstrap, LISTED, str(uuid.uuid4()), payload_naming(person))
    await behind_by_three(kafka_bootstrap)

    async with signed_in(app, ADMIN) as browser:
        answer = await browser.get("/operations")

    assert answer.status_code == 200, answer.text
    page = answer.text
    assert f"Group {LAG_GROUP}: 3 behind in all" in page
    assert f'<th scope="row">{LAG_TOPIC}</th><td>3</td>' in page
    assert f"{LISTED.dead_letters}:" in page
    assert REASON in page
    assert f"{LISTED.name}[2]@42" in page  # where it came from
    assert person not in page  # the payload (PHI) is never shown
    assert "client_name" not in page
    # Nothing answers at the services' URLs; the console itself is ready.
    assert '<th scope="row">intake</th><td><strong>not ready (ConnectError)</strong>' in page
    assert '<th scope="row">webhooks</th><td><strong>not ready' in page
    assert '<th scope="row">console</th><td>ready</td>' in page
    assert '<a href="/operations">Operations</a>' in page


async def test_a_clinician_may_not_see_or_replay_dead_letters(app: FastAPI) -> None:
    async with signed_in(app, CLINICIAN) as browser:
        page = await browser.get("/operations")
        clients = await browser.get(f"/clinics/{CLINIC}/clients")
        replay = await browser.post(
            "/operations/dead-letters/replay",
            data={"csrf": csrf_of(clients), "topic": REPLAYED.dead_letters},
        )

    assert page.status_code == 403
    assert "Only a group admin" in page.text
    assert '<a href="/operations">' not in clients.text  # no link to it either
    assert replay.status_code == 403


async def test_a_replay_without_the_forms_csrf_token_is_refused(app: FastAPI) -> None:
    async with signed_in(app, ADMIN) as browser:
        answer = await browser.post(
            "/operations/dead-letters/replay", data={"topic": REPLAYED.dead_letters}
        )

    assert answer.status_code == 403
    assert "The form expired" in answer.text


async def test_a_replay_of_no_dead_letter_topic_is_refused_next_to_the_field(
    app: FastAPI,
) -> None:
    async with signed_in(app, ADMIN) as browser:
        form = await browser.get("/operations")
        answer = await browser.post(
            "/operations/dead-letters/replay",
            data={"csrf": csrf_of(form), "topic": REPLAYED.name},  # the topic, not its DLQ
        )

    assert answer.status_code == 422
    assert 'aria-describedby="topic-error"' in answer.text
    error = answer.text.split('id="topic-error"')[1].split("</p>")[0]
    assert f"{REPLAYED.name} is not a dead-letter topic" in error


async def test_a_replay_puts_the_dead_letter_back_on_its_topic(
    app: FastAPI, kafka_bootstrap: str
) -> None:
    # Letters other runs left on this topic go first, so the replay below counts ours.
    await replay_dead_letters(kafka_bootstrap, REPLAYED.name)
    key = str(uuid.uuid4())
    payload = payload_naming(f"Quentin Replay-{RUN}")
    await dead_letter(kafka_bootstrap, REPLAYED, key, payload)

    async with signed_in(app, ADMIN) as browser:
        form = await browser.get("/operations")
        answer = await browser.post(
            "/operations/dead-letters/replay",
            data={"csrf": csrf_of(form), "topic": REPLAYED.dead_letters},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/operations?replayed=1&topic={REPLAYED.dead_letters}"
        after = await browser.get(answer.headers["location"])

    assert "<strong>1 replayed</strong>" in after.text
    # Kafka keeps the letter after its replay; the page marks it (and every other) sent.
    listed = after.text.split(f"<caption>{REPLAYED.dead_letters}:")[1].split("</table>")[0]
    assert "<td>yes</td>" in listed
    assert "<td>no</td>" not in listed
    [back] = await topic_messages(kafka_bootstrap, REPLAYED.name, key=key)
    assert back["value"] == json.loads(payload)
    assert back["headers"]["ce_id"] == f"poison-{key}"
    assert not any(name.startswith("kap_dlq_") for name in back["headers"])
