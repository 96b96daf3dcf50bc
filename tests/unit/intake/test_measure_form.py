"""The measure form behind a link, through `MeasureForms` and its pages: what a token
opens, when it stops working, that it is used once, and what each page tells the client.

Intake's store and the rate limiter are stand-ins here (the real ones, on Redis and
Kafka, are in tests/integration/intake/test_measure_form.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chassis.clinics import Clinic
from chassis.clock import FrozenClock
from chassis.crisis_lines import CrisisContact
from chassis.measure_links import LinkInvalid, MeasureLink, MeasureLinks
from services.intake import form
from services.intake.limits import RateLimited
from services.intake.measuring import Expired, FormLimits, LinkUsed, MeasureForms, Thanked
from services.intake.service import AlreadyAnswered

NOW = datetime(2026, 3, 27, 23, 0, tzinfo=UTC)  # Lisbon's clocks go forward in 2 days
SECRET = "unit-test-measure-link-secret"
CLINIC = Clinic(
    id="lisbon",
    name="Lisbon Integrative Care",
    timezone="Europe/Lisbon",
    api_key_sha256="0" * 64,
    crisis_contacts=(CrisisContact(name="Clinic on-call line", phone="+351 912 345 678"),),
)


class Desk:
    """Stands in for IntakeService: remembers which measures were answered."""

    def __init__(self) -> None:
        self.answered: set[uuid.UUID] = set()
        self.recorded: list[tuple[Any, ...]] = []

    async def measure_answered(
        self, clinic_id: str, client_id: uuid.UUID, measure_id: uuid.UUID
    ) -> bool:
        return measure_id in self.answered

    async def record_measure(self, clinic_id: str, client_id: uuid.UUID, *rest: Any) -> None:
        scores, how, _ = rest
        if how.measure_id in self.answered:
            raise AlreadyAnswered(how.measure_id)
        self.answered.add(how.measure_id)
        self.recorded.append((clinic_id, client_id, scores, how))


class Limiter:
    def __init__(self) -> None:
        self.hits: list[tuple[str, tuple[Any, ...]]] = []
        self.refuse = False

    async def hit(self, clinic_id: str, *limits: Any) -> None:
        self.hits.append((clinic_id, limits))
        if self.refuse:
            raise RateLimited("form:address", 17)


class Clinics:
    def get(self, clinic_id: str) -> Clinic | None:
        return CLINIC if clinic_id == CLINIC.id else None


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def desk() -> Desk:
    return Desk()


@pytest.fixture
def limiter() -> Limiter:
    return Limiter()


@pytest.fixture
def forms(desk: Desk, limiter: Limiter, clock: FrozenClock) -> MeasureForms:
    links = MeasureLinks([SECRET])
    limits = FormLimits(per_address=30, per_client=20)
    return MeasureForms(desk, links, Clinics(), limiter, limits, clock)  # type: ignore[arg-type]


def token(expires_in: timedelta = timedelta(hours=72), clinic: str = "lisbon") -> str:
    link = MeasureLink(clinic, uuid.uuid4(), uuid.uuid4(), NOW + expires_in)
    return MeasureLinks([SECRET]).mint(link)


def answers(item9: int = 0) -> dict[str, str]:
    fields = {f"phq9_{n}": "1" for n in range(1, 10)}
    fields["phq9_9"] = str(item9)
    fields.update({f"gad7_{n}": "2" for n in range(1, 8)})
    return fields


async def test_opening_a_link_twice_uses_nothing_and_answering_uses_it_once(
    forms: MeasureForms, desk: Desk
) -> None:
    link = token()
    await forms.open(link, "192.0.2.1")
    await forms.open(link, "192.0.2.1")
    assert desk.recorded == []
    thanked = await forms.submit(link, "192.0.2.1", answers())
    assert isinstance(thanked, Thanked)
    assert not thanked.at_risk
    with pytest.raises(LinkUsed):
        await forms.submit(link, "192.0.2.1", answers())
    with pytest.raises(LinkUsed):
        await forms.open(link, "192.0.2.1")
    assert len(desk.recorded) == 1
    _, _, scores, how = desk.recorded[0]
    assert (scores.phq9_total, scores.gad7_total, how.source) == (8, 14, "link")


async def test_a_link_works_until_its_expiry_on_the_injected_clock_and_not_after(
    forms: MeasureForms, clock: FrozenClock
) -> None:
    link = token(timedelta(hours=72))
    clock.advance(timedelta(hours=72) - timedelta(seconds=1))
    assert (await forms.open(link, "192.0.2.1")).clinic is CLINIC
    clock.advance(timedelta(seconds=1))
    with pytest.raises(Expired) as expired:
        await forms.open(link, "192.0.2.1")
    assert expired.value.clinic is CLINIC
    with pytest.raises(Expired):
        await forms.submit(link, "192.0.2.1", answers())


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nonsense",
        token()[:-2],
        token().replace(".", "x", 1),
        MeasureLinks(["another-deployments-secret"]).mint(
            MeasureLink("lisbon", uuid.uuid4(), uuid.uuid4(), NOW + timedelta(hours=1))
        ),
        token(clinic="atlantis"),
        "A" * 5000,
    ],
)
async def test_a_link_not_signed_here_or_for_no_clinic_here_is_invalid(
    forms: MeasureForms, limiter: Limiter, bad: str
) -> None:
    with pytest.raises(LinkInvalid):
        await forms.open(bad, "192.0.2.1")
    assert limiter.hits == []  # refused before any Redis call


async def test_every_open_and_send_is_counted_per_address_and_per_client(
    forms: MeasureForms, limiter: Limiter
) -> None:
    link = token()
    await forms.open(link, "192.0.2.1")
    await forms.submit(link, "192.0.2.1", answers())
    assert len(limiter.hits) == 2
    clinic_id, limits = limiter.hits[0]
    assert clinic_id == "lisbon"
    assert [(limit.what, limit.allowed) for limit in limits] == [
        ("form:address", 30),
        ("form:client", 20),
    ]
    limiter.refuse = True
    with pytest.raises(RateLimited):
        await forms.open(token(), "192.0.2.1")


# --- the pages ---------------------------------------------------------------------


@pytest.fixture
async def browser(forms: MeasureForms) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(form.routes(forms))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_the_form_is_plain_accessible_html_for_a_phone(browser: httpx.AsyncClient) -> None:
    page = await browser.get(f"/m/{token()}")
    assert page.status_code == 200
    html = page.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<html lang="en">' in html
    assert "<script" not in html
    assert '<form method="post"' in html
    assert html.count("<fieldset") == 16
    assert html.count("<legend>") == 16
    # Every radio has its own label, and each item offers the four standard answers.
    radios = re.findall(r'<input type="radio" id="([a-z0-9_-]+)" name="([a-z0-9_]+)"', html)
    assert len(radios) == 64
    for radio_id, _ in radios:
        assert f'<label for="{radio_id}">' in html
    for label in ("Not at all", "Several days", "More than half the days", "Nearly every day"):
        assert html.count(f">{label}</label>") == 16
    assert "Over the last 2 weeks, how often have you been bothered by" in html
    # Shown in the clinic's zone: 72 h after 23:00 UTC on 27 March is 23:00 UTC on 30 March,
    # midnight in Lisbon, which changed to summer time (UTC+1) in between.
    assert "Tuesday 31 March 2026, 00:00 (Lisbon time)" in html
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "808 24 24 24" in html  # the national line is always at hand


async def test_a_missing_answer_shows_the_form_again_with_the_error_at_its_question(
    browser: httpx.AsyncClient, desk: Desk
) -> None:
    link = token()
    incomplete = answers()
    del incomplete["phq9_4"]
    page = await browser.post(f"/m/{link}", data=incomplete)
    assert page.status_code == 422
    html = page.text
    assert "There is a problem" in html
    assert '<a href="#phq9_4-0">Part 1, question 4: Choose an answer for this question.</a>' in html
    fieldset = re.search(r'<fieldset class="has-error"[^>]*>(.*?)</fieldset>', html, re.S)
    assert fieldset is not None
    assert 'aria-describedby="phq9_4-error"' in html
    assert 'id="phq9_4-error"' in fieldset.group(1)
    assert "Little interest" not in fieldset.group(1)  # the error is at question 4, not 1
    assert 'id="phq9_1-1" name="phq9_1" value="1" checked' in html  # kept
    assert desk.recorded == []
    assert (await browser.post(f"/m/{link}", data=answers())).status_code == 200


async def test_a_positive_item_9_shows_the_crisis_contacts_at_once(
    browser: httpx.AsyncClient,
) -> None:
    page = await browser.post(f"/m/{token()}", data=answers(item9=1))
    assert page.status_code == 200
    html = page.text
    urgent = html.index('class="crisis urgent"')
    assert html.index("Clinic on-call line") > urgent
    assert '<a href="tel:+351912345678">+351 912 345 678</a>' in html
    assert '<a href="tel:808242424">808 24 24 24</a>' in html
    assert '<a href="tel:112">112</a>' in html
    assert html.count('class="crisis') == 1


async def test_a_second_send_says_already_answered(browser: httpx.AsyncClient) -> None:
    link = token()
    assert (await browser.post(f"/m/{link}", data=answers())).status_code == 200
    again = await browser.post(f"/m/{link}", data=answers())
    assert again.status_code == 409
    assert "already answered" in again.text


async def test_expired_invalid_and_limited_links_each_say_so(
    browser: httpx.AsyncClient, clock: FrozenClock, limiter: Limiter
) -> None:
    link = token(timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    expired = await browser.get(f"/m/{link}")
    assert expired.status_code == 410
    assert "This link has expired" in expired.text
    assert "contact Lisbon Integrative Care" in expired.text
    invalid = await browser.get("/m/not-a-token")
    assert invalid.status_code == 404
    assert "not recognised" in invalid.text
    limiter.refuse = True
    limited = await browser.post(f"/m/{token()}", data=answers())
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "17"
