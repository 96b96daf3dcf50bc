"""A handled mark's value lists its outputs' ids (chassis.outbox.mark_value): compact for
UUIDs, read back exactly, and marks written before (JSON lists, payloads) still read."""

from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from chassis.outbox import mark_value, output_ids


@given(st.lists(st.uuids(), max_size=8))
def test_uuid_ids_read_back_exactly_and_take_22_characters_each(ids: list[uuid.UUID]) -> None:
    names = [str(i) for i in ids]
    value = mark_value(names)
    assert output_ids(value) == names
    assert output_ids(value.encode()) == names
    assert len(value) <= (2 + 23 * len(names) if names else 0)


@given(st.lists(st.text(min_size=1, max_size=40), max_size=5))
def test_any_other_ids_are_kept_as_a_json_list(ids: list[str]) -> None:
    assert output_ids(mark_value(ids)) == ids


def test_marks_written_before_still_read() -> None:
    event_id = str(uuid.uuid4())
    assert output_ids(json.dumps([event_id])) == [event_id]
    assert output_ids("[]") == []
    assert output_ids(json.dumps([{"envelope": {"id": event_id}}])) == [event_id]
    upper = str(uuid.uuid4()).upper()  # not canonical: kept as given
    assert output_ids(mark_value([upper])) == [upper]
