"""The secured deployment, on a real broker: compose/secure/server.properties (the file
compose/secure.yml mounts) run locally, the generated compose/secure/acls.sh applied
as admin, then each principal tried for what it may and may not do."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from chassis.config import ServiceSettings
from chassis.dead_letters import HEADER_SERVICE, HEADER_TOPIC
from chassis.kafka import apply_topics, check_topics, client_options, make_broker
from ops.acls import PRINCIPALS, password_variable
from ops.operations import (
    OPERATED_GROUPS,
    REPLAY_GROUP,
    consumer_lag,
    dead_letters,
    replay_dead_letters,
)
from shared.topics import (
    ALL,
    AUDIT_TOPICS,
    CLIENT_ENROLLED,
    CLINIC_REGISTRY,
    CONSULTATION_REQUESTED,
    NOTIFICATION_SENT,
    PUBLIC_STAGE_REACHED,
    RECORD_TOPICS,
    SERVICES,
    SESSION_SCHEDULED,
    STAFF_SIGN_INS,
)
from tests import infra
from tests.helpers import partner_reads, publish_stage_reached

pytestmark = pytest.mark.integration

# Not the defaults in acls.sh: proves the passwords come from the environment.
PASSWORDS = {principal: secrets.token_hex(12) for principal in ("admin", *PRINCIPALS)}
ACLS = infra.ROOT / "compose" / "secure" / "acls.sh"


@pytest.fixture(scope="module")
def secured() -> Iterator[str]:
    """The secured broker, its principals and ACLs created by the real acls.sh."""
    with infra.secure_kafka(PASSWORDS["admin"]) as bootstrap:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": bootstrap,
            "KAFKA_ADMIN_CONFIG": str(infra.ROOT / "compose" / "secure" / "admin.properties"),
            "KAFKA_BIN": str(infra.ROOT / "infra" / "kafka" / "bin"),
            "KAP_ADMIN_PASSWORD": PASSWORDS["admin"],
            **{password_variable(p): PASSWORDS[p] for p in PRINCIPALS},
        }
        result = subprocess.run(
            ["bash", str(ACLS)], env=env, capture_output=True, text=True, timeout=240, check=False
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        yield bootstrap


@pytest.fixture(scope="module")
async def created(secured: str) -> list[str]:
    """The topic catalogue, applied as a service does at start-up, as intake."""
    intake = ServiceSettings(
        kafka_bootstrap_servers=secured,
        kafka_sasl_username="intake",
        kafka_sasl_password=PASSWORDS["intake"],
    )
    return await apply_topics(secured, security=client_options(intake))


def login(principal: str, password: str | None = None) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": principal,
        "sasl_plain_password": password or PASSWORDS[principal],
    }


PARTNER = login("partner")


async def send(bootstrap: str, principal: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **login(principal))
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}"), timeout=20)
    finally:
        await producer.stop()


@asynccontextmanager
async def consumer(
    bootstrap: str, topic: str, group: str, credentials: dict[str, Any]
) -> AsyncIterator[AIOKafkaConsumer]:
    client = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
        **credentials,
    )
    try:
        await client.start()
        yield client
    finally:
        await client.stop()


async def test_a_service_applies_the_topic_catalogue_as_its_own_principal(
    created: list[str],
) -> None:
    wanted = {name for topic in ALL for name in (topic.name, topic.dead_letters)}
    wanted |= {topic.name for topic in RECORD_TOPICS}
    assert set(created) == wanted


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_starts_as_its_own_principal(
    service: str, secured: str, created: list[str]
) -> None:
    """What ServiceRuntime.start does before anything else: apply the catalogue (intake made
    it: nothing left to create) and check every topic of it is there, as the service sees
    it. A service that cannot describe a topic sees it missing and does not start."""
    settings = ServiceSettings(
        kafka_bootstrap_servers=secured,
        kafka_sasl_username=service,
        kafka_sasl_password=PASSWORDS[service],
    )
    security = client_options(settings)
    records = (*RECORD_TOPICS, *(a for a in AUDIT_TOPICS if service in a.producers))
    assert await apply_topics(secured, 1, ALL, security, records) == []
    await check_topics(secured, ALL, security, records)


async def test_a_service_publishes_and_the_partner_reads_it_in_a_partner_group(
    secured: str, created: list[str], unique: str
) -> None:
    settings = ServiceSettings(
        kafka_bootstrap_servers=secured,
        kafka_sasl_username="scheduler",
        kafka_sasl_password=PASSWORDS["scheduler"],
    )
    client_id = await publish_stage_reached(settings)

    group = f"partner-{unique}"
    received = await partner_reads(
        client_id, secured, group, username="partner", password=PASSWORDS["partner"]
    )
    assert received["topic"] == PUBLIC_STAGE_REACHED.name


async def test_the_partner_cannot_read_a_topic_that_is_not_public(
    secured: str, created: list[str], unique: str
) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        async with consumer(secured, CLIENT_ENROLLED.name, f"partner-{unique}", PARTNER) as client:
            await asyncio.wait_for(client.getone(), timeout=20)


async def test_the_partner_cannot_read_a_public_topics_dead_letters(
    secured: str, created: list[str], unique: str
) -> None:
    """`public.` as a prefix also names `public.*.dlq`: denied by name (a service's error
    text in the headers, records that failed the contract)."""
    dead_letters = PUBLIC_STAGE_REACHED.dead_letters
    with pytest.raises(TopicAuthorizationFailedError):
        async with consumer(secured, dead_letters, f"partner-{unique}", PARTNER) as client:
            await asyncio.wait_for(client.getone(), timeout=20)


async def test_the_partner_cannot_use_a_services_consumer_group(
    secured: str, created: list[str]
) -> None:
    with pytest.raises(GroupAuthorizationFailedError):
        async with consumer(secured, PUBLIC_STAGE_REACHED.name, "kap-scheduler", PARTNER) as client:
            await asyncio.wait_for(client.getone(), timeout=20)


async def test_the_partner_cannot_write_even_public_topics(
    secured: str, created: list[str]
) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await send(secured, "partner", PUBLIC_STAGE_REACHED.name)


async def test_a_service_writes_its_own_topics_only(secured: str, created: list[str]) -> None:
    await send(secured, "intake", CLIENT_ENROLLED.name)
    with pytest.raises(TopicAuthorizationFailedError):
        await send(secured, "intake", SESSION_SCHEDULED.name)


async def test_a_wrong_password_or_no_login_is_refused(
    secured: str, created: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    # The default password of acls.sh is wrong here: the environment set another.
    wrong = login("partner", "partner-secret")
    with caplog.at_level(logging.ERROR), pytest.raises(KafkaConnectionError):
        async with consumer(secured, PUBLIC_STAGE_REACHED.name, "partner-x", wrong):
            pass
    assert "SaslAuthenticationFailed" in caplog.text
    # A client that does not log in gets nothing, on the client or the controller port.
    with pytest.raises(KafkaConnectionError):
        async with consumer(secured, PUBLIC_STAGE_REACHED.name, "partner-x", {}):
            pass
    controller = f"127.0.0.1:{infra.SECURE_KAFKA_PORTS[1]}"
    with pytest.raises(KafkaConnectionError):
        async with consumer(controller, PUBLIC_STAGE_REACHED.name, "partner-x", {}):
            pass


# --- the console: its start-up, its sign-in audit, its Operations page ------------------


def console_settings(bootstrap: str) -> ServiceSettings:
    return ServiceSettings(
        kafka_bootstrap_servers=bootstrap,
        kafka_sasl_username="console",
        kafka_sasl_password=PASSWORDS["console"],
    )


async def test_the_console_starts_and_writes_its_audit_as_its_own_principal(
    secured: str, created: list[str]
) -> None:
    settings = console_settings(secured)
    security = client_options(settings)
    # As chassis.service.ServiceRuntime.start applies them for the console: intake made
    # the catalogue; the console adds its audit topic, by name (no Create on the cluster).
    records = (*RECORD_TOPICS, *(a for a in AUDIT_TOPICS if "console" in a.producers))
    assert await apply_topics(secured, 1, ALL, security, records) == [STAFF_SIGN_INS.name]
    await check_topics(secured, ALL, security, records)
    # The sign-in audit, through the broker's (idempotent) producer as services.console.main.
    broker = make_broker(settings, "console")
    await broker.start()
    try:
        await broker.publish(b"{}", STAFF_SIGN_INS.name, key=b"staff-1")
        assert await broker.ping(timeout=10)  # its readiness
    finally:
        await broker.stop()
    # Not the configuration, not a topic no service consumes (nothing to replay to it).
    for topic in (CLINIC_REGISTRY.name, NOTIFICATION_SENT.name):
        with pytest.raises(TopicAuthorizationFailedError):
            await send(secured, "console", topic)


async def test_the_console_reads_lag_and_dead_letters_and_replays_them(
    secured: str, created: list[str]
) -> None:
    security = client_options(console_settings(secured))
    # A dead letter as the notifier writes one (chassis.dead_letters).
    dlq = CONSULTATION_REQUESTED.dead_letters
    producer = AIOKafkaProducer(bootstrap_servers=secured, **login("notifier"))
    await producer.start()
    try:
        headers = [(HEADER_TOPIC, CONSULTATION_REQUESTED.name.encode()), (HEADER_SERVICE, b"n")]
        await producer.send_and_wait(dlq, b"{}", key=b"client-1", headers=headers)
    finally:
        await producer.stop()

    await consumer_lag(secured, (*OPERATED_GROUPS, REPLAY_GROUP), security=security)
    assert [d.dlq_topic for d in await dead_letters(secured, security=security)] == [dlq]
    sent = await replay_dead_letters(secured, CONSULTATION_REQUESTED.name, security=security)
    assert sent == 1
    lags = await consumer_lag(secured, (REPLAY_GROUP,), security=security)
    assert sum(lag.committed for lag in lags if lag.topic == dlq) == 1


async def test_the_console_joins_no_service_or_partner_group(
    secured: str, created: list[str], unique: str
) -> None:
    console = login("console")
    refused = (GroupAuthorizationFailedError, TopicAuthorizationFailedError)
    with pytest.raises(GroupAuthorizationFailedError):
        async with consumer(secured, CONSULTATION_REQUESTED.dead_letters, "kap-notifier", console):
            pass
    with pytest.raises(refused):
        async with consumer(secured, PUBLIC_STAGE_REACHED.name, f"partner-{unique}", console) as c:
            await asyncio.wait_for(c.getone(), timeout=20)
