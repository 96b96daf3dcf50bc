"""A client answers the measure form in a real browser (Debian's headless Chromium,
driven by Playwright) at a phone's width: keyboard and taps, a forgotten question,
then the thanks with the crisis contacts. Keeps a screenshot in docs/.

Needs /usr/bin/chromium (`infra/install-chromium.sh`, run by `make test`); no browser
is ever downloaded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn

from ops.stack import free_port as stack_free_port
from services.intake.config import Settings
from services.intake.main import create_app
from shared import topics
from tests.helpers import CLINICS, topic_messages, write_clinics
from tests.integration.intake.measure_links import link_for, new_client

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "measure-form-phone.png"
PHONE = {"width": 390, "height": 844}
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EXPIRES = datetime(2099, 12, 4, 14, 0, tzinfo=UTC)
CLINIC_LINE = {"name": "Lisbon KAP on-call", "phone": "+351 912 345 678", "note": "24/7"}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: install Debian's chromium (infra/install-chromium.sh)",
    ),
]


def free_port() -> int:
    return stack_free_port()


@pytest.fixture
async def served(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Settings]:
    """Intake over real HTTP on loopback, its Lisbon clinic with a crisis line of its own."""
    lisbon = {**CLINICS["lisbon"], "sections": {"crisis_contacts": [CLINIC_LINE]}}
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=write_clinics(tmp_path / "clinics.json", {**CLINICS, "lisbon": lisbon}),
        KAP_HTTP_PORT=free_port(),
        KAP_FORM_RATE_PER_ADDRESS=0,
        KAP_CONSULTATION_RATE_PER_ADDRESS=0,
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=settings.http_port, log_config=None
    )
    server = uvicorn.Server(config)
    running = asyncio.create_task(server.serve())
    for _ in range(300):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "intake did not start"
    try:
        yield settings
    finally:
        server.should_exit = True
        await running


async def test_a_client_fills_the_form_on_a_phone_and_sees_the_crisis_contacts(
    served: Settings, kafka_bootstrap: str, unique: str
) -> None:
    from playwright.async_api import async_playwright

    base = f"http://127.0.0.1:{served.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        client = await new_client(http, unique)
    # A fixed expiry: the page, and so the kept screenshot, is the same on every run.
    token, _ = link_for(served, client, expires_at=EXPIRES)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport=PHONE, device_scale_factor=1, is_mobile=True)
            await page.goto(f"{base}/m/{token}")
            assert await page.title() == "How have you been feeling? \N{EN DASH} Lisbon KAP"
            # Nothing wider than the phone: no sideways scrolling.
            assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            assert "Friday 4 December 2099, 14:00 (Lisbon time)" in await page.inner_text("main")
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # PHQ-9 by keyboard: Tab into each question, arrows choose (0 = leave the first).
            phq9 = [1, 0, 2, 3, 1, 0, 2, 1, 1]
            for chosen in phq9:
                await page.keyboard.press("Tab")
                await page.keyboard.press("Space")
                for _ in range(chosen):
                    await page.keyboard.press("ArrowDown")
            # GAD-7 by tapping the answers' labels; the last one forgotten.
            gad7 = [2, 2, 1, 0, 3, 1]
            labels = ["Not at all", "Several days", "More than half the days", "Nearly every day"]
            for number, chosen in enumerate(gad7, start=1):
                await page.click(f"label[for='gad7_{number}-{chosen}']")
                assert await page.is_checked(f"#gad7_{number}-{chosen}")
                text = await page.inner_text(f"label[for='gad7_{number}-{chosen}']")
                assert text == labels[chosen]
            await page.click("button[type=submit]")

            # Refused: the summary names the question; its link leads to it, kept answers stay.
            await page.wait_for_selector(".error-summary")
            assert await page.title() == "Error: How have you been feeling? \N{EN DASH} Lisbon KAP"
            assert await page.is_checked("#phq9_4-3")
            await page.click(".error-summary a")
            error = await page.inner_text("#gad7_7-error")
            assert "Choose an answer for this question." in error
            await page.click("label[for='gad7_7-2']")
            await page.focus("button[type=submit]")
            await page.keyboard.press("Enter")

            await page.wait_for_selector("h1:has-text('Thank you')")
            crisis = page.locator(".crisis.urgent")
            assert await crisis.is_visible()
            box = await crisis.bounding_box()
            assert box is not None
            assert box["y"] < PHONE["height"], "the crisis contacts are on the first screen"
            text = await crisis.inner_text()
            assert "Lisbon KAP on-call" in text
            assert "808 24 24 24" in text
            assert await page.get_attribute("a[href='tel:+351912345678']", "href")
            await page.screenshot(path=str(SCREENSHOT.with_name("measure-thanks-phone.png")))
        finally:
            await browser.close()

    [answer] = await topic_messages(kafka_bootstrap, topics.MEASURE_ANSWERED.name, key=client)
    phq9_sent, gad7_sent = answer["value"]["responses"]
    assert phq9_sent["items"] == phq9
    assert gad7_sent["items"] == [*gad7, 2]
    [alert] = await topic_messages(kafka_bootstrap, topics.CLINICAL_ALERT_RAISED.name, key=client)
    assert alert["value"]["phq9_item9"] == 1
