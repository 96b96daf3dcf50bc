"""Ids of the scheduler's HTTP and timer changes: one fact, one id; a replay, the same id."""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from datetime import UTC, datetime, timedelta

from services.scheduler import store
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain.schedule import ClientSchedule
from shared import events as ev

CLIENT = uuid.UUID("0b0d8c8e-7a4c-4d55-9a43-2f7c2c2f1e01")
NOW = datetime(2027, 6, 7, 7, tzinfo=UTC)


def schedule(version: int) -> ClientSchedule:
    return ClientSchedule(clinic_id="lisbon", client_id=CLIENT, correlation_id="c", version=version)


def stage() -> list[ev.Event]:
    return [
        ev.ClientStageReached(
            clinic_id="lisbon", client_id=CLIENT, occurred_at=NOW, stage=ev.ClientStage.BOOSTER_DUE
        )
    ]


def test_the_same_action_made_again_after_a_saved_change_gets_new_ids() -> None:
    first = domain_ids.change_cause(schedule(3), "a/moved-2027-06-09T07:00:00+00:00")
    again = domain_ids.change_cause(schedule(5), "a/moved-2027-06-09T07:00:00+00:00")

    assert domain_ids.event_ids(first, stage()) != domain_ids.event_ids(again, stage())


def test_a_replayed_change_reproduces_its_ids() -> None:
    cause = domain_ids.change_cause(schedule(3), "a/cancelled")

    assert domain_ids.event_ids(cause, stage()) == domain_ids.event_ids(
        domain_ids.change_cause(schedule(3), "a/cancelled"), stage()
    )


def test_two_outputs_of_one_change_get_different_ids() -> None:
    cause = domain_ids.change_cause(schedule(0), "a/completed")

    first, second = domain_ids.event_ids(cause, [*stage(), *stage()])

    assert first != second


def test_booster_1_of_another_plan_is_another_fact() -> None:
    course = uuid.uuid4()
    due = NOW + timedelta(days=14)

    same = domain_ids.booster_cause(course, 1, due) == domain_ids.booster_cause(course, 1, due)
    other_plan = domain_ids.booster_cause(course, 1, due + timedelta(days=6))

    assert same
    assert other_plan != domain_ids.booster_cause(course, 1, due)
    assert domain_ids.booster_cause(course, 2, due) != domain_ids.booster_cause(course, 1, due)


def test_a_saved_change_is_the_next_version_of_what_it_was_decided_on() -> None:
    assert domain_ids.saved(schedule(0), schedule(7)).version == 8


def test_a_schedule_saved_before_versions_existed_reads_as_version_0() -> None:
    old = json.dumps({"clinic_id": "lisbon", "client_id": str(CLIENT), "correlation_id": "c"})

    assert ClientSchedule.model_validate_json(old).version == 0


def test_a_schedule_is_stored_compressed_and_older_forms_still_read() -> None:
    old = json.dumps({"clinic_id": "lisbon", "client_id": str(CLIENT), "correlation_id": "c"})
    schedule = ClientSchedule.model_validate_json(old)
    base85 = "z1:" + base64.b85encode(zlib.compress(old.encode())).decode()

    packed = store.pack(schedule)

    assert packed.startswith("z2:")
    assert (
        zlib.decompress(base64.b64decode(packed[3:]))
        == schedule.model_dump_json(exclude_defaults=True).encode()
    )
    assert store.unpack(packed) == schedule
    assert store.unpack(base85) == schedule  # saved before issue 19
    assert store.unpack(old.encode()) == schedule
