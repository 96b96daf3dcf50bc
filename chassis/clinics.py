"""The clinics a deployment serves, from configuration, and who may act for them.

Clinics live in one JSON file (`KAP_CLINICS_FILE`): adding a clinic is an edit
(or `kapctl clinics add`), never code. Each entry has the common fields below
plus one section per service, which that service parses with its own model.
The file is re-read when it changes, so a new clinic needs no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, Header, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from shared.events import ClinicId, TimeZoneName


class Clinic(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    id: ClinicId
    name: str = Field(min_length=1, max_length=200)
    timezone: TimeZoneName
    api_key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    staff_email: str | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def section(self, name: str) -> dict[str, Any]:
        """This clinic's settings for one service (empty: that service's defaults)."""
        extra = self.model_extra or {}
        section = extra.get(name, {})
        return dict(section) if isinstance(section, dict) else {}

    def accepts(self, api_key: str) -> bool:
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        return hmac.compare_digest(digest, self.api_key_sha256)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ClinicDirectory:
    """Read-through view of the clinics file, reloaded when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: float | None = None
        self._clinics: dict[str, Clinic] = {}

    def _refresh(self) -> None:
        stamp = self._path.stat().st_mtime if self._path.exists() else None
        if stamp == self._stamp:
            return
        entries = json.loads(self._path.read_text()) if stamp is not None else []
        clinics = [Clinic.model_validate(entry) for entry in entries]
        self._clinics = {clinic.id: clinic for clinic in clinics}
        self._stamp = stamp

    def get(self, clinic_id: str) -> Clinic | None:
        self._refresh()
        return self._clinics.get(clinic_id)

    def all(self) -> list[Clinic]:
        self._refresh()
        return list(self._clinics.values())


async def _authorised_clinic(
    request: Request,
    clinic_id: Annotated[str, PathParam(description="The clinic acting")],
    x_api_key: Annotated[str | None, Header(description="The clinic's API key")] = None,
) -> Clinic:
    if not x_api_key:
        raise HTTPException(
            status_code=401,
            detail="missing X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    directory: ClinicDirectory = request.app.state.clinics
    clinic = directory.get(clinic_id)
    # A key that is not this clinic's gets the same answer as a clinic that does
    # not exist: another clinic's key learns nothing, not even that it exists.
    if clinic is None or not clinic.accepts(x_api_key):
        raise HTTPException(status_code=404, detail="not found")
    return clinic


AuthorisedClinic = Annotated[Clinic, Depends(_authorised_clinic)]
"""Route parameter: the clinic named in the path, once the caller proved it is that clinic."""
