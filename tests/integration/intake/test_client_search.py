"""Finding a clinic's clients by name or phone (`GET /v1/clinics/{id}/clients?q=`), on
real Kafka and Redis: clients made through the API, found from intake's own directory
(`intake:{c}:directory`, written in the same MULTI as the record), one clinic's only.

Each test has clinics of its own (fresh ids), so what it finds is exactly what it made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.intake.config import Settings
from services.intake.store import directory_key
from tests.helpers import write_clinics

pytestmark = pytest.mark.integration


@pytest.fixture
def clinics(unique: str) -> dict[str, dict[str, str]]:
    """Two clinics of the test's own: `here` and `there`."""
    return {
        role: {"id": f"search-{role}-{unique}", "key": f"{role}-key-{unique}"}
        for role in ("here", "there")
    }


@pytest.fixture
def intake_settings(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, clinics: dict[str, dict[str, str]]
) -> Settings:
    """As tests/integration/intake/conftest.py's, with the test's own clinics."""
    specs = {
        c["id"]: {"name": f"Clinic {role}", "timezone": "Europe/Lisbon", "key": c["key"]}
        for role, c in clinics.items()
    }
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=write_clinics(tmp_path / "clinics.json", specs),
        KAP_FORM_RATE_PER_ADDRESS=0,
        KAP_CONSULTATION_RATE_PER_ADDRESS=0,
        KAP_CONSULTATION_RATE_PER_CLIENT=0,
    )


class Desk:
    """One clinic's front desk: intake's API with the clinic's key."""

    def __init__(self, http: httpx.AsyncClient, clinic: dict[str, str]) -> None:
        self.http, self.id = http, clinic["id"]
        self.headers = {"X-API-Key": clinic["key"]}

    async def request(self, name: str, email: str, phone: str | None = None) -> str:
        body: dict[str, Any] = {"name": name, "email": email, "phone": phone}
        response = await self.http.post(
            f"/v1/clinics/{self.id}/consultation-requests", json=body, headers=self.headers
        )
        assert response.status_code == 202, response.text
        return str(response.json()["client_id"])

    async def search(self, q: str, **params: Any) -> httpx.Response:
        return await self.http.get(
            f"/v1/clinics/{self.id}/clients", params={"q": q, **params}, headers=self.headers
        )

    async def found(self, q: str, **params: Any) -> list[str]:
        """The names a search answers, in its order."""
        response = await self.search(q, **params)
        assert response.status_code == 200, response.text
        return [client["name"] for client in response.json()]


@pytest.fixture
def desk(intake: httpx.AsyncClient, clinics: dict[str, dict[str, str]]) -> Desk:
    return Desk(intake, clinics["here"])


@pytest.fixture
def other_desk(intake: httpx.AsyncClient, clinics: dict[str, dict[str, str]]) -> Desk:
    return Desk(intake, clinics["there"])


async def test_a_client_is_found_by_any_word_of_the_name_without_case_or_accents(
    desk: Desk,
) -> None:
    joao = await desk.request("João Conceição Silva", "joao@example.org", "+351912345678")
    await desk.request("Ana Silva", "ana@example.org")
    await desk.request("Mariana Souza", "mariana@example.org")

    assert await desk.found("João") == ["João Conceição Silva"]
    assert await desk.found("joao") == ["João Conceição Silva"]
    assert await desk.found("CONCEICAO") == ["João Conceição Silva"]
    assert await desk.found("conceição sil") == ["João Conceição Silva"]
    assert await desk.found("silva") == ["Ana Silva", "João Conceição Silva"]  # by name
    assert await desk.found("Sil") == ["Ana Silva", "João Conceição Silva"]
    assert await desk.found("ana") == ["Ana Silva"]  # a word's start: not Mariana
    assert await desk.found("ilva") == []

    response = await desk.search("joao")
    [match] = response.json()
    assert set(match) == {"client_id", "name", "email", "phone", "status", "updated_at"}
    assert match["client_id"] == joao
    assert match["email"] == "joao@example.org"
    assert match["phone"] == "+351912345678"
    assert match["status"] == "consultation_requested"


async def test_a_client_is_found_by_the_digits_of_the_phone(desk: Desk) -> None:
    await desk.request("Rita Lopes", "rita@example.org", "+351912345678")
    await desk.request("Tom Hart", "tom@example.org", "+447700900123")

    assert await desk.found("912345") == ["Rita Lopes"]  # the national number's start
    assert await desk.found("351912") == ["Rita Lopes"]  # the E.164 digits' start
    assert await desk.found("+351 912 345 678") == ["Rita Lopes"]
    assert await desk.found("07700 900") == ["Tom Hart"]  # a trunk 0, as typed at home
    assert await desk.found("0044 7700") == ["Tom Hart"]  # an international prefix
    assert await desk.found("345678") == []  # digits inside the number: not a prefix


async def test_each_client_is_listed_once_and_the_limit_holds(desk: Desk) -> None:
    for n, name in enumerate(("Ana Ana Sousa", "Ana Beatriz", "Ana Carla", "Ana Dias")):
        await desk.request(name, f"ana{n}@example.org", f"+35191000000{n}")

    assert await desk.found("ana") == ["Ana Ana Sousa", "Ana Beatriz", "Ana Carla", "Ana Dias"]
    assert await desk.found("ana", limit=2) == ["Ana Ana Sousa", "Ana Beatriz"]
    assert await desk.found("91000") == ["Ana Ana Sousa", "Ana Beatriz", "Ana Carla", "Ana Dias"]


async def test_another_clinics_clients_are_never_found(desk: Desk, other_desk: Desk) -> None:
    mine = await desk.request("Inês Duarte", "ines@example.org", "+351913000111")
    theirs = await other_desk.request("Inês Duarte", "ines@example.org", "+351913000111")
    await other_desk.request("Inês Moura", "moura@example.org", "+351913000222")

    [found] = (await desk.search("ines")).json()
    assert found["client_id"] == mine
    assert [c["client_id"] for c in (await desk.search("913000")).json()] == [mine]
    assert await desk.found("moura") == []
    assert [c["client_id"] for c in (await other_desk.search("duarte")).json()] == [theirs]

    # Another clinic's key on this clinic's search: as an unknown clinic.
    response = await desk.http.get(
        f"/v1/clinics/{desk.id}/clients", params={"q": "ines"}, headers=other_desk.headers
    )
    assert response.status_code == 404
    unauthenticated = await desk.http.get(f"/v1/clinics/{desk.id}/clients", params={"q": "ines"})
    assert unauthenticated.status_code == 401


async def test_a_new_name_and_phone_replace_the_old_in_the_same_write(
    desk: Desk, redis_client: Redis
) -> None:
    client = await desk.request("Beatriz Almeida", "bea@example.org", "+351914111222")
    assert await desk.found("almeida") == ["Beatriz Almeida"]

    # The same person asks again (found by e-mail) with a new name and phone.
    again = await desk.request("Beatriz Nogueira", "bea@example.org", "+351925333444")
    assert again == client

    assert await desk.found("almeida") == []
    assert await desk.found("914111") == []
    assert await desk.found("nogueira") == ["Beatriz Nogueira"]
    assert await desk.found("925333") == ["Beatriz Nogueira"]
    assert await desk.found("beatriz") == ["Beatriz Nogueira"]
    members = await redis_client.zrange(directory_key(desk.id), 0, -1)
    assert members, "the directory holds the client"
    assert not [m for m in members if "almeida" in m or "914111222" in m], members

    # A later step on the client (contact preferences) keeps the entries as they are.
    changed = await desk.http.post(
        f"/v1/clinics/{desk.id}/clients/{client}/contact-preferences",
        json={"channel": "email", "opted_out": True},
        headers=desk.headers,
    )
    assert changed.status_code == 202, changed.text
    assert sorted(await redis_client.zrange(directory_key(desk.id), 0, -1)) == sorted(members)
    assert await desk.found("nogueira") == ["Beatriz Nogueira"]


@pytest.mark.parametrize("q", ["a", "", " ", "--", "é.", "x" * 101])
async def test_a_query_too_short_or_too_long_is_a_422_naming_q(desk: Desk, q: str) -> None:
    response = await desk.search(q)
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["query", "q"]]


async def test_a_missing_query_or_a_wrong_limit_is_a_422_naming_it(desk: Desk) -> None:
    missing = await desk.http.get(f"/v1/clinics/{desk.id}/clients", headers=desk.headers)
    assert missing.status_code == 422
    assert [e["loc"] for e in missing.json()["detail"]] == [["query", "q"]]
    for limit in (0, 101):
        response = await desk.search("ana", limit=limit)
        assert response.status_code == 422, response.text
        assert [e["loc"] for e in response.json()["detail"]] == [["query", "limit"]]
