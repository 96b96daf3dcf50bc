"""Where a person in crisis can turn: a national line per country, and the emergency number.

Shown to a client at once when a measure's PHQ-9 item 9 is above 0 (protocol rule 3),
next to the clinic's own crisis contacts (`Clinic.crisis_contacts`). A clinic names
its country (ISO 3166 alpha-2) or it is read from its time zone (the IANA zone
table); a clinic may also override its national line. A country not listed here
gets "call your local emergency number", the safe floor.
"""

from __future__ import annotations

import importlib.resources
import zoneinfo
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class CrisisContact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    phone: str = Field(
        min_length=1, max_length=40, pattern=r"^\+?[0-9][0-9 ()-]*$", description="As dialled"
    )
    note: str | None = Field(default=None, max_length=200, description="e.g. hours, text")

    @property
    def tel(self) -> str:
        """The number for a `tel:` link: digits, and a leading + if any."""
        digits = "".join(c for c in self.phone if c.isdigit())
        return f"+{digits}" if self.phone.startswith("+") else digits


class NationalLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: CrisisContact | None
    emergency: str | None = Field(description="None: the page says 'your local emergency number'")


NATIONAL_LINES: dict[str, NationalLine] = {
    "US": NationalLine(
        line=CrisisContact(
            name="988 Suicide & Crisis Lifeline", phone="988", note="call or text, 24/7"
        ),
        emergency="911",
    ),
    "CA": NationalLine(
        line=CrisisContact(
            name="9-8-8 Suicide Crisis Helpline", phone="988", note="call or text, 24/7"
        ),
        emergency="911",
    ),
    "AU": NationalLine(
        line=CrisisContact(name="Lifeline", phone="13 11 14", note="24/7"), emergency="000"
    ),
    "NZ": NationalLine(
        line=CrisisContact(name="Need to talk? 1737", phone="1737", note="call or text, 24/7"),
        emergency="111",
    ),
    "GB": NationalLine(
        line=CrisisContact(name="Samaritans", phone="116 123", note="free, 24/7"),
        emergency="999",
    ),
    "IE": NationalLine(
        line=CrisisContact(name="Samaritans", phone="116 123", note="free, 24/7"),
        emergency="112",
    ),
    "PT": NationalLine(
        line=CrisisContact(
            name="SNS 24 (apoio psicológico / psychological support)",
            phone="808 24 24 24",
            note="option 4, 24/7",
        ),
        emergency="112",
    ),
    "ES": NationalLine(
        line=CrisisContact(name="Línea 024 (conducta suicida)", phone="024", note="24/7"),
        emergency="112",
    ),
    "FR": NationalLine(
        line=CrisisContact(name="3114 (prévention du suicide)", phone="3114", note="24/7"),
        emergency="112",
    ),
    "DE": NationalLine(
        line=CrisisContact(name="TelefonSeelsorge", phone="0800 111 0 111", note="free, 24/7"),
        emergency="112",
    ),
    "NL": NationalLine(
        line=CrisisContact(name="113 Zelfmoordpreventie", phone="0800 0113", note="free, 24/7"),
        emergency="112",
    ),
}
UNKNOWN_COUNTRY = NationalLine(line=None, emergency=None)


def national_line(country: str | None) -> NationalLine:
    return NATIONAL_LINES.get(country or "", UNKNOWN_COUNTRY)


def country_of_zone(zone: str) -> str | None:
    """The country an IANA zone belongs to (zone.tab), or None."""
    return _zone_countries().get(zone)


@cache
def _zone_countries() -> dict[str, str]:
    table = _zone_table()
    countries: dict[str, str] = {}
    for line in table.splitlines():
        if line and not line.startswith("#"):
            country, _, zone, *_ = line.split("\t")
            countries[zone] = country
    return countries


def _zone_table() -> str:
    # The system's zone data first (as zoneinfo reads it), then the tzdata package's.
    for directory in zoneinfo.TZPATH:
        path = Path(directory) / "zone.tab"
        if path.is_file():
            return path.read_text()
    try:
        return (importlib.resources.files("tzdata.zoneinfo") / "zone.tab").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return ""
