"""HTTP behaviour every service shares: size limits, honest 503s, the clinic's key as a
security scheme, bounded instants, and the statuses every clinic route can answer."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator, AwareDatetime, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chassis.clinics import Clinic, ConfigurationError, _authorised_clinic
from chassis.redis_client import TRANSIENT_REDIS_ERRORS
from chassis.staff_tokens import Actor, Role, StaffTokens, TokenInvalid, acting

MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = "5"


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuses bodies over the limit with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response(scope, receive, send)


def _unavailable(what: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{what} is unavailable; nothing was recorded, retry later"},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_S},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Kafka or Redis down: 503 with Retry-After, never a 500 with a stack trace."""

    async def kafka_down(_: Request, __: Exception) -> JSONResponse:
        return _unavailable("the event broker")

    async def redis_down(_: Request, __: Exception) -> JSONResponse:
        return _unavailable("the state store")

    async def misconfigured(_: Request, __: Exception) -> JSONResponse:
        # The operator's to fix (the reason is in the log); the request was fine.
        return _unavailable("the clinics configuration")

    app.add_exception_handler(KafkaError, kafka_down)
    app.add_exception_handler(TimeoutError, kafka_down)
    for error in TRANSIENT_REDIS_ERRORS:  # a cluster failover too: 503, retry later
        app.add_exception_handler(error, redis_down)
    app.add_exception_handler(ConfigurationError, misconfigured)
    app.add_middleware(BodySizeLimit)
    _document_readiness(app)


def _document_readiness(app: FastAPI) -> None:
    """/readyz answers 503 while not ready: its OpenAPI entry says so too."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        readyz = schema.get("paths", {}).get("/readyz", {}).get("get")
        if readyz is not None:
            readyz["responses"].setdefault(
                "503", {"description": "Kafka, Redis or consumers not ready (or Redis evicts)"}
            )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- the clinic's API key, declared as what it is: a security scheme ------------

API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ClinicApiKey",
    description="The clinic's API key; another clinic's key gets 404, as an unknown clinic",
    # Not FastAPI's own 403: a missing key is a 401 with WWW-Authenticate (below).
    auto_error=False,
)


async def _clinic_of_key(
    request: Request,
    clinic_id: Annotated[str, PathParam(description="The clinic acting")],
    api_key: Annotated[str | None, Security(API_KEY)] = None,
) -> Clinic:
    return await _authorised_clinic(request, clinic_id, api_key)


AuthorisedClinic = Annotated[Clinic, Depends(_clinic_of_key)]
"""Route parameter: the clinic named in the path, once the caller proved it is that clinic
(the key travels in `X-API-Key`, declared in OpenAPI as the `ClinicApiKey` scheme)."""


# --- the staff member acting, when the console calls (chassis.staff_tokens) -----------


async def staff_actor(
    request: Request,
    clinic_id: Annotated[str, PathParam(description="The clinic acting")],
    x_staff_token: Annotated[
        str | None,
        Header(description="The console's signed token naming the staff member and role"),
    ] = None,
) -> Actor | None:
    """Router dependency: the staff member a call acts for (None: the clinic's own
    integration), checked for this clinic, and kept for the events the call causes."""
    if not x_staff_token:
        acting.set(None)
        return None
    tokens: StaffTokens = request.app.state.staff_tokens
    try:
        actor = tokens.verify(x_staff_token)
    except TokenInvalid as invalid:
        raise HTTPException(401, f"X-Staff-Token: {invalid}") from invalid
    if actor.clinic_id != clinic_id:
        raise HTTPException(403, "X-Staff-Token: not a staff member of this clinic")
    acting.set(actor)
    return actor


def roles(*allowed: Role) -> Any:
    """Route dependency: a staff member's call needs one of `allowed` (an integration's,
    with the clinic's key alone, is the clinic's own and is not limited)."""

    async def check(
        actor: Annotated[Actor | None, Depends(staff_actor)],
    ) -> None:
        if actor is not None and actor.role not in allowed:
            names = " or ".join(r.value for r in allowed)
            raise HTTPException(403, f"a {actor.role.value} may not do this (needs {names})")

    return Depends(check)


# --- what every clinic route can answer, for the OpenAPI documents --------------


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}
            }
        },
    }


CLINIC_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem("No X-API-Key header"),
    404: _problem("No such clinic, not this clinic's key, or no such resource"),
    413: _problem(f"Request body larger than {MAX_BODY_BYTES} bytes"),
    422: _problem("The input is invalid; the detail names the field"),
    503: {
        **_problem("Kafka or Redis is unavailable; nothing was recorded, retry later"),
        "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds"}},
    },
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _problem("Refused in the resource's present state, or it is being changed: retry")
}
TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {
        **_problem("Too many requests from this address; retry after Retry-After seconds"),
        "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds"}},
    }
}


# --- instants and dates within a sane range --------------------------------------

EARLIEST_YEAR, LATEST_YEAR = 2000, 2100


def _sane_instant(instant: datetime) -> datetime:
    # Checked on the given wall time, before any conversion: year 9999 at -12:00
    # cannot even be converted to UTC (OverflowError), and plans add weeks to it.
    if not EARLIEST_YEAR <= instant.year <= LATEST_YEAR:
        raise ValueError(f"must be within the years {EARLIEST_YEAR} to {LATEST_YEAR}")
    return instant


def _sane_date(day: date) -> date:
    if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
        raise ValueError(f"must be within the years {EARLIEST_YEAR} to {LATEST_YEAR}")
    return day


SaneInstant = Annotated[AwareDatetime, AfterValidator(_sane_instant)]
"""An aware instant within the years 2000 to 2100 (422 otherwise, never an overflow)."""
SaneDate = Annotated[date, AfterValidator(_sane_date)]
"""A date within the years 2000 to 2100."""


def unprocessable(error: ValidationError, prefix: str = "body") -> JSONResponse:
    """A model built from already-valid input still refused something: a 422 naming it."""
    detail = [
        {"loc": [prefix, *error_item["loc"]], "msg": error_item["msg"], "type": error_item["type"]}
        for error_item in error.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


class AdminKey:
    """Dependency: the actor of an admin call, once its key proved it is the admin's."""

    def __init__(self, key_sha256: str | None) -> None:
        self._key_sha256 = key_sha256

    async def __call__(
        self,
        x_admin_key: Annotated[str | None, Header(description="The deployment's admin key")] = None,
        x_admin_actor: Annotated[
            str | None, Header(max_length=200, description="Who makes the change (audit)")
        ] = None,
    ) -> str:
        if not x_admin_key:
            raise HTTPException(
                401, "missing X-Admin-Key header", headers={"WWW-Authenticate": "ApiKey"}
            )
        digest = hashlib.sha256(x_admin_key.encode()).hexdigest()
        if self._key_sha256 is None or not hmac.compare_digest(digest, self._key_sha256):
            raise HTTPException(403, "not the admin key")
        # The audit record names the actor the caller gives, vouched for by the key.
        return f"admin-api:{x_admin_actor or 'unnamed'}"
