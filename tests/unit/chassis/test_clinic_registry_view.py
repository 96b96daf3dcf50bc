"""A service's clinic view from the registry: nothing is served before it has read the
topic to its end, and a record that does not load keeps the clinic's last good one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from chassis.clinic_registry import ClinicRegistryView
from chassis.clinics import ConfigurationError, hash_api_key
from shared.events import ClinicConfigured


def _record(config: dict[str, Any], *, retired: bool = False) -> ClinicConfigured:
    return ClinicConfigured(
        record_id=uuid.uuid4(),
        clinic_id=str(config["id"]),
        config=config,
        retired=retired,
        changed_by="test",
        changed_at=datetime.now(UTC),
    )


GOOD = {"id": "porto", "name": "Porto", "timezone": "Europe/Lisbon"}


def test_lookups_wait_until_the_registry_is_read_to_its_end() -> None:
    view = ClinicRegistryView("127.0.0.1:1", "unused")
    view._apply(_record({**GOOD, "api_key_sha256": hash_api_key("k")}))
    with pytest.raises(ConfigurationError):
        view.get("porto")
    assert view.all() == []  # background loops find no work yet, rather than fail
    view._caught_up.set()
    found = view.get("porto")
    assert found is not None
    assert found.accepts("k")


def test_an_unusable_record_keeps_the_last_good_one_and_retiring_removes_it() -> None:
    view = ClinicRegistryView("127.0.0.1:1", "unused")
    view._caught_up.set()
    view._apply(_record({**GOOD, "api_key_sha256": hash_api_key("k")}))
    view._apply(_record({**GOOD, "timezone": "Mars/Base", "api_key_sha256": hash_api_key("x")}))
    found = view.get("porto")
    assert found is not None
    assert found.accepts("k")
    view._apply(_record({"id": "porto"}, retired=True))
    assert view.get("porto") is None
