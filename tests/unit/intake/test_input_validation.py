"""Intake's input models refuse what is well-typed but wrong, as a validation error
(422 over HTTP), never by raising something else (500)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from pydantic import BaseModel, ValidationError

from services.intake.api import ConsultationRequestIn, EnrolmentIn


def request(**fields: Any) -> dict[str, Any]:
    return {"name": "Ada Example", "email": "ada@example.org", **fields}


def refused_fields(model: type[BaseModel], data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(data)
    return {str(part) for error in refused.value.errors() for part in error["loc"]}


@pytest.mark.parametrize(
    "zone",
    ["Europe", "x" * 10_000, "Europe/" + "a" * 300, "../../etc/passwd", "Nowhere/Atlantis", ""],
)
def test_an_unknown_or_oversized_zone_is_a_validation_error(zone: str) -> None:
    assert "timezone" in refused_fields(ConsultationRequestIn, request(timezone=zone))


class FileSystemTouched(Exception):
    pass


def test_zone_names_are_checked_without_touching_the_file_system() -> None:
    # The first use may read the list of zones, once.
    ConsultationRequestIn.model_validate(request(timezone="Europe/Lisbon"))
    # Per request, no zone is built and no file opened (zone files are read through
    # io.open): a name is looked up in the set of known names.
    with (
        mock.patch("zoneinfo.ZoneInfo", side_effect=FileSystemTouched),
        mock.patch("io.open", side_effect=FileSystemTouched),
    ):
        assert "timezone" in refused_fields(
            ConsultationRequestIn, request(timezone="Nowhere/Atlantis")
        )
        valid = ConsultationRequestIn.model_validate(request(timezone="America/New_York"))
        assert valid.timezone == "America/New_York"


@pytest.mark.parametrize(
    "window",
    [
        {"weekday": 0, "start": "09:00", "end": "10:00Z"},
        {"weekday": 0, "start": "09:00+01:00", "end": "10:00"},
        {"weekday": 0, "start": "09:00Z", "end": "10:00Z"},
    ],
)
def test_a_preferred_time_with_a_zone_is_a_validation_error(window: dict[str, Any]) -> None:
    assert "preferred_times" in refused_fields(
        ConsultationRequestIn, request(preferred_times=[window])
    )


@pytest.mark.parametrize(
    "instant", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "1900-01-01T00:00:00Z"]
)
def test_a_consent_time_beyond_any_sane_date_is_a_validation_error(instant: str) -> None:
    enrolment = {
        "consent_given": True,
        "consent_recorded_at": instant,
        "phq9": [0] * 9,
        "gad7": [0] * 7,
    }
    assert "consent_recorded_at" in refused_fields(EnrolmentIn, enrolment)
