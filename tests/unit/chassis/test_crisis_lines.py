"""Each clinic has a national crisis line at hand: given, or read from its time zone."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chassis.clinics import Clinic
from chassis.crisis_lines import CrisisContact


def clinic(timezone: str, **fields: Any) -> Clinic:
    return Clinic(id="c1", name="C", timezone=timezone, api_key_sha256="0" * 64, **fields)


@pytest.mark.parametrize(
    ("zone", "phone", "emergency"),
    [
        ("Europe/Lisbon", "808 24 24 24", "112"),
        ("America/New_York", "988", "911"),
        ("Australia/Sydney", "13 11 14", "000"),
        ("Europe/London", "116 123", "999"),
    ],
)
def test_the_national_line_follows_the_clinics_time_zone(
    zone: str, phone: str, emergency: str
) -> None:
    national = clinic(zone).national_line
    assert national.line is not None
    assert national.line.phone == phone
    assert national.emergency == emergency


def test_a_given_country_wins_over_the_zone_and_a_given_line_over_the_table() -> None:
    assert clinic("Europe/Lisbon", country="US").national_line.emergency == "911"
    own = {"name": "Linha local", "phone": "+351 800 000 000"}
    national = clinic("Europe/Lisbon", national_crisis_line=own).national_line
    assert national.line == CrisisContact(**own)
    assert national.emergency == "112"


def test_an_unknown_country_still_says_to_call_the_local_emergency_number() -> None:
    national = clinic("Etc/UTC").national_line
    assert national.line is None
    assert national.emergency is None


def test_crisis_contacts_are_checked_when_the_clinics_file_is_read() -> None:
    with pytest.raises(ValidationError):
        clinic("Europe/Lisbon", crisis_contacts=[{"name": "x", "phone": "call me"}])
    with pytest.raises(ValidationError):
        clinic("Europe/Lisbon", country="Portugal")
    contact = clinic("Europe/Lisbon", crisis_contacts=[{"name": "On call", "phone": "+351 21 1"}])
    assert contact.crisis_contacts[0].tel == "+351211"
