"""The operators' clinic API: put or retire a clinic in the registry (chassis.clinic_registry).

Served by the scheduler, whose calendar is most of a clinic's configuration. Its key is
the deployment's admin key (`KAP_ADMIN_API_KEY_SHA256`, its SHA-256 only), never a
clinic's: no header is 401, any other key 403, and with no admin key configured the
routes refuse everyone (403). A clinic is checked with every service's own checks
before it is written; a refusal is a 422 naming the field, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, JsonValue

from chassis.clinic_registry import ClinicRefused, SectionCheck, Send, write_clinic
from chassis.http import CLINIC_RESPONSES, AdminKey
from shared.events import ClinicId

ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{code: CLINIC_RESPONSES[code] for code in (401, 413, 422, 503)},
    403: {"description": "Not the admin key, or the admin API is not configured"},
}


class ClinicWritten(BaseModel):
    clinic_id: str
    record_id: str
    changed_at: str
    retired: bool


def routes(
    send: Send,
    checks: Mapping[str, SectionCheck],
    admin_key_sha256: str | None,
    registry: str,
) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"], responses=ADMIN_RESPONSES)

    admin = AdminKey(admin_key_sha256)

    @router.put("/clinics/{clinic_id}", summary="Add or replace a clinic's whole configuration")
    async def put_clinic(
        clinic_id: Annotated[ClinicId, PathParam()],
        entry: Annotated[dict[str, JsonValue], Body(description="The clinic, as in the file")],
        actor: str = Depends(admin),
    ) -> ClinicWritten:
        if entry.setdefault("id", clinic_id) != clinic_id:
            raise _refused(ClinicRefused([(("id",), "must be the clinic id in the path")]))
        try:
            record = await write_clinic(send, entry, checks, actor, registry=registry)
        except ClinicRefused as refused:
            raise _refused(refused) from refused
        return _written(record)

    @router.delete("/clinics/{clinic_id}", summary="Retire a clinic (its record says who, when)")
    async def retire_clinic(
        clinic_id: Annotated[ClinicId, PathParam()],
        actor: str = Depends(admin),
    ) -> ClinicWritten:
        record = await write_clinic(
            send, {"id": clinic_id}, checks, actor, registry=registry, retired=True
        )
        return _written(record)

    return router


def _written(record: Any) -> ClinicWritten:
    return ClinicWritten(
        clinic_id=record.clinic_id,
        record_id=str(record.record_id),
        changed_at=record.changed_at.isoformat(),
        retired=record.retired,
    )


def _refused(refused: ClinicRefused) -> HTTPException:
    detail = [
        {"loc": ["body", *loc], "msg": msg, "type": "clinic_refused"}
        for loc, msg in refused.problems
    ]
    return HTTPException(422, detail)
