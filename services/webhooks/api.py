"""The webhook service's HTTP API: partners managed by the admin, delivery logs for both.

Admin routes (`X-Admin-Key`, as the scheduler's admin API) create, list, change,
rotate, replay and delete partners; a partner's secret and API key are shown once,
in the answer that creates them, and never again (nor logged). A partner reads its
own delivery log with its API key (`X-Partner-Key`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, field_validator

from chassis.clinics import ClinicDirectory
from chassis.http import AdminKey
from services.webhooks.delivery import checked_address
from services.webhooks.domain import PUBLIC_TYPES, AddressRefused, Network, Partner
from services.webhooks.replay import WindowTooLarge
from services.webhooks.service import NotFound, Webhooks, digest

ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No X-Admin-Key header"},
    403: {"description": "Not the admin key, or the admin API is not configured"},
}

Replay = Callable[[Partner, datetime, datetime], Awaitable[int]]


def _known_types(types: list[str]) -> list[str]:
    unknown = sorted(set(types) - set(PUBLIC_TYPES))
    if unknown:
        raise ValueError(
            f"not public event types: {', '.join(unknown)}; one of {', '.join(PUBLIC_TYPES)}"
        )
    if not types:
        raise ValueError("at least one event type")
    return sorted(set(types))


class PartnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    url: HttpUrl = Field(description="Where events are POSTed (https in production)")
    event_types: list[str] = Field(
        description="Public topic names, e.g. public.client.stage-reached.v1"
    )
    clinics: list[str] = Field(min_length=1, description="The clinics whose events it may receive")

    _types = field_validator("event_types")(_known_types)


class PartnerChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: HttpUrl | None = None
    event_types: list[str] | None = None
    clinics: list[str] | None = Field(default=None, min_length=1)
    enabled: bool | None = Field(
        default=None, description="false stops deliveries; true resumes them"
    )

    @field_validator("event_types")
    @classmethod
    def _types(cls, types: list[str] | None) -> list[str] | None:
        return None if types is None else _known_types(types)


class PartnerOut(BaseModel):
    """A partner as the API shows it: never its secrets or API key."""

    id: str
    name: str
    url: str
    event_types: list[str]
    clinics: list[str]
    enabled: bool
    disabled_reason: str | None
    secrets_valid: int = Field(description="How many secrets sign now (two during a rotation)")
    created_at: datetime

    @classmethod
    def of(cls, partner: Partner, now: datetime) -> PartnerOut:
        return cls(
            id=partner.id,
            name=partner.name,
            url=str(partner.url),
            event_types=list(partner.event_types),
            clinics=list(partner.clinics),
            enabled=partner.disabled is None,
            disabled_reason=partner.disabled,
            secrets_valid=len(partner.signing_secrets(now)),
            created_at=partner.created_at,
        )


class PartnerCreated(PartnerOut):
    secret: str = Field(description="The signing secret (whsec_...): shown this once")
    api_key: str = Field(description="The partner's key for its delivery log: shown this once")


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_old_for_s: int = Field(default=24 * 3600, ge=0, le=30 * 24 * 3600)


class Rotated(BaseModel):
    secret: str
    old_valid_until: datetime


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime
    until: AwareDatetime | None = None


class ReplayOut(BaseModel):
    queued: int


@contextlib.contextmanager
def _gone_meanwhile(partner_id: str) -> Iterator[None]:
    """A partner deleted between the route's look and its change: 404, as before it."""
    try:
        yield
    except NotFound:
        raise HTTPException(404, f"no partner {partner_id}") from None


def routes(
    webhooks: Webhooks,
    clinics: ClinicDirectory,
    admin_key_sha256: str | None,
    allowed: tuple[Network, ...],
    replay: Replay,
    now: Callable[[], datetime],
) -> APIRouter:
    router = APIRouter(tags=["partners"])
    admin = Depends(AdminKey(admin_key_sha256))

    async def target_checked(url: HttpUrl) -> None:
        """Refused when saved, as at each connection: a private, loopback or link-local
        target (unless allowed), or a name that does not resolve; and plain http."""
        try:
            address = await checked_address(str(url), allowed)
        except AddressRefused as refused:
            raise HTTPException(422, f"url: {refused}") from refused
        # Events leave the clinic group's network signed but readable: https, except to
        # an allowed network (a test's or the demo's receiver on this machine).
        if url.scheme != "https" and not any(address in network for network in allowed):
            raise HTTPException(422, "url: must be https")

    def clinics_known(ids: list[str]) -> None:
        unknown = sorted(c for c in ids if clinics.get(c) is None)
        if unknown:
            raise HTTPException(422, f"clinics: unknown clinic(s) {', '.join(unknown)}")

    async def found(partner_id: str) -> Partner:
        try:
            return await webhooks.get(partner_id)
        except NotFound:
            raise HTTPException(404, f"no partner {partner_id}") from None

    @router.post("/partners", status_code=201, responses=ADMIN_RESPONSES, dependencies=[admin])
    async def create_partner(body: PartnerIn) -> PartnerCreated:
        await target_checked(body.url)
        clinics_known(body.clinics)
        created = await webhooks.create(body.name, str(body.url), body.event_types, body.clinics)
        shown = PartnerOut.of(created.partner, now()).model_dump()
        return PartnerCreated(**shown, secret=created.secret, api_key=created.api_key)

    @router.get("/partners", responses=ADMIN_RESPONSES, dependencies=[admin])
    async def list_partners() -> list[PartnerOut]:
        return [PartnerOut.of(p, now()) for p in await webhooks.store.partners()]

    @router.get("/partners/{partner_id}", responses=ADMIN_RESPONSES, dependencies=[admin])
    async def get_partner(partner_id: str) -> PartnerOut:
        return PartnerOut.of(await found(partner_id), now())

    @router.patch("/partners/{partner_id}", responses=ADMIN_RESPONSES, dependencies=[admin])
    async def change_partner(partner_id: str, body: PartnerChange) -> PartnerOut:
        await found(partner_id)
        changes = body.model_dump(exclude_none=True)
        if body.url is not None:
            await target_checked(body.url)
        if body.clinics is not None:
            clinics_known(body.clinics)
        if "event_types" in changes:
            changes["event_types"] = tuple(changes["event_types"])
        if "clinics" in changes:
            changes["clinics"] = tuple(changes["clinics"])
        with _gone_meanwhile(partner_id):
            return PartnerOut.of(await webhooks.update(partner_id, **changes), now())

    @router.post(
        "/partners/{partner_id}/rotate-secret", responses=ADMIN_RESPONSES, dependencies=[admin]
    )
    async def rotate_secret(partner_id: str, body: Rotation) -> Rotated:
        await found(partner_id)
        keep = timedelta(seconds=body.keep_old_for_s)
        with _gone_meanwhile(partner_id):
            secret, old_until = await webhooks.rotate(partner_id, keep)
        return Rotated(secret=secret, old_valid_until=old_until)

    @router.delete(
        "/partners/{partner_id}", status_code=204, responses=ADMIN_RESPONSES, dependencies=[admin]
    )
    async def delete_partner(partner_id: str) -> None:
        await found(partner_id)
        with _gone_meanwhile(partner_id):
            await webhooks.delete(partner_id)

    @router.post("/partners/{partner_id}/replay", responses=ADMIN_RESPONSES, dependencies=[admin])
    async def replay_partner(partner_id: str, body: ReplayIn) -> ReplayOut:
        partner = await found(partner_id)
        until = body.until or now()
        if body.since >= until:
            raise HTTPException(422, "since: must be before until")
        try:
            return ReplayOut(queued=await replay(partner, body.since, until))
        except WindowTooLarge as too_large:
            raise HTTPException(422, f"since: {too_large}") from too_large

    @router.get(
        "/partners/{partner_id}/deliveries", responses=ADMIN_RESPONSES, dependencies=[admin]
    )
    async def partner_deliveries(
        partner_id: str,
        since: Annotated[AwareDatetime | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return await webhooks.store.deliveries(await found(partner_id), since, limit)

    @router.get(
        "/partners/{partner_id}/dead-letters", responses=ADMIN_RESPONSES, dependencies=[admin]
    )
    async def partner_dead_letters(partner_id: str) -> list[dict[str, Any]]:
        return await webhooks.store.dead_letters(await found(partner_id))

    async def the_partner(
        x_partner_key: Annotated[str | None, Header(description="The partner's API key")] = None,
    ) -> Partner:
        if not x_partner_key:
            raise HTTPException(
                401, "missing X-Partner-Key header", headers={"WWW-Authenticate": "ApiKey"}
            )
        partner = await webhooks.store.partner_by_key(digest(x_partner_key))
        if partner is None:
            raise HTTPException(403, "not a partner's key")
        return partner

    caller = Depends(the_partner)  # a closure: not resolvable from a string annotation

    @router.get("/partner/deliveries", tags=["partner"])
    async def own_deliveries(
        partner: Partner = caller,
        since: Annotated[AwareDatetime | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """The calling partner's delivery log: each event's status (delivered, retrying,
        dead_lettered, gone, skipped), newest first."""
        return await webhooks.store.deliveries(partner, since, limit)

    return router
