"""The webhook service's pure rules: order, backoff, the SSRF check, signing."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from services.webhooks.delivery import signed_headers
from services.webhooks.domain import (
    PUBLIC_TYPES,
    AddressRefused,
    Partner,
    RetryPolicy,
    Secret,
    check_address,
    parse_networks,
    releasable,
)
from services.webhooks.service import new_secret
from shared.envelope import Envelope, structured

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def partner(*secrets: Secret) -> Partner:
    return Partner(
        id="p1",
        name="EHR",
        url="https://ehr.example/hooks",  # type: ignore[arg-type]
        event_types=PUBLIC_TYPES,
        clinics=("lisbon",),
        secrets=secrets or (Secret(value=new_secret()),),
        api_key_sha256="0" * 64,
        created_at=NOW,
    )


@given(st.integers(0, 20), st.sets(st.integers(1, 40)))
def test_only_numbers_following_the_last_released_without_a_gap_go(
    released: int, held: set[int]
) -> None:
    going = releasable(released, held)
    assert going == list(range(released + 1, released + 1 + len(going)))
    assert set(going) <= held
    assert released + len(going) + 1 not in held  # stopped at the first gap


def test_backoff_grows_within_its_jitter_and_stops_at_its_ceiling() -> None:
    policy = RetryPolicy(timedelta(seconds=5), timedelta(hours=1), timedelta(hours=24))
    rng = random.Random(1)
    for failures in range(1, 20):
        ceiling = min(timedelta(hours=1), timedelta(seconds=5) * 2 ** (failures - 1))
        delays = [policy.delay(failures, rng) for _ in range(50)]
        assert all(timedelta(seconds=5) <= d <= ceiling for d in delays)
    assert len({policy.delay(6, rng) for _ in range(20)}) > 1  # jittered
    assert not policy.gives_up(NOW, NOW + timedelta(hours=23, minutes=59))
    assert policy.gives_up(NOW, NOW + timedelta(hours=24))


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "172.16.3.4", "192.168.1.1", "127.0.0.1", "169.254.169.254", "::1",
     "fe80::1", "fc00::1", "0.0.0.0", "::ffff:10.0.0.1", "224.0.0.1", "100.64.0.1",
     "64:ff9b::a00:1", "2002:a9fe:a9fe::1", "::7f00:1", "2001:0:4136:e378::1"],
)  # fmt: skip
def test_private_loopback_and_link_local_targets_are_refused(address: str) -> None:
    with pytest.raises(AddressRefused):
        check_address(ipaddress.ip_address(address), ())


def test_an_allow_list_lets_named_networks_through_and_public_addresses_pass() -> None:
    allowed = parse_networks("127.0.0.0/8, ::1/128")
    check_address(ipaddress.ip_address("127.0.0.1"), allowed)
    check_address(ipaddress.ip_address("::1"), allowed)
    check_address(ipaddress.ip_address("93.184.216.34"), ())
    with pytest.raises(AddressRefused):
        check_address(ipaddress.ip_address("10.1.1.1"), allowed)
    with pytest.raises(ValueError, match="not-a-network"):
        parse_networks("not-a-network")


def test_every_valid_secret_signs_and_the_library_verifies_with_either() -> None:
    old, new = new_secret(), new_secret()
    rotating = partner(Secret(value=new), Secret(value=old, until=NOW + timedelta(hours=1)))
    body = '{"id": "e1"}'
    stamp = datetime.now(UTC)
    headers = signed_headers(rotating, "e1", body, stamp)
    assert headers["webhook-id"] == "e1"
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"id": "e1"}
    expired = rotating.signing_secrets(NOW + timedelta(hours=2))
    assert expired == [new]


def test_the_body_is_cloudevents_structured_json_with_the_client_sequence() -> None:
    envelope = Envelope(
        id="e1",
        source="/kap/scheduler",
        type="kap.public.client.stage-reached.v1",
        time=NOW,
        subject="c1",
        clinic_id="lisbon",
        correlation_id="j1",
        sequence=7,
    )
    body = structured(envelope, {"stage": "enrolled"})
    assert body["specversion"] == "1.0"
    assert body["clientsequence"] == 7
    assert body["clinicid"] == "lisbon"
    assert body["time"] == "2027-03-01T12:00:00Z"
    assert body["data"] == {"stage": "enrolled"}
    headers = dict(envelope.to_headers())
    assert headers["ce_clientsequence"] == b"7"
    assert Envelope.from_headers(envelope.to_headers()).sequence == 7


async def test_each_connection_resolves_again_and_refuses_a_name_that_turned_inward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name resolved to a public address when the partner was saved;
    now it resolves inward (or to both): the send is refused, nothing is connected to."""
    import asyncio
    import socket

    from services.webhooks import delivery

    answers = [["93.184.216.34"], ["10.0.0.7"], ["93.184.216.34", "169.254.169.254"]]

    async def getaddrinfo(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers.pop(0)]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    url = "https://partner.example/hooks"
    assert str(await delivery.checked_address(url, ())) == "93.184.216.34"
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.7"):
        await delivery.checked_address(url, ())
    with pytest.raises(AddressRefused, match=r"169\.254\.169\.254"):
        await delivery.checked_address(url, ())

    connected: list[object] = []

    async def never(*args: object, **kwargs: object) -> None:
        connected.append(args)

    answers.append(["10.0.0.7"])
    sender = delivery.Sender((), timedelta(seconds=1))
    monkeypatch.setattr(httpx.AsyncClient, "post", never)
    attempt = await sender.post(partner(), "{}", "e1", datetime.now(UTC))
    assert attempt.status is None
    assert attempt.error is not None
    assert attempt.error.startswith("refused")
    assert connected == []
    await sender.close()
