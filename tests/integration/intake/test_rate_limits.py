"""The public doors' rate limits, counted in Redis: exceeded, each answers 429 with
Retry-After; another address (or client, or clinic) is not held back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from services.intake.config import Settings
from services.intake.limits import Limit, RateLimiter
from services.intake.main import create_app
from tests.helpers import auth, write_clinics
from tests.integration.intake.measure_links import answers, link_for, new_client

pytestmark = pytest.mark.integration

Caller = Callable[[str], httpx.AsyncClient]


@pytest.fixture
def limited_settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=write_clinics(tmp_path / "clinics.json"),
        KAP_FORM_RATE_PER_ADDRESS=3,
        KAP_FORM_RATE_PER_CLIENT=5,
        KAP_CONSULTATION_RATE_PER_ADDRESS=2,
        KAP_CONSULTATION_RATE_PER_CLIENT=2,
        KAP_RATE_WINDOW_S=60,
    )


@pytest.fixture
async def caller(limited_settings: Settings) -> AsyncIterator[Caller]:
    """An HTTP client of the running app per calling address."""
    app = create_app(limited_settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))

        def at(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://test")
            stack.push_async_callback(client.aclose)
            return client

        yield at


def address() -> str:
    """An address no other test (or run within the window) calls from."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


async def test_the_form_is_limited_per_address(
    caller: Caller, limited_settings: Settings, redis_client: Redis, unique: str
) -> None:
    setup = caller(address())
    where = address()
    browser = caller(where)
    tokens = [link_for(limited_settings, await new_client(setup, f"{unique}{n}"))[0] for n in "ab"]
    assert (await browser.get(f"/m/{tokens[0]}")).status_code == 200
    assert (await browser.get(f"/m/{tokens[1]}")).status_code == 200
    assert (await browser.post(f"/m/{tokens[0]}", data=answers())).status_code == 200
    refused = await browser.post(f"/m/{tokens[1]}", data=answers())
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "Please wait a moment" in refused.text
    # Counted in the clinic's slot, under a digest of the address, for one window.
    key = RateLimiter.key("lisbon", Limit("form:address", where, 3))
    assert key.startswith("intake:{lisbon}:rate:form:address:")
    assert where not in key
    assert int(await redis_client.get(key) or 0) == 4
    assert 0 < await redis_client.ttl(key) <= 60
    # Another address is not held back, and may send the answers refused above.
    assert (await caller(address()).post(f"/m/{tokens[1]}", data=answers())).status_code == 200


async def test_the_form_is_limited_per_client_whatever_the_address(
    caller: Caller, limited_settings: Settings, unique: str
) -> None:
    token, _ = link_for(limited_settings, await new_client(caller(address()), unique))
    for _ in range(5):
        assert (await caller(address()).get(f"/m/{token}")).status_code == 200
    refused = await caller(address()).get(f"/m/{token}")
    assert refused.status_code == 429
    assert "retry-after" in refused.headers
    other, _ = link_for(limited_settings, await new_client(caller(address()), f"{unique}x"))
    assert (await caller(address()).get(f"/m/{other}")).status_code == 200


async def test_consultation_requests_are_limited_per_address_and_clinic(
    caller: Caller, unique: str
) -> None:
    website = caller(address())

    async def request(n: int, clinic: str = "lisbon") -> httpx.Response:
        body = {"name": "Ada Example", "email": f"rate.{unique}.{n}@example.org"}
        url = f"/v1/clinics/{clinic}/consultation-requests"
        return await website.post(url, json=body, headers=auth(clinic))

    assert [(await request(n)).status_code for n in range(2)] == [202, 202]
    refused = await request(2)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "too many requests" in refused.json()["detail"]
    assert (await request(3, clinic="boston")).status_code == 202
    other = await caller(address()).post(
        "/v1/clinics/lisbon/consultation-requests",
        json={"name": "Bo Example", "email": f"rate.{unique}.other@example.org"},
        headers=auth("lisbon"),
    )
    assert other.status_code == 202


async def test_consultation_requests_are_limited_per_person_whatever_the_address(
    caller: Caller, unique: str
) -> None:
    """One e-mail address asking again and again from ever new addresses (review finding:
    only the address was limited)."""
    body = {"name": "Ada Example", "email": f"Rate.Person.{unique}@example.org"}
    url = "/v1/clinics/lisbon/consultation-requests"
    answers = [
        (await caller(address()).post(url, json=body, headers=auth("lisbon"))).status_code
        for _ in range(3)
    ]
    assert answers == [202, 202, 429]
