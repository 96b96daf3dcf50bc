"""The three services, as the console reaches them: their HTTP APIs only.

Each call goes with the clinic's own key and, for a signed-in staff member, a staff
token naming them and their role (chassis.staff_tokens), which the service checks.
A refusal comes back as the service gave it: the status and, for a 422, each problem
by the field it names, so the form can show it next to that field; anything else (a
service away) is an `Unavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from uuid import UUID

import httpx

from chassis.staff_tokens import Actor, StaffTokens, acting

TIMEOUT_S = 10.0


class Unavailable(Exception):
    """A service did not answer, or answered 5xx: the page says so, nothing is assumed."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    problems: dict[str, str] = field(default_factory=dict)  # field -> what is wrong
    # The same, by the whole dotted path (`policy.min_notice_hours`): a nested form's.
    where: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """The refusal in one line, for a problem no field names (a 409's detail)."""
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        return detail if isinstance(detail, str) else f"refused ({self.status})"


def _answer(response: httpx.Response) -> Answer:
    if response.status_code >= 500:
        raise Unavailable(f"{response.request.url.host}: {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        if response.is_success:  # a 2xx that is no answer: not to be shown as one
            raise Unavailable(f"{response.request.url.host}: not JSON") from None
        body = None
    problems: dict[str, str] = {}
    paths: dict[str, str] = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if response.status_code == 422 and isinstance(detail, list):
        for item in detail:
            where = [str(part) for part in item.get("loc", ()) if part not in ("body", "query")]
            message = str(item.get("msg", "invalid"))
            problems.setdefault(where[0] if where else "form", message)
            paths.setdefault(".".join(where) or "form", message)
    return Answer(response.status_code, body, problems, paths)


class Services:
    def __init__(
        self,
        intake: str,
        scheduler: str,
        notifier: str,
        keys: Mapping[str, str],
        tokens: StaffTokens,
    ) -> None:
        self._urls = {"intake": intake, "scheduler": scheduler, "notifier": notifier}
        self._keys = dict(keys)
        self._tokens = tokens
        self._http = httpx.AsyncClient(timeout=TIMEOUT_S)

    def serves(self, clinic_id: str) -> bool:
        return clinic_id in self._keys

    async def _call(
        self,
        service: str,
        method: str,
        clinic_id: str,
        path: str,
        retry_key: str | None = None,
        **kwargs: Any,
    ) -> Answer:
        url = f"{self._urls[service]}/v1/clinics/{clinic_id}{path}"
        headers = {"X-API-Key": self._keys.get(clinic_id, "")}
        if retry_key:  # the form's own: sent twice (a double click), it is one request
            headers["Idempotency-Key"] = retry_key
        actor = acting.get()
        if actor is not None:  # the signed-in staff member, for this call's clinic
            who = Actor(actor.staff_id, actor.role, clinic_id)
            headers["X-Staff-Token"] = self._tokens.issue(who)
        try:
            response = await self._http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            raise Unavailable(f"{service}: {type(error).__name__}") from error
        return _answer(response)

    # --- reads ---------------------------------------------------------------------

    async def search(self, clinic_id: str, query: str) -> Answer:
        return await self._call("intake", "GET", clinic_id, "/clients", params={"q": query})

    async def client(self, clinic_id: str, client_id: UUID) -> Answer:
        return await self._call("intake", "GET", clinic_id, f"/clients/{client_id}")

    async def day(self, clinic_id: str, day: date) -> Answer:
        """The clinic's appointments of one local date (the scheduler's day view)."""
        return await self._call(
            "scheduler", "GET", clinic_id, "/calendar/day", params={"date": day.isoformat()}
        )

    async def free_times(self, clinic_id: str, appointment_id: UUID, day: date) -> Answer:
        """The times a course session could move to on one clinic-local date."""
        path = f"/appointments/{appointment_id}/free-times"
        params = {"date": day.isoformat()}
        return await self._call("scheduler", "GET", clinic_id, path, params=params)

    async def schedule(self, clinic_id: str, client_id: UUID) -> Answer:
        return await self._call("scheduler", "GET", clinic_id, f"/clients/{client_id}/schedule")

    async def outcomes(self, clinic_id: str, client_id: UUID) -> Answer:
        """The client's measures over time (the scheduler's record of them)."""
        path = f"/clients/{client_id}/outcomes"
        return await self._call("scheduler", "GET", clinic_id, path)

    async def enter_measure(self, clinic_id: str, client_id: UUID, body: dict[str, Any]) -> Answer:
        path = f"/clients/{client_id}/measures"
        return await self._call("intake", "POST", clinic_id, path, json=body)

    async def messages(self, clinic_id: str, client_id: UUID) -> Answer:
        path = f"/clients/{client_id}/notifications"
        return await self._call("notifier", "GET", clinic_id, path)

    # --- actions -------------------------------------------------------------------

    async def request_consultation(
        self, clinic_id: str, body: dict[str, Any], retry_key: str | None = None
    ) -> Answer:
        path = "/consultation-requests"
        return await self._call("intake", "POST", clinic_id, path, retry_key, json=body)

    async def record_consultation(self, clinic_id: str, client_id: UUID, outcome: str) -> Answer:
        path = f"/clients/{client_id}/consultation-outcome"
        return await self._call("intake", "POST", clinic_id, path, json={"outcome": outcome})

    async def record_screening(
        self, clinic_id: str, client_id: UUID, body: dict[str, Any]
    ) -> Answer:
        return await self._call(
            "intake", "POST", clinic_id, f"/clients/{client_id}/screening", json=body
        )

    async def enrol(self, clinic_id: str, client_id: UUID, body: dict[str, Any]) -> Answer:
        return await self._call(
            "intake", "POST", clinic_id, f"/clients/{client_id}/enrolment", json=body
        )

    async def appointment(
        self, clinic_id: str, appointment_id: UUID, what: str, body: dict[str, Any]
    ) -> Answer:
        """One of a session's actions: check-in, record, completion, missed, cancellation,
        reschedule (the scheduler's route of that name)."""
        path = f"/appointments/{appointment_id}/{what}"
        return await self._call("scheduler", "POST", clinic_id, path, json=body)

    async def course(self, clinic_id: str, client_id: UUID, what: str) -> Answer:
        """Pause, resume, withdrawal or discharge (the scheduler's course routes)."""
        path = f"/clients/{client_id}/course/{what}"
        return await self._call("scheduler", "POST", clinic_id, path)

    async def boosters(
        self, clinic_id: str, client_id: UUID, plan: dict[str, Any] | None
    ) -> Answer:
        """Set the booster plan, or stop boosters (`plan` None)."""
        path = f"/clients/{client_id}/booster-plan"
        if plan is None:
            return await self._call("scheduler", "DELETE", clinic_id, path)
        return await self._call("scheduler", "PUT", clinic_id, path, json=plan)

    async def templates(self, clinic_id: str, kind: str) -> Answer:
        """The clinic's message template overrides, and the built-in parts of `kind`."""
        params = {"kind": kind}
        return await self._call("scheduler", "GET", clinic_id, "/message-templates", params=params)

    async def change_template(self, clinic_id: str, kind: str, parts: dict[str, str]) -> Answer:
        """One kind's overrides (a part left empty: the built-in one), written by the
        scheduler into the clinic's registry entry."""
        path = f"/message-templates/{kind}"
        return await self._call("scheduler", "PUT", clinic_id, path, json=parts)

    async def calendar(self, clinic_id: str) -> Answer:
        return await self._call("scheduler", "GET", clinic_id, "/calendar")

    async def change_calendar(self, clinic_id: str, calendar: Any) -> Answer:
        return await self._call("scheduler", "PUT", clinic_id, "/calendar", json=calendar)

    async def close(self) -> None:
        await self._http.aclose()
