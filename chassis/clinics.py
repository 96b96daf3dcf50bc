"""The clinics a deployment serves, from configuration, and who may act for them.

Clinics live in one JSON file (`KAP_CLINICS_FILE`): adding a clinic is an edit
(or `kapctl clinics add`), never code. Each entry has the common fields below
plus one section per service, which that service parses with its own model.
The file is re-read when it changes, so a new clinic needs no restart.

A file that does not parse or validate (caught half-written by an editor or a
deploy, or simply wrong) is a configuration error, not a bad message: the last
good clinics keep serving, the mistake is logged loudly once per version of the
file and counted (`kap_configuration_errors_total`), and nothing is dead-lettered
for it. With no good version yet, lookups raise `ConfigurationError`, which the
dead-letter middleware treats as transient, so messages wait for a fix.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from fastapi import Depends, Header, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from chassis.crisis_lines import CrisisContact, NationalLine, country_of_zone, national_line
from chassis.metrics import ServiceMetrics
from shared.events import ClinicId, TimeZoneName

log = logging.getLogger(__name__)

T = TypeVar("T")


class PerVersion(Generic[T]):
    """What a service derives from a clinic's configuration (its section parsed, or as
    canonical JSON), made once per version of the clinic, not on every event (issue 19).

    Keyed by the Clinic object itself (held, so its id is never reused while kept): the
    directory and the registry hand out the same object until a new version replaces
    it. Derived from configuration only, so any replica makes the same; a derivation
    that raises (a bad section) is not kept, and raises again next time."""

    def __init__(self, make: Callable[[Clinic], T], kept: int = 1024) -> None:
        self._make = make
        self._kept = kept
        self._made: dict[int, tuple[Clinic, T]] = {}

    def __call__(self, clinic: Clinic) -> T:
        held = self._made.get(id(clinic))
        if held is not None and held[0] is clinic:
            return held[1]
        made = self._make(clinic)
        if len(self._made) >= self._kept:
            self._made.clear()  # old versions and retired clinics go with the rest
        self._made[id(clinic)] = (clinic, made)
        return made


class ConfigurationError(Exception):
    """The deployment's configuration is unusable: an operator must fix it; messages wait."""


class Clinic(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    id: ClinicId
    name: str = Field(min_length=1, max_length=200)
    timezone: TimeZoneName
    api_key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    staff_email: str | None = None
    # Who hears of an urgent alert no one acknowledged in time (the staff address if unset).
    on_call_email: str | None = None
    # Shown to a client whose answers say they may be at risk (chassis.crisis_lines):
    # the clinic's own contacts, then its country's line (the country read from the
    # time zone unless given; `national_crisis_line` replaces the built-in one).
    crisis_contacts: tuple[CrisisContact, ...] = Field(default=(), max_length=10)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166")
    national_crisis_line: CrisisContact | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def national_line(self) -> NationalLine:
        found = national_line(self.country or country_of_zone(self.timezone))
        if self.national_crisis_line is not None:
            return found.model_copy(update={"line": self.national_crisis_line})
        return found

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


_CLINIC_LIST = TypeAdapter(list[Clinic])
_UNREAD = object()
_Version = tuple[int, int, int]  # mtime (ns), size, inode: a rename or a rewrite changes one


def _version_of(path: Path) -> _Version | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class ClinicDirectory:
    """Read-through view of the clinics file, reloaded when its mtime changes."""

    def __init__(self, path: Path, *, metrics: ServiceMetrics | None = None) -> None:
        self._path = path
        self._metrics = metrics
        self._loaded: _Version | object = _UNREAD  # the version the clinics below came from
        self._failed: _Version | object = _UNREAD  # the last version that failed, reported
        self._clinics: dict[str, Clinic] | None = None  # the last good version
        self._error: str | None = None

    @property
    def healthy(self) -> bool:
        """The file as it stands now was read without error."""
        return self._error is None

    def _refresh(self) -> None:
        version = _version_of(self._path)
        if version != self._loaded:
            # A failed version is read again on every lookup until it parses:
            # its writer may finish within the same timestamp tick, leaving
            # mtime and even size unchanged (only the report is once a version).
            self._load(version)
        if self._clinics is None:
            raise ConfigurationError(f"clinics file {self._path}: {self._error}")

    def _load(self, version: _Version | None) -> None:
        try:
            text = self._path.read_text() if version is not None else "[]"
            clinics = _CLINIC_LIST.validate_json(text)
        except (OSError, ValidationError) as error:
            self._error = _reason(error)  # never the values: they may hold keys
            if version != self._failed:
                self._failed = version
                if self._metrics is not None:
                    self._metrics.configuration_error("clinics")
                kept = "the last good clinics keep serving" if self._clinics else "no clinics yet"
                log.error("clinics file %s is unusable (%s); %s", self._path, self._error, kept)
            return
        self._clinics = {clinic.id: clinic for clinic in clinics}
        self._loaded = version
        if self._error is not None:
            log.warning("clinics file %s is usable again", self._path)
        self._error = None
        self._failed = _UNREAD

    def get(self, clinic_id: str) -> Clinic | None:
        self._refresh()
        assert self._clinics is not None  # _refresh raises otherwise
        return self._clinics.get(clinic_id)

    def all(self) -> list[Clinic]:
        self._refresh()
        assert self._clinics is not None
        return list(self._clinics.values())


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        where = [".".join(str(p) for p in e["loc"]) or "<file>" for e in error.errors()]
        return f"{error.error_count()} error(s) at " + ", ".join(where[:5])
    return type(error).__name__


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
