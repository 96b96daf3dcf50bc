"""The console's pages: server-rendered HTML, thin over `Staff` and `Services`.

Every page but sign-in needs a session (a signed cookie naming a session kept in
Redis); every form carries the session's CSRF token, checked before anything is
done. A staff member sees only the clinics they work at (a group admin every one)
and only the actions their role allows; a refusal by a service is shown next to
the field it names, the form kept as it was filled in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from markupsafe import Markup

from chassis.staff_tokens import Actor, acting
from services.console.backends import Answer, Services, Unavailable
from services.console.chart import measures_svg
from services.console.domain import Action, StaffMember
from services.console.staff import AuditUnavailable, Locked, SignInRefused, Staff
from services.console.store import Session
from shared.events import AdverseEventKind

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
COOKIE = "kap_console"
PRE_COOKIE = "kap_console_signin"  # the sign-in form's own, before any session
SIGN_IN_FORM_S = 3600  # a sign-in form's CSRF token lasts this long
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
}
SCREENING_CHECKS = (
    ("pregnant_or_breastfeeding", "Pregnant or breastfeeding"),
    ("active_psychosis_or_mania", "Active psychosis or mania"),
    ("substance_use_disorder_last_3_months", "Substance use disorder in the last 3 months"),
    ("aneurysmal_vascular_disease_or_avm", "Aneurysmal vascular disease or AVM"),
    ("intracerebral_haemorrhage_history", "History of intracerebral haemorrhage"),
)


class Signed:
    """The signed-in staff member of a request, with their session."""

    def __init__(self, session: Session, member: StaffMember) -> None:
        self.session = session
        self.member = member


@dataclass(frozen=True)
class Kit:
    """What other page modules (operations.py) take from `routes`: the same sign-in,
    CSRF check, frame and templates, so every page signs in and renders one way."""

    signed: Callable[[Request], Awaitable[Signed | None]]
    csrf_ok: Callable[[Any, Signed], bool]
    frame: Callable[..., dict[str, Any]]
    page: Callable[..., HTMLResponse]
    refused: Callable[[Signed, str, int, str], HTMLResponse]
    to_sign_in: Callable[[], RedirectResponse]


def routes(
    staff: Staff,
    services: Services,
    secret: str,
    every_clinic: Callable[[], tuple[str, ...]],
    zone_of: Callable[[str], str],
    secure_cookies: bool,
    now: Callable[[], datetime],
    more: Sequence[Callable[[Kit], APIRouter]] = (),
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    signer = URLSafeTimedSerializer(secret, salt="kap-console")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["when"] = shown_in
    env.filters["hours"] = hours_in

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def to_sign_in() -> RedirectResponse:
        return RedirectResponse("/signin", status_code=303, headers=HEADERS)

    async def signed(request: Request) -> Signed | None:
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        try:
            session_id = signer.loads(cookie, salt="session")
        except BadSignature:
            return None
        current = await staff.current(str(session_id))
        if current is None:
            return None
        session, member = current
        # The services are called on this member's behalf (backends names them, per call).
        acting.set(Actor(member.staff_id, member.role, session.clinic_id))
        return Signed(session, member)

    def csrf_ok(form: Any, who: Signed) -> bool:
        given = str(form.get("csrf", ""))
        return hmac.compare_digest(given.encode(), who.session.csrf.encode())

    def may_see(who: Signed, clinic_id: str) -> bool:
        return who.member.works_at(clinic_id, every_clinic())

    def frame(who: Signed, clinic_id: str, **context: Any) -> dict[str, Any]:
        """What every signed-in page shows: who, which clinic, what they may do."""
        clinics = every_clinic() if who.member.group_admin else who.member.clinics
        return {
            "member": who.member,
            "clinic_id": clinic_id,
            "clinics": clinics,
            "csrf": who.session.csrf,
            "zone": zone_of(clinic_id),
            "may": {action.value: who.member.may(action) for action in Action},
            **context,
        }

    def refused(who: Signed, clinic_id: str, status: int, message: str) -> HTMLResponse:
        return page("refused.html", status, **frame(who, clinic_id, message=message))

    async def viewer(request: Request, clinic_id: str) -> Signed | Response:
        """A page's reader: signed in, and working at the clinic (or the page that says not)."""
        who = await signed(request)
        if who is None:
            return to_sign_in()
        if not may_see(who, clinic_id):
            return refused(who, who.session.clinic_id, 403, "Not a clinic you work at.")
        return who

    async def posted(
        request: Request, clinic_id: str, action: Action
    ) -> tuple[Signed, Any] | Response:
        """A form posted for `action`: signed in, its CSRF token, the clinic and the role
        checked (in that order), or the page that says which failed."""
        who = await signed(request)
        if who is None:
            return to_sign_in()
        form = await request.form()
        if not csrf_ok(form, who):
            return refused(who, clinic_id, 403, "The form expired: open it again.")
        if not may_see(who, clinic_id) or not who.member.may(action):
            return refused(who, clinic_id, 403, "Your role may not do this.")
        return who, form

    # --- signing in and out ------------------------------------------------------------

    def sign_in_page(status: int, email: str, error: str | None) -> HTMLResponse:
        """The sign-in form, its CSRF token bound to a fresh pre-session cookie: a token
        fetched by someone else does not match this browser's cookie (login CSRF)."""
        nonce = secrets.token_urlsafe(24)
        response = page(
            "signin.html", status, csrf=signer.dumps(nonce, salt="signin"), error=error, email=email
        )
        response.set_cookie(
            PRE_COOKIE, nonce, max_age=SIGN_IN_FORM_S, httponly=True, secure=secure_cookies,
            samesite="strict",
        )  # fmt: skip
        return response

    @router.get("/signin")
    async def sign_in_form() -> HTMLResponse:
        return sign_in_page(200, "", None)

    @router.post("/signin")
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        email, password = str(form.get("email", "")).strip(), str(form.get("password", ""))
        try:
            nonce = signer.loads(str(form.get("csrf", "")), salt="signin", max_age=SIGN_IN_FORM_S)
        except BadSignature:
            nonce = None
        cookie = request.cookies.get(PRE_COOKIE, "")
        if not nonce or not hmac.compare_digest(str(nonce).encode(), cookie.encode()):
            return sign_in_page(400, email, "The form expired: sign in again.")
        try:
            session, member = await staff.sign_in(email, password)
        except Locked:
            log.warning("console: a sign-in refused: the account is locked")
            return sign_in_page(
                429, email, "Too many failed sign-ins: this account is locked for a while."
            )
        except SignInRefused:
            return sign_in_page(401, email, "The email or the password is not right.")
        except AuditUnavailable:  # no session starts unaudited
            log.warning("console: a sign-in not granted: its audit record was not written")
            return sign_in_page(503, email, "Signing in is not possible just now: try again.")
        response = RedirectResponse(
            f"/clinics/{session.clinic_id}/clients", status_code=303, headers=HEADERS
        )
        response.set_cookie(
            COOKIE,
            signer.dumps(session.id, salt="session"),
            httponly=True,
            secure=secure_cookies,
            samesite="lax",
        )
        log.info("console: %s signed in", member.role.value)
        return response

    @router.post("/signout")
    async def sign_out(request: Request) -> Response:
        who = await signed(request)
        if who is not None and csrf_ok(await request.form(), who):
            try:
                await staff.sign_out(who.session, who.member)
            except AuditUnavailable:  # signed out all the same; the record is what is lost
                log.warning("console: a sign-out's audit record was not written")
        response = to_sign_in()
        response.delete_cookie(COOKIE)
        return response

    @router.get("/")
    async def home(request: Request) -> Response:
        who = await signed(request)
        if who is None:
            return to_sign_in()
        return RedirectResponse(f"/clinics/{who.session.clinic_id}/clients", 303, headers=HEADERS)

    # --- clients ------------------------------------------------------------------------

    @router.get("/clinics/{clinic_id}/clients")
    async def clients(request: Request, clinic_id: str, q: str = "") -> Response:
        who = await viewer(request, clinic_id)
        if isinstance(who, Response):
            return who
        found: list[dict[str, Any]] = []
        problem = None
        if q.strip():
            try:
                answer = await services.search(clinic_id, q.strip())
            except Unavailable:
                return refused(
                    who, clinic_id, 503, "The intake service is not answering; try again."
                )
            found = answer.body if answer.ok else []
            problem = None if answer.ok else answer.problems.get("q", answer.message)
        upcoming = await next_appointments(clinic_id, [c["client_id"] for c in found])
        return page(
            "clients.html",
            **frame(who, clinic_id, q=q, found=found, problem=problem, upcoming=upcoming),
        )

    async def next_appointments(clinic_id: str, clients: list[str]) -> dict[str, dict[str, Any]]:
        """Each client's next booked appointment, from the scheduler (one read each, side
        by side); a client it does not know, or away, has none shown."""
        answers = await asyncio.gather(
            *(services.schedule(clinic_id, UUID(c)) for c in clients), return_exceptions=True
        )
        since = now()
        upcoming: dict[str, dict[str, Any]] = {}
        for client_id, answer in zip(clients, answers, strict=True):
            if not isinstance(answer, Answer) or not answer.ok:
                continue
            booked = [
                (datetime.fromisoformat(a["starts_at"]), a)
                for a in every_appointment(answer.body)
                if a.get("starts_at") and a.get("status", "booked") == "booked"
            ]
            ahead = [(at, a) for at, a in booked if at >= since]
            if ahead:
                upcoming[client_id] = min(ahead, key=lambda pair: pair[0])[1]
        return upcoming

    @router.get("/clinics/{clinic_id}/clients/new")
    async def new_client(request: Request, clinic_id: str) -> Response:
        who = await viewer(request, clinic_id)
        if isinstance(who, Response):
            return who
        # A key per form shown: the same form posted twice (a double click, a resend)
        # is one consultation request (intake's Idempotency-Key), not two clients.
        key = secrets.token_urlsafe(16)
        return page(
            "new_client.html", **frame(who, clinic_id, values={}, problems={}, request_key=key)
        )

    @router.post("/clinics/{clinic_id}/clients")
    async def create_client(request: Request, clinic_id: str) -> Response:
        checked = await posted(request, clinic_id, Action.REQUEST_CONSULTATION)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        values = {
            k: str(form.get(k, "")).strip() for k in ("name", "email", "phone", "preferred_channel")
        }
        body: dict[str, Any] = {
            "name": values["name"],
            "email": values["email"],
            "preferred_channel": values["preferred_channel"] or "email",
            "sms_consent": form.get("sms_consent") == "on",
        }
        if values["phone"]:
            body["phone"] = values["phone"]
        retry_key = str(form.get("request_key", ""))[:200] or None
        try:
            answer = await services.request_consultation(clinic_id, body, retry_key)
        except Unavailable:
            return refused(who, clinic_id, 503, "The intake service is not answering; try again.")
        if not answer.ok:  # the form again, with a key of its own (this one was answered)
            return page(
                "new_client.html", 422 if answer.problems else answer.status,
                **frame(who, clinic_id, values=values, problems=_or_form(answer),
                        request_key=secrets.token_urlsafe(16)),
            )  # fmt: skip
        return RedirectResponse(
            f"/clinics/{clinic_id}/clients/{answer.body['client_id']}", 303, headers=HEADERS
        )

    @router.get("/clinics/{clinic_id}/clients/{client_id}")
    async def client(request: Request, clinic_id: str, client_id: UUID) -> Response:
        who = await viewer(request, clinic_id)
        if isinstance(who, Response):
            return who
        return await client_page(who, clinic_id, client_id)

    async def client_page(
        who: Signed,
        clinic_id: str,
        client_id: UUID,
        status: int = 200,
        problems: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
    ) -> HTMLResponse:
        try:
            intake = await services.client(clinic_id, client_id)
            schedule = await services.schedule(clinic_id, client_id)
            messages = await services.messages(clinic_id, client_id)
            outcomes = await services.outcomes(clinic_id, client_id)
        except Unavailable as away:
            return refused(who, clinic_id, 503, f"A service is not answering ({away}); try again.")
        if intake.status == 404:
            return refused(who, clinic_id, 404, "No such client at this clinic.")
        if not intake.ok:
            return refused(who, clinic_id, intake.status, intake.message)
        measures = outcomes.body.get("measures", []) if outcomes.ok else []
        return page(
            "client.html",
            status,
            **frame(
                who,
                clinic_id,
                client=intake.body,
                schedule=schedule.body if schedule.ok else None,
                messages=messages.body if messages.ok else [],
                measures=measures,
                # Our own markup: built from numbers and dates, its one text escaped.
                chart=Markup(  # noqa: S704
                    measures_svg(measures, "PHQ-9 and GAD-7 over time", zone_of(clinic_id))
                ),
                problems=problems or {},
                values=values or {},
                checks=SCREENING_CHECKS,
            ),
        )

    async def act(
        request: Request,
        clinic_id: str,
        client_id: UUID,
        action: Action,
        call: Callable[[Any], Any],
    ) -> Response:
        """A client action's form: CSRF, clinic and role checked, the service called, the
        client's page again (its refusal shown next to the field it names)."""
        checked = await posted(request, clinic_id, action)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        try:
            answer: Answer = await call(form)
        except Unavailable:
            return refused(who, clinic_id, 503, "The intake service is not answering; try again.")
        if not answer.ok:
            values = {k: str(v) for k, v in form.items() if k != "csrf"}
            return await client_page(who, clinic_id, client_id, 422, _or_form(answer), values)
        log.info("console: %s did %s", who.member.role.value, action.value)
        return RedirectResponse(f"/clinics/{clinic_id}/clients/{client_id}", 303, headers=HEADERS)

    @router.post("/clinics/{clinic_id}/clients/{client_id}/consultation-outcome")
    async def consultation_outcome(request: Request, clinic_id: str, client_id: UUID) -> Response:
        async def call(form: Any) -> Answer:
            return await services.record_consultation(
                clinic_id, client_id, str(form.get("outcome", ""))
            )

        return await act(request, clinic_id, client_id, Action.RECORD_CONSULTATION, call)

    @router.post("/clinics/{clinic_id}/clients/{client_id}/screening")
    async def screening(request: Request, clinic_id: str, client_id: UUID) -> Response:
        async def call(form: Any) -> Answer:
            body: dict[str, Any] = {name: form.get(name) == "on" for name, _ in SCREENING_CHECKS}
            body["systolic_bp"] = form.get("systolic_bp") or None
            body["diastolic_bp"] = form.get("diastolic_bp") or None
            if form.get("notes"):
                body["notes"] = str(form.get("notes"))
            return await services.record_screening(clinic_id, client_id, body)

        return await act(request, clinic_id, client_id, Action.RECORD_SCREENING, call)

    @router.post("/clinics/{clinic_id}/clients/{client_id}/enrolment")
    async def enrolment(request: Request, clinic_id: str, client_id: UUID) -> Response:
        async def call(form: Any) -> Answer:
            body = {
                "consent_given": form.get("consent_given") == "on" or None,
                "phq9": [form.get(f"phq9_{i}") for i in range(9)],
                "gad7": [form.get(f"gad7_{i}") for i in range(7)],
            }
            return await services.enrol(clinic_id, client_id, body)

        return await act(request, clinic_id, client_id, Action.ENROL, call)

    @router.post("/clinics/{clinic_id}/clients/{client_id}/measures")
    async def enter_measure(request: Request, clinic_id: str, client_id: UUID) -> Response:
        async def call(form: Any) -> Answer:
            who = acting.get()
            body = {
                "phq9": [form.get(f"m_phq9_{i}") for i in range(9)],
                "gad7": [form.get(f"m_gad7_{i}") for i in range(7)],
                "entered_by": who.staff_id if who else "console",
            }
            return await services.enter_measure(clinic_id, client_id, body)

        return await act(request, clinic_id, client_id, Action.ENTER_MEASURE, call)

    @router.post("/clinics/{clinic_id}/clients/{client_id}/course/{what}")
    async def change_course(
        request: Request, clinic_id: str, client_id: UUID, what: str
    ) -> Response:
        if what not in COURSE_CHANGES:
            return HTMLResponse("not found", 404, headers=HEADERS)

        async def call(form: Any) -> Answer:
            return await services.course(clinic_id, client_id, what)

        return await act(request, clinic_id, client_id, Action.CHANGE_COURSE, call)

    @router.post("/clinics/{clinic_id}/clients/{client_id}/booster-plan")
    async def booster_plan(request: Request, clinic_id: str, client_id: UUID) -> Response:
        async def call(form: Any) -> Answer:
            if form.get("stop") == "1":
                return await services.boosters(clinic_id, client_id, None)
            plan = {
                "interval_days": _number(form, "interval_days"),
                "count": _number(form, "count"),
                "then_monthly": _checked(form, "then_monthly"),
            }
            return await services.boosters(clinic_id, client_id, plan)

        return await act(request, clinic_id, client_id, Action.SET_BOOSTERS, call)

    # --- the clinic's settings (clinic admins) ------------------------------------------

    async def settings_view(
        who: Signed,
        clinic_id: str,
        status: int = 200,
        *,
        text: str | None = None,
        problems: dict[str, str] | None = None,
        policy_values: dict[str, str] | None = None,
        policy_problems: dict[str, str] | None = None,
        saved: bool = False,
    ) -> HTMLResponse:
        """The calendar as JSON and its course policy as a form of its own (each value
        by its dotted name), both as the scheduler holds them unless given."""
        try:
            answer = await services.calendar(clinic_id)
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        calendar = dict(answer.body) if answer.ok else {}
        for derived in ("clinic_id", "timezone"):  # the clinic's own, not the calendar's
            calendar.pop(derived, None)
        held = policy_fields(calendar.get("policy") or {})
        return page(
            "settings.html",
            status,
            **frame(
                who,
                clinic_id,
                text=text if text is not None else json.dumps(calendar, indent=2, sort_keys=True),
                problems=problems or {},
                policy=[
                    (name, kind, (policy_values or {}).get(name, shown))
                    for name, kind, shown in held
                ],
                policy_problems=policy_problems or {},
                saved=saved,
            ),
        )

    @router.get("/clinics/{clinic_id}/settings")
    async def settings_page(request: Request, clinic_id: str) -> Response:
        who = await viewer(request, clinic_id)
        if isinstance(who, Response):
            return who
        if not who.member.may(Action.EDIT_SETTINGS):
            return refused(who, clinic_id, 403, "Your role may not do this.")
        return await settings_view(who, clinic_id)

    @router.post("/clinics/{clinic_id}/settings")
    async def save_settings(request: Request, clinic_id: str) -> Response:
        checked = await posted(request, clinic_id, Action.EDIT_SETTINGS)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        text = str(form.get("calendar", ""))
        try:
            calendar = json.loads(text)
        except ValueError as wrong:
            problems = {"calendar": f"not JSON: {wrong}"}
            return await settings_view(who, clinic_id, 422, text=text, problems=problems)
        try:
            answer = await services.change_calendar(clinic_id, calendar)
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        if not answer.ok:
            problems = answer.problems or {"form": answer.message}
            return await settings_view(who, clinic_id, 422, text=text, problems=problems)
        log.info("console: %s changed the clinic's calendar", who.member.role.value)
        return await settings_view(who, clinic_id, saved=True)

    @router.post("/clinics/{clinic_id}/settings/policy")
    async def save_policy(request: Request, clinic_id: str) -> Response:
        """The course policy's values, from their form, into the calendar as it stands."""
        checked = await posted(request, clinic_id, Action.EDIT_SETTINGS)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        try:
            current = await services.calendar(clinic_id)
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        if not current.ok:
            return refused(who, clinic_id, current.status, current.message)
        calendar = {k: v for k, v in current.body.items() if k not in ("clinic_id", "timezone")}
        policy = json.loads(json.dumps(calendar.get("policy") or {}))  # a copy to change
        typed = {name: str(form.get(name, "")).strip() for name, _, _ in policy_fields(policy)}
        wrong: dict[str, str] = {}
        for name, kind, _ in policy_fields(policy):
            *parents, leaf = name.split(".")
            holder = policy
            for parent in parents:
                holder = holder[parent]
            if kind == "bool":
                holder[leaf] = form.get(name) == "on"
                typed[name] = "true" if holder[leaf] else "false"
            elif kind == "int":
                try:
                    holder[leaf] = int(typed[name])
                except ValueError:
                    wrong[name] = "a whole number"
            else:
                holder[leaf] = typed[name]
        if wrong:
            return await settings_view(
                who, clinic_id, 422, policy_values=typed, policy_problems=wrong
            )
        try:
            answer = await services.change_calendar(clinic_id, {**calendar, "policy": policy})
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        if not answer.ok:  # by the value's name where the scheduler named one
            named: dict[str, str] = {}
            for path, message in answer.where.items():
                value = path.removeprefix("policy.")
                if value in typed:
                    named[value] = message
                else:  # the policy as a whole, or the calendar around it: said at the top
                    named.setdefault("form", message if path == "policy" else f"{path}: {message}")
            return await settings_view(
                who,
                clinic_id,
                422,
                policy_values=typed,
                policy_problems=named or {"form": answer.message},
            )
        log.info("console: %s changed the clinic's course policy", who.member.role.value)
        return await settings_view(who, clinic_id, saved=True)

    # --- the clinic's message templates (clinic admins) --------------------------------

    async def templates_page(
        who: Signed,
        clinic_id: str,
        kind: str,
        status: int = 200,
        problems: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        saved: bool = False,
    ) -> HTMLResponse:
        try:
            answer = await services.templates(clinic_id, kind or "consultation_booked")
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        if not answer.ok:
            return refused(
                who, clinic_id, answer.status, answer.problems.get("kind", answer.message)
            )
        body = answer.body
        kind = kind or "consultation_booked"
        overrides = body["overrides"].get(kind, {})
        return page(
            "templates.html",
            status,
            **frame(
                who,
                clinic_id,
                kinds=body["kinds"],
                kind=kind,
                parts=body["parts"],
                built_in=body["built_in"],
                values=values if values is not None else overrides,
                overridden=sorted(body["overrides"]),
                problems=problems or {},
                saved=saved,
            ),
        )

    @router.get("/clinics/{clinic_id}/settings/templates")
    async def templates(request: Request, clinic_id: str, kind: str = "") -> Response:
        who = await viewer(request, clinic_id)
        if isinstance(who, Response):
            return who
        if not who.member.may(Action.EDIT_SETTINGS):
            return refused(who, clinic_id, 403, "Your role may not do this.")
        return await templates_page(who, clinic_id, kind.strip())

    @router.post("/clinics/{clinic_id}/settings/templates/{kind}")
    async def save_template(request: Request, clinic_id: str, kind: str) -> Response:
        checked = await posted(request, clinic_id, Action.EDIT_SETTINGS)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        parts = {p: str(form.get(p, "")) for p in TEMPLATE_PARTS}
        try:
            answer = await services.change_template(clinic_id, kind, parts)
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        if not answer.ok:
            return await templates_page(who, clinic_id, kind, 422, _or_form(answer), parts)
        log.info("console: %s changed a message template", who.member.role.value)
        return await templates_page(who, clinic_id, kind, values=answer.body["parts"], saved=True)

    # --- the day: every appointment by therapist or by room ----------------------------

    def local_day(typed: str, clinic_id: str) -> dt.date | None:
        """The date asked for (YYYY-MM-DD), or today on the clinic's clock; None: not a date."""
        if not typed:
            return now().astimezone(ZoneInfo(zone_of(clinic_id))).date()
        try:
            return dt.date.fromisoformat(typed)
        except ValueError:
            return None

    @router.get("/clinics/{clinic_id}/today")
    async def today(
        request: Request, clinic_id: str, date: str = "", by: str = "therapist"
    ) -> Response:
        who = await viewer(request, clinic_id)
        if isinstance(who, Response):
            return who
        day = local_day(date, clinic_id)
        if day is None:
            return refused(who, clinic_id, 422, "date: a date as YYYY-MM-DD")
        by = "room" if by == "room" else "therapist"
        try:
            answer = await services.day(clinic_id, day)
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        if not answer.ok:
            return refused(
                who, clinic_id, answer.status, answer.problems.get("date", answer.message)
            )
        appointments = answer.body["appointments"]
        names = await client_names(clinic_id, {a["client_id"] for a in appointments})
        columns = answer.body["therapists"] if by == "therapist" else answer.body["rooms"]
        key = "therapist_id" if by == "therapist" else "room_id"
        grouped = {c: [a for a in appointments if a.get(key) == c] for c in columns}
        return page(
            "today.html",
            **frame(
                who,
                clinic_id,
                day=day,
                by=by,
                grouped=grouped,
                names=names,
                unassigned=[a for a in appointments if not a.get(key)],
                previous=(day - dt.timedelta(days=1)).isoformat(),
                following=(day + dt.timedelta(days=1)).isoformat(),
            ),
        )

    @router.get("/clinics/{clinic_id}/week")
    async def week(request: Request, clinic_id: str, date: str = "") -> Response:
        """Seven days from the given one (today by default), each day's appointments in
        time order, therapist and room named: the scheduler's day view, once a day."""
        who = await viewer(request, clinic_id)
        if isinstance(who, Response):
            return who
        first = local_day(date, clinic_id)
        if first is None:
            return refused(who, clinic_id, 422, "date: a date as YYYY-MM-DD")
        days = [first + dt.timedelta(days=n) for n in range(7)]
        try:
            answers = await asyncio.gather(*(services.day(clinic_id, d) for d in days))
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        bad = next((a for a in answers if not a.ok), None)
        if bad is not None:
            return refused(who, clinic_id, bad.status, bad.problems.get("date", bad.message))
        by_day = [(d, a.body["appointments"]) for d, a in zip(days, answers, strict=True)]
        clients = {x["client_id"] for _, appointments in by_day for x in appointments}
        return page(
            "week.html",
            **frame(
                who,
                clinic_id,
                by_day=by_day,
                names=await client_names(clinic_id, clients),
                previous=(first - dt.timedelta(days=7)).isoformat(),
                following=(first + dt.timedelta(days=7)).isoformat(),
            ),
        )

    async def client_names(clinic_id: str, clients: set[str]) -> dict[str, str]:
        """Each client's name, from intake (one read each, side by side); a client
        intake does not know (yet) shows as their id."""
        ids = sorted(clients)
        answers = await asyncio.gather(
            *(services.client(clinic_id, UUID(c)) for c in ids), return_exceptions=True
        )
        return {
            c: a.body["contact"]["name"]
            for c, a in zip(ids, answers, strict=True)
            if isinstance(a, Answer) and a.ok
        }

    # --- a session: check-in, completion, missed, cancellation, reschedule --------------

    def find(schedule: dict[str, Any] | None, appointment_id: UUID) -> dict[str, Any] | None:
        if not schedule:
            return None
        every = every_appointment(schedule)
        return next((a for a in every if a.get("appointment_id") == str(appointment_id)), None)

    async def appointment_page(
        who: Signed,
        clinic_id: str,
        client_id: UUID,
        appointment_id: UUID,
        status: int = 200,
        problems: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
        free_on: str = "",
    ) -> HTMLResponse:
        try:
            schedule = await services.schedule(clinic_id, client_id)
            intake = await services.client(clinic_id, client_id)
        except Unavailable as away:
            return refused(who, clinic_id, 503, f"A service is not answering ({away}); try again.")
        found = find(schedule.body if schedule.ok else None, appointment_id)
        if found is None or not intake.ok:
            return refused(who, clinic_id, 404, "No such appointment for this client.")
        zone = zone_of(clinic_id)
        own_day = datetime.fromisoformat(found["starts_at"]).astimezone(ZoneInfo(zone)).date()
        offer = await free_times(who, clinic_id, found, free_on or own_day.isoformat())
        return page(
            "appointment.html",
            status,
            **frame(
                who,
                clinic_id,
                client=intake.body,
                appointment=found,
                problems=problems or {},
                values=values or {},
                offer=offer,
                staff_id=who.member.staff_id,
                adverse_kinds=[kind.value for kind in AdverseEventKind],
            ),
        )

    async def free_times(
        who: Signed, clinic_id: str, appointment: dict[str, Any], typed: str
    ) -> dict[str, Any] | None:
        """The times the session could move to on the day asked (its own by default),
        or why none are offered; None when this member may not move it or it is done."""
        if not who.member.may(Action.RESCHEDULE) or appointment.get("status") not in (
            None,
            "booked",
        ):
            return None
        day = local_day(typed, clinic_id)
        if day is None:
            return {"date": typed, "times": [], "problem": "a date as YYYY-MM-DD"}
        try:
            answer = await services.free_times(clinic_id, UUID(appointment["appointment_id"]), day)
        except Unavailable:
            return {"date": typed, "times": [], "problem": "the scheduler is not answering"}
        if not answer.ok:
            problem = answer.problems.get("date", answer.message)
            return {"date": day.isoformat(), "times": [], "problem": problem}
        return {"date": day.isoformat(), "times": answer.body["times"], "problem": None}

    @router.get("/clinics/{clinic_id}/clients/{client_id}/appointments/{appointment_id}")
    async def appointment(
        request: Request, clinic_id: str, client_id: UUID, appointment_id: UUID, free_on: str = ""
    ) -> Response:
        who = await viewer(request, clinic_id)
        if isinstance(who, Response):
            return who
        return await appointment_page(
            who, clinic_id, client_id, appointment_id, free_on=free_on.strip()
        )

    @router.post("/clinics/{clinic_id}/clients/{client_id}/appointments/{appointment_id}/{what}")
    async def session_action(
        request: Request, clinic_id: str, client_id: UUID, appointment_id: UUID, what: str
    ) -> Response:
        if what not in SESSION_ACTIONS:
            return HTMLResponse("not found", 404, headers=HEADERS)
        action, body_of = SESSION_ACTIONS[what]
        checked = await posted(request, clinic_id, action)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        try:
            body = body_of(form, zone_of(clinic_id))
        except Unreadable as wrong:  # a local time that is not one (a DST gap), or not a time
            values = {k: str(v) for k, v in form.items() if k != "csrf"}
            problems = {wrong.field: wrong.reason}
            return await appointment_page(
                who, clinic_id, client_id, appointment_id, 422, problems, values
            )
        try:
            answer = await services.appointment(clinic_id, appointment_id, what, body)
        except Unavailable:
            return refused(who, clinic_id, 503, "The scheduler is not answering; try again.")
        if not answer.ok:
            values = {k: str(v) for k, v in form.items() if k != "csrf"}
            return await appointment_page(
                who, clinic_id, client_id, appointment_id, 422, _or_form(answer), values
            )
        log.info("console: %s did %s", who.member.role.value, action.value)
        return RedirectResponse(f"/clinics/{clinic_id}/clients/{client_id}", 303, headers=HEADERS)

    kit = Kit(signed, csrf_ok, frame, page, refused, to_sign_in)
    for other in more:  # pages of their own (operations.py), signed in the same way
        router.include_router(other(kit))
    return router


def every_appointment(schedule: dict[str, Any]) -> list[dict[str, Any]]:
    """A client's schedule (the scheduler's view) as one list: the consultation, the
    course's appointments and each booster's."""
    course = schedule.get("course") or {}
    every = [schedule.get("consultation") or {}, *course.get("appointments", [])]
    for booster in course.get("booster_sessions") or []:  # each with its appointments
        every += booster.get("appointments", [])
    return every


def policy_fields(policy: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """The course policy's single values, by dotted name (`checkin.opens_minutes_before`),
    each with its kind (int, bool or text) and its value as a form shows it. Lists and
    pairs stay with the JSON editor."""
    found: list[tuple[str, str, str]] = []
    for key in sorted(policy):
        value, name = policy[key], f"{prefix}{key}"
        if isinstance(value, dict):
            found += policy_fields(value, f"{name}.")
        elif isinstance(value, bool):
            found.append((name, "bool", "true" if value else "false"))
        elif isinstance(value, int):
            found.append((name, "int", str(value)))
        elif isinstance(value, str):
            found.append((name, "text", value))
    return found


def _checked(form: Any, name: str) -> bool:
    return bool(form.get(name) == "on")


def _number(form: Any, name: str) -> str | None:
    """A number field as typed (the service validates it and names it if wrong)."""
    value = str(form.get(name, "")).strip()
    return value or None


def _check_in(form: Any, zone: str) -> dict[str, Any]:
    return {
        "ride_home_confirmed": _checked(form, "ride_home_confirmed"),
        "fasting_confirmed": _checked(form, "fasting_confirmed"),
        "vitals": {
            "systolic": _number(form, "systolic"),
            "diastolic": _number(form, "diastolic"),
            "heart_rate": _number(form, "heart_rate"),
        },
        "phq9_item9": _number(form, "phq9_item9"),
    }


def _completion(form: Any, zone: str) -> dict[str, Any]:
    body: dict[str, Any] = {"ride_home_confirmed": _checked(form, "ride_home_confirmed")}
    for name in ("phq9_total", "phq9_item9"):
        if _number(form, name) is not None:
            body[name] = _number(form, name)
    return body


def _dropped(form: Any, zone: str) -> dict[str, Any]:
    return {"allow_short_notice": _checked(form, "allow_short_notice")}


class Unreadable(ValueError):
    """A form's field the console cannot turn into what the service reads."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def _local(form: Any, name: str, zone: str) -> str | None:
    """A `datetime-local` field as an instant (empty: left to the service to name)."""
    typed = str(form.get(name, "")).strip()
    if not typed:
        return None
    try:
        return local_instant(typed, zone)
    except ValueError as wrong:
        raise Unreadable(name, str(wrong)) from None


def _rescheduled(form: Any, zone: str) -> dict[str, Any]:
    """A time typed wins over one picked from the free times offered (an instant
    already, so an hour the clocks repeat is told apart)."""
    typed = _local(form, "typed_starts_at", zone)
    return {
        "new_starts_at": typed or str(form.get("new_starts_at", "")).strip() or None,
        "allow_short_notice": _checked(form, "allow_short_notice"),
    }


def _vitals(form: Any, prefix: str) -> dict[str, str | None]:
    return {k: _number(form, f"{prefix}_{k}") for k in ("systolic", "diastolic", "heart_rate")}


def _recorded(form: Any, zone: str) -> dict[str, Any]:
    """A medicine session's record: what was given, by whom, and the vital signs."""
    kind = str(form.get("adverse_kind", "")).strip()
    return {
        "medicine": str(form.get("medicine", "")) or "ketamine",
        "route": str(form.get("route", "")) or None,
        "dose_mg": _number(form, "dose_mg"),
        "administered_by": str(form.get("administered_by", "")).strip() or None,
        "dosed_at": _local(form, "dosed_at", zone),
        "discharged_at": _local(form, "discharged_at", zone),
        "vitals_at_dosing": _vitals(form, "dosing"),
        "vitals_at_40_min": _vitals(form, "at40"),
        "vitals_at_discharge": _vitals(form, "discharge"),
        "adverse_events": (
            [{"kind": kind, "severity": str(form.get("adverse_severity", "")) or None}]
            if kind
            else []
        ),
    }


def local_instant(typed: str, zone: str) -> str:
    """A `datetime-local` value read on the clinic's wall clock, as an ISO instant. A
    time the clocks skip (spring forward) does not exist there: refused, not guessed."""
    try:
        naive = datetime.fromisoformat(typed)
    except ValueError:
        raise ValueError("a date and a time, e.g. 2026-12-01T10:00") from None
    tz = ZoneInfo(zone)
    local = naive.replace(tzinfo=tz)
    if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        raise ValueError(f"{typed} does not exist in {zone} (the clocks skip it)")
    return local.isoformat()


COURSE_CHANGES = ("pause", "resume", "withdrawal", "discharge")
TEMPLATE_PARTS = ("subject", "text", "html", "sms")
SESSION_ACTIONS: dict[str, tuple[Action, Callable[[Any, str], dict[str, Any]]]] = {
    "check-in": (Action.CHECK_IN, _check_in),
    "record": (Action.RECORD_SESSION, _recorded),
    "completion": (Action.COMPLETE_SESSION, _completion),
    "missed": (Action.MARK_MISSED, _dropped),
    "cancellation": (Action.CANCEL_SESSION, _dropped),
    "reschedule": (Action.RESCHEDULE, _rescheduled),
}


def hours_in(instant: str, zone: str) -> str:
    """An instant's hour and minute on the clinic's wall clock."""
    return f"{datetime.fromisoformat(instant).astimezone(ZoneInfo(zone)):%H:%M}"


def shown_in(instant: str | None, zone: str) -> str:
    """An instant (ISO 8601, UTC) as the clinic's wall clock shows it, zone named."""
    if not instant:
        return "—"
    local = datetime.fromisoformat(instant).astimezone(ZoneInfo(zone))
    return f"{local:%a %d %b %Y, %H:%M} ({zone})"


def _or_form(answer: Answer) -> dict[str, str]:
    """The refusal by field, or as the whole form's (a 409: the client's state)."""
    return answer.problems or {"form": answer.message}
