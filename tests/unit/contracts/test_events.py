from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared import events as ev
from shared.topics import ALL
from tests.unit.contracts.samples import SAMPLES, sample_json

EVENT_TYPES = [topic.event for topic in ALL]


def test_every_topic_event_has_a_sample() -> None:
    assert set(EVENT_TYPES) == set(SAMPLES)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_event_round_trips_through_json(event_type: type[ev.Event]) -> None:
    event = event_type.model_validate(sample_json(event_type))
    assert event_type.model_validate_json(event.model_dump_json()) == event


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_event_from_a_newer_producer_with_extra_fields_is_accepted(
    event_type: type[ev.Event],
) -> None:
    data = {**sample_json(event_type), "added_in_v1_7": {"anything": [1, 2]}}
    event = event_type.model_validate(data)
    assert "added_in_v1_7" not in event.model_dump()


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_event_missing_a_required_field_is_rejected_naming_it(event_type: type[ev.Event]) -> None:
    data = sample_json(event_type)
    del data["client_id"]
    with pytest.raises(ValidationError) as error:
        event_type.model_validate(data)
    assert error.value.errors()[0]["loc"] == ("client_id",)
    assert error.value.errors()[0]["type"] == "missing"


def test_events_are_frozen() -> None:
    event = ev.ConsultationHeld.model_validate(sample_json(ev.ConsultationHeld))
    with pytest.raises(ValidationError):
        event.outcome = "no_show"  # type: ignore[misc]


def test_naive_times_are_rejected_so_every_instant_is_unambiguous() -> None:
    data = {**sample_json(ev.BoosterDue), "due_at": "2026-05-04T08:00:00"}
    with pytest.raises(ValidationError, match="due_at"):
        ev.BoosterDue.model_validate(data)


def test_phone_must_be_e164() -> None:
    data = sample_json(ev.ConsultationRequested)
    data["contact"] = {**data["contact"], "phone": "0912 345 678"}
    with pytest.raises(ValidationError, match=r"contact\.phone"):
        ev.ConsultationRequested.model_validate(data)
