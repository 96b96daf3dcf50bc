"""A clinic's message templates, for its clinic admin (the console).

They are the notifier's overrides in the clinic's registry entry (`notifier.templates`,
{kind: {part: Jinja2 source}}), read from this replica's clinic catalogue and written
back through the registry as the admin API writes a clinic (chassis.clinic_registry):
checked first by every service's section check, so an override that would not compile
is refused with the kind and part named, and nothing is written; the audit copy names
the staff member. The scheduler serves it because it is the registry's writer.

A deployment that reads its clinics from a file (KAP_CLINICS_SOURCE=file) is refused a
change (409): written to the registry, it would be ignored. The whole entry is written
back: a change made to the clinic elsewhere (kapctl) in the moments before, not yet in
this replica's catalogue, would be undone; the registry's audit topic keeps both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from chassis.clinic_registry import ClinicRefused, SectionCheck, Send, write_clinic
from chassis.http import CLINIC_RESPONSES, AuthorisedClinic, roles, staff_actor
from chassis.staff_tokens import Actor, Role, acting

TEMPLATES = "templates"  # the notifier section's key (services.notifier.config.TEMPLATES)
PART_CHARS = 20_000


class TemplateIn(BaseModel):
    """A kind's overrides, part by part; a part left out or empty is the built-in one."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(default=None, max_length=PART_CHARS)
    text: str | None = Field(default=None, max_length=PART_CHARS, description="Email body, text")
    html: str | None = Field(default=None, max_length=PART_CHARS, description="Email body, HTML")
    sms: str | None = Field(default=None, max_length=PART_CHARS)


def routes(
    send: Send,
    checks: Mapping[str, SectionCheck],
    registry: str,
    kinds: Sequence[str],
    built_in: Callable[[str], dict[str, str]],
    from_registry: bool,
) -> APIRouter:
    """`from_registry`: the services read their clinics from the registry topic (a
    deployment that reads a clinics file would not see a change written there)."""
    router = APIRouter(
        prefix="/v1/clinics/{clinic_id}",
        tags=["scheduler"],
        responses=CLINIC_RESPONSES,
        dependencies=[Depends(staff_actor)],
    )

    @router.get("/message-templates", summary="The clinic's message template overrides")
    async def read_templates(
        clinic: AuthorisedClinic,
        kind: Annotated[
            str | None, Query(max_length=64, description="Also the built-in parts of this kind")
        ] = None,
    ) -> dict[str, Any]:
        if kind is not None and kind not in kinds:
            problem = {"loc": ["query", "kind"], "msg": f"not a message kind: {kind}"}
            raise HTTPException(422, [problem])
        return {
            "kinds": list(kinds),
            "parts": list(TemplateIn.model_fields),
            "overrides": clinic.section("notifier").get(TEMPLATES, {}),
            "built_in": built_in(kind) if kind is not None else {},
        }

    @router.put(
        "/message-templates/{kind}",
        summary="Set (or, with every part empty, remove) one kind's overrides",
        dependencies=[roles(Role.CLINIC_ADMIN)],
    )
    async def write_templates(
        clinic: AuthorisedClinic,
        kind: Annotated[str, Path(max_length=64, description="A message kind")],
        body: TemplateIn,
    ) -> dict[str, Any]:
        if kind not in kinds:
            problem = {"loc": ["path", "kind"], "msg": f"not a message kind: {kind}"}
            raise HTTPException(422, [problem])
        if not from_registry:
            raise HTTPException(
                409, "this deployment reads its clinics from a file: change the templates there"
            )
        parts = {p: v for p, v in body.model_dump().items() if v is not None and v.strip()}
        entry = clinic.model_dump(mode="json", exclude_unset=True)
        notifier = dict(clinic.section("notifier"))
        templates = dict(notifier.get(TEMPLATES) or {})
        if parts:
            templates[kind] = parts
        else:
            templates.pop(kind, None)
        entry["notifier"] = {**notifier, TEMPLATES: templates}
        actor: Actor | None = acting.get()
        by = actor.named if actor is not None else f"clinic-key:{clinic.id}"
        try:
            record = await write_clinic(send, entry, checks, by, registry=registry)
        except ClinicRefused as refused:
            detail = [
                {"loc": ["body", *_part_of(loc, kind)], "msg": msg, "type": "clinic_refused"}
                for loc, msg in refused.problems
            ]
            raise HTTPException(422, detail) from refused
        return {"kind": kind, "parts": parts, "record_id": str(record.record_id)}

    return router


def _part_of(loc: tuple[str | int, ...], kind: str) -> list[str | int]:
    """A refusal of this kind's part, named by the part (the field the form shows);
    anything else as the registry's check named it."""
    if len(loc) == 4 and loc[:3] == ("notifier", TEMPLATES, kind):
        return [loc[3]]
    return list(loc)
