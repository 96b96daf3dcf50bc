"""The measure form a client reaches from a link (`/m/{token}`): plain HTML, no script.

Thin: reads the token and the posted fields, calls `MeasureForms`, renders a page.
Every answer is a page a person can read, with a status a program can: 200 the
form or the thanks, 404 a link not recognised, 409 already answered, 410 expired,
422 the form again with each problem next to its question, 429 too many tries,
503 not recorded (retry). Pages are not cached, not indexed and send no referrer
(the token is in the URL).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chassis.clinics import Clinic, ConfigurationError
from chassis.http import RETRY_AFTER_S
from chassis.measure_links import LinkInvalid
from chassis.redis_client import TRANSIENT_REDIS_ERRORS
from chassis.unit_of_work import WriteConflict
from services.intake.instruments import FORM, OPTIONS
from services.intake.limits import RateLimited
from services.intake.measuring import (
    Expired,
    LinkUsed,
    MeasureForms,
    Opened,
    Refused,
    Thanked,
)

TEMPLATES = Path(__file__).parent / "templates"
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
UNAVAILABLE: tuple[type[Exception], ...] = (
    *TRANSIENT_REDIS_ERRORS,
    ConfigurationError,
    WriteConflict,
)


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _page("The form, or the thanks once sent (with crisis contacts if item 9 is above 0)"),
    404: _page("Not a link of this deployment"),
    409: _page("The measure was answered already: a link is used once"),
    410: _page("The link expired: the page says how to get a new one"),
    413: _page("Request body too large"),
    422: _page("The form again, each missing or wrong answer named next to its question"),
    429: {
        **_page("Too many tries from this address or for this client"),
        "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds"}},
    },
    503: _page("Nothing was recorded (the store is unavailable or busy); retry"),
}
FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        q.field(n): {"type": "string", "enum": ["0", "1", "2", "3"]}
                        for q in FORM
                        for n in range(1, len(q.items) + 1)
                    },
                }
            }
        },
    }
}


class Pages:
    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def render(
        self,
        name: str,
        status: int,
        clinic: Clinic | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        national = clinic.national_line if clinic else None
        values = {"clinic": clinic, "national": national, "urgent": False, **context}
        html = self._env.get_template(name).render(values)
        return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})

    def form(self, opened: Opened, refused: Refused | None = None) -> HTMLResponse:
        reading = refused.reading if refused else None
        errors = reading.errors if reading else {}
        return self.render(
            "form.html",
            422 if errors else 200,
            opened.clinic,
            questionnaires=FORM,
            options=OPTIONS,
            question_count=sum(len(q.items) for q in FORM),
            expires=_local(opened.link.expires_at, opened.clinic),
            chosen=reading.chosen if reading else {},
            errors=errors,
            problems=_problems(errors),
        )


def _local(instant: datetime, clinic: Clinic) -> str:
    """An instant as the clinic's people read it, e.g. 'Friday 4 December 2026, 14:00
    (Lisbon time)'."""
    local = instant.astimezone(clinic.zone)
    place = clinic.timezone.rsplit("/", 1)[-1].replace("_", " ")
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M} ({place} time)"


def _problems(errors: dict[str, str]) -> list[dict[str, str]]:
    """The error summary: each problem, where it is, in the form's order."""
    found = []
    for part, questionnaire in enumerate(FORM, start=1):
        for number in range(1, len(questionnaire.items) + 1):
            field = questionnaire.field(number)
            if field in errors:
                where = f"Part {part}, question {number}"
                found.append({"field": field, "where": where, "message": errors[field]})
    return found


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _fields(request: Request) -> dict[str, str]:
    try:
        form = await request.form()
    except StarletteHTTPException:  # not a form a browser would send: nothing answered
        return {}
    return {name: value for name, value in form.items() if isinstance(value, str)}


def routes(forms: MeasureForms) -> APIRouter:
    router = APIRouter(tags=["measure form"], responses=RESPONSES)
    pages = Pages()

    def refusal(error: Exception, sending: bool = False) -> HTMLResponse:
        if isinstance(error, LinkInvalid):
            return pages.render("invalid.html", 404)
        if isinstance(error, Expired):
            expired = _local(error.link.expires_at, error.clinic)
            return pages.render("expired.html", 410, error.clinic, expired=expired)
        if isinstance(error, LinkUsed):
            return pages.render("answered.html", 409, error.clinic)
        if isinstance(error, RateLimited):
            wait = {"Retry-After": str(error.retry_after_s)}
            return pages.render("limited.html", 429, None, wait, retry_after=error.retry_after_s)
        wait = {"Retry-After": RETRY_AFTER_S}
        return pages.render("unavailable.html", 503, None, wait, form_kept=sending)

    refused: tuple[type[Exception], ...] = (
        LinkInvalid,
        Expired,
        LinkUsed,
        RateLimited,
        *UNAVAILABLE,
    )

    @router.get("/m/{token}", response_class=HTMLResponse, summary="A measure's form")
    async def open_form(token: str, request: Request) -> HTMLResponse:
        try:
            opened = await forms.open(token, _address(request))
        except refused as error:
            return refusal(error)
        return pages.form(opened)

    @router.post(
        "/m/{token}",
        response_class=HTMLResponse,
        summary="Send a measure's answers (uses the link up)",
        openapi_extra=FORM_BODY,
    )
    async def send_form(token: str, request: Request) -> HTMLResponse:
        try:
            outcome = await forms.submit(token, _address(request), await _fields(request))
        except refused as error:
            return refusal(error, sending=True)
        if isinstance(outcome, Refused):
            return pages.form(outcome.opened, outcome)
        assert isinstance(outcome, Thanked)
        return pages.render("thanks.html", 200, outcome.clinic, urgent=outcome.at_risk)

    return router
