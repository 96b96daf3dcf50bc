"""A clinic is refused before it is written if any service would refuse it on use, and
the refusal names the field (chassis.clinic_registry with ops.clinic_registry's checks)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chassis.clinic_registry import ClinicRefused, checked_clinic
from chassis.clinics import hash_api_key
from ops.clinic_registry import SECTION_CHECKS

WEEKDAYS = {str(day): [{"start": "08:00", "end": "19:00"}] for day in range(5)}
GOOD: dict[str, Any] = {
    "id": "porto",
    "name": "Porto Integrative Care",
    "timezone": "Europe/Lisbon",
    "api_key_sha256": hash_api_key("porto-key"),
    "scheduler": {
        "opening_hours": WEEKDAYS,
        "therapists": [{"id": "t-1", "display_name": "Ana", "availability": WEEKDAYS}],
        "rooms": [{"id": "r-1", "name": "Recliner 1"}],
    },
    "notifier": {"send_window": ["09:00", "20:00"]},
}


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    entry = copy.deepcopy(GOOD)
    target = entry
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return entry


def test_a_clinic_every_service_can_use_is_accepted() -> None:
    assert checked_clinic(GOOD, SECTION_CHECKS).id == "porto"


def test_a_clinic_without_sections_takes_every_services_defaults() -> None:
    bare = {k: v for k, v in GOOD.items() if k not in ("scheduler", "notifier")}
    assert checked_clinic(bare, SECTION_CHECKS).section("scheduler") == {}


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("timezone",), "Mars/Base", "timezone"),
        (("id",), "Not A Slug", "id"),
        (("api_key_sha256",), "plaintext-key", "api_key_sha256"),
        (("scheduler", "rooms"), "recliner", "scheduler.rooms"),
        (
            ("scheduler", "policy"),
            {"max_doses_per_week": 1, "course_window_days": 21},
            "scheduler.policy",
        ),
        (("notifier", "send_window"), ["25:00", "20:00"], "notifier.send_window.0"),
        (("notifier", "templates"), {"reminder_24h": {"sms": "{% if %}"}}, "notifier.templates"),
        (("notifier",), "off", "notifier"),
    ],
)
def test_a_clinic_a_service_would_refuse_is_refused_naming_the_field(
    path: tuple[str, ...], value: Any, field: str
) -> None:
    with pytest.raises(ClinicRefused) as refused:
        checked_clinic(_with(path, value), SECTION_CHECKS)
    assert refused.value.field.startswith(field), refused.value
    assert "plaintext-key" not in str(refused.value)
